"""Build evals/step_tasks.jsonl: the hand-written tasks (hand_tasks.py) plus template tasks made here.

Deterministic (seeded): `python evals/make_step_tasks.py` rewrites the same file byte for byte. The template
wordings, names and literal ranges are this suite's own; they were written without looking at the training
generator, so a model that scores here has learned the steps, not our phrasing. The expected output of a
template task is computed here in Python from the literals, never by running its reference code (the test runs
the references and compares the two).
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from hand_tasks import HAND  # noqa: E402

SEED = 20261201
PER_CATEGORY = 8
CATEGORIES = ["literals", "arithmetic", "lists", "strings", "dicts", "loops", "functions", "numpy"]
# Names and words chosen to be a little unusual, so they are unlikely to match a training template's pool.
NAMES = ["basket", "tally", "pebbles", "crate", "inbox", "harvest", "ledger", "shelf", "orbit", "quiver",
         "lantern", "meadow", "parcel", "compass", "ribbon", "saddle", "thimble", "voyage", "walrus", "zephyr"]
WORDS = ["maple", "cobalt", "river stone", "north wind", "lemon", "garnet", "old oak", "tiger", "quartz", "saffron",
         "ember", "harbor", "velvet", "pine cone", "tundra", "opal"]


def _names(rng, k):
    return rng.sample(NAMES, k)


def _ints(rng, lo=-30, hi=60, k=None):
    return [rng.randint(lo, hi) for _ in range(k or rng.randint(3, 8))]


def _pick(i, kinds):
    """The i-th kind, cycling, so each category covers all its kinds rather than what the draws favour."""
    return kinds[i % len(kinds)]


def _out(*lines) -> str:
    return "".join(f"{line}\n" for line in lines)


# Each maker returns (steps, reference, expected). Wording variants are picked with the same rng.
def t_literals(rng, i):
    a, = _names(rng, 1)
    kind = _pick(i, ["ints", "floats", "words", "nested", "tuple", "dict"])
    if kind == "ints":
        v = _ints(rng)
    elif kind == "floats":
        v = [round(rng.uniform(-9, 9), 2) for _ in range(rng.randint(2, 6))]
    elif kind == "words":
        v = rng.sample(WORDS, rng.randint(2, 5))
    elif kind == "nested":
        v = [_ints(rng, 0, 20, 2) for _ in range(rng.randint(2, 4))]
    elif kind == "tuple":
        v = tuple(_ints(rng, -5, 15, rng.randint(2, 5)))
    else:
        v = {w: rng.randint(1, 50) for w in rng.sample(WORDS, rng.randint(2, 4))}
    first = rng.choice(["Here is a value for {a}: {v}.", "{a} gets {v}.", "Please keep {v} under the name {a}.",
                        "Remember {v} as {a}."]).format(a=a, v=repr(v))
    last = rng.choice(["Now print {a}.", "Show me what {a} holds.", "Echo {a} to the output."]).format(a=a)
    return [first, last], [f"{a} = {v!r}", f"print({a})"], _out(v)


def t_arithmetic(rng, i):
    a, b, c = _names(rng, 3)
    x, y = rng.randint(-40, 90), rng.choice([i for i in range(-9, 13) if i != 0])
    op = _pick(i, ["+", "-", "*", "//", "%", ">", "<="])
    word = {"+": "the sum of {a} and {b}", "-": "{a} minus {b}", "*": "the product of {a} and {b}",
            "//": "{a} floor-divided by {b}", "%": "what is left when {a} is divided by {b} (the modulo)",
            ">": "whether {a} exceeds {b}", "<=": "whether {a} is no bigger than {b}"}[op].format(a=a, b=b)
    value = {"+": x + y, "-": x - y, "*": x * y, "//": x // y, "%": x % y, ">": x > y, "<=": x <= y}[op]
    steps = [rng.choice(["{a} starts out as {x}, {b} as {y}.", "Two numbers: {a} is {x} and {b} is {y}."]).format(
                 a=a, b=b, x=x, y=y),
             f"Work out {word} and keep it as {c}.",
             rng.choice(["Display {c}.", "Let me see {c}."]).format(c=c)]
    return steps, [f"{a} = {x}\n{b} = {y}", f"{c} = {a} {op} {b}", f"print({c})"], _out(value)


def t_lists(rng, i):
    a, b = _names(rng, 2)
    v = _ints(rng)
    op = _pick(i, ["sorted_desc", "rev", "len", "sum", "min", "dedup", "slice", "append"])
    if op == "sorted_desc":
        phrase, code, val = "{a}, ordered from biggest to smallest,", "sorted({a}, reverse=True)", sorted(v, reverse=True)
    elif op == "rev":
        phrase, code, val = "{a} back to front", "{a}[::-1]", v[::-1]
    elif op == "len":
        phrase, code, val = "the count of items in {a}", "len({a})", len(v)
    elif op == "sum":
        phrase, code, val = "the total of {a}", "sum({a})", sum(v)
    elif op == "min":
        phrase, code, val = "the lowest entry of {a}", "min({a})", min(v)
    elif op == "dedup":
        v = v + [v[0], v[-1]]
        phrase, code, val = "the distinct values of {a} in increasing order", "sorted(set({a}))", sorted(set(v))
    elif op == "slice":
        phrase, code, val = "everything in {a} except its first element", "{a}[1:]", v[1:]
    else:
        n = rng.randint(-9, 9)
        steps = [f"Build the list {a} = {v}.", f"Tack {n} onto the end of {a}.", f"Print {a}."]
        return steps, [f"{a} = {v!r}", f"{a}.append({n})", f"print({a})"], _out(v + [n])
    steps = [rng.choice(["Build the list {a} = {v}.", "My list {a} is {v}.", "Start from {a}, which is {v}."]).format(
                 a=a, v=v),
             f"Put {phrase.format(a=a)} into {b}.", f"Print {b}."]
    return steps, [f"{a} = {v!r}", f"{b} = {code.format(a=a)}", f"print({b})"], _out(val)


def t_strings(rng, i):
    a, b = _names(rng, 2)
    text = " ".join(rng.sample(WORDS, rng.randint(2, 3)))
    op = _pick(i, ["upper", "title", "words", "rev", "count", "replace", "fstring"])
    if op == "upper":
        phrase, code, val = "{a} shouting (all capitals)", "{a}.upper()", text.upper()
    elif op == "title":
        phrase, code, val = "{a} with every word capitalised", "{a}.title()", text.title()
    elif op == "words":
        phrase, code, val = "the number of words in {a}", "len({a}.split())", len(text.split())
    elif op == "rev":
        phrase, code, val = "{a} written right to left", "{a}[::-1]", text[::-1]
    elif op == "count":
        ch = rng.choice(sorted(set(text.replace(" ", ""))))
        phrase, code, val = f"how often '{ch}' shows up in {{a}}", f"{{a}}.count('{ch}')", text.count(ch)
    elif op == "replace":
        phrase, code, val = "{a} with underscores in place of spaces", "{a}.replace(' ', '_')", text.replace(" ", "_")
    else:
        n = rng.randint(2, 99)
        code = f"f'<{{{a}}}> x{n}'"
        val = f"<{text}> x{n}"
        steps = [f"Take the phrase '{text}' and name it {a}.", f"Put the text '<' + {a} + '> x{n}', made with an f-string, into {b}.",
                 f"Print {b}."]
        return steps, [f"{a} = {text!r}", f"{b} = {code}", f"print({b})"], _out(val)
    steps = [rng.choice(["Take the phrase '{t}' and name it {a}.", "{a} is the text '{t}'."]).format(t=text, a=a),
             f"Put {phrase.format(a=a)} into {b}.", rng.choice(["Print {b}.", "Show {b}."]).format(b=b)]
    return steps, [f"{a} = {text!r}", f"{b} = {code.format(a=a)}", f"print({b})"], _out(val)


def t_dicts(rng, i):
    a, b = _names(rng, 2)
    keys = rng.sample(WORDS, rng.randint(2, 4))
    d = {k: rng.randint(-10, 80) for k in keys}
    op = _pick(i, ["get", "set", "len", "values", "keys_sorted", "has"])
    first = rng.choice(["The mapping {a} is {d}.", "Set up the dictionary {a} as {d}."]).format(a=a, d=d)
    if op == "get":
        k = rng.choice(keys)
        return [first, f"Fetch the entry for '{k}' from {a} and print it."], \
            [f"{a} = {d!r}", f"print({a}[{k!r}])"], _out(d[k])
    if op == "set":
        k, n = rng.choice(keys), rng.randint(100, 200)
        d2 = dict(d, **{k: n})
        return [first, f"Change the entry '{k}' of {a} to {n}.", f"Print {a}."], \
            [f"{a} = {d!r}", f"{a}[{k!r}] = {n}", f"print({a})"], _out(d2)
    if op == "len":
        return [first, f"How many keys does {a} have? Print it."], [f"{a} = {d!r}", f"print(len({a}))"], _out(len(d))
    if op == "values":
        return [first, f"Gather the numbers stored in {a} into a list {b}.", f"Print {b}."], \
            [f"{a} = {d!r}", f"{b} = list({a}.values())", f"print({b})"], _out(list(d.values()))
    if op == "keys_sorted":
        return [first, f"Print the keys of {a} alphabetically, as a list."], \
            [f"{a} = {d!r}", f"print(sorted({a}))"], _out(sorted(d))
    k = rng.choice(WORDS)
    return [first, f"Does {a} contain the key '{k}'? Print True or False."], \
        [f"{a} = {d!r}", f"print({k!r} in {a})"], _out(k in d)


def t_loops(rng, i):
    a, b = _names(rng, 2)
    v = _ints(rng, -9, 30)
    op = _pick(i, ["each", "acc", "comp", "count", "range"])
    if op == "each":
        k = rng.randint(2, 5)
        return [f"Let {a} hold {v}.", f"For every item of {a}, print the item plus {k}."], \
            [f"{a} = {v!r}", f"for item in {a}:\n    print(item + {k})"], _out(*[x + k for x in v])
    if op == "acc":
        return [f"Let {a} hold {v}.", f"Set {b} to 0 and then, in a for loop, add each item of {a} that is odd.",
                f"Print {b}."], \
            [f"{a} = {v!r}", f"{b} = 0\nfor item in {a}:\n    if item % 2 != 0:\n        {b} += item", f"print({b})"], \
            _out(sum(x for x in v if x % 2 != 0))
    if op == "comp":
        return [f"Let {a} hold {v}.", f"With a comprehension, make {b}: every item of {a} times three.", f"Print {b}."], \
            [f"{a} = {v!r}", f"{b} = [item * 3 for item in {a}]", f"print({b})"], _out([x * 3 for x in v])
    if op == "count":
        t = rng.randint(0, 15)
        return [f"Let {a} hold {v}.", f"Loop through {a} counting the items bigger than {t}; call the count {b}.",
                f"Print {b}."], \
            [f"{a} = {v!r}", f"{b} = 0\nfor item in {a}:\n    if item > {t}:\n        {b} += 1", f"print({b})"], \
            _out(sum(1 for x in v if x > t))
    lo, hi = rng.randint(-5, 5), rng.randint(6, 12)
    return [f"Go from {lo} up to {hi} (inclusive) and print each number doubled.", "Afterwards print 'done'."], \
        [f"for i in range({lo}, {hi} + 1):\n    print(i * 2)", "print('done')"], _out(*[i * 2 for i in range(lo, hi + 1)], "done")


def t_functions(rng, i):
    f = rng.choice(["tweak", "bump", "mangle", "scale_up", "blend"])
    x, y = rng.randint(-20, 40), rng.randint(1, 9)
    op = _pick(i, ["expr", "cond", "loop"])
    if op == "expr":
        return [f"Write {f}(u, w) which gives back u * 2 + w.", f"Show the value of {f}({x}, {y})."], \
            [f"def {f}(u, w):\n    return u * 2 + w", f"print({f}({x}, {y}))"], _out(x * 2 + y)
    if op == "cond":
        return [f"Write {f}(u) which gives back 'big' when u is over 10 and 'small' otherwise.",
                f"Show {f}({x}) and {f}({y}) on separate lines."], \
            [f"def {f}(u):\n    if u > 10:\n        return 'big'\n    return 'small'", f"print({f}({x}))\nprint({f}({y}))"], \
            _out("big" if x > 10 else "small", "big" if y > 10 else "small")
    v = _ints(rng, -9, 9)
    return [f"Write {f}(seq) which loops over seq and gives back the sum of the squares of its items.",
            f"Keep {v} in a variable called sample.", f"Show {f}(sample)."], \
        [f"def {f}(seq):\n    total = 0\n    for item in seq:\n        total += item * item\n    return total",
         f"sample = {v!r}", f"print({f}(sample))"], _out(sum(i * i for i in v))


def _np_ints(v) -> str:
    """How numpy prints a short 1-D int array: every entry right-aligned to the widest one."""
    width = max((len(str(i)) for i in v), default=0)
    return "[" + " ".join(str(i).rjust(width) for i in v) + "]"


def t_numpy(rng, i):
    a, b = _names(rng, 2)
    v = _ints(rng, -9, 40)
    op = _pick(i, ["max", "sum", "plus", "filter", "len"])
    first = rng.choice(["Turn {v} into a numpy array {a}.", "With np.array, make {a} from {v}."]).format(a=a, v=v)
    if op == "max":
        return [first, f"Show the greatest entry of {a}."], [f"{a} = np.array({v!r})", f"print({a}.max())"], _out(max(v))
    if op == "sum":
        return [first, f"Show the total of all entries of {a}."], [f"{a} = np.array({v!r})", f"print({a}.sum())"], _out(sum(v))
    if op == "len":
        return [first, f"Show the size of {a}."], [f"{a} = np.array({v!r})", f"print({a}.size)"], _out(len(v))
    if op == "plus":
        w = [i + 100 for i in v]
        return [first, f"Add 100 to every entry of {a} and call the result {b}.", f"Show {b}."], \
            [f"{a} = np.array({v!r})", f"{b} = {a} + 100", f"print({b})"], _out(_np_ints(w))
    shown = _np_ints([i for i in v if i >= 0])
    return [first, f"Select the non-negative entries of {a} into {b}.", f"Show {b}."], \
        [f"{a} = np.array({v!r})", f"{b} = {a}[{a} >= 0]", f"print({b})"], _out(shown)


MAKERS = {"literals": t_literals, "arithmetic": t_arithmetic, "lists": t_lists, "strings": t_strings,
          "dicts": t_dicts, "loops": t_loops, "functions": t_functions, "numpy": t_numpy}


def build() -> list[dict]:
    """All tasks: hand-written first (ids hand-<category>-NN), then template ones (tpl-<category>-NN)."""
    tasks, seen = [], {}
    for cat, steps, ref, expected in HAND:
        seen[cat] = seen.get(cat, 0) + 1
        tasks.append({"id": f"hand-{cat}-{seen[cat]:02d}", "category": cat, "source": "hand", "steps": steps,
                      "reference": ref, "expected": expected})
    rng = random.Random(SEED)
    for cat in CATEGORIES:
        done, tries = set(), 0
        while len(done) < PER_CATEGORY:
            steps, ref, expected = MAKERS[cat](rng, len(done) + tries)
            if tuple(steps) in done:  # a repeat draw: skip it so every task is distinct
                tries += 1
                continue
            done.add(tuple(steps))
            tasks.append({"id": f"tpl-{cat}-{len(done):02d}", "category": cat, "source": "template", "steps": steps,
                          "reference": ref, "expected": expected})
    return tasks


def main() -> None:
    out = HERE / "step_tasks.jsonl"
    tasks = build()
    out.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    print(f"wrote {len(tasks)} tasks to {out}")


if __name__ == "__main__":
    main()
