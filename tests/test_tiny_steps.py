"""The training-program generator of the packaged model (scripts/tiny_steps.py): verified programs, the session's
layout, enough wordings per operation, and no MTPB text in the instructions."""
from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import tiny_steps as TS  # noqa: E402


def test_generated_programs_print_what_the_generator_computed():
    made = list(TS.generate(123, 300))
    assert len(made) == 300
    for text, spans, expected in made:
        assert text.startswith(TS.PREAMBLE)
        assert expected and TS.run_program(text) == expected
        assert all(text[a:b].strip() and not text[a:b].lstrip().startswith("#") for a, b in spans)


def test_small_counts_are_sometimes_spoken_as_words():
    """v7: "the first three items" in the instruction, the digit in the code, about 30 % of the time (that such
    programs verify is the test above's)."""
    rng, spoken = random.Random(5), []
    for _ in range(3000):
        r = TS.pick_k(rng, "len", [1, 2, 3, 4, 5, 6])
        spoken += [r] if not r[0].isdigit() else []
    assert 0.2 < len(spoken) / 3000 < 0.4
    assert all(TS.NUMBER_WORDS[value] == text and code == str(value) for text, code, value in spoken)


def test_verification_rejects_a_wrong_program():
    """The check that keeps wrong programs out of training can fail: a program whose code does not do what its
    instruction says prints something else than the generator computed."""
    rng = random.Random(7)
    wrong = 0
    for _ in range(400):
        p = TS.program(rng)
        text, _ = TS.render(p, rng)
        broken = text.replace("sorted(", "list(").replace("max(", "min(").replace(".upper()", ".lower()")
        if broken != text:
            wrong += TS.run_program(broken) != p.out.getvalue()
    assert wrong > 10


def test_layout_is_the_sessions(packaged):
    """A program as rendered is exactly the text a Session holds for the same steps (one of the separators the
    codegen stop can leave after a step: here the one of code added by hand)."""
    import convsynth

    rng = random.Random(3)
    p = TS.program(rng)
    s = convsynth.Session(packaged)
    for instr, code in p.steps:
        s.add_code(code, instruction=instr)
    text = TS.PREAMBLE + "".join(f"# {i}\n{c}\n\n\n" for i, c in p.steps)
    assert s.text == text
    s.close()


def test_every_operation_has_at_least_ten_wordings():
    for o in TS.OPS:
        store = len(o["verbs"]) * len(TS.STORE_SUFFIX) + len(o["nouns"]) * len(TS.STORE_NOUN)
        printed = len(o["nouns"]) * len(TS.PRINT_NOUN) + len(o["verbs"]) * len(TS.PRINT_VERB)
        assert store >= 10 and printed >= 10, o["expr"]
        assert len(o["verbs"]) + len(o["nouns"]) >= 4, o["expr"]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def test_no_mtpb_text_in_the_training_instructions():
    """No 8-word sequence of any MTPB prompt occurs in the generator's instructions (a large sample with the
    training seed's generator, and every fixed phrase of the templates)."""
    from convsynth import mtpb_check

    problems = mtpb_check.load_problems()
    grams = set()
    for prob in problems:
        for prompt in prob.prompts:
            w = _words(re.sub(r"\{\w+\}", " ", prompt))
            grams.update(tuple(w[i:i + 8]) for i in range(len(w) - 7))
    assert len(grams) > 1000
    instrs = TS.instructions(1234 + 7, 20000)
    fixed = [x for o in TS.OPS for x in o["verbs"] + o["nouns"]] + TS.STORE_SUFFIX + TS.STORE_NOUN + \
        TS.PRINT_NOUN + TS.PRINT_VERB + TS.PRINT_VAR
    hits = []
    for text in instrs + fixed:
        w = _words(text)
        hits += [text for i in range(len(w) - 7) if tuple(w[i:i + 8]) in grams]
    assert not hits, hits[:5]


@pytest.fixture(scope="module")
def packaged():
    import convsynth
    return convsynth.load()
