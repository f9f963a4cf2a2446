"""The Multi-Turn Programming Benchmark (MTPB): its problems, the program assembly and the checker.

Faithful to the original harness (salesforce/CodeGen, ``codegen1/benchmark/mtpb_sample.py`` and ``mtpb_exec.py``):

* Prompt: ``PREAMBLE``, then per turn ``"# " + template.format(**inputs) + "\\n"``; the model's completion, cut by
  :func:`convsynth.stops.truncate_codegen`, is appended followed by ``"\\n\\n"``. Each test case is its own conversation.
* Check: the whole program runs; if its last top-level statement is not a call of a function whose name starts with
  ``print``, that statement's value is wrapped in ``print(...)`` (``x = 5`` becomes ``x = print(5)``). The first
  argument of the LAST ``print`` call is compared with the expected output by :func:`equivalent`. As in the
  original, an exception (or the 20 s alarm) in the program does not by itself fail it: whatever was printed before
  it is compared. ``strict=True`` fails any program that raised.

Pure Python; the checker runs in a separate process (``check_script`` builds a self-contained script). One
conversation, as the original runs it::

    history = PREAMBLE
    for instruction in problem.turns(case):
        prompt = turn_prompt(history, instruction)
        completion = ...  # sample at most problem.max_gen_length tokens after `prompt`
        history = prompt + truncate_codegen(completion) + "\\n\\n"
    result = check(history, problem.expected(case))   # history == build_program(problem, case, codes)
"""
from __future__ import annotations

import inspect
import io
import json
import math
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import ConvsynthError
from .execution import MEMORY_LIMIT
from .stops import truncate_codegen
from .turns import MTPB_PREAMBLE as PREAMBLE  # the prompt every problem starts from
DEFAULT_MAX_GEN_LENGTH = 256      # the original's default, used by problems 39-45 which have no max_gen_length
DEFAULT_TIMEOUT = 20.0            # seconds per program, as in the original
DEFAULT_MEMORY_LIMIT = MEMORY_LIMIT
KILL_GRACE = 5.0                  # the process is killed this long after the in-script alarm (startup, stuck C code)
MTPB_SHA256 = "3ab79ddb160f484a63491330ba72204930d56cc946f7c0c5fb469622a941f89c"
DATA_PATH = Path(__file__).resolve().parent / "data" / "mtpb" / "mtpb.jsonl"  # bundled, with SOURCE.md and LICENSE
_WHERE = ("convsynth ships the file as convsynth/data/mtpb/mtpb.jsonl; the original is "
          "codegen1/benchmark/mtpb.jsonl in the public salesforce/CodeGen repository (BSD-3-Clause).")
_NEEDS = {"pandas": re.compile(r"\bpandas\b|\bdataframe\b", re.I), "sklearn": re.compile(r"\bsklearn\b|scikit", re.I)}
_CSV = re.compile(r"[\w./-]+\.csv\b")
_FIELDS = ("id", "name", "description", "category", "prompts", "inputs", "outputs")


class MTPBDataError(ConvsynthError, OSError):
    """The MTPB data file is missing, unreadable or corrupt."""


@dataclass(frozen=True)
class Problem:
    id: int
    name: str
    description: str
    category: str
    prompts: list[str]
    inputs: list[dict]
    outputs: list
    max_gen_length: int = DEFAULT_MAX_GEN_LENGTH

    @property
    def cases(self) -> int:
        """Usable test cases: inputs zipped with outputs, as the original does (problem 57 has 6 outputs for 5
        inputs; the 6th output is dropped)."""
        return min(len(self.inputs), len(self.outputs))

    def _case(self, case: int) -> int:
        if not isinstance(case, int) or not 0 <= case < self.cases:
            raise IndexError(f"problem {self.id} has test cases 0..{self.cases - 1}, not {case!r}")
        return case

    def turns(self, case: int) -> list[str]:
        """The instructions of test case ``case``: each template formatted with the case's inputs."""
        inputs = self.inputs[self._case(case)]
        return [template.format(**inputs) for template in self.prompts]

    def expected(self, case: int) -> Any:
        return self.outputs[self._case(case)]

    @property
    def needs(self) -> frozenset[str]:
        """Third-party modules (besides numpy) that the instructions ask for: pandas / sklearn."""
        text = "\n".join(self.prompts)
        return frozenset(module for module, pattern in _NEEDS.items() if pattern.search(text))

    @property
    def unavailable(self) -> str | None:
        """Why the problem cannot be run faithfully here (it reads a data file MTPB does not publish), else None."""
        files = sorted({m.group(0) for m in _CSV.finditer("\n".join(self.prompts))})
        if files:
            return f"reads {', '.join(files)}, which MTPB does not publish"
        return None

    @classmethod
    def from_json(cls, obj: Any, where: str = "") -> "Problem":
        def bad(msg: str) -> MTPBDataError:
            return MTPBDataError(f"{where}: {msg}. {_WHERE}")
        if not isinstance(obj, dict):
            raise bad(f"expected a JSON object, got {type(obj).__name__}")
        missing = [f for f in _FIELDS if f not in obj]
        if missing:
            raise bad(f"missing field(s) {', '.join(missing)}")
        try:
            pid = int(obj["id"])
        except (TypeError, ValueError):
            raise bad(f"id {obj['id']!r} is not an integer") from None
        prompts, inputs, outputs = obj["prompts"], obj["inputs"], obj["outputs"]
        if not (isinstance(prompts, list) and prompts and all(isinstance(p, str) for p in prompts)):
            raise bad(f"problem {pid}: prompts must be a non-empty list of strings")
        if not (isinstance(inputs, list) and all(isinstance(i, dict) for i in inputs)) or not isinstance(outputs, list):
            raise bad(f"problem {pid}: inputs must be a list of objects and outputs a list")
        for k, case in enumerate(inputs[:len(outputs)]):
            for template in prompts:
                try:
                    template.format(**case)
                except (KeyError, IndexError, ValueError) as e:
                    raise bad(f"problem {pid}, case {k}: template {template!r} does not format: {e!r}") from None
        mgl = obj.get("max_gen_length", DEFAULT_MAX_GEN_LENGTH)
        if not isinstance(mgl, int) or isinstance(mgl, bool) or mgl <= 0:
            raise bad(f"problem {pid}: max_gen_length {mgl!r} is not a positive integer")
        return cls(pid, str(obj["name"]), str(obj["description"]), str(obj["category"]), list(prompts),
                   [dict(i) for i in inputs], list(outputs), mgl)


def default_data_path() -> Path:
    """``$CONVSYNTH_MTPB`` if set, else the copy bundled with the package (``DATA_PATH``)."""
    env = os.environ.get("CONVSYNTH_MTPB")
    return Path(env) if env else DATA_PATH


def load_problems(path: str | os.PathLike | None = None) -> list[Problem]:
    """Read mtpb.jsonl (one problem per line), sorted by id like the original. Raises MTPBDataError."""
    path = Path(path) if path is not None else default_data_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MTPBDataError(f"MTPB data not found at {path}. {_WHERE}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MTPBDataError(f"cannot read the MTPB data at {path}: {e}. {_WHERE}") from None
    problems: dict[int, Problem] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise MTPBDataError(f"{path}:{n}: not valid JSON ({e}); the file is corrupt. {_WHERE}") from None
        problem = Problem.from_json(obj, f"{path}:{n}")
        if problem.id in problems:
            raise MTPBDataError(f"{path}:{n}: problem id {problem.id} appears twice. {_WHERE}")
        problems[problem.id] = problem
    if not problems:
        raise MTPBDataError(f"{path} holds no problems. {_WHERE}")
    return [problems[k] for k in sorted(problems)]


def turn_prompt(history: str, instruction: str) -> str:
    """The prompt of the next turn: the conversation so far plus the instruction as a comment line."""
    return f"{history}# {instruction}\n"


def build_program(problem: Problem, case: int, turn_codes: list[str], *, truncate: bool = False) -> str:
    """The whole program, as the original assembles it: PREAMBLE, then per turn ``# instruction\\n`` + code +
    ``\\n\\n``. With ``truncate=True`` each code is first cut by the original rule (raw completions)."""
    instructions = problem.turns(case)
    if len(turn_codes) != len(instructions):
        raise ValueError(f"problem {problem.id} has {len(instructions)} turns, got {len(turn_codes)} turn codes")
    program = PREAMBLE
    for instruction, code in zip(instructions, turn_codes):
        program = turn_prompt(program, instruction) + (truncate_codegen(code) if truncate else code) + "\n\n"
    return program


# ---------------------------------------------------------------------------------------------------------------
# The checker runtime. These definitions are copied verbatim (inspect.getsource) into the script that
# check_script() builds, so they must only use what they import themselves (and io, which the script imports).

class _CheckTimeout(Exception):
    """The in-script alarm. An Exception, as in the original, so a bare ``except Exception`` may swallow it."""


class _OutputTail(io.TextIOBase):
    """Stand-in for sys.stdout while the program runs (the original used a StringIO): keeps the last characters."""
    encoding = "utf-8"

    def __init__(self, keep=2000):
        super().__init__()
        self.keep, self.text = keep, ""

    def writable(self):
        return True

    def write(self, s):
        self.text = (self.text + s)[-self.keep:]
        return len(s)


def equivalent(got, expected):
    """The original MTPB equivalence of ``got`` (the first argument of the last print) with ``expected``.

    pandas Series are compared with np.allclose; a list whose first element is a tuple becomes a list of lists;
    numpy uint8/int16/int32/int64, float16/32/64, bool_ scalars and arrays become Python values. On a type
    mismatch: bools are compared as strings, anything else is cast to the expected type (so 3.9 equals 3 and
    "5" equals 5). Then str/int/bool/list/set/tuple compare by ==, floats within 1e-6. Other types (dict, None)
    raise ValueError, which fails the check, as in the original.
    """
    import sys
    np = sys.modules.get("numpy")
    kind = type(got)
    if str(kind) == "<class 'pandas.core.series.Series'>":
        got, expected = got.to_numpy(), np.array(expected)
    elif kind is list:
        if got and type(got[0]) is tuple:
            got = [list(item) for item in got]
    elif np is not None:
        if kind in (np.uint8, np.int16, np.int32, np.int64):
            got = int(got)
        elif kind in (np.float16, np.float32, np.float64):
            got = float(got)
        elif kind is np.bool_:
            got = bool(got)
        elif kind is np.ndarray:
            got = got.tolist()
    if type(got) is not type(expected):
        if type(expected) is bool:
            got, expected = str(got), str(expected)     # bool("False") is True: compare the spellings
        else:
            got = type(expected)(got)
    kind = type(got)
    if kind in (str, int, set, list, bool, tuple):
        return bool(got == expected)
    if kind is float:
        return bool(abs(got - expected) < 1e-6)
    if np is not None and kind is np.ndarray:
        return bool(np.allclose(got, expected))
    raise ValueError(f"unsupported type {kind.__name__} (the original harness cannot compare it)")


def add_final_print(code):
    """Wrap the value of the last top-level statement in print(...) unless it already is a call of a name that
    starts with "print". Statements without a value (if, for, def...) and unparsable code are left as they are."""
    import ast
    try:
        tree = ast.parse(code)
        last = tree.body[-1]
        value = getattr(last, "value", None)
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id.startswith("print"):
            return code
        last.value = ast.Call(func=ast.Name(id="print", ctx=ast.Load()), args=[last.value], keywords=[])
        ast.fix_missing_locations(tree)
        return ast.unparse(tree)
    except Exception:
        return code


def _run_check(program, expected, timeout, strict):
    """Run the program in a fresh namespace with a recording print, then compare. Returns the result dict."""
    import builtins
    import signal
    import sys
    try:
        import numpy
        if int(numpy.__version__.split(".")[0]) >= 2:
            numpy.set_printoptions(legacy="1.25")     # print numpy scalars as numpy 1.x (the original's) did
    except Exception:
        pass
    real_print, real_stdout, printed, errors = builtins.print, sys.stdout, [], []
    result = {"passed": False, "got": None, "error": None, "timed_out": False}

    def recording_print(*args, **kwargs):
        printed.append(args)
        return real_print(*args, **kwargs)

    def alarm(signum, frame):
        raise _CheckTimeout(f"timed out after {timeout:g} s")

    def short_repr(value):
        try:
            text = repr(value)
        except Exception as e:
            text = f"<{type(value).__name__} whose repr failed: {e!r}>"
        return text if len(text) <= 1000 else text[:1000] + "...(truncated)"

    signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        try:
            code = compile(add_final_print(program), "<mtpb-program>", "exec")
            sys.stdout = _OutputTail()
            try:
                # the original's namespace also held `builtins` (it defined its print there)
                exec(code, {"__name__": "__main__", "builtins": builtins, "print": recording_print})
            finally:
                sys.stdout = real_stdout
        except BaseException as e:      # as in the original: recorded, and what was printed still counts
            errors.append(str(e) if isinstance(e, _CheckTimeout) else f"{type(e).__name__}: {e}")
            result["timed_out"] = isinstance(e, _CheckTimeout)
        if not printed:
            errors.append("the program printed nothing")
        elif not printed[-1]:
            errors.append("the last print call had no positional argument")
        else:
            got = printed[-1][0]
            result["got"] = short_repr(got)
            if not (strict and errors):
                try:
                    result["passed"] = equivalent(got, expected)
                except Exception as e:
                    if isinstance(e, _CheckTimeout):
                        raise
                    errors.append(f"cannot compare: {type(e).__name__}: {e}")
    except _CheckTimeout as e:
        result["passed"], result["timed_out"] = False, True
        errors.append(str(e))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    result["error"] = "; ".join(errors) or None
    return result


_RUNTIME = (_CheckTimeout, _OutputTail, equivalent, add_final_print, _run_check)
_runtime_source: str | None = None
_runtime_lock = threading.Lock()


def _runtime() -> str:
    # Built once, under a lock: inspect.getsource parses the module with ast, and CPython 3.11's parser is not
    # safe to run from several threads at once (SystemError: AST constructor recursion depth mismatch).
    global _runtime_source
    with _runtime_lock:
        if _runtime_source is None:
            _runtime_source = "\n\n".join(inspect.getsource(obj) for obj in _RUNTIME)
        return _runtime_source


def _json_literal(value: Any) -> str:
    text = json.dumps(value)
    if repr(json.loads(text)) != repr(value):
        raise TypeError(f"expected must be a JSON value (as in mtpb.jsonl), got {value!r}")
    return text


def check_script(program: str, expected: Any, *, timeout: float = DEFAULT_TIMEOUT, strict: bool = False) -> str:
    """A self-contained Python script that runs ``program`` and prints one JSON line:
    ``{"passed": bool, "got": repr | null, "error": str | null, "timed_out": bool}`` (see the module docstring)."""
    if not isinstance(program, str):
        raise TypeError(f"program must be a str, got {type(program).__name__}")
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    return "\n".join([
        "# MTPB check script generated by convsynth.mtpb_check",
        "import io, json as _json, os as _os, sys as _sys",
        f"_PROGRAM = {ascii(program)}",
        f"_EXPECTED = _json.loads({_json_literal(expected)!r})",
        "",
        _runtime(),
        "",
        f"_line = _json.dumps(_run_check(_PROGRAM, _EXPECTED, {float(timeout)!r}, {bool(strict)!r})) + '\\n'",
        "for _stream in (_sys.stdout, _sys.__stdout__):",
        "    try:",
        "        _stream.flush()",
        "    except Exception:",
        "        pass",
        "_os.write(1, _line.encode('ascii'))",
        "_os._exit(0)   # do not wait for threads or atexit handlers the program left behind",
        "",
    ])


@dataclass
class CheckResult:
    passed: bool
    got: str | None          # repr of the first argument of the last print, None if nothing was printed
    error: str | None        # what went wrong (an exception may be reported even when passed, as in the original)
    timed_out: bool


def parse_check_output(stdout: str) -> dict | None:
    """The result line of a check script's output (the last line that is a JSON object with "passed")."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and "passed" in obj:
                return obj
    return None


def check(program: str, expected: Any, *, timeout: float = DEFAULT_TIMEOUT, runner: Callable | None = None,
          memory_limit: int | None = DEFAULT_MEMORY_LIMIT, strict: bool = False) -> CheckResult:
    """Check one MTPB program in a separate process.

    ``runner(code, *, timeout, memory_limit)`` runs a Python script and returns an object with ``stdout`` and
    ``timed_out`` (optionally ``status``, ``error``, ``stderr``); default: ``convsynth.execution.run_script``. The
    program gets an in-script alarm at ``timeout``; the process is killed ``KILL_GRACE`` seconds later.
    """
    script = check_script(program, expected, timeout=timeout, strict=strict)
    if runner is None:
        from .execution import run_script as runner
    hard = timeout + KILL_GRACE
    res = runner(script, timeout=hard, memory_limit=memory_limit)
    out = parse_check_output(getattr(res, "stdout", "") or "")
    if out is not None:
        return CheckResult(bool(out.get("passed")), out.get("got"), out.get("error"), bool(out.get("timed_out")))
    if getattr(res, "timed_out", False):
        return CheckResult(False, None, f"killed after {hard:g} s: the program ignored the {timeout:g} s alarm", True)
    stderr = (getattr(res, "stderr", "") or "").strip()
    why = getattr(res, "error", None) or (stderr.splitlines()[-1] if stderr else None) or getattr(res, "note", None)
    why = why or f"status {getattr(res, 'status', '?')}"
    return CheckResult(False, None, f"the check script gave no result: {why}", False)


# ---------------------------------------------------------------------------------------------------------------
# Metrics

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate from n samples of which c passed (Chen et al. 2021): 1 - C(n-c, k) / C(n, k),
    computed as a product so that it stays exact-ish for large n."""
    if not (isinstance(n, int) and isinstance(c, int) and isinstance(k, int)):
        raise TypeError("n, c and k must be integers")
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mtpb_score(results: dict[int, list[bool]]) -> float:
    """MTPB pass rate in percent: each problem's pass rate over all its programs (all test cases and samples),
    averaged over problems."""
    if not results:
        raise ValueError("no results to score")
    rates = []
    for pid, outcomes in results.items():
        if not outcomes:
            raise ValueError(f"problem {pid} has no results")
        rates.append(sum(bool(x) for x in outcomes) / len(outcomes))
    return 100.0 * sum(rates) / len(rates)
