"""Shared fixtures: random-weight CodeGen checkpoints written by transformers (the reference), in every format."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # our machines cannot reach the hub; never wait on it
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from helpers import ROOT, reference_model, write_checkpoint  # noqa: F401 - ROOT: where the audit hook looks

# ---- The tests read nothing outside the repository (a fresh clone must test what CI tests). An audit hook sees
# every open() in this process; reads under the repository's parent folder but outside the repository (a sibling
# such as ../shared) are recorded, and the test that made them fails (`no_reads_outside_the_repository`). The
# Python environment and the temporary folder are allowed even when they sit beside the repository.
# Subprocesses are not seen here: tests/test_self_contained.py also greps the sources.
_ALLOWED = [Path(p).resolve() for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, tempfile.gettempdir()}]
OUTSIDE_READS: list[str] = []


def outside_repository(path, root: Path | None = None) -> bool:
    """True for a path under the repository's (`root`'s) parent folder, outside it and the allowed places."""
    root = root or ROOT
    try:
        p = Path(os.fsdecode(path))
        p = Path(os.path.abspath(p))
    except (TypeError, ValueError):
        return False  # a file descriptor, not a path
    def under(base: Path) -> bool:
        return p == base or base in p.parents
    return under(root.parent) and not under(root) and not any(under(a) for a in _ALLOWED)


def _audit(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and outside_repository(args[0]):
        OUTSIDE_READS.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # cannot be removed; it only records


@pytest.fixture(autouse=True)
def no_reads_outside_the_repository():
    seen = len(OUTSIDE_READS)
    yield
    if len(OUTSIDE_READS) > seen:
        pytest.fail(f"this test opened files outside the repository: {sorted(set(OUTSIDE_READS[seen:]))[:5]}; "
                    "copy what it needs into the repository", pytrace=False)

@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """checkpoints(shape, fmt) -> (directory, reference model), made once per session."""
    made = {}

    def get(shape: str, fmt: str = "safetensors"):
        key = (shape, fmt)
        if key not in made:
            ref = reference_model(shape)
            made[key] = (write_checkpoint(ref, tmp_path_factory.mktemp(f"{shape}-{fmt}"), fmt), ref)
        return made[key]
    return get


@pytest.fixture(scope="session")
def tiny(checkpoints):
    """The 'tiny' random checkpoint loaded with convsynth, and its transformers reference."""
    import convsynth
    directory, ref = checkpoints("tiny")
    return convsynth.load(directory), ref
