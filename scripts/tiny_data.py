"""Corpus for convsynth-tiny: Python source files (stdlib + permissively licensed installed packages), mined
"# instruction" -> code snippets re-laid in the MTPB prompt format, docstring'd functions, and a small set of
templated instruction/code pairs. Everything is deterministic given the installed files and the seed.

Used by scripts/train_tiny.py; not part of the convsynth package.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.metadata as md
import random
import re
import sysconfig
import textwrap
from pathlib import Path

from convsynth.turns import MTPB_PREAMBLE

PREAMBLE = MTPB_PREAMBLE  # the layout a Session writes

# Installed distributions we read, by import-package directory. Each one's licence metadata is checked at run
# time against PERMISSIVE; one that does not match is skipped (and reported).
PACKAGES = {
    # distribution: top-level directories inside site-packages
    "numpy": ["numpy"], "sympy": ["sympy"], "networkx": ["networkx"], "mpmath": ["mpmath"],
    "requests": ["requests"], "urllib3": ["urllib3"], "idna": ["idna"], "h11": ["h11"], "httpx": ["httpx"],
    "anyio": ["anyio"], "rich": ["rich"], "click": ["click"], "typer": ["typer"], "jedi": ["jedi"],
    "parso": ["parso"], "attrs": ["attr", "attrs"], "pyparsing": ["pyparsing"], "python-dateutil": ["dateutil"],
    "six": ["six.py"], "pytest": ["_pytest", "pytest"], "pluggy": ["pluggy"], "packaging": ["packaging"],
    "Jinja2": ["jinja2"], "MarkupSafe": ["markupsafe"], "tornado": ["tornado"], "filelock": ["filelock"],
    "platformdirs": ["platformdirs"], "beautifulsoup4": ["bs4"], "soupsieve": ["soupsieve"], "PyYAML": ["yaml"],
    "lark": ["lark"], "psutil": ["psutil"], "traitlets": ["traitlets"], "nbformat": ["nbformat"],
    "mistune": ["mistune"], "markdown-it-py": ["markdown_it"], "fsspec": ["fsspec"], "matplotlib": ["matplotlib"],
    "pydantic": ["pydantic"], "babel": ["babel"], "arrow": ["arrow"], "contourpy": ["contourpy"],
    "jsonschema": ["jsonschema"], "pexpect": ["pexpect"], "ipython": ["IPython"], "executing": ["executing"],
    "asttokens": ["asttokens"], "pure_eval": ["pure_eval"], "stack-data": ["stack_data"], "cycler": ["cycler.py"],
    "tinycss2": ["tinycss2"], "bleach": ["bleach"], "webencodings": ["webencodings"], "iniconfig": ["iniconfig"],
}
PERMISSIVE = re.compile(r"\b(MIT|BSD|Apache|PSF|Python Software Foundation|ISC)\b", re.I)
SKIP_PARTS = {"test", "tests", "idle_test", "testing", "_vendor", "vendor", "__pycache__", "lexers", "locale-data",
              "site-packages", "unicode_data", "turtledemo", "encodings"}
MAX_FILE_BYTES = 200_000
MAX_PACKAGE_BYTES = 2_500_000


def licence_of(dist: md.Distribution) -> str:
    m = dist.metadata
    expr = (m.get("License-Expression") or "").strip()
    classifiers = [c.split("::")[-1].strip() for c in (m.get_all("Classifier") or []) if c.startswith("License")]
    lic = (m.get("License") or "").strip().splitlines()[0][:80] if m.get("License") else ""
    return expr or "; ".join(classifiers) or lic or "UNKNOWN"


def _py_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root] if root.suffix == ".py" else []
    out = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).parts
        if any(part in SKIP_PARTS or part.startswith("test_") for part in rel):
            continue
        if p.stat().st_size > MAX_FILE_BYTES:
            continue
        out.append(p)
    return out


def collect_sources() -> tuple[list[tuple[str, str, str]], list[dict]]:
    """[(source_name, licence, path)], and a per-source report."""
    files, report = [], []
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    std = _py_files(stdlib)
    files += [("python-stdlib", "PSF-2.0", str(p)) for p in std]
    report.append(dict(source="python-stdlib", version=sysconfig.get_python_version(), licence="PSF-2.0",
                       files=len(std)))
    site = Path(sysconfig.get_paths()["purelib"])
    for dist_name, tops in PACKAGES.items():
        try:
            dist = md.distribution(dist_name)
        except md.PackageNotFoundError:
            report.append(dict(source=dist_name, skipped="not installed"))
            continue
        lic = licence_of(dist)
        if not PERMISSIVE.search(lic) or re.search(r"\b(GPL|MPL)\b", lic):
            report.append(dict(source=dist_name, licence=lic, skipped="licence not in MIT/BSD/Apache/PSF/ISC"))
            continue
        chosen, total = [], 0
        for top in tops:
            for p in _py_files(site / top):
                size = p.stat().st_size
                if total + size > MAX_PACKAGE_BYTES:
                    continue
                total += size
                chosen.append(p)
        files += [(dist_name, lic, str(p)) for p in chosen]
        report.append(dict(source=dist_name, version=dist.version, licence=lic, files=len(chosen)))
    return files, report


def is_heldout(path: str, site_or_std_root: str = "") -> bool:
    """~2% of files, by a hash of the path relative to its library root (stable across machines)."""
    key = re.sub(r"^.*?/(lib/python3\.\d+/(site-packages/)?)", "", path)
    return int(hashlib.sha1(key.encode()).hexdigest(), 16) % 50 == 0


def read_clean(path: str) -> str | None:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None
    text = text.replace("\r\n", "\n").replace("\t", "    ") if "\t" in text and not text.startswith("#!") else \
        text.replace("\r\n", "\n")
    if not text.strip():
        return None
    # Drop a long leading licence/comment header: it teaches nothing useful and eats context.
    lines = text.split("\n")
    i = 0
    while i < len(lines) and (lines[i].startswith("#") or not lines[i].strip()):
        i += 1
    if i > 8:
        text = "\n".join(lines[i:])
    return text


# ---- mined "# instruction" -> code snippets ------------------------------------------------------------------
_BAD_COMMENT = re.compile(r"(noqa|pragma|type:|pylint|fmt:|TODO|XXX|FIXME|HACK|isort|flake8|mypy|-\*-|^!|"
                          r"copyright|licen[cs]e|[=\-*#]{3,}|\bdef\b|\(\)\s*$|http)", re.I)
_BLOCK_START_BAD = re.compile(r"^(elif|else|except|finally|return|yield|break|continue|raise|pass|@|\)|\]|\})")
_BAD_STMT = (ast.Return, ast.Break, ast.Continue, ast.Yield, ast.YieldFrom, ast.Await, ast.Global, ast.Nonlocal)


def _instruction(comment: str) -> str | None:
    c = comment.strip().lstrip("#").strip()
    if not c or _BAD_COMMENT.search(c):
        return None
    words = c.split()
    if not (3 <= len(words) <= 25) or not c[0].isalpha():
        return None
    c = c[0].upper() + c[1:]
    if c[-1] not in ".!?":
        c = c.rstrip(":;,") + "."
    return c


def _top_level_ok(code: str) -> bool:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(node, _BAD_STMT):
            # return/yield are fine inside a def/class defined by the block itself
            if not _inside_def(tree, node):
                return False
    return bool(tree.body)


def _inside_def(tree, target) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for sub in ast.walk(node):
                if sub is target:
                    return True
    return False


def mine_snippets(text: str) -> list[tuple[str, str]]:
    """(instruction, dedented code) for each single comment line that opens a block of code at its indentation."""
    lines = text.split("\n")
    out = []
    n = len(lines)
    i = 0
    while i < n:
        line = lines[i]
        s = line.lstrip()
        if not s.startswith("# ") or (i > 0 and lines[i - 1].lstrip().startswith("#")) or \
                (i + 1 < n and lines[i + 1].lstrip().startswith("#")):
            i += 1
            continue
        ind = len(line) - len(s)
        instr = _instruction(s)
        if instr is None:
            i += 1
            continue
        j = i + 1
        block = []
        while j < n:
            l2 = lines[j]
            if not l2.strip():
                break
            ind2 = len(l2) - len(l2.lstrip())
            if ind2 < ind or (ind2 == ind and l2.lstrip().startswith("#")):
                break
            block.append(l2)
            j += 1
        if block and len(block) <= 12 and (len(block[0]) - len(block[0].lstrip())) == ind \
                and not _BLOCK_START_BAD.match(block[0].lstrip()):
            code = textwrap.dedent("\n".join(block)).rstrip()
            if len(code) < 600 and _top_level_ok(code):
                out.append((instr, code))
        i = max(j, i + 1)
    return out


def docstring_functions(text: str) -> list[str]:
    """Functions (and methods, dedented, without self) with docstrings, up to 40 lines, as standalone code."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return []
    lines = text.split("\n")
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef) or not ast.get_docstring(node):
            continue
        start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
        if node.end_lineno - start > 40:
            continue
        src = textwrap.dedent("\n".join(lines[start - 1:node.end_lineno]))
        if "self" in src.split("\n", 1)[0]:
            src = re.sub(r"\(self,\s*", "(", src, count=1).replace("(self)", "()", 1)
        try:
            ast.parse(src)
        except SyntaxError:
            continue
        out.append(src.rstrip())
    return out


def mtpb_documents(snips: list[tuple[str, str]], rng: random.Random) -> list[str]:
    """Instruction turns: one snippet as a top-level MTPB turn, and short programs of consecutive snippets
    from the same file behind the MTPB preamble."""
    docs = []
    for instr, code in snips:
        docs.append(f"# {instr}\n{code}\n\n")
    k = 0
    while k < len(snips):
        m = rng.randint(2, 5)
        group = snips[k:k + m]
        k += m
        if len(group) < 2:
            break
        docs.append(PREAMBLE + "".join(f"# {a}\n{c}\n\n" for a, c in group))
    return docs
