"""The CodeGen tokenizer: GPT-2 byte-level BPE plus CodeGen's whitespace tokens, built on `tokenizers`.

Ids match transformers' CodeGenTokenizer for Salesforce/codegen-*-{mono,multi} (and plain GPT-2 for `nl`).
This module imports neither torch nor transformers, so `import convsynth` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import BPE

from .errors import CheckpointError
from .stops import CODEGEN_TERMINALS, truncate_with

__all__ = ["CodeGenTokenizer", "truncate_before", "TRUNCATE_BEFORE_PATTERN", "ENDOFTEXT"]

PACKAGED = Path(__file__).resolve().parent / "assets" / "tokenizer.json"
ENDOFTEXT = "<|endoftext|>"
# The stop list of the original CodeGen sampler; decode's truncation is the one in stops.py.
TRUNCATE_BEFORE_PATTERN = CODEGEN_TERMINALS
truncate_before = truncate_with


def _as_ids(ids) -> list[int]:
    """Accept a list/tuple of ints, a single int, or anything iterable of int-likes (numpy, tensors)."""
    if isinstance(ids, int):
        return [ids]
    if hasattr(ids, "tolist"):  # numpy arrays and tensors, without importing either
        ids = ids.tolist()
        if isinstance(ids, int):
            return [ids]
    return [int(i) for i in ids]


class CodeGenTokenizer:
    """Text <-> ids for CodeGen. Encodes without BOS; pads on the left with <|endoftext|> (50256)."""

    def __init__(self, tokenizer: Tokenizer, source: str = "?"):
        self._tok = tokenizer
        self.source = source
        eos = tokenizer.token_to_id(ENDOFTEXT)
        if eos is None:
            raise CheckpointError(f"tokenizer from {source} has no {ENDOFTEXT} token; it is not a CodeGen/GPT-2 tokenizer")
        self.eos_token_id = eos
        # CodeGen has no pad token; like the reference's usual setup, pad with EOS (masked out anyway).
        self.pad_token_id = eos

    # ---- loading -------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path=None, *, whitespace_tokens: bool = True) -> "CodeGenTokenizer":
        """None: the packaged tokenizer.json. A directory: its tokenizer.json if present, else vocab.json +
        merges.txt (+ added_tokens.json for the whitespace tokens); with none of these, the packaged one.
        A .json file: that tokenizer.json. A missing path raises CheckpointError.

        whitespace_tokens=False drops CodeGen's 38 whitespace tokens from the packaged tokenizer, giving plain
        GPT-2 (50257 tokens), which is what the `nl` checkpoints were trained with.
        """
        if path is None:
            return cls._packaged(whitespace_tokens)
        p = Path(path).expanduser()
        if not p.exists():
            raise CheckpointError(
                f"tokenizer path {str(path)!r} does not exist. Pass a checkpoint directory (holding tokenizer.json, "
                f"or vocab.json + merges.txt), a tokenizer.json file, or None for the packaged CodeGen tokenizer.")
        if p.is_file():
            return cls.from_file(p)
        if (p / "tokenizer.json").is_file():
            return cls.from_file(p / "tokenizer.json")
        vocab, merges = p / "vocab.json", p / "merges.txt"
        if vocab.is_file() and merges.is_file():
            return cls._from_vocab_merges(p)
        if vocab.is_file() or merges.is_file():
            have, lack = (vocab, merges) if vocab.is_file() else (merges, vocab)
            raise CheckpointError(f"{p} has {have.name} but not {lack.name}; a GPT-2 style tokenizer needs both "
                                  f"(or a tokenizer.json). Add the missing file or remove the other.")
        return cls._packaged(whitespace_tokens)  # a bare checkpoint folder: CodeGen's tokenizer is fixed

    @classmethod
    def from_file(cls, tokenizer_json_path) -> "CodeGenTokenizer":
        """Load a `tokenizers` tokenizer.json file."""
        p = Path(tokenizer_json_path).expanduser()
        if not p.is_file():
            raise CheckpointError(f"tokenizer file {str(p)!r} does not exist")
        try:
            tok = Tokenizer.from_file(str(p))
        except Exception as e:  # tokenizers raises a bare Exception on bad json
            raise CheckpointError(f"cannot read tokenizer file {p}: {e}. Is it a Hugging Face tokenizer.json?") from e
        return cls(tok, str(p))

    @classmethod
    def _packaged(cls, whitespace_tokens: bool) -> "CodeGenTokenizer":
        if whitespace_tokens:
            return cls.from_file(PACKAGED)
        spec = json.loads(PACKAGED.read_text(encoding="utf-8"))
        spec["added_tokens"] = [t for t in spec["added_tokens"] if t["special"]]
        return cls(Tokenizer.from_str(json.dumps(spec)), f"{PACKAGED} (plain GPT-2)")

    @classmethod
    def _from_vocab_merges(cls, folder: Path) -> "CodeGenTokenizer":
        """A ByteLevel BPE with GPT-2's settings, as transformers builds CodeGenTokenizer from these files."""
        try:
            model = BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt"), dropout=None,
                                  continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False)
        except Exception as e:
            raise CheckpointError(f"cannot read vocab.json/merges.txt in {folder}: {e}") from e
        tok = Tokenizer(model)
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(add_prefix_space=True, use_regex=True, trim_offsets=False)

        specials = {ENDOFTEXT}
        smap = folder / "special_tokens_map.json"
        if smap.is_file():
            for v in json.loads(smap.read_text(encoding="utf-8")).values():
                if isinstance(v, dict):
                    v = v.get("content")
                if isinstance(v, str):
                    specials.add(v)
        added: dict[str, int] = {}
        added_file = folder / "added_tokens.json"
        if added_file.is_file():
            added = json.loads(added_file.read_text(encoding="utf-8"))
        # Special tokens first (<|endoftext|> is already in GPT-2's vocab.json, so it keeps 50256), then the
        # added tokens in id order: `tokenizers` hands out ids sequentially, so order decides the ids.
        tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in sorted(specials)])
        for content, idx in sorted(added.items(), key=lambda kv: kv[1]):
            special = content in specials
            token = AddedToken(content, special=special, normalized=not special, lstrip=False, rstrip=False)
            (tok.add_special_tokens if special else tok.add_tokens)([token])
            if tok.token_to_id(content) != idx:
                raise CheckpointError(f"{added_file}: token {content!r} should have id {idx} but got "
                                      f"{tok.token_to_id(content)}; added tokens must follow the vocabulary without gaps")
        return cls(tok, str(folder))

    # ---- encoding / decoding ----------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Ids of `text`; no BOS. "<|endoftext|>" inside the text becomes 50256, as in the reference."""
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, not {type(text).__name__}")
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> tuple[list[list[int]], list[list[int]]]:
        """(ids, attention_mask) for several texts, LEFT padded with pad_token_id to the longest."""
        # One encode() per text rather than Tokenizer.encode_batch: the batch call starts a thread pool, and a
        # process that later forks (our sandbox kernels) would then get tokenizers' fork warning.
        rows = [self.encode(t) for t in texts]
        width = max((len(r) for r in rows), default=0)
        ids = [[self.pad_token_id] * (width - len(r)) + r for r in rows]
        mask = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
        return ids, mask

    def decode(self, ids, skip_special_tokens: bool = True, truncate_before_pattern: list[str] | None = None) -> str:
        """Text of `ids`. Unknown ids (the model has 51200 rows, the tokenizer 50295) are dropped, as in the
        reference. With `truncate_before_pattern`, the text is cut as truncate_before() describes."""
        text = self._tok.decode(_as_ids(ids), skip_special_tokens=skip_special_tokens)
        if truncate_before_pattern:
            text = truncate_before(text, truncate_before_pattern)
        return text

    @property
    def decodes_by_concatenation(self) -> bool:
        """Whether decode(a + b) == decode(a) + decode(b) when decode(a) ends on a whole character: true for the
        byte-level decoder of every CodeGen checkpoint; streaming decodes incrementally only then."""
        return isinstance(self._tok.decoder, decoders.ByteLevel)

    def pieces(self, ids) -> list[str]:
        """The text of each token alone. A token holding part of a UTF-8 character shows U+FFFD; an unknown id ""."""
        return [self._tok.decode([i], skip_special_tokens=False) for i in _as_ids(ids)]

    # ---- sizes ---------------------------------------------------------------------------------------------
    def save(self, directory) -> Path:
        """Write tokenizer.json into ``directory`` (loadable by from_pretrained and by transformers)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(directory / "tokenizer.json"))
        return directory / "tokenizer.json"

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def vocab_size(self) -> int:
        return len(self)

    def __repr__(self) -> str:
        return f"CodeGenTokenizer({len(self)} tokens, from {self.source})"
