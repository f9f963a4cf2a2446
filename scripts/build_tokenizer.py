#!/usr/bin/env python3
"""Rebuild convsynth/assets/tokenizer.json (the CodeGen mono/multi tokenizer) from public GPT-2 ranks.

The GPT-2 BPE ranks ship, MIT-licensed, inside the PyPI source archive of openai-whisper as
whisper/assets/gpt2.tiktoken (one "base64(token bytes) rank" per line). tiktoken stores only ranks, so the
merges are recovered: a token's merge is the two-part split that byte-level BPE produces on its bytes when
only lower-ranked tokens may be formed. Rebuilt this way vocab and merges equal OpenAI's originals.

    python scripts/build_tokenizer.py            # download the pinned sdist with pip, write the asset
    python scripts/build_tokenizer.py --archive openai_whisper-20250625.tar.gz
    python scripts/build_tokenizer.py --check    # exit 1 if the shipped file differs from a rebuild

The output is deterministic: same ranks in, same bytes out.
"""

from __future__ import annotations

import argparse
import base64
import glob
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

WHISPER_VERSION = "20250625"
# Pinned so that a changed upload (or a different file) is noticed instead of silently shipped.
GPT2_TIKTOKEN_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
MEMBER = "whisper/assets/gpt2.tiktoken"

ENDOFTEXT = "<|endoftext|>"
N_RANKS = 50256  # ids 0..50255; <|endoftext|> is 50256
# CodeGen's extra non-special tokens, added longest first: 31..2 spaces (50257..50286), 9..2 tabs (50287..50294).
WHITESPACE_TOKENS = [" " * n for n in range(31, 1, -1)] + ["\t" * n for n in range(9, 1, -1)]

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "convsynth" / "assets" / "tokenizer.json"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (so BPE never sees spaces or control bytes)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def read_ranks_from_archive(archive: Path) -> bytes:
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            # The sdist's top folder is "openai_whisper-<version>/" (or "openai-whisper-..." in older ones).
            if member.isfile() and member.name.split("/", 1)[-1] == MEMBER:
                return tar.extractfile(member).read()
    raise SystemExit(f"{archive}: no {MEMBER} inside; is this the openai-whisper source archive?")


def download_archive(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           f"openai-whisper=={WHISPER_VERSION}", "-d", str(dest)]
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    found = glob.glob(str(dest / "openai*whisper-*.tar.gz"))
    if len(found) != 1:
        raise SystemExit(f"expected one source archive in {dest}, found {found}")
    return Path(found[0])


def parse_ranks(data: bytes) -> list[bytes]:
    digest = hashlib.sha256(data).hexdigest()
    if digest != GPT2_TIKTOKEN_SHA256:
        raise SystemExit(f"{MEMBER}: sha256 {digest} is not the pinned {GPT2_TIKTOKEN_SHA256}")
    tokens: list[bytes] = []
    for line in data.splitlines():
        if not line:
            continue
        b64, rank = line.split()
        if int(rank) != len(tokens):
            raise SystemExit(f"{MEMBER}: ranks are not 0, 1, 2, ... (got {rank} at line {len(tokens) + 1})")
        tokens.append(base64.b64decode(b64))
    if len(tokens) != N_RANKS:
        raise SystemExit(f"{MEMBER}: {len(tokens)} ranks, expected {N_RANKS}")
    return tokens


def recover_merges(tokens: list[bytes]) -> list[tuple[bytes, bytes]]:
    """For each multi-byte token, in rank order, the pair that BPE with only lower ranks would merge last."""
    rank = {tok: i for i, tok in enumerate(tokens)}
    merges = []
    for r, tok in enumerate(tokens):
        if len(tok) == 1:
            if r >= 256:
                raise SystemExit(f"single byte {tok!r} at rank {r}: not GPT-2 ranks")
            continue
        parts = [tok[i:i + 1] for i in range(len(tok))]
        while len(parts) > 2:
            best, at = r, -1
            for i in range(len(parts) - 1):
                pr = rank.get(parts[i] + parts[i + 1], r)
                if pr < best:
                    best, at = pr, i
            if at < 0:
                break
            parts[at:at + 2] = [parts[at] + parts[at + 1]]
        if len(parts) != 2:
            raise SystemExit(f"token {tok!r} (rank {r}) is not one merge of lower-ranked tokens")
        merges.append((parts[0], parts[1]))
    return merges


def build_json(tokens: list[bytes]) -> str:
    b2u = bytes_to_unicode()

    def show(b: bytes) -> str:
        return "".join(b2u[x] for x in b)

    vocab = [show(t) for t in tokens] + [ENDOFTEXT]
    merges = [f"{show(a)} {show(b)}" for a, b in recover_merges(tokens)]

    def added(i: int, content: str, special: bool) -> dict:
        # Field order and values as `tokenizers` writes them; the whitespace runs are plain (normalized,
        # non-special) tokens, like the hub's added_tokens.json loads them.
        return {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": not special, "special": special}

    added_tokens = [added(N_RANKS, ENDOFTEXT, True)]
    added_tokens += [added(N_RANKS + 1 + k, ws, False) for k, ws in enumerate(WHITESPACE_TOKENS)]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    head = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added_tokens,
        "normalizer": None,
        "pre_tokenizer": byte_level,
        # Same settings as transformers' CodeGenTokenizer; only offsets depend on them, never ids.
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    }
    model_head = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False}

    def dump(obj) -> str:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))

    # Compact JSON, but one vocab entry / merge per line so that diffs and `--check` reports stay readable.
    lines = ["{"]
    lines += [f"{dump(k)}:{dump(v)}," for k, v in head.items()]
    lines.append('"model":{' + dump(model_head)[1:-1] + ',"vocab":{')
    lines += [f"{dump(tok)}:{i}," for i, tok in enumerate(vocab)]
    lines[-1] = lines[-1][:-1]
    lines.append('},"merges":[')
    lines += [dump(m) + "," for m in merges]
    lines[-1] = lines[-1][:-1]
    lines.append("]}}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", type=Path, help=f"openai-whisper {WHISPER_VERSION} sdist (.tar.gz); default: pip download")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write (default: the shipped asset)")
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing; exit 1 on a difference")
    args = parser.parse_args(argv)

    if args.archive is not None:
        data = read_ranks_from_archive(args.archive)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            data = read_ranks_from_archive(download_archive(Path(tmp)))
    text = build_json(parse_ranks(data)).encode("utf-8")

    if args.check:
        old = args.out.read_bytes() if args.out.exists() else b""
        if old == text:
            print(f"{args.out}: up to date ({len(text)} bytes)")
            return 0
        new_lines, old_lines = text.splitlines(), old.splitlines()
        first = next((i for i, (a, b) in enumerate(zip(new_lines, old_lines)) if a != b), min(len(new_lines), len(old_lines)))
        print(f"{args.out}: differs from a rebuild, first at line {first + 1} "
              f"({len(old)} bytes shipped, {len(text)} rebuilt); run scripts/build_tokenizer.py", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(text)
    print(f"wrote {args.out} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
