"""A generator of verified multi-turn step programs for convsynth-tiny (written for this project; no benchmark text).

Each program is laid out exactly as a ``convsynth.Session`` writes it: the MTPB preamble, then per step the
instruction as ``# comment`` lines, the step's code and blank lines. Steps build on each other: assign literals
copied from the instruction to the names it gives, transform them (arithmetic, list, string, dict, numpy, loops,
small functions) and print results.

Every program is executed before it is used, and kept only if it runs and prints exactly what the generator
computed independently for it (``expected``), so no wrong program ever trains the model (``verify``).

Wordings are compositional: an operation has several verb phrases ("Sort {S}", "Put {S} in order") and noun
phrases ("the sorted version of {S}"), combined with many ways to name a destination ("and store it in {D}",
"Let {D} be ...") or to print; variables are referred to in several styles. Every operation has well over 10
wordings. The held-out evaluation suite (``evals/``) was written separately and shares none of these templates.

    python scripts/tiny_steps.py --n 5 --seed 0     # print a few programs
"""
from __future__ import annotations

import builtins
import contextlib
import io
import itertools
import json
import keyword
import random
import re
import string
from pathlib import Path

import numpy as np

from convsynth.turns import MTPB_PREAMBLE

GENERATOR_VERSION = 7
PREAMBLE = MTPB_PREAMBLE  # the layout a Session writes

NOUNS = ("numbers nums values data items scores counts prices ages temps grades points marks totals sizes weights "
         "heights lengths amounts costs readings samples results ratings speeds votes xs ys digits primes odds "
         "evens squares row col vals arr lst seq series sales profits losses steps days hours minutes seconds "
         "apples coins balls cards pages levels rounds goals wins laps miles").split()
SNAMES = ("text word name msg message greeting sentence line phrase title label city color fruit animal s t "
          "first last country language day month song book user password code key token sentence_a").split()
SCALARS = ("x y z a b c n m k total count result value answer num price age score limit size width height "
           "length speed rate bonus factor base power amount big small diff ratio avg mean top low high").split()
DICTN = ("ages prices stock scores inventory counts grades menu capitals phonebook colors population "
         "d info person config settings record").split()
FUNCN = ("add square double triple is_even is_odd is_positive greet area cube half total_of count_up "
         "combine multiply subtract maximum minimum average shout whisper first_letter last_item".split())
WORDS = ("apple banana cherry grape lemon mango peach pear plum kiwi melon orange lime red green blue yellow "
         "purple black white cat dog bird fish horse mouse lion tiger bear wolf sun moon star sky sea river "
         "lake hill tree rock sand snow rain wind fire stone paper book pen desk door car bus train ship road "
         "city town house garden hello world python code data happy quick lazy brown fox jumps over the").split()
CITIES = "Paris London Rome Tokyo Berlin Madrid Oslo Cairo Lima Delhi Seoul Vienna Dublin Prague Athens".split()
PEOPLE = "Alice Bob Carol Dave Eve Frank Grace Heidi Ivan Judy Mallory Oscar Peggy Trent Victor Wendy Zoe".split()



def _open_vocabulary() -> tuple[list[str], list[str]]:
    """Every plain English-looking word the tokenizer has as one token (" lantern", " Nepal"): lower-case ones for
    names and string words, capitalised ones for proper names. Without them the model only ever sees the ~300
    hand-listed words above, its output layer never learns the other rows, and it cannot copy a name such as
    `inbox` from an instruction (v2 could produce none of 163 such tokens in the evaluation suite's references)."""
    vocab = json.loads((Path(__file__).resolve().parents[1] / "convsynth" / "models" / "convsynth-tiny" /
                        "tokenizer.json").read_text())["model"]["vocab"]
    taken = set(dir(builtins)) | set(keyword.kwlist) | {"np", "numpy", "self", "cls"}
    # Sorted by token id: BPE merges come in order of frequency, so a low id is a common word (v4 draws by it).
    words = sorted((t[1:] for t in vocab if t[:1] == "\u0120" and t[1:].isascii() and t[1:].isalpha()
                    and 3 <= len(t) - 1 <= 10), key=lambda w: vocab["\u0120" + w])
    lower = [w for w in words if w.islower() and w not in taken]
    upper = [w for w in words if w[0].isupper() and w[1:].islower()]
    return lower, upper


OPEN_LOWER, OPEN_UPPER = _open_vocabulary()
OPEN_P = 0.45  # how often a name or a string word comes from the open vocabulary rather than the lists above
PSEUDO_P = 0.15  # how often a string word is a non-word (v4)


def _zipf(words: list[str], s: float = 0.8) -> list[float]:
    """Cumulative weights for drawing words by rank: v3 drew uniformly from ~17k words, so each was seen about five
    times and the model learnt to spell none of them (a name in an instruction is one token, " lantern"; in code
    it is others, "lan" "tern"). v4 draws common words far more often (weights (rank + 50)**-0.8: the top 2,000
    take half the draws) so the mapping is learnt for the words people use as names, and rare ones still appear."""
    return list(itertools.accumulate((r + 50) ** -s for r in range(len(words))))


_CUM_LOWER, _CUM_UPPER = _zipf(OPEN_LOWER), _zipf(OPEN_UPPER)


def _draw(rng, words: list[str], cum: list[float]) -> str:
    return rng.choices(words, cum_weights=cum)[0]


def _open_lower(rng) -> str:
    return _draw(rng, OPEN_LOWER, _CUM_LOWER)


# v5: names from the middle of the frequency ranking, drawn far flatter than _zipf. Phase 6 copied a name from
# an instruction 19 times in 20 among the 500 commonest words, 12 in 20 at ranks 500-2,000, 6 at 2,000-5,000 and
# never beyond (name_copy in scripts/eval_tiny.py); the evaluation suite's names spread across all those ranks.
BAND = (150, 9000)
BAND_WORDS = OPEN_LOWER[BAND[0]:BAND[1]]
_CUM_BAND = list(itertools.accumulate((r + 1500) ** -0.7 for r in range(len(BAND_WORDS))))
NAME_DRILL_P = 0.22  # share of programs that are name drills (v5)
VERBS_FN = "get make compute find count scale check to calc sum total apply convert double".split()


def band_name(rng) -> str:
    """A variable name from the middle band: one word, or two joined by an underscore."""
    w = _draw(rng, BAND_WORDS, _CUM_BAND)
    return f"{w}_{_draw(rng, BAND_WORDS, _CUM_BAND)}" if rng.random() < 0.12 else w


def pseudo_word(rng) -> str:
    """A pronounceable non-word ("vobek"): a string literal made of these can only be copied token by token, the
    skill v3's model lacked (it wrote 'bananaApril' for 'banana bandana': the first word copied, the rest made up)."""
    cons, vow = "bcdfghjklmnprstvwz", "aeiou"
    return "".join(rng.choice(cons) + rng.choice(vow) for _ in range(rng.randint(1, 3))) + rng.choice(["", "", cons])


def open_name(rng) -> str:
    """A variable name made of open-vocabulary words (lantern, lantern_count, harbor2)."""
    w = _open_lower(rng)
    r = rng.random()
    if r < 0.15:
        return f"{w}_{_open_lower(rng)}"
    if r < 0.22:
        return f"{w}{rng.randint(1, 9)}"
    return w


def open_word(rng) -> str:
    return _draw(rng, OPEN_UPPER, _CUM_UPPER) if rng.random() < 0.25 else _open_lower(rng)


def some_words(rng, k: int, pool: list[str]) -> list[str]:
    """k distinct words, from the open vocabulary as often as OPEN_P."""
    out: list[str] = []
    while len(out) < k:
        w = open_word(rng) if rng.random() < OPEN_P else rng.choice(pool)
        if w not in out:
            out.append(w)
    return out

# ------------------------------------------------------------------------------------------ wording helpers
def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def ref(rng, name: str, kind: str) -> str:
    """One way to mention an existing variable in an instruction."""
    r = rng.random()
    if r < 0.45:
        return name
    if r < 0.6:
        return f"`{name}`"
    if r < 0.72:
        return f'"{name}"'
    if r < 0.9:
        return f"the {kind} {name}"
    return f"the variable {name}"


def dref(rng, name: str) -> str:
    """One way to name a destination variable."""
    r = rng.random()
    if r < 0.5:
        return name
    if r < 0.62:
        return f"`{name}`"
    if r < 0.72:
        return f'"{name}"'
    # (not "a variable named ...": with "and assign the result to" that would repeat an MTPB phrase)
    return rng.choice([f"a variable called {name}", f"a fresh variable {name}", f"the variable {name}",
                       f"a variable {name}"])


STORE_SUFFIX = ["and store it in {D}", "and store the result in {D}", "and save it as {D}", "and assign it to {D}",
                "and call it {D}", "and put it in {D}", "and keep the result in {D}", ", storing the result in {D}",
                "into {D}", "as {D}", "and save the result in {D}", "and name the result {D}",
                "and assign the result to {D}", "; store it in {D}"]
STORE_NOUN = ["Store {N} in {D}", "Save {N} as {D}", "Let {D} be {N}", "Set {D} to {N}", "Assign {N} to {D}",
              "Create {D} equal to {N}", "Make {D} hold {N}", "Put {N} into {D}", "Compute {N} and store it in {D}",
              "Calculate {N} and save it in {D}", "{D} should be {N}", "Define {D} as {N}", "Get {N} as {D}",
              "Find {N} and call it {D}"]
PRINT_NOUN = ["Print {N}", "Display {N}", "Show {N}", "Output {N}", "Print out {N}", "Print {N} to the screen",
              "Show me {N}", "Write out {N}", "Print the value of {N}", "Report {N}", "Log {N} to the console",
              "Compute and print {N}", "Find and print {N}", "Calculate and display {N}"]
PRINT_VERB = ["{V} and print it", "{V} and print the result", "{V} and display it", "{V} and show the result",
              "{V}, then print it", "{V} and output the result", "{V} and print the answer"]
PRINT_VAR = ["Print {S}", "Display {S}", "Show {S}", "Output {S}", "Print out {S}", "Print the value of {S}",
             "Show the contents of {S}", "Print {S} to the screen", "Write {S} to the console", "Show me {S}",
             "Display the value of {S}", "Print the variable {S}", "Now print {S}", "Finally, print {S}",
             "Print what {S} holds", "Echo {S}"]
LEADS = ["", "", "", "", "", "Now ", "Then ", "Next, ", "Please ", "Now, ", "After that, "]


NAME_FIRST = re.compile(r"[a-z_][A-Za-z0-9_]* (=|is|holds|should) ")


def finish(rng, s: str) -> str:
    """Sentence ending and an optional lead-in; leads are lower-cased where they join."""
    if NAME_FIRST.match(s):  # "total should be ...", "lantern is [...]": a name keeps its case, no lead-in
        return s + rng.choice([".", ".", ""]) if not s.endswith((".", "?", "!")) else s
    lead = rng.choice(LEADS)
    if lead and not s.startswith(("the ", "`", '"', "a ")) and " = " not in s:
        s = lead + s[:1].lower() + s[1:] if not s[:2].isupper() and not s.startswith("`") else lead + s
    s = cap(s)
    return s + rng.choice([".", ".", ".", "", "!"]) if not s.endswith((".", "?", "!")) else s


# ------------------------------------------------------------------------------------------------- literals
def lit_int(rng) -> int:
    r = rng.random()
    return rng.randint(-50, -1) if r < 0.12 else rng.randint(0, 20) if r < 0.5 else rng.randint(21, 999)


def lit_float(rng) -> float:
    return round(rng.uniform(-20, 100), rng.choice([1, 1, 2]))


def lit_word(rng, cap_ok: bool = True) -> str:
    if rng.random() < PSEUDO_P:
        return pseudo_word(rng)
    if rng.random() < OPEN_P:
        return open_word(rng) if cap_ok else _open_lower(rng)
    return rng.choice(WORDS + CITIES + PEOPLE if cap_ok else WORDS)


def lit_str(rng) -> str:
    n = rng.choice([1, 1, 2, 2, 3, 3, 4, 5])
    s = " ".join(lit_word(rng) for _ in range(n))
    r = rng.random()
    if r < 0.15:
        s = s.title()
    elif r < 0.22:
        s = s.upper()
    elif r < 0.3:
        s = "  " + s + "  "
    return s


def pyrepr(v, quote: str = '"') -> str:
    """repr() with a chosen quote character for strings (instructions and code must agree exactly)."""
    if isinstance(v, str):
        return quote + v + quote
    if isinstance(v, list):
        return "[" + ", ".join(pyrepr(x, quote) for x in v) + "]"
    if isinstance(v, tuple):
        return "(" + ", ".join(pyrepr(x, quote) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{pyrepr(k, quote)}: {pyrepr(x, quote)}" for k, x in v.items()) + "}"
    if isinstance(v, set):
        return "{" + ", ".join(pyrepr(x, quote) for x in sorted(v)) + "}"
    return repr(v)


def words_list(vals) -> str:
    """3, 1 and 4 (a list spelled out in words)."""
    parts = [str(v) for v in vals]
    return ", ".join(parts[:-1]) + rng_and(parts[-1])


def rng_and(last: str) -> str:
    return " and " + last


class Program:
    """Steps so far, the simulated variables, and the output the program must print."""

    def __init__(self):
        self.steps: list[tuple[str, str]] = []
        self.vars: dict[str, object] = {}
        self.kinds: dict[str, str] = {}
        self.out = io.StringIO()
        self.last: str | None = None
        self.band = False  # a name drill: fresh names come from the middle band (v5)

    def fresh(self, rng, pool) -> str:
        for _ in range(50):
            n = band_name(rng) if self.band and rng.random() < 0.9 else \
                open_name(rng) if rng.random() < OPEN_P else rng.choice(pool)
            if n not in self.vars:
                return n
        return rng.choice(pool) + str(rng.randint(2, 9))

    def add(self, instr: str, code: str, name: str | None = None, value=None, kind: str | None = None):
        self.steps.append((instr, code))
        if name is not None:
            self.vars[name], self.kinds[name] = value, kind
            self.last = name

    def emit(self, *values):
        print(*values, file=self.out)

    def of(self, kind: str) -> list[str]:
        return [n for n, k in self.kinds.items() if k == kind]


# --------------------------------------------------------------------------------------- literal assignment
def assign_literal(rng, p: Program, kind: str) -> str:
    quote = rng.choice(['"', '"', "'"])
    if kind == "list":
        pool, vals = NOUNS, [lit_int(rng) for _ in range(rng.randint(2, 9))]
        if rng.random() < 0.25:
            vals = [rng.randint(0, 9) for _ in range(rng.randint(3, 9))]
        noun = rng.choice(["the list", "the list", "the numbers", "the values", "a list of", "the integers", ""])
    elif kind == "flist":
        pool, vals = NOUNS, [lit_float(rng) for _ in range(rng.randint(2, 6))]
        noun = rng.choice(["the list", "the values", "the floats", "the numbers", ""])
    elif kind == "slist":
        pool, vals = ["words", "names", "fruits", "colors", "animals", "cities", "items", "tags", "labels",
                      "pets", "friends", "letters", "parts", "tokens"], \
            [lit_word(rng) for _ in range(rng.randint(2, 6))]
        noun = rng.choice(["the list", "the words", "the strings", "the names", "the list of strings", ""])
    elif kind == "str":
        pool, vals = SNAMES, lit_str(rng)
        noun = rng.choice(["the string", "the string", "the text", "the word", "the value", "the sentence", ""])
    elif kind == "int":
        pool, vals = SCALARS, lit_int(rng)
        noun = rng.choice(["the number", "the integer", "the value", ""])
    elif kind == "float":
        pool, vals = SCALARS, lit_float(rng)
        noun = rng.choice(["the number", "the float", "the value", ""])
    elif kind == "dict":
        pool = DICTN
        keys = some_words(rng, rng.randint(2, 5), WORDS + PEOPLE + CITIES)
        vals = {k: lit_int(rng) for k in keys}
        noun = rng.choice(["the dictionary", "the dict", "the mapping", ""])
    elif kind == "tuple":
        pool, vals = ["point", "pair", "coords", "triple", "t", "pos", "rgb", "dims", "size", "corner"], \
            tuple(lit_int(rng) for _ in range(rng.randint(2, 4)))
        noun = rng.choice(["the tuple", "the tuple", "the point", ""])
    elif kind == "set":
        pool, vals = ["unique", "seen", "tags", "ids", "colors", "s", "group", "bag"], \
            set(rng.randint(0, 30) for _ in range(rng.randint(2, 6)))
        noun = rng.choice(["the set", "the set", ""])
    elif kind == "nested":
        pool = ["matrix", "grid", "table", "rows", "board", "pairs", "m"]
        c = rng.randint(2, 3)
        vals = [[lit_int(rng) % 20 for _ in range(c)] for _ in range(rng.randint(2, 3))]
        noun = rng.choice(["the nested list", "the matrix", "the list of lists", "the grid", ""])
    else:
        raise ValueError(kind)
    name = p.fresh(rng, pool)
    lit = pyrepr(vals, quote)
    spoken = lit
    if kind in ("list", "flist") and rng.random() < 0.2 and len(vals) > 1:
        spoken = words_list(vals)
        noun = rng.choice(["the numbers", "the values"])
    what = f"{noun} {spoken}".strip()
    d = dref(rng, name)
    tmpl = rng.choice([
        "Assign {W} to {D}", "Create {D} with {W}", "Set {D} to {W}", "Let {D} be {W}", "Store {W} in {D}",
        "Define {D} as {W}", "Make a variable {N} that holds {W}", "Initialize {D} with {W}",
        "Save {W} in {D}", "Put {W} into {D}", "Create a variable named {N} containing {W}",
        "{D} = {L}", "Define a variable {N} equal to {W}", "Create {D} and set it to {W}",
        "Declare {D} with the value {L}", "Give {D} the value {L}", "Start with {D} = {L}",
        "Write {W} to a variable {N}", "Keep {W} in {D}", "Use {D} for {W}",
        # v3: declarative and conversational forms, where the literal follows the name
        "Here is {D}: {L}", "{D} holds {W}", "{D} is {W}", "The value of {N} is {L}", "Record {W} as {D}",
        "Remember {W} as {D}", "We have {W}; call it {N}", "Name {W} {N}", "Take {W} and call it {N}",
        "Our data: {N} = {L}", "Suppose {N} is {L}", "Given {W}, store it as {D}", "Begin with {W} in {D}",
        "Put the value {L} in {D}", "Have {D} refer to {W}", "Use {L} as the value of {N}",
    ])
    instr = tmpl.format(W=what, D=d, N=name, L=lit)
    p.add(finish(rng, instr), f"{name} = {lit}", name, vals, kind)
    return name


# ------------------------------------------------------------------------------------------------ operations
# An operation: the kind of its input, verb phrases (V), noun phrases (N), the expression, the function that
# computes the value independently, the kind of the result, and an optional in-place form.
# {S} is the input as mentioned in the text, {src} in code; {K}/{k} a parameter.
OPS: list[dict] = []


def op(kind, verbs, nouns, expr, fn, out, k=None, inplace=None, reject=None):
    OPS.append(dict(kind=kind, verbs=verbs, nouns=nouns, expr=expr, fn=fn, out=out, k=k, inplace=inplace,
                    reject=reject))


NUMERIC = ("list", "flist")
for kind in NUMERIC:
    op(kind, ["Compute the sum of {S}", "Sum up {S}", "Add up the numbers in {S}", "Calculate the total of {S}",
              "Find the sum of the elements of {S}", "Get the sum of all values in {S}", "Total {S}"],
       ["the sum of {S}", "the total of {S}", "the sum of the elements in {S}", "the sum of all numbers in {S}"],
       "sum({src})", lambda v, k: sum(v), "num")
    op(kind, ["Find the largest value in {S}", "Get the maximum of {S}", "Find the biggest number in {S}",
              "Compute the max of {S}", "Take the highest element of {S}", "Look up the largest element in {S}"],
       ["the largest value in {S}", "the maximum of {S}", "the max of {S}", "the biggest element of {S}",
        "the highest value in {S}", "the largest number in {S}"],
       "max({src})", lambda v, k: max(v), "num")
    op(kind, ["Find the smallest value in {S}", "Get the minimum of {S}", "Find the lowest number in {S}",
              "Compute the min of {S}", "Take the smallest element of {S}"],
       ["the smallest value in {S}", "the minimum of {S}", "the min of {S}", "the lowest element of {S}",
        "the smallest number in {S}"],
       "min({src})", lambda v, k: min(v), "num")
    op(kind, ["Sort {S}", "Sort {S} in ascending order", "Put {S} in increasing order", "Order {S} from smallest "
              "to largest", "Arrange {S} in ascending order", "Sort the elements of {S}"],
       ["the sorted version of {S}", "{S} sorted", "{S} in ascending order", "a sorted copy of {S}",
        "the elements of {S} sorted from low to high"],
       "sorted({src})", lambda v, k: sorted(v), kind, inplace="{src}.sort()")
    op(kind, ["Sort {S} in descending order", "Sort {S} from largest to smallest", "Order {S} from high to low",
              "Sort {S} in reverse order", "Arrange {S} in decreasing order"],
       ["{S} sorted in descending order", "{S} from largest to smallest", "a copy of {S} sorted high to low",
        "{S} in decreasing order"],
       "sorted({src}, reverse=True)", lambda v, k: sorted(v, reverse=True), kind,
       inplace="{src}.sort(reverse=True)")
    op(kind, ["Reverse {S}", "Reverse the order of {S}", "Flip {S}", "Turn {S} around", "Invert the order of {S}"],
       ["{S} reversed", "the reverse of {S}", "{S} in reverse order", "a reversed copy of {S}"],
       "{src}[::-1]", lambda v, k: v[::-1], kind, inplace="{src}.reverse()")
    op(kind, ["Count the elements of {S}", "Find the length of {S}", "Count how many values are in {S}",
              "Get the number of items in {S}", "Compute the size of {S}"],
       ["the length of {S}", "the number of elements in {S}", "how many items {S} has", "the size of {S}",
        "the count of values in {S}"],
       "len({src})", lambda v, k: len(v), "num")
    op(kind, ["Compute the average of {S}", "Find the mean of {S}", "Calculate the mean value of {S}",
              "Average the numbers in {S}"],
       ["the average of {S}", "the mean of {S}", "the mean value of {S}", "the arithmetic mean of {S}"],
       "sum({src}) / len({src})", lambda v, k: sum(v) / len(v), "num")
    op(kind, ["Double every element of {S}", "Multiply each element of {S} by 2", "Double the values in {S}",
              "Make a list with each value of {S} doubled"],
       ["{S} with every element doubled", "each element of {S} times 2", "the doubled values of {S}"],
       "[x * 2 for x in {src}]", lambda v, k: [x * 2 for x in v], kind)
    op(kind, ["Square each element of {S}", "Square every number in {S}", "Compute the square of each value in {S}",
              "Raise every element of {S} to the power 2"],
       ["the squares of the elements of {S}", "each element of {S} squared", "the squared values of {S}"],
       "[x ** 2 for x in {src}]", lambda v, k: [x ** 2 for x in v], kind)
    op(kind, ["Add {K} to every element of {S}", "Increase each value in {S} by {K}", "Add {K} to each number in {S}",
              "Shift every element of {S} up by {K}"],
       ["{S} with {K} added to each element", "each value of {S} plus {K}", "every element of {S} increased by {K}"],
       "[x + {k} for x in {src}]", lambda v, k: [x + k for x in v], kind, k="int")
    op(kind, ["Multiply every element of {S} by {K}", "Scale each value in {S} by {K}",
              "Multiply each number in {S} by {K}"],
       ["each element of {S} times {K}", "{S} scaled by {K}", "every value in {S} multiplied by {K}"],
       "[x * {k} for x in {src}]", lambda v, k: [x * k for x in v], kind, k="small")
    op(kind, ["Keep only the elements of {S} that are greater than {K}", "Filter {S} to the values above {K}",
              "Select the numbers in {S} bigger than {K}", "Remove the elements of {S} that are not greater than {K}"],
       ["the elements of {S} greater than {K}", "the values in {S} above {K}", "the numbers in {S} larger than {K}"],
       "[x for x in {src} if x > {k}]", lambda v, k: [x for x in v if x > k], kind, k="mid")
    op(kind, ["Keep only the elements of {S} that are less than {K}", "Filter {S} to the values below {K}",
              "Select the numbers in {S} smaller than {K}"],
       ["the elements of {S} less than {K}", "the values in {S} below {K}", "the numbers in {S} smaller than {K}"],
       "[x for x in {src} if x < {k}]", lambda v, k: [x for x in v if x < k], kind, k="mid")
    op(kind, ["Get the first element of {S}", "Take the first item of {S}", "Look up the first value in {S}"],
       ["the first element of {S}", "the first item in {S}", "the first value of {S}", "{S}'s first element"],
       "{src}[0]", lambda v, k: v[0], "num")
    op(kind, ["Get the last element of {S}", "Take the last item of {S}", "Look up the final value in {S}"],
       ["the last element of {S}", "the last item in {S}", "the final value of {S}", "{S}'s last element"],
       "{src}[-1]", lambda v, k: v[-1], "num")
    op(kind, ["Take the first {K} elements of {S}", "Slice the first {K} items of {S}", "Get the first {K} values of {S}"],
       ["the first {K} elements of {S}", "the first {K} items of {S}", "the first {K} values in {S}"],
       "{src}[:{k}]", lambda v, k: v[:k], kind, k="len")
    op(kind, ["Take the last {K} elements of {S}", "Slice the last {K} items of {S}", "Get the last {K} values of {S}"],
       ["the last {K} elements of {S}", "the last {K} items of {S}", "the final {K} values in {S}"],
       "{src}[-{k}:]", lambda v, k: v[-k:], kind, k="len")
    op(kind, ["Get the element at index {K} of {S}", "Look up index {K} in {S}", "Take the item at position {K} of {S}"],
       ["the element at index {K} of {S}", "the item at position {K} in {S}", "{S}[{K}]", "the value at index {K} in {S}"],
       "{src}[{k}]", lambda v, k: v[k], "num", k="idx")
for kind in ("list",):
    op(kind, ["Keep only the even numbers of {S}", "Filter the even values out of {S}", "Select the even elements of {S}",
              "Get the even numbers in {S}"],
       ["the even numbers in {S}", "the even elements of {S}", "the values of {S} that are even"],
       "[x for x in {src} if x % 2 == 0]", lambda v, k: [x for x in v if x % 2 == 0], kind)
    op(kind, ["Keep only the odd numbers of {S}", "Select the odd elements of {S}", "Get the odd values in {S}"],
       ["the odd numbers in {S}", "the odd elements of {S}", "the values of {S} that are odd"],
       "[x for x in {src} if x % 2 == 1]", lambda v, k: [x for x in v if x % 2 == 1], kind)
    op(kind, ["Remove duplicates from {S}", "Drop the repeated values of {S}", "Deduplicate {S}",
              "Get the unique values of {S}"],
       ["{S} without duplicates", "the unique values of {S}", "the distinct elements of {S}"],
       "list(dict.fromkeys({src}))", lambda v, k: list(dict.fromkeys(v)), kind)
    op(kind, ["Count how many times {K} appears in {S}", "Count the occurrences of {K} in {S}",
              "Find how often {K} occurs in {S}"],
       ["the number of times {K} appears in {S}", "the count of {K} in {S}", "how many times {K} occurs in {S}"],
       "{src}.count({k})", lambda v, k: v.count(k), "num", k="member")
    op(kind, ["Find the index of {K} in {S}", "Get the position of {K} in {S}", "Look up where {K} is in {S}"],
       ["the index of {K} in {S}", "the position of {K} in {S}", "the first index of {K} in {S}"],
       "{src}.index({k})", lambda v, k: v.index(k), "num", k="member")
    op(kind, ["Convert {S} to a numpy array", "Turn {S} into a numpy array", "Make a numpy array from {S}"],
       ["{S} as a numpy array", "a numpy array of {S}", "np.array({S})"],
       "np.array({src})", lambda v, k: np.array(v), "array")

# strings
op("str", ["Convert {S} to upper case", "Uppercase {S}", "Make {S} all capitals", "Turn {S} into upper case",
           "Change {S} to uppercase letters"],
   ["{S} in upper case", "the uppercase version of {S}", "{S} in capital letters", "{S} uppercased"],
   "{src}.upper()", lambda v, k: v.upper(), "str")
op("str", ["Convert {S} to lower case", "Lowercase {S}", "Make {S} all small letters", "Turn {S} into lower case"],
   ["{S} in lower case", "the lowercase version of {S}", "{S} lowercased"],
   "{src}.lower()", lambda v, k: v.lower(), "str")
op("str", ["Capitalize each word of {S}", "Convert {S} to title case", "Make {S} title case"],
   ["{S} in title case", "the title-cased version of {S}"], "{src}.title()", lambda v, k: v.title(), "str")
op("str", ["Strip the whitespace from {S}", "Remove the leading and trailing spaces of {S}", "Trim {S}"],
   ["{S} without surrounding spaces", "{S} stripped", "the trimmed version of {S}"],
   "{src}.strip()", lambda v, k: v.strip(), "str")
op("str", ["Reverse {S}", "Reverse the string {S}", "Write {S} backwards", "Flip the characters of {S}"],
   ["{S} reversed", "{S} written backwards", "the reverse of {S}"],
   "{src}[::-1]", lambda v, k: v[::-1], "str")
op("str", ["Split {S} into words", "Break {S} into a list of words", "Split {S} on whitespace"],
   ["the words of {S}", "the list of words in {S}", "{S} split into words"],
   "{src}.split()", lambda v, k: v.split(), "slist")
op("str", ["Count the characters in {S}", "Find the length of {S}", "Get the number of characters of {S}"],
   ["the length of {S}", "the number of characters in {S}", "how many characters {S} has"],
   "len({src})", lambda v, k: len(v), "num")
op("str", ["Count how many times the letter {K} occurs in {S}", "Count the occurrences of {K} in {S}"],
   ["the number of times {K} appears in {S}", "the count of {K} in {S}"],
   "{src}.count({k})", lambda v, k: v.count(k[1:-1]), "num", k="char")
op("str", ["Replace {K} with {K2} in {S}", "Swap every {K} in {S} for {K2}", "Substitute {K2} for {K} in {S}"],
   ["{S} with {K} replaced by {K2}", "{S} after replacing {K} with {K2}"],
   "{src}.replace({k}, {k2})", lambda v, k: v.replace(k[0][1:-1], k[1][1:-1]), "str", k="char2")
op("str", ["Get the first character of {S}", "Take the first letter of {S}"],
   ["the first character of {S}", "the first letter of {S}"], "{src}[0]", lambda v, k: v[0], "str")
op("str", ["Check whether {S} starts with {K}", "Test if {S} begins with {K}"],
   ["whether {S} starts with {K}", "if {S} begins with {K}"],
   "{src}.startswith({k})", lambda v, k: v.startswith(k[1:-1]), "bool", k="prefix")
op("str", ["Check whether {K} is in {S}", "Test if {S} contains {K}"],
   ["whether {S} contains {K}", "if {K} occurs in {S}"],
   "{k} in {src}", lambda v, k: k[1:-1] in v, "bool", k="char")
op("slist", ["Join {S} with spaces", "Join the words of {S} into one string separated by spaces",
             "Combine {S} into a single string with spaces"],
   ["the words of {S} joined by spaces", "{S} joined with spaces", "the elements of {S} joined into one string"],
   '" ".join({src})', lambda v, k: " ".join(v), "str")
op("slist", ["Join {S} with commas", "Join {S} into a string separated by {K}", "Glue the strings of {S} together with {K}"],
   ["{S} joined by {K}", "the elements of {S} joined with {K}"],
   "{k}.join({src})", lambda v, k: k[1:-1].join(v), "str", k="sep")
op("slist", ["Sort {S} alphabetically", "Sort {S}", "Put {S} in alphabetical order"],
   ["{S} in alphabetical order", "{S} sorted", "the sorted version of {S}"],
   "sorted({src})", lambda v, k: sorted(v), "slist", inplace="{src}.sort()")
op("slist", ["Convert every string in {S} to upper case", "Uppercase each word in {S}", "Make each item of {S} uppercase"],
   ["each word of {S} in upper case", "{S} with every string uppercased"],
   "[w.upper() for w in {src}]", lambda v, k: [w.upper() for w in v], "slist")
op("slist", ["Find the longest string in {S}", "Get the longest word of {S}"],
   ["the longest string in {S}", "the longest word in {S}"], "max({src}, key=len)",
   lambda v, k: max(v, key=len), "str")
op("slist", ["Compute the length of each string in {S}", "Get the length of every word in {S}"],
   ["the lengths of the words in {S}", "the length of each string in {S}"], "[len(w) for w in {src}]",
   lambda v, k: [len(w) for w in v], "list")
op("slist", ["Count the strings in {S}", "Find how many words {S} has"],
   ["the number of strings in {S}", "how many words {S} has"], "len({src})", lambda v, k: len(v), "num")
op("slist", ["Reverse {S}", "Reverse the order of {S}"], ["{S} reversed", "{S} in reverse order"],
   "{src}[::-1]", lambda v, k: v[::-1], "slist", inplace="{src}.reverse()")

# numbers
for kind in ("int", "float"):
    op(kind, ["Multiply {S} by {K}", "Compute {S} times {K}", "Scale {S} by {K}"],
       ["{S} times {K}", "{S} multiplied by {K}", "the product of {S} and {K}"], "{src} * {k}",
       lambda v, k: v * k, kind, k="small")
    op(kind, ["Add {K} to {S}", "Increase {S} by {K}", "Compute {S} plus {K}"],
       ["{S} plus {K}", "the sum of {S} and {K}", "{S} increased by {K}"], "{src} + {k}", lambda v, k: v + k, kind,
       k="int")
    op(kind, ["Subtract {K} from {S}", "Decrease {S} by {K}", "Compute {S} minus {K}"],
       ["{S} minus {K}", "{S} decreased by {K}", "the difference of {S} and {K}"], "{src} - {k}",
       lambda v, k: v - k, kind, k="int")
    op(kind, ["Square {S}", "Compute the square of {S}", "Raise {S} to the power of 2"],
       ["the square of {S}", "{S} squared", "{S} to the power 2"], "{src} ** 2", lambda v, k: v ** 2, kind)
    op(kind, ["Take the absolute value of {S}", "Compute the absolute value of {S}"],
       ["the absolute value of {S}", "abs({S})"], "abs({src})", lambda v, k: abs(v), kind)
    op(kind, ["Check whether {S} is greater than {K}", "Test if {S} is bigger than {K}", "Compare {S} with {K}"],
       ["whether {S} is greater than {K}", "if {S} exceeds {K}", "the result of {S} > {K}"], "{src} > {k}",
       lambda v, k: v > k, "bool", k="int")
    op(kind, ["Divide {S} by {K}", "Compute {S} divided by {K}"],
       ["{S} divided by {K}", "the quotient of {S} and {K}"], "{src} / {k}", lambda v, k: v / k, "float", k="small")
op("int", ["Compute {S} modulo {K}", "Find the remainder of {S} divided by {K}", "Take {S} mod {K}"],
   ["the remainder of {S} divided by {K}", "{S} modulo {K}", "{S} mod {K}"], "{src} % {k}", lambda v, k: v % k,
   "int", k="small")
op("int", ["Integer-divide {S} by {K}", "Compute the floor division of {S} by {K}"],
   ["{S} floor-divided by {K}", "the integer quotient of {S} and {K}"], "{src} // {k}", lambda v, k: v // k,
   "int", k="small")
op("int", ["Check whether {S} is even", "Test if {S} is an even number", "Determine whether {S} is even"],
   ["whether {S} is even", "if {S} is even"], "{src} % 2 == 0", lambda v, k: v % 2 == 0, "bool")
op("int", ["Convert {S} to a string", "Make {S} a string"], ["{S} as a string", "the string form of {S}"],
   "str({src})", lambda v, k: str(v), "str")
op("float", ["Round {S} to {K} decimal places", "Round {S} to {K} digits"],
   ["{S} rounded to {K} decimals", "{S} rounded to {K} places"], "round({src}, {k})",
   lambda v, k: round(v, k), "float", k="digits")
op("float", ["Round {S} to the nearest integer", "Round {S}"], ["{S} rounded", "{S} rounded to an integer"],
   "round({src})", lambda v, k: round(v), "int")

# dicts
op("dict", ["Get the value for key {K} in {S}", "Look up {K} in {S}", "Read the entry {K} of {S}"],
   ["the value of {K} in {S}", "{S}[{K}]", "the entry for {K} in {S}"], "{src}[{k}]", lambda v, k: v[k[1:-1]],
   "num", k="key")
op("dict", ["Get the keys of {S} as a list", "List the keys of {S}", "Collect the keys of {S} into a list"],
   ["the keys of {S}", "a list of the keys in {S}"], "list({src}.keys())", lambda v, k: list(v.keys()), "slist")
op("dict", ["Get the values of {S} as a list", "List the values of {S}"],
   ["the values of {S}", "a list of the values in {S}"], "list({src}.values())", lambda v, k: list(v.values()), "list")
op("dict", ["Sum the values of {S}", "Add up all the values in {S}", "Compute the total of the values of {S}"],
   ["the sum of the values in {S}", "the total of {S}'s values"], "sum({src}.values())",
   lambda v, k: sum(v.values()), "num")
op("dict", ["Count the entries of {S}", "Find how many keys {S} has"], ["the number of entries in {S}",
   "how many keys {S} has", "the size of {S}"], "len({src})", lambda v, k: len(v), "num")
op("dict", ["Check whether {K} is a key of {S}", "Test if {S} has the key {K}"],
   ["whether {K} is in {S}", "if {S} contains the key {K}"], "{k} in {src}", lambda v, k: k[1:-1] in v, "bool",
   k="keyish")
op("dict", ["Find the key of {S} with the largest value", "Get the key whose value is highest in {S}"],
   ["the key with the largest value in {S}", "the key of the maximum value in {S}"], "max({src}, key={src}.get)",
   lambda v, k: max(v, key=v.get), "str")
op("dict", ["Sort the keys of {S}", "Get the keys of {S} in alphabetical order"],
   ["the sorted keys of {S}", "the keys of {S} in order"], "sorted({src})", lambda v, k: sorted(v), "slist")

# tuples, sets, nested lists
op("tuple", ["Get the first element of {S}", "Take the first item of {S}"], ["the first element of {S}",
   "the first item of {S}"], "{src}[0]", lambda v, k: v[0], "num")
op("tuple", ["Sum the elements of {S}", "Add up {S}"], ["the sum of {S}", "the total of {S}"], "sum({src})",
   lambda v, k: sum(v), "num")
op("tuple", ["Convert {S} to a list", "Turn {S} into a list"], ["{S} as a list", "a list made from {S}"],
   "list({src})", lambda v, k: list(v), "list")
op("tuple", ["Count the elements of {S}", "Find the length of {S}"], ["the length of {S}", "the size of {S}"],
   "len({src})", lambda v, k: len(v), "num")
op("set", ["Get the size of {S}", "Count the elements of {S}"], ["the size of {S}", "the number of elements in {S}"],
   "len({src})", lambda v, k: len(v), "num")
op("set", ["Sort {S} into a list", "Turn {S} into a sorted list"], ["{S} as a sorted list", "the sorted elements of {S}"],
   "sorted({src})", lambda v, k: sorted(v), "list")
op("set", ["Check whether {K} is in {S}", "Test if {S} contains {K}"], ["whether {K} is in {S}",
   "if {S} contains {K}"], "{k} in {src}", lambda v, k: k in v, "bool", k="member")
op("nested", ["Get the first row of {S}", "Take the first inner list of {S}"], ["the first row of {S}",
   "the first inner list of {S}"], "{src}[0]", lambda v, k: v[0], "list")
op("nested", ["Flatten {S} into one list", "Flatten {S}"], ["{S} flattened", "all elements of {S} in one list"],
   "[x for row in {src} for x in row]", lambda v, k: [x for r in v for x in r], "list")
op("nested", ["Sum every row of {S}", "Compute the sum of each row of {S}"], ["the row sums of {S}",
   "the sum of each row of {S}"], "[sum(row) for row in {src}]", lambda v, k: [sum(r) for r in v], "list")
op("nested", ["Count the rows of {S}", "Find how many rows {S} has"], ["the number of rows in {S}",
   "how many rows {S} has"], "len({src})", lambda v, k: len(v), "num")

# numpy arrays
op("array", ["Compute the mean of the array {S}", "Average {S} with numpy", "Find the mean of {S}"],
   ["the mean of {S}", "the average of {S}", "np.mean({S})"], "np.mean({src})", lambda v, k: np.mean(v), "float")
op("array", ["Sum the array {S}", "Compute the total of {S} with numpy"], ["the sum of {S}", "np.sum({S})"],
   "np.sum({src})", lambda v, k: np.sum(v), "num")
op("array", ["Find the maximum of {S}", "Get the largest value of the array {S}"], ["the max of {S}",
   "the largest value in {S}"], "np.max({src})", lambda v, k: np.max(v), "num")
op("array", ["Multiply the array {S} by {K}", "Scale {S} by {K}"], ["{S} times {K}", "{S} multiplied by {K}"],
   "{src} * {k}", lambda v, k: v * k, "array", k="small")
op("array", ["Compute the standard deviation of {S}", "Get the std of {S}"], ["the standard deviation of {S}",
   "np.std({S})"], "np.std({src})", lambda v, k: np.std(v), "float")
op("array", ["Keep the values of {S} greater than {K}", "Select the entries of {S} above {K}"],
   ["the entries of {S} greater than {K}", "the values of {S} above {K}"], "{src}[{src} > {k}]",
   lambda v, k: v[v > k], "array", k="mid")
op("array", ["Take the square root of every element of {S}", "Compute np.sqrt of {S}"],
   ["the square roots of {S}", "np.sqrt({S})"], "np.sqrt({src})", lambda v, k: np.sqrt(v), "farray",
   reject=lambda v: bool((v < 0).any()))


# v7: small counts and factors are sometimes spoken as words ("the first three items", "multiply by four"), as
# people write them; the code keeps the digit. No earlier version wrote a number in words, and phase 8 answered
# such steps with an index (`letters[0]` for the first three items).
NUMBER_WORDS = "zero one two three four five six seven eight nine ten".split()
NUMBER_WORD_P = 0.3


def pick_k(rng, spec, v):
    """A parameter for an operation, as (text in the instruction, code, value), or None when none fits."""
    if spec is None:
        return "", "", None
    if spec == "int":
        k = rng.randint(1, 20)
    elif spec == "small":
        k = rng.randint(2, 9)
    elif spec == "digits":
        k = rng.randint(1, 2)
    elif spec == "mid":
        vals = list(np.ravel(v)) if not isinstance(v, (int, float)) else [v]
        k = int(sorted(vals)[len(vals) // 2]) if vals else 0
    elif spec == "len":
        if len(v) < 2:
            return None
        k = rng.randint(1, len(v) - 1)
    elif spec == "idx":
        k = rng.randint(0, len(v) - 1)
    elif spec == "member":
        k = rng.choice(sorted(v)) if isinstance(v, set) else rng.choice(v)
    elif spec in ("char", "prefix"):
        letters = [c for c in v if c.isalpha()]
        if not letters:
            return None
        c = rng.choice(letters) if spec == "char" else v.strip()[:rng.randint(1, 3)]
        if not c or (spec == "prefix" and rng.random() < 0.3):
            c = rng.choice(string.ascii_lowercase)
        q = rng.choice(['"', "'"])
        return f"{q}{c}{q}", f"{q}{c}{q}", f"{q}{c}{q}"
    elif spec == "char2":
        letters = [c for c in v if c.isalpha()]
        if not letters:
            return None
        a, b = rng.choice(letters), rng.choice(string.ascii_lowercase + "-_*")
        q = rng.choice(['"', "'"])
        return (f"{q}{a}{q}", f"{q}{b}{q}"), (f"{q}{a}{q}", f"{q}{b}{q}"), (f"{q}{a}{q}", f"{q}{b}{q}")
    elif spec == "sep":
        s = rng.choice([", ", "-", "+", " | ", ";", "/", "_"])
        return f'"{s}"', f'"{s}"', f'"{s}"'
    elif spec in ("key", "keyish"):
        key = rng.choice(list(v)) if spec == "key" or rng.random() < 0.6 else rng.choice(WORDS)
        q = rng.choice(['"', "'"])
        return f"{q}{key}{q}", f"{q}{key}{q}", f"{q}{key}{q}"
    else:
        raise ValueError(spec)
    if spec in ("small", "len") and k <= 10 and rng.random() < NUMBER_WORD_P:
        return NUMBER_WORDS[k], str(k), k
    return str(k), str(k), k


# v6: a result named after its operation and input, as people name them (sorted_numbers, max_value, upper_text).
# v5's names never began with a builtin's name (the open vocabulary leaves out sorted, max, sum), and phase 7 wrote
# prices_numbers for the demo's sorted_numbers.
RESULT_PREFIX = [("sorted(", ["sorted"]), (".sort(", ["sorted"]), ("max(", ["max", "largest", "biggest"]),
                 ("min(", ["min", "smallest"]), ("sum(", ["sum", "total"]), ("len(", ["len", "num", "count"]),
                 ("[::-1]", ["reversed"]), ("reversed(", ["reversed"]), (".upper()", ["upper"]),
                 (".lower()", ["lower"]), ("set(", ["unique"]), ("abs(", ["abs"]), ("round(", ["rounded"]),
                 (".split(", ["split", "parts"]), (".join(", ["joined"]), (".strip()", ["stripped", "clean"]),
                 (".replace(", ["replaced", "new"]), (".count(", ["count", "num"]), ("np.mean(", ["mean", "avg"])]


def result_name(rng, expr: str, src: str) -> str | None:
    """A name for the result of ``expr`` on ``src`` made of the operation and the input or a plain noun."""
    for needle, words in RESULT_PREFIX:
        if needle in expr:
            tail = src if rng.random() < 0.7 else rng.choice(["value", "result"])
            name = f"{rng.choice(words)}_{tail}"
            return None if name.count("_") > 2 else name
    return None


def apply_op(rng, p: Program, name: str, final_print: bool) -> str | None:
    """Apply a random operation that fits the variable; store (or print) the result. Returns the new name."""
    kind = p.kinds[name]
    cands = [o for o in OPS if o["kind"] == kind]
    if not cands:
        return None
    o = rng.choice(cands)
    v = p.vars[name]
    if hasattr(v, "__len__") and len(v) == 0:  # nothing to work on (an earlier filter kept nothing)
        return None
    kk = pick_k(rng, o["k"], v)
    if kk is None:
        return None
    ktext, kcode, kval = kk
    try:
        with np.errstate(all="raise"):
            value = o["fn"](v, kval)
    except (ValueError, ZeroDivisionError, IndexError, KeyError, TypeError, FloatingPointError):
        return None
    if o["reject"] is not None and o["reject"](v):
        return None
    S = ref(rng, name, {"list": "list", "flist": "list", "slist": "list", "str": "string", "int": "number",
                        "float": "number", "dict": "dictionary", "tuple": "tuple", "set": "set",
                        "nested": "list", "array": "array"}.get(kind, "variable"))
    fmt = dict(S=S, K=ktext[0] if isinstance(ktext, tuple) else ktext, K2=ktext[1] if isinstance(ktext, tuple) else "")
    kc = dict(k=kcode[0] if isinstance(kcode, tuple) else kcode, k2=kcode[1] if isinstance(kcode, tuple) else "")
    expr = o["expr"].format(src=name, **kc)
    r = rng.random()
    if final_print and r < 0.6:  # print the result directly
        if rng.random() < 0.5:
            instr = rng.choice(PRINT_NOUN).format(N=rng.choice(o["nouns"]).format(**fmt))
        else:
            instr = rng.choice(PRINT_VERB).format(V=rng.choice(o["verbs"]).format(**fmt))
        p.add(finish(rng, instr), f"print({expr})")
        p.emit(value)
        return None
    if o["inplace"] and r < 0.85 and rng.random() < 0.35:  # change the variable in place
        verb = rng.choice(o["verbs"]).format(**fmt)
        instr = verb + rng.choice(["", " in place", " in place", ", modifying it directly", " (in place)"])
        p.add(finish(rng, instr), o["inplace"].format(src=name), name, value, o["out"] if o["out"] != "num" else kind)
        return name
    dst = p.fresh(rng, {"num": SCALARS, "int": SCALARS, "float": SCALARS, "bool": ["flag", "ok", "found", "check",
                        "is_big", "answer", "result", "has_it", "test"], "str": SNAMES}.get(o["out"], NOUNS))
    named = result_name(rng, expr, name)
    if named is not None and named not in p.vars and rng.random() < 0.35:
        dst = named
    D = dref(rng, dst)
    if rng.random() < 0.5:
        instr = rng.choice(o["verbs"]).format(**fmt) + " " + rng.choice(STORE_SUFFIX).format(D=D)
        instr = instr.replace(" ,", ",").replace(" ;", ";")
    else:
        instr = rng.choice(STORE_NOUN).format(N=rng.choice(o["nouns"]).format(**fmt), D=D)
    out_kind = o["out"]
    if out_kind == "num":
        out_kind = "float" if isinstance(value, float) else "int" if isinstance(value, (int, np.integer)) else "other"
    elif out_kind == "farray":
        out_kind = "array"
    p.add(finish(rng, instr), f"{dst} = {expr}", dst, value, out_kind)
    return dst


def print_two(rng, p: Program, a: str, b: str):
    """One print of two variables (a second top-level print would end the step under the codegen stop)."""
    A, B = ref(rng, a, "variable"), ref(rng, b, "variable")
    instr = rng.choice(["Print {A} and {B}", "Display {A} and {B}", "Show {A} and {B} together",
                        "Print {A} and {B} on one line", "Output both {A} and {B}", "Print {A} followed by {B}"]
                       ).format(A=A, B=B)
    p.add(finish(rng, instr), f"print({a}, {b})")
    p.emit(p.vars[a], p.vars[b])


def print_var(rng, p: Program, name: str):
    kind = {"str": "string", "dict": "dictionary", "int": "number", "float": "number"}.get(p.kinds[name], "list")
    instr = rng.choice(PRINT_VAR).format(S=ref(rng, name, kind))
    if p.last == name and rng.random() < 0.15:
        instr = rng.choice(["Print the result", "Print it", "Show the result", "Display the result"])
    p.add(finish(rng, instr), f"print({name})")
    p.emit(p.vars[name])


# ------------------------------------------------------------------------------ combined and special programs
def two_lists(rng, p: Program):
    a = assign_literal(rng, p, "list")
    b = assign_literal(rng, p, "list")
    dst = p.fresh(rng, NOUNS)
    A, B, D = ref(rng, a, "list"), ref(rng, b, "list"), dref(rng, dst)
    choice = rng.random()
    if choice < 0.5:
        instr = rng.choice(["Concatenate {A} and {B} into {D}", "Join {A} and {B} into one list {D}",
                            "Combine {A} with {B} and store it in {D}", "Append the elements of {B} to {A} as {D}",
                            "Let {D} be {A} followed by {B}", "Merge {A} and {B} into {D}"]).format(A=A, B=B, D=D)
        p.add(finish(rng, instr), f"{dst} = {a} + {b}", dst, p.vars[a] + p.vars[b], "list")
    else:
        instr = rng.choice(["Extend {A} with {B}", "Add all elements of {B} to the end of {A}",
                            "Append every item of {B} to {A}"]).format(A=A, B=B)
        p.add(finish(rng, instr), f"{a}.extend({b})", a, p.vars[a] + p.vars[b], "list")
        dst = a
    return dst


def append_step(rng, p: Program, name: str):
    v = p.vars[name]
    x = lit_int(rng) if p.kinds[name] == "list" else lit_word(rng)
    q = rng.choice(['"', "'"])
    lit = pyrepr(x, q)
    instr = rng.choice(["Append {X} to {S}", "Add {X} to the end of {S}", "Push {X} onto {S}",
                        "Add the value {X} to {S}", "Put {X} at the end of {S}"]).format(X=lit, S=ref(rng, name, "list"))
    p.add(finish(rng, instr), f"{name}.append({lit})", name, v + [x], p.kinds[name])


def dict_set_step(rng, p: Program, name: str):
    v = dict(p.vars[name])
    key = some_words(rng, 1, WORDS + PEOPLE)[0]
    val = lit_int(rng)
    q = rng.choice(['"', "'"])
    instr = rng.choice(["Set the value of {K} in {S} to {V}", "Add the key {K} with value {V} to {S}",
                        "Store {V} under {K} in {S}", "Update {S} so that {K} maps to {V}"]).format(
        K=f"{q}{key}{q}", V=val, S=ref(rng, name, "dictionary"))
    v[key] = val
    p.add(finish(rng, instr), f"{name}[{q}{key}{q}] = {val}", name, v, "dict")


TWO_AT_ONCE = ["Let {a} = {x} and {b} = {y}", "Set {a} to {x} and {b} to {y}", "{a} is {x} and {b} is {y}",
               "Create {a} = {x} and {b} = {y}", "Assign {x} to {a} and {y} to {b}", "{a} = {x}, {b} = {y}",
               "Give {a} the value {x} and {b} the value {y}", "Start with {a} at {x} and {b} at {y}",
               "Define two numbers: {a} is {x}, {b} is {y}", "Store {x} in {a} and {y} in {b}",
               "Make {a} equal to {x} and {b} equal to {y}", "Initialize {a} to {x} and {b} to {y}"]


def assign_two(rng, p: Program, kind_a: str, kind_b: str) -> tuple[str, str]:
    """Two numbers assigned in one step ("Let width = 7.5 and height = 4"): two lines of code."""
    a = p.fresh(rng, SCALARS)
    b = p.fresh(rng, SCALARS)
    while b == a:
        b = p.fresh(rng, SCALARS)
    x = lit_int(rng) if kind_a == "int" else lit_float(rng)
    y = lit_int(rng) if kind_b == "int" else lit_float(rng)
    instr = rng.choice(TWO_AT_ONCE).format(a=a, b=b, x=x, y=y)
    p.add(finish(rng, instr), f"{a} = {x!r}\n{b} = {y!r}")
    p.vars[a], p.kinds[a] = x, kind_a
    p.vars[b], p.kinds[b] = y, kind_b
    p.last = b
    return a, b


def numbers_pair(rng, p: Program):
    kind = rng.choice(["int", "int", "float"])
    if rng.random() < 0.35:
        a, b = assign_two(rng, p, kind, rng.choice(["int", kind]))
    else:
        a, b = assign_literal(rng, p, kind), assign_literal(rng, p, rng.choice(["int", kind]))
    va, vb = p.vars[a], p.vars[b]
    ops = [("+", ["the sum of {A} and {B}", "{A} plus {B}"], ["Add {A} and {B}", "Add {B} to {A}"], va + vb),
           ("-", ["the difference of {A} and {B}", "{A} minus {B}"], ["Subtract {B} from {A}"], va - vb),
           ("*", ["the product of {A} and {B}", "{A} times {B}"], ["Multiply {A} by {B}", "Multiply {A} and {B}"],
            va * vb),
           (">", ["whether {A} is greater than {B}"], ["Check if {A} is greater than {B}"], va > vb),
           ("==", ["whether {A} equals {B}"], ["Check whether {A} is equal to {B}"], va == vb)]
    if vb != 0:
        ops.append(("/", ["{A} divided by {B}", "the quotient of {A} and {B}"], ["Divide {A} by {B}"], va / vb))
    sym, nouns, verbs, value = rng.choice(ops)
    A, B = ref(rng, a, "number"), ref(rng, b, "number")
    expr = f"{a} {sym} {b}"
    if rng.random() < 0.5:
        instr = rng.choice(PRINT_NOUN).format(N=rng.choice(nouns).format(A=A, B=B))
        p.add(finish(rng, instr), f"print({expr})")
        p.emit(value)
        return
    dst = p.fresh(rng, SCALARS)
    D = dref(rng, dst)
    instr = rng.choice(STORE_NOUN).format(N=rng.choice(nouns).format(A=A, B=B), D=D) if rng.random() < 0.5 else \
        rng.choice(verbs).format(A=A, B=B) + " " + rng.choice(STORE_SUFFIX).format(D=D)
    p.add(finish(rng, instr.replace(" ,", ",")), f"{dst} = {expr}", dst, value, "bool" if sym in "><==" else "num")
    print_var(rng, p, dst)


FUNCS = [  # (name pool, params, wordings, body, python function, argument kinds)
    (["add", "plus", "add_numbers", "total"], "a, b", ["returns the sum of {P}", "adds {P} together",
     "returns {a} plus {b}", "gives back {a} + {b}"], "return a + b", lambda a, b: a + b, "ii"),
    (["multiply", "times", "product", "mul"], "a, b", ["returns the product of {P}", "multiplies {P}",
     "returns {a} times {b}"], "return a * b", lambda a, b: a * b, "ii"),
    (["subtract", "minus", "difference"], "a, b", ["returns {a} minus {b}", "subtracts {b} from {a}",
     "returns the difference of {P}"], "return a - b", lambda a, b: a - b, "ii"),
    (["square", "sq", "squared"], "x", ["returns the square of {P}", "squares {P}", "returns {P} squared",
     "returns {P} times itself"], "return x * x", lambda x: x * x, "i"),
    (["double", "twice", "times_two"], "x", ["returns {P} doubled", "returns twice {P}", "doubles {P}",
     "multiplies {P} by 2"], "return x * 2", lambda x: x * 2, "i"),
    (["cube", "cubed"], "x", ["returns the cube of {P}", "returns {P} to the power 3"], "return x ** 3",
     lambda x: x ** 3, "i"),
    (["is_even", "even", "check_even"], "n", ["returns True if {P} is even", "checks whether {P} is even",
     "tells if {P} is even"], "return n % 2 == 0", lambda n: n % 2 == 0, "i"),
    (["is_positive", "positive"], "n", ["returns True if {P} is positive", "checks whether {P} is greater than 0"],
     "return n > 0", lambda n: n > 0, "i"),
    (["maximum", "bigger", "larger", "max_of"], "a, b", ["returns the larger of {P}", "returns the bigger of {P}",
     "gives the maximum of {P}"], "return a if a > b else b", lambda a, b: a if a > b else b, "ii"),
    (["greet", "hello", "say_hello"], "name", ["returns a greeting for {P}", "returns 'Hello, ' followed by {P}"],
     'return "Hello, " + name', lambda s: "Hello, " + s, "s"),
    (["shout", "loud", "yell"], "s", ["returns {P} in upper case", "returns {P} uppercased"], "return s.upper()",
     lambda s: s.upper(), "s"),
    (["reverse", "backwards", "flip"], "s", ["returns {P} reversed", "reverses the string {P}"],
     "return s[::-1]", lambda s: s[::-1], "s"),
    (["factorial", "fact"], "n", ["returns the factorial of {P}", "computes {P}!"],
     "result = 1\n    for i in range(2, n + 1):\n        result *= i\n    return result",
     lambda n: int(np.prod(range(2, n + 1))) if n > 1 else 1, "f"),
    (["sum_to", "total_up_to", "sum_upto"], "n", ["returns the sum of the numbers from 1 to {P}",
     "adds up all integers from 1 to {P}"], "total = 0\n    for i in range(1, n + 1):\n        total += i\n    return total",
     lambda n: sum(range(1, n + 1)), "f"),
    (["count_vowels", "vowels"], "s", ["returns the number of vowels in {P}", "counts the vowels in {P}"],
     'return sum(1 for c in s if c in "aeiou")', lambda s: sum(1 for c in s if c in "aeiou"), "s"),
    (["average", "mean", "avg"], "values", ["returns the average of {P}", "returns the mean of the list {P}"],
     "return sum(values) / len(values)", lambda v: sum(v) / len(v), "l"),
    (["largest", "biggest", "find_max"], "values", ["returns the largest element of {P}",
     "returns the maximum of the list {P}"], "return max(values)", lambda v: max(v), "l"),
]


def function_program(rng, p: Program):
    pool, params, descs, body, fn, argk = rng.choice(FUNCS)
    fname = rng.choice(pool)
    if rng.random() < 0.45:  # v5: a function named by the user (scale_up, fahrenheit), not one of the pool's
        fname = band_name(rng) if rng.random() < 0.6 else f"{rng.choice(VERBS_FN)}_{band_name(rng)}"
    if rng.random() < 0.35:  # v5: and its parameters too (textual renaming: new names are words not in the body)
        for old in params.split(", "):
            new = rng.choice(["x", "n", "s", "a", "b", "c", "u", "w", "k", "seq", "nums", "data"]) \
                if rng.random() < 0.5 else band_name(rng)
            if re.search(rf"\b{re.escape(new)}\b", body + " " + params) or keyword.iskeyword(new):
                continue
            body = re.sub(rf"\b{old}\b", new, body)
            params = re.sub(rf"\b{old}\b", new, params)
    ps = params.split(", ")
    P = " and ".join(ps) if len(ps) > 1 else ps[0]
    desc = rng.choice(descs).format(P=P, a=ps[0], b=ps[-1])
    F = rng.choice([fname, f"`{fname}`", f'"{fname}"'])
    instr = rng.choice(["Define a function {F} that takes {P} and {D}", "Write a function {F}({p}) that {D}",
                        "Create a function {F} which {D}", "Make a function called {F} that {D}",
                        "Define {F}({p}), which {D}", "Write a function named {F} taking {P} that {D}",
                        "Implement {F}({p}) so that it {D}"]).format(F=F, P=P, p=params, D=desc)
    p.add(finish(rng, instr), f"def {fname}({params}):\n    {body}", fname, fn, "func")
    args = []
    for c in argk:
        if c == "i":
            args.append(lit_int(rng) % 60 - rng.randint(0, 10))
        elif c == "f":
            args.append(rng.randint(0, 10))
        elif c == "s":
            args.append(lit_word(rng))
        else:
            args.append([lit_int(rng) for _ in range(rng.randint(2, 6))])
    if argk == "l" and rng.random() < 0.6:
        lst = assign_literal(rng, p, "list")
        argcode, argtext, value = lst, ref(rng, lst, "list"), fn(p.vars[lst])
    else:
        q = rng.choice(['"', "'"])
        argcode = ", ".join(pyrepr(a, q) for a in args)
        argtext = " and ".join(pyrepr(a, q) for a in args)
        value = fn(*args)
    call = f"{fname}({argcode})"
    if rng.random() < 0.5:
        instr = rng.choice(["Call {F} with {A} and print the result", "Print {F}({a})", "Print the result of {F}({a})",
                            "Show what {F} returns for {A}", "Display {F} applied to {A}",
                            "Use {F} on {A} and print what it returns"]).format(F=F, A=argtext, a=argcode)
        p.add(finish(rng, instr), f"print({call})")
        p.emit(value)
        return
    dst = p.fresh(rng, SCALARS)
    instr = rng.choice(["Call {F} with {A} and store the result in {D}", "Set {D} to {F}({a})",
                        "Let {D} be the result of {F} on {A}", "Apply {F} to {A} and save it as {D}",
                        "Store the value of {F}({a}) in {D}"]).format(F=F, A=argtext, a=argcode, D=dref(rng, dst))
    p.add(finish(rng, instr), f"{dst} = {call}", dst, value, "other")
    print_var(rng, p, dst)


def loop_program(rng, p: Program):
    r = rng.random()
    if r < 0.3:
        name = assign_literal(rng, p, rng.choice(["list", "slist"]))
        S = ref(rng, name, "list")
        var = rng.choice(["x", "item", "v", "element", "value"])
        instr = rng.choice(["Print each element of {S} on its own line", "Loop over {S} and print every item",
                            "Use a for loop to print the elements of {S}", "Print every value in {S}, one per line",
                            "Iterate through {S} and print each element"]).format(S=S)
        p.add(finish(rng, instr), f"for {var} in {name}:\n    print({var})")
        for x in p.vars[name]:
            p.emit(x)
    elif r < 0.5:
        name = assign_literal(rng, p, "list")
        S, dst = ref(rng, name, "list"), p.fresh(rng, SCALARS)
        instr = rng.choice(["Use a for loop to add up {S} into {D}", "Loop over {S} and accumulate the total in {D}",
                            "Compute the sum of {S} with a loop, storing it in {D}"]).format(S=S, D=dref(rng, dst))
        p.add(finish(rng, instr), f"{dst} = 0\nfor x in {name}:\n    {dst} += x", dst, sum(p.vars[name]), "int")
        print_var(rng, p, dst)
    elif r < 0.7:
        n = rng.randint(2, 12)
        dst = p.fresh(rng, NOUNS)
        a = rng.choice([0, 1])
        instr = rng.choice(["Create a list {D} of the squares of the numbers from {a} to {n}",
                            "Use a list comprehension to build {D}, the squares of {a} through {n}",
                            "Make {D} contain i squared for i from {a} to {n}"]).format(D=dref(rng, dst), a=a, n=n)
        p.add(finish(rng, instr), f"{dst} = [i ** 2 for i in range({a}, {n + 1})]", dst,
              [i ** 2 for i in range(a, n + 1)], "list")
        print_var(rng, p, dst)
    elif r < 0.85:
        a, b = rng.randint(0, 5), rng.randint(6, 14)
        instr = rng.choice(["Print the numbers from {a} to {b}", "Print every integer from {a} to {b}, one per line",
                            "Use a loop to print {a} through {b}", "Count from {a} to {b} and print each number"]
                           ).format(a=a, b=b)
        p.add(finish(rng, instr), f"for i in range({a}, {b + 1}):\n    print(i)")
        for i in range(a, b + 1):
            p.emit(i)
    else:
        n = rng.randint(3, 20)
        dst = p.fresh(rng, NOUNS)
        instr = rng.choice(["Make a list {D} of the even numbers below {n}",
                            "Build {D}, the even numbers from 0 up to but not including {n}",
                            "Create {D} containing every even number less than {n}"]).format(D=dref(rng, dst), n=n)
        p.add(finish(rng, instr), f"{dst} = [i for i in range({n}) if i % 2 == 0]", dst,
              [i for i in range(n) if i % 2 == 0], "list")
        print_var(rng, p, dst)


def fstring_step(rng, p: Program):
    name = assign_literal(rng, p, rng.choice(["str", "int"]))
    other = assign_literal(rng, p, "int") if rng.random() < 0.4 else None
    w = rng.choice(["Hello", "Hi", "Name", "Total", "Result", "Value", "Score"])
    if other:
        tmpl = f"{w}: {{{name}}} and {{{other}}}"
        value = f"{w}: {p.vars[name]} and {p.vars[other]}"
    else:
        tmpl = f"{w}, {{{name}}}!"
        value = f"{w}, {p.vars[name]}!"
    instr = rng.choice(["Print {T} using an f-string", "Use an f-string to print {T}",
                        "Print the message {T} with an f-string", "Format and print {T} as an f-string"]).format(
        T=f'"{tmpl}"')
    p.add(finish(rng, instr), f'print(f"{tmpl}")')
    p.emit(value)


def numpy_program(rng, p: Program):
    r = rng.random()
    if r < 0.5:
        name = assign_literal(rng, p, "list")
        arr = p.fresh(rng, ["arr", "a", "vec", "v", "array", "np_" + name])
        instr = rng.choice(["Convert {S} to a numpy array called {D}", "Make a numpy array {D} from {S}",
                            "Create {D} as np.array of {S}", "Turn {S} into a numpy array and store it in {D}"]
                           ).format(S=ref(rng, name, "list"), D=dref(rng, arr))
        p.add(finish(rng, instr), f"{arr} = np.array({name})", arr, np.array(p.vars[name]), "array")
    elif r < 0.75:
        n = rng.randint(2, 10)
        arr = p.fresh(rng, ["arr", "a", "r", "seq", "vec"])
        instr = rng.choice(["Create a numpy array {D} of the integers from 0 to {m}", "Let {D} be np.arange({n})",
                            "Use np.arange to make {D} with the numbers 0 to {m}"]).format(D=dref(rng, arr), n=n,
                                                                                           m=n - 1)
        p.add(finish(rng, instr), f"{arr} = np.arange({n})", arr, np.arange(n), "array")
    else:
        vals = [lit_int(rng) % 50 for _ in range(rng.randint(2, 7))]
        arr = p.fresh(rng, ["arr", "a", "vec", "data", "x"])
        lit = pyrepr(vals)
        instr = rng.choice(["Create a numpy array {D} with the values {L}", "Define {D} = np.array({L})",
                            "Make {D} a numpy array of {L}"]).format(D=dref(rng, arr), L=lit)
        p.add(finish(rng, instr), f"{arr} = np.array({lit})", arr, np.array(vals), "array")
    cur = arr
    for _ in range(rng.randint(0, 1)):
        nxt = apply_op(rng, p, cur, final_print=False)
        if nxt is None or p.kinds.get(nxt) != "array":
            break
        cur = nxt
    if apply_op(rng, p, cur, final_print=True) is None and p.out.tell() == 0:
        print_var(rng, p, p.last)


# -------------------------------------------------------------------------------------------------- programs
LITERAL_KINDS = ["list"] * 6 + ["flist"] * 2 + ["slist"] * 3 + ["str"] * 4 + ["int"] * 2 + ["float", "dict", "dict",
                 "tuple", "set", "nested"]


def chain_program(rng, p: Program):
    """Assign a literal, then 0-2 operations, then print (an operation printed directly, or a variable)."""
    kind = rng.choice(LITERAL_KINDS)
    cur = assign_literal(rng, p, kind)
    for _ in range(rng.choice([0, 1, 1, 1, 2])):
        if p.kinds[cur] in ("list", "slist") and rng.random() < 0.15:
            append_step(rng, p, cur)
            continue
        if p.kinds[cur] == "dict" and rng.random() < 0.2:
            dict_set_step(rng, p, cur)
            continue
        nxt = apply_op(rng, p, cur, final_print=False)
        if nxt is not None:
            cur = nxt
    if rng.random() < 0.5 and apply_op(rng, p, cur, final_print=True) is None and p.out.tell() > 0:
        return
    print_var(rng, p, cur)


def name_drill(rng, p: Program):
    """v5: two to five literals assigned to mid-band names, then one or two of them printed: the copy a name needs
    from ' harvest' in an instruction to 'harvest' at the start of a line, drilled where phase 6 failed."""
    p.band = True
    for _ in range(rng.randint(2, 5)):
        assign_literal(rng, p, rng.choice(LITERAL_KINDS))
    named = list(p.kinds)
    if len(named) >= 2 and rng.random() < 0.4:
        print_two(rng, p, *rng.sample(named, 2))
    else:
        print_var(rng, p, rng.choice(named))


def program(rng) -> Program:
    """One random program."""
    p = Program()
    if rng.random() < NAME_DRILL_P:
        name_drill(rng, p)
        return p
    r = rng.random()
    if r < 0.12:  # copy drill: assign one or two literals and print them
        for _ in range(rng.choice([1, 1, 2])):
            n = assign_literal(rng, p, rng.choice(LITERAL_KINDS))
        print_var(rng, p, n)
    elif r < 0.6:
        chain_program(rng, p)
    elif r < 0.67:
        dst = two_lists(rng, p)
        if apply_op(rng, p, dst, final_print=True) is None and p.out.tell() == 0:
            print_var(rng, p, dst)
    elif r < 0.74:
        numbers_pair(rng, p)
    elif r < 0.84:
        function_program(rng, p)
    elif r < 0.92:
        loop_program(rng, p)
    elif r < 0.95:
        fstring_step(rng, p)
    else:
        numpy_program(rng, p)
    if p.out.tell() == 0:
        named = [n for n, k in p.kinds.items() if k != "func"]
        if len(named) >= 2 and rng.random() < 0.3:
            print_two(rng, p, *rng.sample(named[-3:], 2))
        else:
            print_var(rng, p, p.last)
    return p


def render(p: Program, rng) -> tuple[str, list[tuple[int, int]]]:
    """The program in the session layout, with the character spans of code (what the loss is computed on).
    The separator after each step's code varies between one and three blank lines, the layouts a Session
    produces (the codegen stop keeps the newlines it saw before the next comment)."""
    text, spans = PREAMBLE, []
    for instr, code in p.steps:
        text += "".join(f"# {line}\n" for line in instr.split("\n"))
        start = len(text)
        text += code + rng.choice(["\n\n", "\n\n", "\n\n\n", "\n\n\n\n"])
        spans.append((start, len(text)))
    return text, spans


def run_program(text: str) -> str | None:
    """Execute a program in a fresh namespace and return what it printed (None if it raised)."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            exec(compile(text, "<step-program>", "exec"), {"__name__": "__main__"})
    except Exception:
        return None
    return buf.getvalue()


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def mtpb_grams() -> set[tuple[str, ...]]:
    """Every 8-word sequence of the MTPB prompts (placeholders dropped): a generated instruction containing one is
    thrown away, so no benchmark phrase reaches training even when free names happen to complete one."""
    from convsynth import mtpb_check

    grams = set()
    for prob in mtpb_check.load_problems():
        for prompt in prob.prompts:
            w = _words(re.sub(r"\{\w+\}", " ", prompt))
            grams.update(tuple(w[i:i + 8]) for i in range(len(w) - 7))
    return grams


def overlaps(p: Program, grams) -> bool:
    for instr, _ in p.steps:
        w = _words(instr)
        if any(tuple(w[i:i + 8]) in grams for i in range(len(w) - 7)):
            return True
    return False


def generate(seed: int, n: int):
    """Yield (text, code spans, expected output) for n verified programs; rejected ones are counted in stats."""
    rng = random.Random(seed)
    stats = dict(generated=0, rejected=0, mtpb_overlap=0)
    grams = mtpb_grams()
    made = 0
    while made < n:
        p = program(rng)
        if overlaps(p, grams):
            stats["mtpb_overlap"] += 1
            continue
        text, spans = render(p, rng)
        expected = p.out.getvalue()
        stats["generated"] += 1
        if not expected or run_program(text) != expected:
            stats["rejected"] += 1
            continue
        made += 1
        yield text, spans, expected
    generate.stats = stats


def instructions(seed: int, n: int) -> list[str]:
    """The instruction lines of n programs (unverified: for checks on wording, such as MTPB overlap)."""
    rng, grams = random.Random(seed), mtpb_grams()
    progs = (program(rng) for _ in range(n))
    return [instr for p in progs if not overlaps(p, grams) for instr, _ in p.steps]


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    for text, spans, out in generate(a.seed, a.n):
        print(text + "---- prints:\n" + out + "=" * 60)
    print(generate.stats)
