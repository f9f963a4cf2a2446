"""The repository is self-sufficient: tests, scripts, notebooks and the package read nothing outside it.

conftest.py fails any test that opens a file beside the repository (an audit hook); this file checks that the hook
catches such a read, and greps the sources for paths that leave the repository (subprocesses and notebooks run in
other processes, which the hook does not see).
"""
import re
import subprocess
from pathlib import Path

import conftest
from convsynth import mtpb_check

ROOT = Path(__file__).resolve().parents[1]
# ../shared, "shared" as a path part, or climbing above the repository root from a file inside it
LEAVES = re.compile(r"\.\.[/\\](?:\.\.[/\\])*shared\b|[\"']shared[\"']|/work/shared|parents\[[2-9]\]|ROOT\.parent\b")
SOURCES = ("convsynth", "tests", "scripts", "notebooks", "benchmarks", ".ci", "pyproject.toml", "README.md")


def _tracked_sources() -> list[Path]:
    try:
        names = subprocess.run(["git", "ls-files", *SOURCES], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist): every file there
        names = [str(p.relative_to(ROOT)) for s in SOURCES for p in (ROOT / s).rglob("*") if p.is_file()]
    keep = (".py", ".sh", ".ipynb", ".toml", ".md", ".cfg", "run")
    return [ROOT / n for n in names if n.endswith(keep) and "/results/" not in n and "/models/" not in n]


def test_no_source_reaches_outside_the_repository():
    me = Path(__file__).resolve()
    offenders = []
    for path in _tracked_sources():
        if path.resolve() in (me, Path(conftest.__file__).resolve()):
            continue  # they name the patterns they look for
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if LEAVES.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:120]}")
    assert offenders == []


def test_the_grep_sees_a_path_outside():
    assert LEAVES.search('DATA = ROOT.parent / "shared" / "data"') and LEAVES.search("x = '../shared/data/x.json'")
    assert LEAVES.search("Path(__file__).resolve().parents[2]") and not LEAVES.search("parents[1] / 'tests'")


def test_the_audit_hook_records_a_read_beside_the_repository():
    sibling = ROOT.parent / "convsynth-no-such-sibling" / "secret.txt"
    assert conftest.outside_repository(sibling) and not conftest.outside_repository(ROOT / "README.md")
    seen = len(conftest.OUTSIDE_READS)
    try:
        open(sibling)  # absent, but the hook sees the attempt
    except OSError:
        pass
    assert conftest.OUTSIDE_READS[seen:] == [str(sibling)]
    del conftest.OUTSIDE_READS[seen:]  # this test's own read is the expected one


def test_bundled_data_is_in_the_package():
    assert mtpb_check.default_data_path() == mtpb_check.DATA_PATH
    assert ROOT / "convsynth" in mtpb_check.DATA_PATH.parents
    assert {"mtpb.jsonl", "SOURCE.md", "LICENSE"} <= {p.name for p in mtpb_check.DATA_PATH.parent.iterdir()}
    assert "Salesforce.com" in (mtpb_check.DATA_PATH.parent / "LICENSE").read_text()
