"""The fixed prompt list for evaluating convsynth-tiny (scripts/eval_tiny.py).

Written for this project by hand. None of these strings is in the training corpus verbatim: the templated part of
the corpus (scripts/tiny_templates.py) uses other function names and phrasings for several of the same simple
tasks, so treat the function prompts as "in distribution" for a toy, not as a benchmark.
"""
from __future__ import annotations

from convsynth.turns import MTPB_PREAMBLE

PREAMBLE = MTPB_PREAMBLE  # the layout a Session writes

# (name, prompt). Function prompts: a signature with a docstring (or a bare signature).
FUNCTIONS = [
    ("add", "def add(a, b):\n"),
    ("add_doc", 'def add(a, b):\n    """Return the sum of a and b."""\n'),
    ("sub", 'def sub(a, b):\n    """Return a minus b."""\n'),
    ("mul", 'def mul(x, y):\n    """Multiply x by y."""\n'),
    ("square", 'def square(n):\n    """Return n squared."""\n'),
    ("is_even", 'def is_even(n):\n    """Return True if n is even, else False."""\n'),
    ("maximum", 'def maximum(values):\n    """Return the largest value in the list."""\n'),
    ("reverse_string", 'def reverse_string(s):\n    """Return the string s reversed."""\n'),
    ("count_words", 'def count_words(text):\n    """Return the number of words in text."""\n'),
    ("mean", 'def mean(numbers):\n    """Return the arithmetic mean of a list of numbers."""\n'),
    ("factorial", 'def factorial(n):\n    """Return n! for a non-negative integer n."""\n'),
    ("fibonacci", 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'),
    ("is_palindrome", 'def is_palindrome(word):\n    """Check whether word reads the same backwards."""\n'),
    ("filter_positive", 'def filter_positive(items):\n    """Return the positive numbers in items."""\n'),
    ("celsius", 'def celsius_to_fahrenheit(c):\n    """Convert a temperature from Celsius to Fahrenheit."""\n'),
    ("read_lines", 'def read_lines(path):\n    """Read a text file and return its lines."""\n'),
    ("hello_world", "def hello_world():\n"),
    ("greet", 'def greet(name):\n    """Print a greeting for name."""\n'),
    ("join_words", 'def join_words(words, sep=" "):\n    """Join the words with sep."""\n'),
    ("count_chars", 'def count_chars(s):\n    """Return a dict mapping each character of s to its count."""\n'),
    ("flatten", 'def flatten(lists):\n    """Flatten a list of lists into one list."""\n'),
    ("unique", 'def unique(seq):\n    """Return the distinct elements of seq, keeping their order."""\n'),
    ("clamp", 'def clamp(x, low, high):\n    """Limit x to the range [low, high]."""\n'),
    ("get_or_default", 'def get_value(d, key, default=None):\n    """Return d[key] if present, else default."""\n'),
    ("to_upper", 'def to_upper(s):\n    """Return s in upper case."""\n'),
    ("class_point", "class Point:\n    def __init__(self, x, y):\n"),
    ("parse_args", "import argparse\n\n\ndef parse_args():\n"),
    ("main_guard", "def main():\n    print(\"running\")\n\n\nif __name__ == "),
]

# Instruction turns in the MTPB layout: the preamble, earlier turns with their code, then "# <instruction>\n".
_T = PREAMBLE
TURNS = [
    ("assign_list", _T + "# Define a list named \"numbers\" with the values [3, 1, 4, 1, 5].\n"),
    ("assign_string", _T + "# Assign the string \"Hello World\" to a variable named \"s\".\n"),
    ("assign_int", _T + "# Set the variable \"count\" to 10.\n"),
    ("sum_list", _T + "numbers = [3, 1, 4, 1, 5]\n\n# Compute the sum of \"numbers\" and store it in \"total\".\n"),
    ("max_list", _T + "values = [7, 2, 9, 4]\n\n# Find the largest element of \"values\".\n"),
    ("sort_list", _T + "data = [5, 3, 8, 1]\n\n# Sort \"data\" in ascending order.\n"),
    ("reverse_list", _T + "items = [1, 2, 3]\n\n# Reverse the list \"items\".\n"),
    ("len_list", _T + "names = [\"ann\", \"bob\"]\n\n# Count the number of names.\n"),
    ("print_var", _T + "x = 42\n\n# Print the variable \"x\".\n"),
    ("upper", _T + "s = \"hello\"\n\n# Convert \"s\" to upper case.\n"),
    ("lower", _T + "name = \"ALICE\"\n\n# Lowercase the string \"name\".\n"),
    ("split_words", _T + "text = \"the quick brown fox\"\n\n# Split \"text\" into a list of words.\n"),
    ("evens", _T + "nums = [1, 2, 3, 4, 5, 6]\n\n# Keep only the even numbers of \"nums\".\n"),
    ("squares", _T + "nums = [1, 2, 3]\n\n# Square every element of \"nums\".\n"),
    ("mean_np", _T + "arr = [2, 4, 6]\n\n# Compute the mean of \"arr\" with numpy.\n"),
    ("np_array", _T + "# Create a numpy array \"a\" with the values 1, 2 and 3.\n"),
    ("dict_make", _T + "# Create a dictionary \"ages\" mapping \"tom\" to 30 and \"ann\" to 25.\n"),
    ("loop_print", _T + "words = [\"a\", \"b\", \"c\"]\n\n# Print each word in \"words\".\n"),
    ("range_list", _T + "# Create a list of the numbers from 0 to 9.\n"),
    ("string_len", _T + "s = \"banana\"\n\n# Compute the length of \"s\".\n"),
    ("count_char", _T + "s = \"banana\"\n\n# Count how many times \"a\" occurs in \"s\".\n"),
    ("def_func_turn", _T + "# Write a function \"double\" that returns twice its argument.\n"),
    ("multi_turn_3", _T + "# Assign the list [4, 8, 15] to a variable named \"xs\".\nxs = [4, 8, 15]\n\n"
                          "# Compute the sum of \"xs\" and store it in \"s\".\ns = sum(xs)\n\n# Print \"s\".\n"),
    ("multi_turn_str", _T + "# Assign the string \"abc\" to a variable named \"t\".\nt = \"abc\"\n\n"
                            "# Reverse the string \"t\" and store it in \"r\".\n"),
]

PROMPTS = FUNCTIONS + TURNS

# Multi-turn sessions shown in eval.json and the model card: each is a list of instructions.
SESSIONS = [
    ["Define a list of integers named \"nums\" with the values [5, 3, 9, 1].",
     "Sort \"nums\" in ascending order and store the result in \"ordered\".",
     "Print \"ordered\"."],
    ["Assign the string \"convsynth\" to a variable named \"word\".",
     "Convert \"word\" to upper case and store it in \"loud\".",
     "Print the variable \"loud\"."],
    ["Set the variable \"n\" to 6.",
     "Compute the square of \"n\" and store it in \"sq\".",
     "Print \"sq\"."],
]

# (name, prompt, test): simple functions whose completion is executed and checked.
CHECKS = [
    ("add", "def add(a, b):\n", "assert add(2, 3) == 5 and add(-1, 1) == 0"),
    ("add_doc", 'def add(a, b):\n    """Return the sum of a and b."""\n', "assert add(2, 3) == 5"),
    ("sub", 'def sub(a, b):\n    """Return a minus b."""\n', "assert sub(5, 3) == 2"),
    ("mul", 'def mul(x, y):\n    """Multiply x by y."""\n', "assert mul(4, 3) == 12"),
    ("square", 'def square(n):\n    """Return n squared."""\n', "assert square(5) == 25"),
    ("is_even", 'def is_even(n):\n    """Return True if n is even, else False."""\n',
     "assert is_even(4) is True and is_even(3) is False"),
    ("reverse_string", 'def reverse_string(s):\n    """Return the string s reversed."""\n',
     "assert reverse_string('abc') == 'cba'"),
    ("to_upper", 'def to_upper(s):\n    """Return s in upper case."""\n', "assert to_upper('ab') == 'AB'"),
    ("maximum", 'def maximum(values):\n    """Return the largest value in the list."""\n',
     "assert maximum([3, 9, 2]) == 9"),
    ("mean", 'def mean(numbers):\n    """Return the arithmetic mean of a list of numbers."""\n',
     "assert mean([1, 2, 3]) == 2"),
]

assert len(PROMPTS) >= 50, len(PROMPTS)
