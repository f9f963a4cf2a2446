"""Templated instruction -> code pairs for convsynth-tiny (written for this project; no benchmark text).

Two kinds: short multi-turn programs in the MTPB prompt layout (a preamble, then "# <instruction>\\n<code>\\n\\n"
turns that build on each other's variables), and tiny functions with docstrings. A toy model learns the layout
and the simplest idioms from these; real code (the rest of the corpus) supplies everything else.
"""
from __future__ import annotations

import random

from convsynth.turns import MTPB_PREAMBLE

PREAMBLE = MTPB_PREAMBLE  # the layout a Session writes
NAMES = ["data", "values", "items", "numbers", "nums", "scores", "counts", "result", "total", "words", "text",
         "my_list", "my_string", "my_dict", "x", "y", "z", "arr", "matrix", "names", "prices", "ages", "out",
         "a", "b", "n", "m", "k", "s", "lst", "seq", "points", "temps", "grades", "letters", "acc", "res"]
WORDS = ["apple", "banana", "cherry", "hello", "world", "python", "code", "data", "alpha", "beta", "gamma",
         "delta", "spam", "eggs", "red", "green", "blue", "cat", "dog", "sun", "moon", "tree", "river", "stone"]


def _name(rng, used=()):
    while True:
        n = rng.choice(NAMES)
        if n not in used:
            return n


def _ints(rng, k=None):
    return [rng.randint(-20, 99) if rng.random() < 0.2 else rng.randint(0, 99) for _ in range(k or rng.randint(2, 8))]


def _q(rng):
    return rng.choice(['"{}"', '`{}`', '{}'])


# Each list-op: (instruction template, code template). {src} is an existing list variable, {dst} a new name.
LIST_OPS = [
    ("Compute the sum of the elements in {S} and store it in {D}.", "{dst} = sum({src})"),
    ("Calculate the sum of {S} and assign it to {D}.", "{dst} = sum({src})"),
    ("Find the largest value in {S} and store it in {D}.", "{dst} = max({src})"),
    ("Get the maximum of {S} as {D}.", "{dst} = max({src})"),
    ("Find the smallest element of {S} and call it {D}.", "{dst} = min({src})"),
    ("Sort {S} in ascending order and store the result in {D}.", "{dst} = sorted({src})"),
    ("Sort {S} in descending order into {D}.", "{dst} = sorted({src}, reverse=True)"),
    ("Reverse the list {S} and store it in {D}.", "{dst} = {src}[::-1]"),
    ("Count the number of elements in {S} and store it in {D}.", "{dst} = len({src})"),
    ("Compute the mean of {S} and store it in {D}.", "{dst} = sum({src}) / len({src})"),
    ("Compute the average of {S} with numpy and assign it to {D}.", "{dst} = np.mean({src})"),
    ("Square each element of {S} and store the result in {D}.", "{dst} = [v ** 2 for v in {src}]"),
    ("Double every element of {S} and save the list as {D}.", "{dst} = [v * 2 for v in {src}]"),
    ("Keep only the even numbers of {S} in {D}.", "{dst} = [v for v in {src} if v % 2 == 0]"),
    ("Select the odd elements of {S} into a new list {D}.", "{dst} = [v for v in {src} if v % 2 == 1]"),
    ("Keep the elements of {S} that are greater than {K} in {D}.", "{dst} = [v for v in {src} if v > {k}]"),
    ("Remove duplicates from {S} and store the sorted result in {D}.", "{dst} = sorted(set({src}))"),
    ("Get the first {K} elements of {S} as {D}.", "{dst} = {src}[:{k}]"),
    ("Get the last element of {S} and assign it to {D}.", "{dst} = {src}[-1]"),
    ("Convert {S} to a numpy array named {D}.", "{dst} = np.array({src})"),
    ("Compute the product of all elements in {S} and store it in {D}.",
     "{dst} = 1\nfor v in {src}:\n    {dst} *= v"),
    ("Count how many elements of {S} are greater than {K} and store it in {D}.",
     "{dst} = sum(1 for v in {src} if v > {k})"),
    ("Compute the cumulative sum of {S} and store it in {D}.",
     "{dst} = []\nrunning = 0\nfor v in {src}:\n    running += v\n    {dst}.append(running)"),
    ("Find the index of the largest element of {S} and store it in {D}.", "{dst} = {src}.index(max({src}))"),
    ("Convert each element of {S} to a string and store the list in {D}.", "{dst} = [str(v) for v in {src}]"),
    ("Add {K} to every element of {S} and store the result in {D}.", "{dst} = [v + {k} for v in {src}]"),
    ("Compute the difference between the maximum and the minimum of {S} as {D}.", "{dst} = max({src}) - min({src})"),
]
STR_OPS = [
    ("Convert {S} to upper case and store it in {D}.", "{dst} = {src}.upper()"),
    ("Lowercase the string {S} and assign it to {D}.", "{dst} = {src}.lower()"),
    ("Reverse the string {S} and store it in {D}.", "{dst} = {src}[::-1]"),
    ("Split {S} into words and store them in {D}.", "{dst} = {src}.split()"),
    ("Count the number of characters in {S} and store it in {D}.", "{dst} = len({src})"),
    ("Count the vowels in {S} and store the count in {D}.", "{dst} = sum(1 for c in {src} if c in \"aeiou\")"),
    ("Get the distinct characters of {S} in sorted order as {D}.", "{dst} = sorted(set({src}))"),
    ("Replace every space in {S} with an underscore and store it in {D}.", "{dst} = {src}.replace(\" \", \"_\")"),
    ("Check whether {S} is a palindrome and store the result in {D}.", "{dst} = {src} == {src}[::-1]"),
    ("Capitalize the first letter of {S} and store it in {D}.", "{dst} = {src}.capitalize()"),
    ("Remove leading and trailing whitespace from {S} and store it in {D}.", "{dst} = {src}.strip()"),
    ("Count how many times the letter \"{C}\" occurs in {S} and store it in {D}.", "{dst} = {src}.count(\"{c}\")"),
]
NUM_OPS = [
    ("Multiply {S} by {K} and store the result in {D}.", "{dst} = {src} * {k}"),
    ("Add {K} to {S} and assign the result to {D}.", "{dst} = {src} + {k}"),
    ("Compute the square of {S} and store it in {D}.", "{dst} = {src} ** 2"),
    ("Check whether {S} is even and store the answer in {D}.", "{dst} = {src} % 2 == 0"),
    ("Compute the remainder of {S} divided by {K} and store it in {D}.", "{dst} = {src} % {k}"),
    ("Compute the absolute value of {S} and store it in {D}.", "{dst} = abs({src})"),
    ("Convert {S} to a string and store it in {D}.", "{dst} = str({src})"),
    ("Compute the square root of {S} with numpy and store it in {D}.", "{dst} = np.sqrt({src})"),
    ("Create a list of the numbers from 0 to {S} (exclusive) and store it in {D}.", "{dst} = list(range({src}))"),
]


def _fmt(q, name):
    return q.format(name)


def mtpb_program(rng: random.Random) -> str:
    """Preamble, a first turn defining a value, 1-4 turns transforming it, usually a final print turn."""
    used = set()
    v = _name(rng, used)
    used.add(v)
    q = _q(rng)
    kind = rng.choice(["list", "list", "str", "num"])
    if kind == "list":
        val = _ints(rng)
        first = rng.choice([f"Define a list of integers named {_fmt(q, v)} with the values {val}.",
                            f"Create a list {_fmt(q, v)} containing {val}.",
                            f"Assign the list {val} to a variable named {_fmt(q, v)}.",
                            f"Initialize a variable {_fmt(q, v)} with the numbers {val}."])
        code = f"{v} = {val}"
    elif kind == "str":
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
        if rng.random() < 0.3:
            words = words.title()
        first = rng.choice([f"Assign the string \"{words}\" to a variable named {_fmt(q, v)}.",
                            f"Define a string {_fmt(q, v)} with the value \"{words}\".",
                            f"Create a variable {_fmt(q, v)} holding the text \"{words}\"."])
        code = f"{v} = \"{words}\""
    else:
        val = rng.randint(1, 60)
        first = rng.choice([f"Assign the integer {val} to a variable named {_fmt(q, v)}.",
                            f"Set {_fmt(q, v)} to {val}.", f"Define a variable {_fmt(q, v)} equal to {val}."])
        code = f"{v} = {val}"
    turns = [(first, code)]
    cur, cur_kind = v, kind
    for _ in range(rng.randint(1, 3)):
        ops = {"list": LIST_OPS, "str": STR_OPS, "num": NUM_OPS}[cur_kind]
        instr, tmpl = rng.choice(ops)
        d = _name(rng, used)
        used.add(d)
        k = rng.randint(1, 10)
        c = rng.choice("aeioulnrst")
        turns.append((instr.format(S=_fmt(q, cur), D=_fmt(q, d), K=k, C=c),
                      tmpl.format(src=cur, dst=d, k=k, c=c)))
        cur = d
        if "sorted(set(" in tmpl or "split()" in tmpl or "[str(v)" in tmpl:
            cur_kind = "other"
        elif tmpl.startswith("{dst} = [") or "sorted(" in tmpl or "[::-1]" in tmpl and cur_kind == "list" \
                or "[:{k}]" in tmpl or "cumulative" in instr or "list(range(" in tmpl:
            cur_kind = "list"
        elif cur_kind == "str" and tmpl.split("= ")[-1].startswith("{src}.") and "count" not in tmpl:
            cur_kind = "str"
        elif cur_kind == "str" and "[::-1]" in tmpl and "==" not in tmpl:
            cur_kind = "str"
        else:
            cur_kind = "num" if any(w in tmpl for w in ("sum(", "max(", "min(", "len(", "count(", "*=", "index("))\
                and "np." not in tmpl else "other"
        if cur_kind == "other":
            break
    if rng.random() < 0.8:
        turns.append((rng.choice([f"Print the variable {_fmt(q, cur)}.", f"Print {_fmt(q, cur)}.",
                                  "Print the result.", f"Display the value of {_fmt(q, cur)}."]), f"print({cur})"))
    return PREAMBLE + "".join(f"# {a}\n{b}\n\n" for a, b in turns)


FUNCS = [
    ("{f}({a}, {b})", "Return the sum of {a} and {b}.", "return {a} + {b}", ["add_numbers", "plus", "sum_two", "total_of"]),
    ("{f}({a}, {b})", "Return {a} minus {b}.", "return {a} - {b}", ["subtract", "minus", "difference"]),
    ("{f}({a}, {b})", "Return the product of {a} and {b}.", "return {a} * {b}", ["multiply", "times", "product"]),
    ("{f}({a}, {b})", "Return the larger of {a} and {b}.", "return {a} if {a} > {b} else {b}", ["larger", "bigger", "max_of_two"]),
    ("{f}({a}, {b})", "Return the smaller of {a} and {b}.", "return {a} if {a} < {b} else {b}", ["smaller", "min_of_two"]),
    ("{f}({a})", "Return True if {a} is even.", "return {a} % 2 == 0", ["is_even", "even"]),
    ("{f}({a})", "Return True if {a} is odd.", "return {a} % 2 == 1", ["is_odd", "odd"]),
    ("{f}({a})", "Return the square of {a}.", "return {a} * {a}", ["square", "squared"]),
    ("{f}({a})", "Return the cube of {a}.", "return {a} ** 3", ["cube", "cubed"]),
    ("{f}({a})", "Return {a} reversed.", "return {a}[::-1]", ["reverse", "reversed_copy", "flip"]),
    ("{f}({a})", "Return the number of elements in {a}.", "return len({a})", ["length", "count_items", "size"]),
    ("{f}({a})", "Return the first element of {a}.", "return {a}[0]", ["first", "head"]),
    ("{f}({a})", "Return the last element of {a}.", "return {a}[-1]", ["last", "tail_item"]),
    ("{f}({a})", "Return the absolute value of {a}.", "return {a} if {a} >= 0 else -{a}", ["absolute", "abs_value"]),
    ("{f}({a})", "Return {a} converted to upper case.", "return {a}.upper()", ["shout", "to_upper", "upper"]),
    ("{f}({a})", "Return the average of the numbers in {a}.", "return sum({a}) / len({a})", ["mean", "average"]),
    ("{f}({a})", "Return a list with the even numbers of {a}.", "return [v for v in {a} if v % 2 == 0]", ["evens", "only_even"]),
    ("{f}({a})", "Return the sum of the squares of {a}.", "return sum(v * v for v in {a})", ["sum_squares"]),
    ("{f}({a})", "Return True if the string {a} is a palindrome.", "return {a} == {a}[::-1]", ["is_palindrome"]),
    ("{f}({a})", "Return the factorial of {a}.",
     "result = 1\n    for i in range(2, {a} + 1):\n        result *= i\n    return result", ["factorial", "fact"]),
    ("{f}({a})", "Return the {a}-th Fibonacci number.",
     "x, y = 0, 1\n    for _ in range({a}):\n        x, y = y, x + y\n    return x", ["fib", "fibonacci"]),
    ("{f}({a})", "Return the largest element of {a}.",
     "best = {a}[0]\n    for v in {a}:\n        if v > best:\n            best = v\n    return best", ["maximum", "largest"]),
    ("{f}({a})", "Count the vowels in the string {a}.",
     "return sum(1 for c in {a}.lower() if c in \"aeiou\")", ["count_vowels", "vowels"]),
    ("{f}({a}, {b})", "Return {a} raised to the power {b}.", "return {a} ** {b}", ["power", "pow_of"]),
    ("{f}({a}, {b})", "Return True if {a} is divisible by {b}.", "return {a} % {b} == 0", ["divisible", "is_divisible"]),
    ("{f}({a}, {b})", "Concatenate the strings {a} and {b}.", "return {a} + {b}", ["concat", "join_two"]),
]
ARG_PAIRS = [("a", "b"), ("x", "y"), ("m", "n"), ("first", "second"), ("left", "right"), ("p", "q"), ("u", "v")]
ARG_ONE = ["x", "n", "s", "items", "values", "nums", "lst", "text", "word", "data", "k"]


def small_function(rng: random.Random) -> str:
    sig, doc, body, fnames = rng.choice(FUNCS)
    a, b = rng.choice(ARG_PAIRS)
    if "{b}" not in sig:
        a = rng.choice(ARG_ONE)
    f = rng.choice(fnames)
    fill = dict(f=f, a=a, b=b)
    style = rng.random()
    head = f"def {sig.format(**fill)}:\n"
    if style < 0.6:
        head += f"    \"\"\"{doc.format(**fill)}\"\"\"\n"
    elif style < 0.8:
        head = f"# {doc.format(**fill)}\n" + head
    text = head + f"    {body.format(**fill)}\n"
    if rng.random() < 0.4:
        args = ", ".join(str(rng.randint(1, 9)) for _ in range(sig.count(",") + 1))
        if "{b}" not in sig and a in ("s", "text", "word"):
            args = f"\"{rng.choice(WORDS)}\""
        elif "{b}" not in sig and a in ("items", "values", "nums", "lst", "data"):
            args = str(_ints(rng, 4))
        text += f"\n\nprint({f}({args}))\n"
    return text


def function_documents(seed: int, n: int) -> list[str]:
    """Phase-2 drill set: small functions, more often with a bare signature (the shape of `def add(a, b):`) and
    mixed with short programs so the turn layout is not forgotten. Separate from `templated_documents` so the
    phase-1 corpus stays reproducible."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        r = rng.random()
        if r < 0.25:
            docs.append(mtpb_program(rng))
            continue
        doc = small_function(rng)
        if r < 0.6:  # strip the docstring/comment: name and arguments alone must say what to do
            doc = "".join(line for line in doc.splitlines(keepends=True)
                          if not line.lstrip().startswith(('"""', "# ")))
        docs.append(doc)
    return docs


def templated_documents(seed: int, n_programs: int, n_functions: int) -> list[str]:
    rng = random.Random(seed)
    return [mtpb_program(rng) for _ in range(n_programs)] + [small_function(rng) for _ in range(n_functions)]


if __name__ == "__main__":
    docs = templated_documents(0, 3, 3)
    for d in docs:
        print(d, "-" * 40, sep="")
