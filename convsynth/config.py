"""CodeGen configuration: a frozen dataclass read from a checkpoint's config.json, plus the 12 named presets."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

MP_NUM = 4  # CodeGen's fused qkv projection is split into 4 fixed "model parallel" chunks
ARCHITECTURES = ("CodeGenForCausalLM", "CodeGenModel")
_INT, _INT_OR_NONE = (int,), (int, type(None))
_TYPES = {"vocab_size": _INT, "n_positions": _INT, "n_embd": _INT, "n_layer": _INT, "n_head": _INT,
          "rotary_dim": _INT_OR_NONE, "n_inner": _INT_OR_NONE, "activation_function": (str,),
          "layer_norm_epsilon": (int, float), "bos_token_id": _INT_OR_NONE, "eos_token_id": _INT_OR_NONE,
          "tie_word_embeddings": (bool,), "quantization": (str, type(None))}


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class CodeGenConfig:
    vocab_size: int = 51200
    n_positions: int = 2048
    n_embd: int = 1024
    n_layer: int = 20
    n_head: int = 16
    rotary_dim: int = 32
    n_inner: int | None = None  # None means 4 * n_embd
    activation_function: str = "gelu_new"
    layer_norm_epsilon: float = 1e-5
    bos_token_id: int = 1
    eos_token_id: int = 50256
    tie_word_embeddings: bool = False
    quantization: str | None = None  # "int8": the checkpoint holds int8 weights (convsynth convert --quantize)
    name: str = ""  # where the config came from, for messages only

    def __post_init__(self):
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def inner_dim(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    def validate(self) -> None:
        where = f" in {self.name}" if self.name else ""
        for field in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            if int(getattr(self, field)) < 1:
                raise ConfigError(f"{field}={getattr(self, field)}{where} must be a positive integer.")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}{where}; "
                              "every head must have the same size.")
        if self.n_head % MP_NUM:
            raise ConfigError(f"n_head={self.n_head}{where} is not divisible by {MP_NUM}: CodeGen's fused qkv "
                              f"projection is laid out as {MP_NUM} fixed chunks of whole heads, so this layout "
                              "cannot be represented.")
        if self.quantization not in (None, "int8"):
            raise ConfigError(f"quantization={self.quantization!r}{where}: convsynth reads float weights or the int8 "
                              "weights convsynth convert --quantize int8 writes.")
        if self.rotary_dim is None or self.rotary_dim <= 0 or self.rotary_dim % 2:
            raise ConfigError(f"rotary_dim={self.rotary_dim}{where} must be a positive even number "
                              "(rotary embedding rotates pairs of dimensions).")
        if self.rotary_dim > self.head_dim:
            raise ConfigError(f"rotary_dim={self.rotary_dim}{where} is larger than the head size "
                              f"{self.head_dim} (n_embd / n_head).")
        if not self.layer_norm_epsilon > 0:
            raise ConfigError(f"layer_norm_epsilon={self.layer_norm_epsilon}{where} must be > 0.")
        if self.activation_function not in ("gelu_new", "gelu_pytorch_tanh", "gelu"):
            raise ConfigError(f"activation_function={self.activation_function!r}{where} is not supported; "
                              "CodeGen uses 'gelu_new'.")

    @classmethod
    def from_dict(cls, d: dict, name: str = "") -> "CodeGenConfig":
        """Build from a config.json dict; unknown keys are ignored, missing ones take CodeGen's defaults. Values of
        the wrong type, custom modelling code (``auto_map``) and other architectures are refused, naming the field."""
        where = name or "config"
        model_type = d.get("model_type", "codegen")
        if model_type != "codegen":
            raise ConfigError(f"model_type={model_type!r} in {where}: convsynth runs CodeGen "
                              "checkpoints only (model_type 'codegen', e.g. Salesforce/codegen-350M-mono).")
        if "auto_map" in d:
            raise ConfigError(f"auto_map in {where} points at custom modelling code ({_short(d['auto_map'])}), "
                              "which convsynth cannot verify (CodeGen2 is published that way): convsynth runs "
                              f"CodeGen1 checkpoints only ({', '.join(ARCHITECTURES)}).")
        arch = d.get("architectures")
        if arch is not None and (not isinstance(arch, list) or not set(arch) <= set(ARCHITECTURES)):
            raise ConfigError(f"architectures={_short(arch)} in {where}: convsynth runs only "
                              f"{', '.join(ARCHITECTURES)} checkpoints.")
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known and k != "name"}
        for key, value in kw.items():
            types = _TYPES[key]
            if isinstance(value, bool) and bool not in types or not isinstance(value, types):
                want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
                raise ConfigError(f"{key}={value!r} in {where} must be {want}, not {type(value).__name__}; "
                                  "fix config.json.")
        if kw.get("rotary_dim") is None:  # the reference treats a missing rotary_dim as the whole head
            kw["rotary_dim"] = kw.get("n_embd", 1024) // max(kw.get("n_head", 16), 1)
        kw["name"] = name
        return cls(**kw)

    @classmethod
    def from_json(cls, path: str | Path) -> "CodeGenConfig":
        path = Path(path)
        try:
            d = json.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path} does not exist: a CodeGen checkpoint directory needs a config.json.") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is not UTF-8 text (JSON files are UTF-8); save it again as UTF-8.") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON ({e}); re-download or rewrite the config.") from None
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror or e}.") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path} does not hold a JSON object.")
        return cls.from_dict(d, name=str(path))

    def to_dict(self) -> dict:
        """config.json contents in the reference (transformers) naming."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "name"}
        if d["quantization"] is None:  # float checkpoints keep the reference's config.json keys
            del d["quantization"]
        d.update(model_type="codegen", architectures=["CodeGenForCausalLM"], n_ctx=self.n_positions,
                 embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
        return d


_SIZES = {  # n_embd, n_layer, n_head, rotary_dim
    "350M": (1024, 20, 16, 32),
    "2B": (2560, 32, 32, 64),
    "6B": (4096, 33, 16, 64),
    "16B": (6144, 34, 24, 64),
}

PRESETS: dict[str, CodeGenConfig] = {
    f"Salesforce/codegen-{size}-{kind}": CodeGenConfig(n_embd=e, n_layer=l, n_head=h, rotary_dim=r,
                                                        name=f"Salesforce/codegen-{size}-{kind}")
    for size, (e, l, h, r) in _SIZES.items() for kind in ("nl", "multi", "mono")
}


def preset(name: str) -> CodeGenConfig:
    """The config of a named checkpoint: 'Salesforce/codegen-350M-mono' or just 'codegen-350M-mono'."""
    key = name if name.startswith("Salesforce/") else f"Salesforce/{name}"
    if key not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[key]
