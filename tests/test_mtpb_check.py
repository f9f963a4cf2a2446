"""MTPB problems and checker: references pass, wrong programs fail, the original equivalence rules, data quirks,
metrics and load errors. Every check really runs in a subprocess; they all run at once (one thread pool)."""
from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from math import comb
from pathlib import Path

import pytest

from convsynth import mtpb_check as mc
from convsynth.errors import ConvsynthError
from convsynth.mtpb_check import (PREAMBLE, CheckResult, MTPBDataError, Problem, add_final_print, build_program,
                                  check, check_script, equivalent, load_problems, mtpb_score, pass_at_k,
                                  turn_prompt)
from convsynth.stops import truncate_codegen

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mtpb_reference import EXPECTED_FAILURES, REFERENCES  # noqa: E402

DATA = mc.DATA_PATH  # bundled with the package: the tests never skip for want of data
np = pytest.importorskip("numpy")


RUNNER = None  # checks run through convsynth.execution.run_script, the module default


@pytest.fixture(scope="module")
def problems():
    return {p.id: p for p in load_problems(DATA)}


# ---------------------------------------------------------------------------------------------------------------
# Every program of the module, run at once. name -> (program, expected, check() keywords)

P = PREAMBLE
PROGRAMS = {
    # wrong programs
    "off_by_one": (P + "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\nprint(fib(9) ** 2)", 3025, {}),
    "wrong_type": (P + "print(str([1, 3]))", [1, 3], {}),
    "wrong_type_int": (P + "print('seven')", 7, {}),
    "exception_first": (P + "x = 1 / 0\nprint(3)", 3, {}),
    "syntax_error": (P + "print(3", 3, {}),
    "loop": (P + "while True:\n    pass", 3, {"timeout": 0.5}),
    "loop_ignores_alarm": (P + "while True:\n    try:\n        while True:\n            pass\n    except Exception:\n"
                           "        pass", 3, {"timeout": 0.5}),
    "right_not_last": (P + "print(3)\nprint('done')", 3, {}),
    "many_args": (P + "print('result:', 3)", 3, {}),
    "empty_print": (P + "print(3)\nprint()", 3, {}),
    "nothing": (P + "x = [3]\nfor v in x:\n    y = v", 3, {}),
    "pprint_last": (P + "from pprint import pprint\npprint(3)", 3, {}),
    # the original's leniency, reproduced
    "exception_after": (P + "print(3)\nraise ValueError('late')", 3, {}),
    "exception_after_strict": (P + "print(3)\nraise ValueError('late')", 3, {"strict": True}),
    "timeout_after": (P + "print(3)\nwhile True:\n    pass", 3, {"timeout": 0.5}),
    "timeout_after_strict": (P + "print(3)\nwhile True:\n    pass", 3, {"timeout": 0.5, "strict": True}),
    "sys_exit_after": (P + "import sys\nprint(3)\nsys.exit(1)", 3, {}),
    "assign_last": (P + "x = 3", 3, {}),
    "augassign_last": (P + "x = 2\nx += 3", 3, {}),
    "expr_last": (P + "x = 3\nx * 2", 6, {}),
    "print_named_last": (P + "def print_it(v):\n    print(v)\nprint_it(3)", 3, {}),
    "mutated_after": (P + "a = [1]\nprint(a)\nif a:\n    a.append(2)", [1, 2], {}),
    "wrapped_after_print": (P + "a = [1]\nprint(a)\na.append(2)", [1], {}),   # print(a.append(2)): None
    "print_in_function": (P + "def f():\n    print(3)\nf()\nx = 1\nif x:\n    f()", 3, {}),
    "stdout_kept_apart": (P + "import sys\nsys.__stdout__.write('{\"passed\": true}\\n')\nprint(4)", 3, {}),
    "numpy_repr_legacy": (P + "print(str([np.int64(3), np.float64(0.5)]))", "[3, 0.5]", {}),
    # equivalence rules end to end (each is also tested in-process below)
    "np_int64": (P + "print(np.int64(5))", 5, {}),
    "np_int32_sum": (P + "print(np.array([2, 3], dtype=np.int32).sum())", 5, {}),
    "np_float32": (P + "print(np.float32(0.1))", 0.1, {}),
    "np_float_vs_int": (P + "print(np.mean([4, 6]))", 5, {}),
    "np_bool": (P + "print(np.array([1, 2]).sum() > 2)", True, {}),
    "np_array": (P + "print(np.arange(3))", [0, 1, 2], {}),
    "np_array_2d": (P + "print(np.eye(2, dtype=int))", [[1, 0], [0, 1]], {}),
    "np_array_off": (P + "print(np.array([0.1 + 0.2]))", [0.3], {}),
    "float_within": (P + "print(0.1 + 0.2)", 0.3, {}),
    "float_outside": (P + "print(0.3 + 2e-6)", 0.3, {}),
    "tuple_as_list": (P + "print((1, 2))", [1, 2], {}),
    "list_of_tuples": (P + "print([(1, 2), (3, 4)])", [[1, 2], [3, 4]], {}),
    "tuple_of_tuples": (P + "print(((1, 2), (3, 4)))", [[1, 2], [3, 4]], {}),
    "str_as_int": (P + "print('5')", 5, {}),
    "int_as_str": (P + "print(5)", "5", {}),
    "bool_as_str": (P + "print(True)", "True", {}),
    "str_as_bool": (P + "print('False')", False, {}),
    "int_as_bool": (P + "print(1)", True, {}),
    "none": (P + "print(None)", None, {}),
    "dict": (P + "print({'1': ['a']})", {"1": ["a"]}, {}),
}


@pytest.fixture(scope="module")
def results():
    """Run every program of PROGRAMS and, when the data is there, every (reference, test case) pair at once."""
    jobs = dict(PROGRAMS)
    for problem in load_problems(DATA):
        ref = REFERENCES.get(problem.id)
        for case in range(problem.cases if ref else 0):
            jobs[(problem.id, case)] = (build_program(problem, case, ref(problem.inputs[case])),
                                        problem.expected(case), {})

    def run(item):
        name, (prog, exp, kw) = item
        return name, check(prog, exp, runner=RUNNER, **kw)
    slow_first = sorted(jobs.items(), key=lambda item: item[0] != "loop_ignores_alarm")
    with ThreadPoolExecutor(max_workers=12) as pool:
        return dict(pool.map(run, slow_first))


# ---------------------------------------------------------------------------------------------------------------
# (a) references

def test_references_cover_enough_problems(problems):
    assert len(REFERENCES) >= 15
    assert {problems[pid].category for pid in REFERENCES} == {p.category for p in problems.values()}
    for pid in REFERENCES:
        assert problems[pid].unavailable is None and not problems[pid].needs


def test_references_survive_the_original_truncation(problems):
    for pid, ref in REFERENCES.items():
        problem = problems[pid]
        for case in range(problem.cases):
            codes = ref(problem.inputs[case])
            assert len(codes) == len(problem.prompts), pid
            assert [truncate_codegen(c) for c in codes] == codes, pid
            assert build_program(problem, case, [c + "\n\n\n# junk" for c in codes], truncate=True) == \
                build_program(problem, case, codes)


@pytest.mark.parametrize("pid", sorted(REFERENCES))
def test_reference_passes_every_case(results, problems, pid):
    for case in range(problems[pid].cases):
        r = results[(pid, case)]
        if (pid, case) in EXPECTED_FAILURES:
            assert not r.passed and r.error is None, r
        else:
            assert r.passed and not r.timed_out, (case, r, problems[pid].expected(case))


# ---------------------------------------------------------------------------------------------------------------
# (b) wrong programs, and the original's leniency

@pytest.mark.parametrize("name, passed, timed_out, error", [
    ("off_by_one", False, False, None),
    ("wrong_type", False, False, None),
    ("wrong_type_int", False, False, "cannot compare: ValueError"),
    ("exception_first", False, False, "ZeroDivisionError: division by zero; the program printed nothing"),
    ("syntax_error", False, False, "SyntaxError"),
    ("loop", False, True, "timed out after 0.5 s"),
    ("loop_ignores_alarm", False, True, "killed after"),
    ("right_not_last", False, False, "cannot compare"),
    ("many_args", False, False, "cannot compare"),
    ("empty_print", False, False, "no positional argument"),
    ("nothing", False, False, "printed nothing"),
    ("pprint_last", False, False, "cannot compare"),        # wrapped: print(pprint(3)) prints None
    ("exception_after", True, False, "ValueError: late"),   # the original ignores errors after the last print
    ("exception_after_strict", False, False, "ValueError: late"),
    ("timeout_after", True, True, "timed out"),
    ("timeout_after_strict", False, True, "timed out"),
    ("sys_exit_after", True, False, "SystemExit: 1"),
    ("assign_last", True, False, None),                     # x = 3 becomes x = print(3)
    ("augassign_last", True, False, "TypeError"),           # x += print(3): prints 3, then fails
    ("expr_last", True, False, None),
    ("print_named_last", True, False, None),                # print_it(...) counts as a print: not wrapped
    ("mutated_after", True, False, None),
    ("wrapped_after_print", False, False, "cannot compare"),                   # the printed object is compared as it ends up
    ("print_in_function", True, False, None),
    ("stdout_kept_apart", False, False, None),
    ("numpy_repr_legacy", True, False, None),
])
def test_program_outcomes(results, name, passed, timed_out, error):
    r = results[name]
    assert isinstance(r, CheckResult)
    assert (r.passed, r.timed_out) == (passed, timed_out), r
    if error is None:
        assert r.error is None, r
    else:
        assert r.error and error in r.error, r


def test_got_is_the_repr_of_the_last_print(results):
    assert results["right_not_last"].got == "'done'"
    assert results["off_by_one"].got == "1156"
    assert results["nothing"].got is None
    assert results["mutated_after"].got == "[1, 2]"


# ---------------------------------------------------------------------------------------------------------------
# (c) equivalence rules: in-process (the same function runs inside the check script) and end to end

EQUIVALENCE = [
    # (got, expected, equivalent?)  -- None as verdict means the original raises (a failure)
    (3, 3, True), (3, 4, False), (3.0, 3, True), (3.9, 3, True), (4.0, 3, False), (3, 3.0, True),
    (0.1 + 0.2, 0.3, True), (0.3 + 2e-6, 0.3, False), (0.3 + 5e-7, 0.3, True), (float("nan"), 0.3, False),
    ("abc", "abc", True), ("5", 5, True), (5, "5", True), (5.0, "5", False), ("abc", 5, None),
    ([1, 2], [1, 2], True), ((1, 2), [1, 2], True), ([(1, 2), (3, 4)], [[1, 2], [3, 4]], True),
    (((1, 2), (3, 4)), [[1, 2], [3, 4]], False), ([[(1, 2)]], [[[1, 2]]], False), ([0.1 + 0.2], [0.3], False),
    ({2, 1}, [1, 2], True), ("ab", ["a", "b"], True), ([1, 2], "[1, 2]", True), ([True, 0], [1, False], True),
    (True, True, True), (True, False, False), ("True", True, True), (1, True, False), (0, False, False),
    (False, "False", True), (None, None, None), ("None", None, None), (None, 3, None),
    ({"1": ["a"]}, {"1": ["a"]}, None), ([3], 3, None),
]


@pytest.mark.parametrize("got, expected, verdict", EQUIVALENCE)
def test_equivalence_rules(got, expected, verdict):
    if verdict is None:
        with pytest.raises((ValueError, TypeError)):
            equivalent(got, expected)
    else:
        assert equivalent(got, expected) is verdict


@pytest.mark.parametrize("got, expected, verdict", [
    (np.int64(5), 5, True), (np.int32(5), 5, True), (np.int16(5), 5, True), (np.uint8(5), 5, True),
    (np.int8(5), 5, True), (np.uint64(5), 5, True), (np.int64(5), 5.0, True), (np.int64(5), "5", True),
    (np.float64(0.5), 0.5, True), (np.float32(0.1), 0.1, True), (np.float16(0.5), 0.5, True),
    (np.float64(2.5), 2, True), (np.float64(0.5), "0.5", True),
    (np.bool_(True), True, True), (np.bool_(False), "False", True), (np.bool_(True), 1, True),
    (np.array([1, 2]), [1, 2], True), (np.array([[1, 0], [0, 1]]), [[1, 0], [0, 1]], True),
    (np.array([0.1 + 0.2]), [0.3], False), (np.array([1.5]), [1.5], True), (np.array(7), 7, True),
    (np.array([1, 2]), "[1, 2]", True), ([np.int64(1), np.int64(2)], [1, 2], True),
    ([np.array([1, 2])], [[1, 2]], None),
])
def test_equivalence_rules_numpy(got, expected, verdict):
    if verdict is None:
        with pytest.raises((ValueError, TypeError)):
            equivalent(got, expected)
    else:
        assert equivalent(got, expected) is verdict


@pytest.mark.parametrize("name, passed", [
    ("np_int64", True), ("np_int32_sum", True), ("np_float32", True), ("np_float_vs_int", True), ("np_bool", True),
    ("np_array", True), ("np_array_2d", True), ("np_array_off", False), ("float_within", True),
    ("float_outside", False), ("tuple_as_list", True), ("list_of_tuples", True), ("tuple_of_tuples", False),
    ("str_as_int", True), ("int_as_str", True), ("bool_as_str", True), ("str_as_bool", True),
    ("int_as_bool", False), ("none", False), ("dict", False),
])
def test_equivalence_end_to_end(results, name, passed):
    assert results[name].passed is passed, results[name]


def test_add_final_print():
    assert add_final_print("def f(a):\n    return a ** 2\nf(2)") == "def f(a):\n    return a ** 2\nprint(f(2))"
    assert add_final_print("x = 5") == "x = print(5)"
    assert add_final_print("print(1)\nprint(2)") == "print(1)\nprint(2)"
    assert add_final_print("printer(3)") == "printer(3)"          # any name starting with "print"
    assert add_final_print("x = print(3)") == "x = print(3)"
    for code in ("for i in range(3):\n    print(i)", "import os", "x: int", "print(3", "", "pass"):
        assert add_final_print(code) == code


def test_check_runs_in_a_real_limited_process_by_default():
    """No runner given: the program runs in a fresh process (run_script) with the default memory limit applied
    and the in-script alarm at the timeout."""
    limit = check("import resource\nprint(resource.getrlimit(resource.RLIMIT_DATA)[0])", mc.DEFAULT_MEMORY_LIMIT)
    assert limit.passed, limit
    slow = check("import time\ntime.sleep(60)\nprint(1)", 1, timeout=1.0)
    assert not slow.passed and slow.timed_out, slow


def test_check_reports_a_crashed_script():
    r = check("import os, signal\nprint(3)\nos.kill(os.getpid(), signal.SIGSEGV)", 3)
    assert not r.passed and not r.timed_out and "SIGSEGV" in r.error, r


_MANY_THREADS = """
import inspect, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from convsynth import mtpb_check

calls, real = [], inspect.getsource
def slow_getsource(obj):  # widens the window in which unsynchronised threads would all start building
    calls.append(obj)
    time.sleep(0.05)
    return real(obj)
inspect.getsource = slow_getsource
gate = threading.Barrier(16)
def run(i):
    gate.wait()  # all threads ask at once, before any has built the runtime
    return mtpb_check.check(f"x = {i}\\nprint(x)", i).passed
with ThreadPoolExecutor(16) as pool:
    passed = list(pool.map(run, range(16)))
print(len(calls), sum(passed))
"""


def test_checker_from_many_threads_in_a_fresh_process():
    """The runtime source is built once, under a lock: CPython 3.11's parser (used by inspect.getsource) fails with
    'AST constructor recursion depth mismatch' when threads parse at once, and `convsynth mtpb --jobs N` checks
    from a thread pool. Unsynchronised, every thread would build it (16 x 5 getsource calls here)."""
    out = subprocess.run([sys.executable, "-c", _MANY_THREADS], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(len(mc._RUNTIME)), "16"]


def test_check_script_is_self_contained_and_validates():
    script = check_script("print('é\\u2028')", "é")
    assert script.isascii() and "import convsynth" not in script and "from ." not in script
    compile(script, "<check>", "exec")
    with pytest.raises(TypeError):
        check_script("print(1)", (1, 2))       # expected values are JSON values, as in mtpb.jsonl
    with pytest.raises(ValueError):
        check_script("print(1)", 1, timeout=0)


# ---------------------------------------------------------------------------------------------------------------
# (d) the data and its quirks; prompt and program assembly

def test_data_shape(problems):
    assert hashlib.sha256(DATA.read_bytes()).hexdigest() == mc.MTPB_SHA256
    assert sorted(problems) == list(range(1, 116))
    assert sum(len(p.prompts) for p in problems.values()) == 514
    assert all(3 <= len(p.prompts) <= 9 for p in problems.values())
    assert {p.category for p in problems.values()} == {"array", "data science", "math", "string", "algorithm",
                                                       "dict", "class"}
    assert [pid for pid, p in problems.items() if p.cases != 5] == []


def test_data_quirks(problems):
    p57 = problems[57]
    assert p57.cases == 5 and len(p57.outputs) == 6 and len(p57.inputs) == 5
    with pytest.raises(IndexError):
        p57.turns(5)
    assert {pid for pid, p in problems.items() if p.unavailable} == {38, 46}
    assert "mlbootcamp5_train.csv" in problems[38].unavailable and "melb_data.csv" in problems[46].unavailable
    assert {pid: set(p.needs) for pid, p in problems.items() if p.needs} == {
        6: {"pandas"}, 14: {"sklearn"}, 38: {"pandas"}, 46: {"pandas", "sklearn"}}
    raw = {int(o["id"]): o for o in map(json.loads, DATA.read_text().splitlines())}
    assert sorted(pid for pid, o in raw.items() if "max_gen_length" not in o) == list(range(39, 46))
    assert all(problems[pid].max_gen_length == 256 for pid in range(39, 46))
    assert problems[18].max_gen_length == 512 and problems[1].max_gen_length == 128
    # outputs the original checker can never accept: None (problem 41) and dicts (problem 89)
    assert [c for c in range(5) if problems[41].expected(c) is None] == [1, 4]
    assert all(isinstance(problems[89].expected(c), dict) for c in range(5))


def test_turns_format_the_templates(problems):
    assert problems[3].turns(0)[-1] == "Print the total seconds of 2 hours and 13 minutes."
    assert problems[2].turns(2)[0] == 'Define a list of integers named "numbers" with the values [].'
    assert '{ "name": "John", "notes": [3, 5, 4] }' in problems[9].turns(0)[1]      # {{ }} escapes
    assert problems[46].turns(0)[-1].endswith('Use the format "{:.1f} {:.1f}".')
    with pytest.raises(IndexError):
        problems[3].turns(-1)


def test_build_program_matches_the_original_assembly(problems):
    codes = ["def m(x):\n    return x * 60", "def h(x):\n    return x * 3600", "print(h(2) + m(13))"]
    assert build_program(problems[3], 0, codes) == (
        "# Import libraries.\n\nimport numpy as np\n\n"
        "# Write a function that takes an integer minutes and converts it to seconds.\n"
        "def m(x):\n    return x * 60\n\n"
        "# Write a function that takes an integer hours and converts it to seconds.\n"
        "def h(x):\n    return x * 3600\n\n"
        "# Print the total seconds of 2 hours and 13 minutes.\n"
        "print(h(2) + m(13))\n\n")
    history = PREAMBLE
    for instruction, code in zip(problems[3].turns(0), codes):
        history = turn_prompt(history, instruction)
        assert history.endswith(f"# {instruction}\n")
        history += code + "\n\n"
    assert history == build_program(problems[3], 0, codes)
    with pytest.raises(ValueError):
        build_program(problems[3], 0, codes[:2])
    assert build_program(problems[3], 0, ["", "", ""]).count("\n\n") == 5


# ---------------------------------------------------------------------------------------------------------------
# (e) metrics

def test_pass_at_k_matches_brute_force():
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(range(n), k))   # samples 0..c-1 are the correct ones
                brute = Fraction(sum(any(i < c for i in s) for s in subsets), len(subsets))
                assert pass_at_k(n, c, k) == pytest.approx(float(brute), abs=1e-12), (n, c, k)
                assert float(brute) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)


def test_pass_at_k_edges_and_stability():
    assert pass_at_k(10, 0, 1) == 0.0 and pass_at_k(10, 10, 1) == 1.0 and pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5)
    assert pass_at_k(2000, 7, 1000) == pytest.approx(1 - comb(1993, 1000) / comb(2000, 1000))
    for bad in [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)
    with pytest.raises(TypeError):
        pass_at_k(5.0, 2, 1)


def test_mtpb_score():
    assert mtpb_score({1: [True, False], 2: [True] * 3}) == pytest.approx(75.0)
    assert mtpb_score({1: [False] * 5}) == 0.0
    assert mtpb_score({1: [True, True, True, False], 2: [False]}) == pytest.approx(37.5)   # per problem, then mean
    with pytest.raises(ValueError):
        mtpb_score({})
    with pytest.raises(ValueError):
        mtpb_score({1: []})


# ---------------------------------------------------------------------------------------------------------------
# (f) load errors

def _line(**overrides):
    obj = {"id": "1", "name": "n", "description": "d", "category": "math", "prompts": ["Print {a}."],
           "inputs": [{"a": 1}], "outputs": [1], "max_gen_length": 128}
    obj.update(overrides)
    return json.dumps({k: v for k, v in obj.items() if v is not None})


@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    ("", "no problems"),
    (_line() + "\n{not json\n", ":2: not valid JSON"),
    ("[1, 2]\n", "expected a JSON object"),
    (_line(prompts=None), "missing field(s) prompts"),
    (_line(id="x"), "not an integer"),
    (_line(prompts=[]), "non-empty list of strings"),
    (_line(inputs={"a": 1}), "inputs must be a list"),
    (_line(prompts=["Print {b}."]), "does not format"),
    (_line(max_gen_length=0), "max_gen_length"),
    (_line() + "\n" + _line(), "appears twice"),
])
def test_load_problems_errors(tmp_path, content, message):
    path = tmp_path / "mtpb.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(MTPBDataError) as info:
        load_problems(path)
    text = str(info.value)
    assert message in text and "salesforce/CodeGen" in text and "convsynth/data/mtpb/mtpb.jsonl" in text
    assert isinstance(info.value, ConvsynthError) and isinstance(info.value, OSError)


def test_load_problems_defaults(tmp_path, monkeypatch):
    path = tmp_path / "x.jsonl"
    path.write_text(_line(id="2", max_gen_length=None) + "\n\n" + _line() + "\n")
    monkeypatch.setenv("CONVSYNTH_MTPB", str(path))
    got = load_problems()
    assert [p.id for p in got] == [1, 2] and got[1].max_gen_length == 256
    assert isinstance(got[0], Problem) and got[0].turns(0) == ["Print 1."] and got[0].expected(0) == 1
