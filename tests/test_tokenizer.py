"""The CodeGen tokenizer against the real one's golden ids and against transformers' CodeGenTokenizer."""

import importlib.util
import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from convsynth.errors import CheckpointError
from convsynth.tokenizer import TRUNCATE_BEFORE_PATTERN, CodeGenTokenizer

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "tokenizer_golden.json"  # ids from the real CodeGen tokenizer
CORPUS_CHARS = 2_000_000  # stdlib sample cap: keeps the reference comparison to a few seconds

EDGE_CASES = [
    "", " ", "\n", "\r\n", "a\r\nb\r\n", "\t", "\tx", "\t" * 9, "\t" * 10 + "y", "\t" * 70, " \t \t  \t\t   x",
    "  ", " " * 31, " " * 32, " " * 33 + "z", " " * 62, " " * 100 + "return 1", "x" + " " * 40 + "\n", "a \n  \n   \n",
    "    return x", "def f():\n    if x:\n        return [1,  2,   3]\n\treturn None\n",
    "😊", "👩‍👩‍👧 and 🇫🇷!", "生活的真谛是", "日本語のテキスト、中文。한국어", "falsé naïve e\u0301", "\x00\x01\x7f\x1b[0m",
    "<|endoftext|>", "a<|endoftext|>b", "x<|endoftext|><|endoftext|>y", "  <|endoftext|>  ", "<|endoftext",
    "it's they're we've I'm he'll she'd 'S", "1234567890 3.14159 -2e10 0xFF", "!!!???...,,,;;;", "x = a .b , c !d",
]

# Decoded text, patterns -> expected cut (hand-checked against transformers' CodeGenTokenizer.truncate).
TRUNCATE_CASES = [
    ("    return x\n\n\n# test\nprint(f(1))", TRUNCATE_BEFORE_PATTERN, "    return x"),
    ("x = 1\n# next\ny = 2", TRUNCATE_BEFORE_PATTERN, "x = 1\n"),
    ("x = 1  # inline comment stays\ny = 2", TRUNCATE_BEFORE_PATTERN, "x = 1  # inline comment stays\ny = 2"),
    ("x = 1<|endoftext|>junk", TRUNCATE_BEFORE_PATTERN, "x = 1"),
    ('x = 1\n"""doc"""', TRUNCATE_BEFORE_PATTERN, "x = 1\n"),
    ("print(1)\nprint(2)\n", TRUNCATE_BEFORE_PATTERN, "print(1)\n"),  # the reference cuts a 2nd top-level print
    ("def a():\n    pass\ndef b():\n    pass", TRUNCATE_BEFORE_PATTERN, "def a():\n    pass\n"),
    ("x = 1\nprint(1)\nprint(2)", [], "x = 1\nprint(1)\nprint(2)"),  # empty list: no cut at all
    ("abc\nabd", ["^ab"], ""),
    ("abc\nxbd", ["bd", "c$"], "ab"),
]


def _golden_cases():
    cases = json.loads(GOLDEN.read_text(encoding="utf-8"))["cases"]
    return [pytest.param(c, id=f"golden{i}") for i, c in enumerate(cases)]


def _stdlib_sample() -> list[str]:
    """Every 10th .py file of the standard library (sorted paths), UTF-8 ones only, up to CORPUS_CHARS."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py")
                   if not {"site-packages", "dist-packages"} & set(p.relative_to(root).parts))
    texts, total = [], 0
    for p in files[::10]:
        try:
            text = p.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        texts.append(text)
        total += len(text)
        if total >= CORPUS_CHARS:
            break
    return texts


@pytest.fixture(scope="module")
def tok():
    return CodeGenTokenizer.from_pretrained()


@pytest.fixture(scope="module")
def corpus():
    texts = _stdlib_sample()
    assert len(texts) > 20, "too few standard-library files found for the corpus"
    return texts + EDGE_CASES


def write_hub_files(tok: CodeGenTokenizer, folder: Path, added_tokens: bool = True) -> Path:
    """Write vocab.json, merges.txt, added_tokens.json, ... laid out like the hub's Salesforce/codegen-350M-mono."""
    spec = json.loads(Path(tok.source).read_text(encoding="utf-8"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(spec["model"]["vocab"], ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(spec["model"]["merges"]) + "\n", encoding="utf-8")
    if added_tokens:
        plain = {t["content"]: t["id"] for t in spec["added_tokens"] if not t["special"]}
        (folder / "added_tokens.json").write_text(json.dumps(plain), encoding="utf-8")
    eot = "<|endoftext|>"
    (folder / "special_tokens_map.json").write_text(json.dumps({"bos_token": eot, "eos_token": eot, "unk_token": eot}))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CodeGenTokenizer", "add_prefix_space": False, "model_max_length": 2048,
        "bos_token": eot, "eos_token": eot, "unk_token": eot}))
    return folder


@pytest.fixture(scope="module")
def hub_dir(tok, tmp_path_factory):
    return write_hub_files(tok, tmp_path_factory.mktemp("codegen-350M-mono"))


@pytest.fixture(scope="module")
def reference(hub_dir):
    transformers = pytest.importorskip("transformers", reason="transformers (the reference) is not installed")
    transformers.logging.set_verbosity_error()  # long files exceed model_max_length: harmless for tokenizing
    return transformers.CodeGenTokenizer.from_pretrained(str(hub_dir))


@pytest.mark.parametrize("case", _golden_cases())
def test_golden_ids(tok, case):
    assert tok.encode(case["text"]) == case["ids"]
    assert tok.decode(case["ids"]) == case["text"]


def test_same_ids_as_transformers(tok, reference, corpus):
    assert len(reference) == len(tok) == 50295
    for text in corpus:
        ours = tok.encode(text)
        ref = reference(text, add_special_tokens=False)["input_ids"]
        assert ours == ref, f"ids differ for {text[:80]!r}"
        assert tok.decode(ours, skip_special_tokens=False) == reference.decode(ref, skip_special_tokens=False)


def test_round_trip(tok, corpus):
    for text in corpus:
        assert tok.decode(tok.encode(text), skip_special_tokens=False) == text, text[:80]


def test_whitespace_tokens(tok):
    assert tok.encode("    return x") == [50284, 7783, 2124]
    assert tok.encode(" " * 31) == [50257] and tok.encode("  ") == [50286]
    assert tok.encode("\t" * 9) == [50287] and tok.encode("\t\t") == [50294]
    assert tok.encode(" " * 40 + "x") == [50257, 50279, 87]  # longest first: 31 + 9 spaces
    assert tok.encode("") == []


def test_endoftext(tok):
    assert tok.eos_token_id == tok.pad_token_id == 50256
    ids = tok.encode("a<|endoftext|>b")
    assert ids == [64, 50256, 65]
    assert tok.decode(ids) == "ab"  # special tokens skipped by default
    assert tok.decode(ids, skip_special_tokens=False) == "a<|endoftext|>b"


def test_len(tok):
    assert len(tok) == tok.vocab_size == 50295


@pytest.mark.parametrize("text, patterns, expected", TRUNCATE_CASES)
def test_truncate_before_pattern(tok, text, patterns, expected):
    ids = tok.encode(text)
    assert tok.decode(ids, skip_special_tokens=False, truncate_before_pattern=patterns) == expected


def test_truncate_matches_transformers(tok, reference):
    for text, patterns, _ in TRUNCATE_CASES:
        ids = tok.encode(text)
        for skip in (False, True):
            ours = tok.decode(ids, skip_special_tokens=skip, truncate_before_pattern=patterns)
            ref = reference.decode(ids, skip_special_tokens=skip, truncate_before_pattern=patterns)
            assert ours == ref, (text, patterns, skip)


def test_encode_batch_left_padding(tok):
    ids, mask = tok.encode_batch(["hello world", "", "a"])
    assert ids == [[31373, 995], [50256, 50256], [50256, 64]]
    assert mask == [[1, 1], [0, 0], [0, 1]]
    assert tok.encode_batch([]) == ([], [])


def test_pieces(tok):
    assert tok.pieces(tok.encode("    return x")) == ["    ", "return", " x"]
    assert tok.pieces([50256]) == ["<|endoftext|>"]
    emoji = tok.encode("😊")  # four UTF-8 bytes split over two tokens: neither is valid UTF-8 alone
    assert len(emoji) == 2 and all("\ufffd" in p for p in tok.pieces(emoji))
    text = "def f(x):\n\treturn x  # ok"
    assert "".join(tok.pieces(tok.encode(text))) == text
    assert tok.pieces([60000]) == [""]  # beyond the vocabulary (the model has 51200 rows)


def test_decode_accepts_int_likes(tok):
    assert tok.decode(15496) == "Hello"
    assert tok.decode((15496, 995)) == "Hello world"
    assert tok.decode([15496, 60000, 995]) == "Hello world"  # unknown ids are dropped, as in the reference


def test_from_pretrained_vocab_merges_dir(tok, hub_dir, corpus):
    other = CodeGenTokenizer.from_pretrained(hub_dir)
    assert len(other) == 50295 and other.eos_token_id == 50256
    for text in corpus[-len(EDGE_CASES):] + corpus[:5]:
        assert other.encode(text) == tok.encode(text)


def test_from_pretrained_variants(tok, tmp_path):
    plain = write_hub_files(tok, tmp_path / "nl", added_tokens=False)  # the nl checkpoints: plain GPT-2
    gpt2 = CodeGenTokenizer.from_pretrained(plain)
    assert len(gpt2) == 50257 and gpt2.encode("    return x") == [220, 220, 220, 1441, 2124]
    assert CodeGenTokenizer.from_pretrained(whitespace_tokens=False).encode("  x") == [220, 2124]
    with_json = tmp_path / "withjson"
    with_json.mkdir()
    (with_json / "tokenizer.json").write_bytes(Path(tok.source).read_bytes())
    assert CodeGenTokenizer.from_pretrained(with_json).encode("\t\tx") == [50294, 87]
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text("{}")
    assert len(CodeGenTokenizer.from_pretrained(bare)) == 50295  # nothing there: the packaged tokenizer


def test_from_pretrained_errors(tmp_path):
    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(CheckpointError, match=r"no-such-checkpoint.*does not exist"):
        CodeGenTokenizer.from_pretrained(missing)
    half = tmp_path / "half"
    half.mkdir()
    (half / "vocab.json").write_text("{}")
    with pytest.raises(CheckpointError, match="merges.txt"):
        CodeGenTokenizer.from_pretrained(half)
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    with pytest.raises(CheckpointError, match="cannot read"):
        CodeGenTokenizer.from_file(bad)


def test_import_is_light():
    code = ("import sys, convsynth; before = set(sys.modules); import convsynth.tokenizer; "
            "new = set(sys.modules) - before; "
            "assert not any(m.split('.')[0] in ('torch', 'transformers') for m in new), sorted(new)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_asset_rebuilds_from_its_own_ranks(tok):
    """The build script, fed the shipped vocabulary's ranks, reproduces the shipped file byte for byte
    (this checks merge recovery and deterministic output; `build_tokenizer.py --check` does it from whisper)."""
    spec = importlib.util.spec_from_file_location("build_tokenizer", ROOT / "scripts" / "build_tokenizer.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    shipped = Path(tok.source).read_bytes()
    vocab = json.loads(shipped)["model"]["vocab"]
    u2b = {u: b for b, u in build.bytes_to_unicode().items()}
    ranks = sorted((i, bytes(u2b[c] for c in s)) for s, i in vocab.items() if i < build.N_RANKS)
    assert [i for i, _ in ranks] == list(range(build.N_RANKS))
    assert build.build_json([b for _, b in ranks]).encode("utf-8") == shipped
