"""Hand-written reference solutions for MTPB problems, one function per problem.

``ref_<id>(inp)`` returns the code of each turn for the test case whose inputs are ``inp``: like a model, the code
hard-codes the values that the formatted instructions show. Every turn is written so that the original truncation
(``convsynth.stops.truncate_codegen``) leaves it unchanged: no line starting with ``#``, no two blank lines, at most
one top-level ``print`` line and one top-level ``def`` line per turn. ``REFERENCES`` maps problem id -> function.

``EXPECTED_FAILURES`` lists the test cases (problem id, 0-based case) whose expected output in mtpb.jsonl is wrong, so
that the faithful reference fails there.

Not covered: problems needing pandas/scikit-learn (6, 14, 38, 46), problems whose expected outputs the original
checker cannot accept (41: None in cases 1 and 4; 89: dicts), random ones (20, 23), and problems with a wrong or
unstated expected output in some case (9 case 2 expects "Mike" where John has the top note; 56 case 3 expects a 8
that is in neither list; 77 case 2 expects the standard deviation rounded to 39.57 though no turn says to round).
"""
from __future__ import annotations


def ref_1(inp):  # string
    return [f"my_string = {inp['A']!r}", "my_string = my_string.lower()", "chars = set(my_string)",
            "chars = sorted(chars)", "print(chars)"]


def ref_3(inp):  # math
    return ["def minutes_to_seconds(minutes):\n    return minutes * 60",
            "def hours_to_seconds(hours):\n    return hours * 3600",
            f"print(hours_to_seconds({inp['a1']}) + minutes_to_seconds({inp['a2']}))"]


def ref_4(inp):  # math
    return ["def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
            "def square(x):\n    return x * x",
            f"print(square(fibonacci({inp['a1']})))"]


def ref_5(inp):  # array; the last turn is a bare expression, which the checker wraps in print()
    return [f"my_numbers = {inp['A']}", "n_neg = sum(1 for x in my_numbers if x < 0)",
            "n_pos = sum(1 for x in my_numbers if x > 0)", "max(n_neg, n_pos)"]


def ref_7(inp):  # algorithm; a list mixing str and int
    a1, a2 = inp["a1"], inp["a2"]
    return [f"def fizzbuzz(n):\n    if n % {a1} == 0 and n % {a2} == 0:\n        return 'fizzbuzz'\n"
            f"    if n % {a1} == 0:\n        return 'fizz'\n    if n % {a2} == 0:\n        return 'buzz'\n    return n",
            f"numbers = list(range({inp['a3']}, {inp['a4']} + 1))",
            "new_list = [fizzbuzz(x) for x in numbers]", "print(new_list)"]


def ref_11(inp):  # dict; a bool output
    init = "invert(my_dict)" if inp["a3"] == "inverted" else "my_dict"
    return [f"my_dict = dict(zip({inp['a1']}, {inp['a2']}))",
            "def invert(d):\n    return {v: k for k, v in d.items()}",
            "def is_inverted(d1, d2):\n    return invert(d1) == d2",
            f"my_dict2 = {init}", "print(is_inverted(my_dict, my_dict2))"]


def ref_12(inp):  # class; the methods come in a second turn, through a subclass of the same name
    return ["class Player:\n    def __init__(self, name, age, height, weight):\n        self.name = name\n"
            "        self.age = age\n        self.height = height\n        self.weight = weight",
            "class Player(Player):\n    def get_age(self):\n        return f'{self.name} is age {self.age}'\n\n"
            "    def get_height(self):\n        return f'{self.name} is {self.height} cm'\n\n"
            "    def get_weight(self):\n        return f'{self.name} weighs {self.weight} kg'",
            f"player = Player({inp['a1']!r}, {inp['a2']}, {inp['a3']}, {inp['a4']})",
            f"print(player.get_{inp['a5']}())"]


def ref_16(inp):  # class; hashing and equality
    return ["class Person:\n    def __init__(self, name, id):\n        self.name = name\n        self.id = id",
            f"Person.__hash__ = lambda self: hash(self.{inp['a1']})",
            "Person.__eq__ = lambda self, other: hash(self) == hash(other)",
            f"ids = [{inp['a2']}]\n"
            f"persons = [Person(n, i) for n, i in zip(['Person A', 'Person B', 'Person {inp['a3']}'], ids)]",
            "unique_persons = set(persons)", "print(len(unique_persons))"]


def ref_19(inp):  # algorithm
    return [f"numbers = {inp['a1']}\ntarget = {inp['a2']}",
            "def two_sum(nums, target):\n    seen = {}\n    for j, x in enumerate(nums):\n"
            "        if target - x in seen:\n            return [seen[target - x], j]\n        seen[x] = j\n    return []",
            "print(two_sum(numbers, target))"]


def ref_27(inp):  # string
    return [f"a = {inp['A']!r}\nb = {inp['B']!r}", "def len_str(s):\n    return len(s)",
            "len_a = len_str(a)\nlen_b = len_str(b)", "result = a if len_a > len_b else b", "print(result)"]


def ref_31(inp):  # math; prints a tuple where the expected output is a list
    a, b = inp["a"], inp["b"]
    return [f"two_edges = {a} + {b}", "maximum_edge = two_edges - 1", f"minimum_edge = abs({a} - {b}) + 1",
            "my_tuple = (maximum_edge, minimum_edge)", "print(my_tuple)"]


def ref_33(inp):  # math; a float output
    return [f"n = {inp['n']}", "total_degrees = (n - 2) * 180", "import math\nangle = math.radians(total_degrees)",
            "angle = round(angle, 2)", "print(angle)"]


def ref_40(inp):  # math; no max_gen_length in the data; a bool output
    return [f"s = {inp['s']!r}", "s2 = s.lower()", "import re\npattern3 = re.compile(r'^#[0-9a-f]{3}$')",
            "pattern6 = re.compile(r'^#[0-9a-f]{6}$')",
            "print(bool(pattern3.match(s2) or pattern6.match(s2)))"]


def ref_42(inp):  # string; no max_gen_length in the data
    return [f"import datetime\ntoday = datetime.datetime({inp['year']}, {inp['month']}, {inp['day']})",
            "week = today + datetime.timedelta(days=7)", "print(week.strftime('%m/%d/%Y'))"]


def ref_45(inp):  # string; '@' on an empty stack is dropped (what the expected outputs say)
    return [f"input = {inp['input']!r}\nstack = []",
            "for ch in input:\n    if ch == '@':\n        if stack:\n            stack.pop()\n    else:\n"
            "        stack.append(ch)",
            "print(''.join(stack))"]


def ref_57(inp):  # algorithm; 6 outputs for 5 inputs in the data
    return [f"my_array = {inp['A']}",
            "best, best_range, cur, start = my_array[0], (0, 1), 0, 0\nfor i, x in enumerate(my_array):\n"
            "    if cur <= 0:\n        cur, start = x, i\n    else:\n        cur += x\n    if cur > best:\n"
            "        best, best_range = cur, (start, i + 1)\nmax_subarray = my_array[best_range[0]:best_range[1]]",
            "sum_subarry = sum(max_subarray)\nsum_subarray = sum_subarry", "print(sum_subarray)"]


def ref_62(inp):  # data science; the last turn is a bare expression
    return [f"my_matrix = np.array({inp['A']})", f"t = {inp['T']}", "result = np.linalg.cond(my_matrix)",
            "'True' if result < t else 'False'"]


def ref_64(inp):  # data science; exact integer determinant (np.linalg.det is not exactly 0 for singular input)
    return [f"a = {inp['A']}", f"b = {inp['B']}",
            "def determinant(m):\n    if len(m) == 1:\n        return m[0][0]\n    total = 0\n"
            "    for j in range(len(m)):\n        minor = [row[:j] + row[j + 1:] for row in m[1:]]\n"
            "        total += (-1) ** j * m[0][j] * determinant(minor)\n    return total",
            "print('True' if determinant(a) > determinant(b) else 'False')"]


def ref_72(inp):  # string; a bool output
    return [f"w1 = {inp['w1']!r}\nw2 = {inp['w2']!r}", "w1 = w1.lower()\nw2 = w2.lower()",
            "from collections import Counter\nf1 = Counter(w1)\nf2 = Counter(w2)", "print(f1 == f2)"]


def ref_74(inp):  # math
    return [f"num = {inp['n']}", "lst1 = list(range(1, num + 1))", "n1 = sum(x ** 2 for x in lst1)",
            "n2 = sum(lst1) ** 2", "print(n1 - n2)"]


def ref_84(inp):  # data science; prints a float where some expected outputs are ints
    return [f"X = np.array({inp['X']})", "Xn = X @ X.T", "np.fill_diagonal(Xn, 0)", "print(float(Xn.max()))"]


def ref_88(inp):  # data science; prints a numpy array
    return [f"x = {inp['x']}", "vocab = sorted(set(x))", "v2i = {v: i for i, v in enumerate(vocab)}",
            "features = np.zeros((len(x), len(vocab)), dtype=int)",
            "for i, v in enumerate(x):\n    features[i, v2i[v]] = 1", "print(features)"]


def ref_92(inp):  # array
    return [f"nums = {inp['nums']}\nN = {inp['N']}", "all_nums = set(range(1, N + 1))",
            "diff = all_nums - set(nums)", "print(diff.pop())"]


def ref_93(inp):  # array
    return [f"X = {inp['x']}", "common = set(X[0])", "for row in X:\n    common = common & set(row)",
            "print(list(common))"]


def ref_95(inp):  # algorithm
    return [f"pos = {inp['start']!r}\nswap = {inp['swap']}", "def move(x, y):\n    return y.replace(x, '')",
            "for s in swap:\n    if pos in s:\n        pos = move(pos, s)", "print(pos)"]


def ref_97(inp):  # algorithm; the program ends with an if/else split over two turns
    return [f"arrows = {inp['x']}\njoined_arrow = ''.join(arrows)",
            "left = joined_arrow.count('<')\nright = joined_arrow.count('>')",
            "if right > left:\n    print('>' * (right - left))", "else:\n    print('<' * (left - right))"]


def ref_99(inp):  # string
    return [f"original = {inp['x']!r}",
            "from collections import OrderedDict\ndic = OrderedDict((ch, 0) for ch in original)",
            "for ch in original:\n    dic[ch] += 1",
            "result = ''\nfor key, value in dic.items():\n    result += key + str(value)", "print(result)"]


def ref_106(inp):  # string
    return [f"my_string = {inp['A']!r}", "def is_palindrome(s):\n    return s == s[::-1]",
            "n = len(my_string)\npalindromes = [my_string[i:j] for i in range(n) for j in range(i + 1, n + 1)"
            " if is_palindrome(my_string[i:j])]",
            "print(max(len(p) for p in palindromes))"]


def ref_107(inp):  # algorithm
    return [f"my_integer = {inp['A']}",
            "def is_prime(n):\n    if n < 2:\n        return False\n    return all(n % d for d in range(2, int(n ** 0.5) + 1))",
            "prime_result = [n for n in range(my_integer) if is_prime(n)]", "print(len(prime_result))"]


def ref_108(inp):  # algorithm
    return [f"my_array = {inp['A']}", f"k = {inp['K']}", "def rotate_once(arr):\n    return arr[-1:] + arr[:-1]",
            "rotated_result = my_array\nfor _ in range(k):\n    rotated_result = rotate_once(rotated_result)",
            "print(rotated_result)"]


def ref_111(inp):  # math
    return [f"my_number = {inp['A']}", "plus_number = my_number + 1",
            "def digits(n):\n    return [int(d) for d in str(n)]", "print(digits(plus_number))"]


def ref_115(inp):  # data science; prints numpy floats where some expected outputs are ints
    return [f"my_array = np.array({inp['A']})", "mean_number = np.mean(my_array)",
            "median_number = np.median(my_array)", "print(mean_number - median_number)"]


EXPECTED_FAILURES = {(31, 0): "the data expects [17, 2] for edges 8 and 9, but 8 + 9 - 1 is 16"}

REFERENCES = {int(name[4:]): fn for name, fn in sorted(globals().items()) if name.startswith("ref_")}
