"""Build convsynth-tiny: the small CodeGen-architecture model packaged with convsynth.

    python scripts/train_tiny.py data            # collect + tokenize the corpus into --work
    python scripts/train_tiny.py train --minutes 40
    python scripts/train_tiny.py export          # best/last checkpoint -> convsynth/models/convsynth-tiny/
    python scripts/train_tiny.py all --minutes 40
    python scripts/train_tiny.py drill           # phase-2 drill set (train_drill.npy)
    python scripts/train_tiny.py train --init-from convsynth/models/convsynth-tiny --steps 1200 --lr 2e-3 \
        --warmup 30 --drill-frac 0.25 --struct-frac 0.375                               # phase 2

The output layer is trained only over the "active" vocabulary (the token ids that occur in the training corpus
at least --min-count times, plus EOS): the loss gathers those rows of lm_head. Input embeddings are trained for
every id that occurs. At export the other rows of lm_head get weight 0 and bias -100 (never generated) and the
unused wte rows keep their seeded initialisation.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from convsynth.config import CodeGenConfig  # noqa: E402
from convsynth.model import Block, CodeGenModel  # noqa: E402

TOKENIZER_JSON = ROOT / "convsynth" / "assets" / "tokenizer.json"
EOS = 50256
SEED = 1234
CONFIG = dict(vocab_size=51200, n_positions=2048, n_embd=160, n_layer=6, n_head=4, rotary_dim=16, n_inner=None,
              activation_function="gelu_new", layer_norm_epsilon=1e-5, bos_token_id=1, eos_token_id=EOS,
              tie_word_embeddings=False)


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# ---------------------------------------------------------------------------------------------------------- data
def tokenizer():
    """The packaged CodeGen tokenizer. convsynth's own class when present; the identical tokenizer.json through
    the `tokenizers` library otherwise (batch encoding of the corpus is much faster that way)."""
    from tokenizers import Tokenizer
    return Tokenizer.from_file(str(TOKENIZER_JSON))


def build_drill(work: Path, seed: int = SEED, n: int = 60000) -> int:
    """The phase-2 drill array: `tiny_templates.function_documents`, tokenized like the rest, one EOS each."""
    import tiny_templates as TT

    tok = tokenizer()
    out = []
    for enc in tok.encode_batch(TT.function_documents(seed + 2, n)):
        out.extend(enc.ids)
        out.append(EOS)
    arr = np.array(out, dtype=np.uint16)
    np.save(work / "train_drill.npy", arr)
    log(f"drill set: {n} documents, {len(arr):,} tokens")
    return len(arr)


def build_steps(work: Path, seed: int = SEED, n: int = 150000) -> dict:
    """The step-program set (scripts/tiny_steps.py): verified multi-turn programs in the session layout,
    tokenized, with a mask of the tokens the loss is computed on (the code of each step, not the instructions)
    and the offsets where programs start (training windows begin there)."""
    import tiny_steps as TS

    tok = tokenizer()
    ids, mask, starts, held = [], [], [], []
    docs = list(TS.generate(seed + 7, n))
    n_held = max(200, n // 200)  # a few programs held out: the loss curve on unseen literals and wordings
    for i in range(0, len(docs), 2000):
        chunk = docs[i:i + 2000]
        for (text, spans, _), enc in zip(chunk, tok.encode_batch([d[0] for d in chunk])):
            code = np.zeros(len(text) + 1, dtype=bool)
            for a, b in spans:
                code[a:b] = True
            m = [code[a] for a, _ in enc.offsets] + [True]  # EOS after the last step is learned too
            if len(held) < n_held:
                held.append((enc.ids + [EOS], m))
                continue
            starts.append(len(ids))
            ids.extend(enc.ids)
            ids.append(EOS)
            mask.extend(m)
    np.save(work / "steps.npy", np.array(ids, dtype=np.uint16))
    np.save(work / "steps_mask.npy", np.array(mask, dtype=bool))
    np.save(work / "steps_starts.npy", np.array(starts, dtype=np.int64))
    np.save(work / "steps_held.npy", np.array([t for d in held for t in d[0]], dtype=np.uint16))
    np.save(work / "steps_held_mask.npy", np.array([t for d in held for t in d[1]], dtype=bool))
    stats = dict(generator_version=TS.GENERATOR_VERSION, seed=seed + 7, programs=len(starts), heldout_programs=len(held),
                 generated=TS.generate.stats["generated"], rejected=TS.generate.stats["rejected"],
                 mtpb_overlap=TS.generate.stats["mtpb_overlap"],
                 tokens=len(ids), loss_tokens=int(np.sum(mask)))
    (work / "steps_stats.json").write_text(json.dumps(stats, indent=1))
    log(f"step programs: {json.dumps(stats)}")
    return stats


def build_data(work: Path, seed: int = SEED) -> dict:
    import tiny_data as D
    import tiny_templates as TT

    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    files, report = D.collect_sources()
    code_docs, train_docs, held_docs, file_list = [], [], [], []
    n_snip = n_docfn = n_prog = 0
    for source, lic, path in files:
        text = D.read_clean(path)
        if text is None:
            continue
        held = D.is_heldout(path)
        file_list.append(dict(source=source, licence=lic, path=path, heldout=held, chars=len(text)))
        if held:
            held_docs.append(text)
            continue
        code_docs.append(text)
        snips = D.mine_snippets(text)
        mtpb = D.mtpb_documents(snips, rng)
        n_snip += len(snips)
        n_prog += len(mtpb) - len(snips)
        train_docs.extend(mtpb)
        fns = D.docstring_functions(text)
        n_docfn += len(fns)
        train_docs.extend(fns)
    n_real = len(train_docs)  # mined snippets / programs and docstring'd functions
    templ = TT.templated_documents(seed, n_programs=12000, n_functions=12000)
    train_docs.extend(templ)
    held_templ = TT.templated_documents(seed + 1, n_programs=200, n_functions=200)
    rng.shuffle(train_docs)

    tok = tokenizer()

    def encode(docs):
        out = []
        for i in range(0, len(docs), 2000):
            for enc in tok.encode_batch(docs[i:i + 2000]):
                out.extend(enc.ids)
                out.append(EOS)
        return np.array(out, dtype=np.uint16)

    t0 = time.time()
    rng.shuffle(code_docs)
    code = encode(code_docs)
    struct = encode(train_docs)
    train = np.concatenate([code, struct])
    held = encode(held_docs)
    held_t = encode(held_templ)
    log(f"tokenized in {time.time() - t0:.0f}s: train {len(train):,} tokens, held-out {len(held):,}")
    np.save(work / "train_code.npy", code)
    np.save(work / "train_struct.npy", struct)
    np.save(work / "heldout.npy", held)
    np.save(work / "heldout_templates.npy", held_t)
    counts = np.bincount(train, minlength=CONFIG["vocab_size"])
    np.save(work / "counts.npy", counts)
    stats = dict(
        seed=seed,
        sources=report,
        files_total=len(file_list),
        files_train=sum(not f["heldout"] for f in file_list),
        files_heldout=sum(f["heldout"] for f in file_list),
        chars_train_files=sum(f["chars"] for f in file_list if not f["heldout"]),
        chars_heldout_files=sum(f["chars"] for f in file_list if f["heldout"]),
        mined_instruction_snippets=n_snip, mined_mtpb_programs=n_prog, docstring_functions=n_docfn,
        templated_documents=len(templ), structured_documents=len(train_docs), mined_documents=n_real,
        chars_train_structured=sum(map(len, train_docs)),
        tokens_train=int(len(train)), tokens_train_code_files=int(len(code)), tokens_train_structured=int(len(struct)), tokens_heldout=int(len(held)), tokens_heldout_templates=int(len(held_t)),
        distinct_token_ids_train=int((counts > 0).sum()),
    )
    (work / "data_stats.json").write_text(json.dumps(stats, indent=1))
    (work / "file_list.json").write_text(json.dumps(file_list, indent=0))
    log(json.dumps({k: v for k, v in stats.items() if k != "sources"}))
    return stats


# ------------------------------------------------------------------------------------------------------ training
class TinyTrainer(nn.Module):
    """CodeGen blocks over a compact vocabulary: inputs use ids remapped to `in_ids` (every id seen in training),
    the output layer covers `out_ids` (the active vocabulary)."""

    def __init__(self, config: CodeGenConfig, n_in: int, n_out: int, seed: int):
        super().__init__()
        ref = CodeGenModel(config).init_weights(seed)  # the seeded reference init, then take the parts we train
        self.config = config
        self.h = ref.transformer.h
        self.ln_f = ref.transformer.ln_f
        self.wte = nn.Embedding(n_in, config.n_embd)
        self.head = nn.Linear(config.n_embd, n_out)
        self.ref = [ref]  # not a submodule: holds the init of the full matrices for export
        self.rope = ref.rope("cpu")

    def forward(self, x_ids: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, n_out); given targets y (B, T), only the rows that have one (N, n_out), flattened: the
        output layer is the largest matmul, and step programs carry a target on their code tokens alone."""
        T = x_ids.shape[1]
        cos, sin = self.rope[0][:T], self.rope[1][:T]
        x = self.wte(x_ids)
        for block in self.h:
            x = block(x, cos, sin, None, None)
        x = self.ln_f(x)
        if y is not None:
            x = x[y != -100]  # (N, C)
        return self.head(x)


def make_vocab(counts: np.ndarray, min_count: int):
    in_ids = np.nonzero(counts)[0]
    out_ids = np.nonzero(counts >= min_count)[0]
    if EOS not in out_ids:
        out_ids = np.sort(np.append(out_ids, EOS))
    return in_ids, out_ids


def load_exported(model: TinyTrainer, model_dir: Path, in_ids: np.ndarray, out_ids: np.ndarray) -> list[dict]:
    """Start a later phase from an exported model directory (fp16, as shipped): the compact matrices are rows of
    the full ones. Returns the earlier phases recorded in its train_info.json."""
    from safetensors.torch import load_file

    info_path = model_dir / "train_info.json"
    if not info_path.exists():
        raise SystemExit(f"{info_path} is missing: the earlier phases of {model_dir} are unknown")
    sd = {k: v.float() for k, v in load_file(str(model_dir / "model.safetensors")).items()}
    n_old = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("transformer.h."))
    n_new = len(model.h)
    # Growing the body (n_new > n_old layers): old layer i goes to slot i * n_new // n_old and the new layers
    # between them start as identities (zero output projections), so training starts from the shipped model's
    # function and the new layers learn from there.
    slot = {i * n_new // n_old: i for i in range(n_old)}
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if k.startswith("ln_f."):
                v.copy_(sd["transformer." + k])
            elif k.startswith("h."):
                layer = int(k.split(".")[1])
                if layer in slot:
                    v.copy_(sd["transformer." + k.replace(f"h.{layer}.", f"h.{slot[layer]}.", 1)])
                elif k.endswith(("attn.out_proj.weight", "mlp.fc_out.weight", "mlp.fc_out.bias")):
                    v.zero_()
        if n_new != n_old:
            log(f"grew the body from {n_old} to {n_new} layers (old layers at {sorted(slot)})")
        model.wte.weight.copy_(sd["transformer.wte.weight"][torch.from_numpy(in_ids)])
        w, b = sd["lm_head.weight"][torch.from_numpy(out_ids)], sd["lm_head.bias"][torch.from_numpy(out_ids)]
        live = b > -100  # rows the export switched off (not active then) keep this run's fresh init
        model.head.weight[live] = w[live]
        model.head.bias[live] = b[live]
    info = json.loads(info_path.read_text())
    log(f"initialised from {model_dir} (step {info['step']}; {int((~live).sum())} output rows start fresh)")
    return info.get("phases") or [dict(step=info["step"], seconds=info["seconds"], args=info["args"])]


def train(args) -> None:
    work = Path(args.work)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    CONFIG["n_layer"] = args.layers
    if args.width is not None:  # a new body shape (from scratch: --init-from keeps the exported model's shape)
        if args.init_from or args.resume:
            raise SystemExit("--width starts a model from scratch; leave out --init-from/--resume, or --width")
        head = args.width // args.heads
        if args.heads % 4 or args.width % args.heads or head % 2 or args.rotary > head or args.rotary % 2:
            # CodeGen's fused qkv_proj is laid out in 4 chunks of whole heads (mp_num = 4)
            raise SystemExit(f"--width {args.width} --heads {args.heads} --rotary {args.rotary}: heads a multiple "
                             "of 4, an even head size (width / heads) and an even --rotary no larger than it")
        CONFIG.update(n_embd=args.width, n_head=args.heads, rotary_dim=args.rotary)
    elif args.init_from or args.resume:  # the shape of the weights this phase starts from, not the defaults
        shape = (json.loads((Path(args.init_from) / "config.json").read_text()) if args.init_from
                 else json.loads((work / "ckpt" / "vocab.json").read_text())["config"])
        CONFIG.update({k: shape[k] for k in ("n_embd", "n_head", "rotary_dim")})
    config = CodeGenConfig(**CONFIG)
    code = np.load(work / "train_code.npy").astype(np.int64)
    struct = np.load(work / "train_struct.npy").astype(np.int64)
    held = np.load(work / "heldout.npy").astype(np.int64)
    held_t = np.load(work / "heldout_templates.npy").astype(np.int64)
    drill = np.load(work / "train_drill.npy").astype(np.int64) if args.drill_frac > 0 else None
    counts = np.load(work / "counts.npy")
    steps = None
    if args.steps_frac > 0:  # the step programs: every id in them is in the active vocabulary
        steps = np.load(work / "steps.npy").astype(np.int64)
        steps_mask = np.load(work / "steps_mask.npy")
        steps_starts = np.load(work / "steps_starts.npy")
        steps_starts = steps_starts[steps_starts < len(steps) - args.ctx - 1]
        steps_held = np.load(work / "steps_held.npy").astype(np.int64)
        steps_held_mask = np.load(work / "steps_held_mask.npy")
        counts = counts + np.bincount(steps, minlength=len(counts)) * args.min_count
    in_ids, out_ids = make_vocab(counts, args.min_count)
    in_map = np.zeros(config.vocab_size, dtype=np.int64)  # unseen ids (only in held-out text) -> row of EOS
    in_map[:] = np.searchsorted(in_ids, EOS)
    in_map[in_ids] = np.arange(len(in_ids))
    out_map = np.full(config.vocab_size, -100, dtype=np.int64)  # targets outside the active vocab are ignored
    out_map[out_ids] = np.arange(len(out_ids))
    covered = counts[out_ids].sum() / counts.sum()
    log(f"input vocab {len(in_ids)}, output (active) vocab {len(out_ids)} covering {covered:.4%} of train tokens")

    model = TinyTrainer(config, len(in_ids), len(out_ids), args.seed)
    with torch.no_grad():  # start the compact matrices from the same seeded init as the full ones
        ref = model.ref[0]
        model.wte.weight.copy_(ref.transformer.wte.weight[torch.from_numpy(in_ids)])
        model.head.weight.copy_(ref.lm_head.weight[torch.from_numpy(out_ids)])
        model.head.bias.zero_()
    phases = []
    if args.resume:  # phase 2 continues phase 1's weights; the optimizer starts afresh (with its own warmup)
        prev = torch.load(work / "ckpt" / "last.pt", weights_only=False)
        model.load_state_dict(prev["model"])
        phases = prev.get("phases") or [dict(step=prev["step"], seconds=round(prev["seconds"]),
                                             args=json.loads((work / "ckpt" / "vocab.json").read_text())["args"])]
        log(f"resumed from step {prev['step']} ({len(phases)} earlier phase(s))")
    elif args.init_from:  # phase 2 from the exported (shipped) phase-1 model; fresh optimizer as with --resume
        phases = load_exported(model, Path(args.init_from), in_ids, out_ids)
    n_body = sum(p.numel() for p in model.h.parameters()) + sum(p.numel() for p in model.ln_f.parameters())
    log(f"full model params {ref.num_parameters():,}; trained: body {n_body:,}, wte {model.wte.weight.numel():,}, "
        f"head {model.head.weight.numel() + model.head.bias.numel():,}")

    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here; train on the CPU (the default)")
    model.to(dev)
    model.rope = tuple(r.to(dev) for r in model.rope)
    log(f"training on {dev}{' with bf16 autocast' if args.bf16 else ''}")
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and not n.startswith("wte")]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() == 2 and not n.startswith("wte"))]
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=args.wd), dict(params=no_decay, weight_decay=0.0)],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=dev.type == "cuda")
    T, B = args.ctx, args.batch
    gen = np.random.default_rng(args.seed)

    def batch(arr, rng, n):
        starts = rng.integers(0, len(arr) - T - 1, size=n)
        w = np.stack([arr[s:s + T + 1] for s in starts])
        return torch.from_numpy(in_map[w[:, :-1]]), torch.from_numpy(out_map[w[:, 1:]])

    def steps_batch(rng, n, arr=None, mask=None, starts=None):
        """Windows that begin where a program begins; the loss only on the code of its steps."""
        arr = steps if arr is None else arr
        mask = steps_mask if mask is None else mask
        starts = rng.choice(steps_starts, size=n) if starts is None else starts
        w = np.stack([arr[s:s + T + 1] for s in starts])
        m = np.stack([mask[s + 1:s + T + 1] for s in starts])
        y = out_map[w[:, 1:]]
        y[~m] = -100
        return torch.from_numpy(in_map[w[:, :-1]]), torch.from_numpy(y)

    def loss_fn(x, y):
        x, y = x.to(dev), y.to(dev)  # batches are built on the CPU (numpy); every loss goes through here
        if args.bf16:
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                logits = model(x, y)
        else:
            logits = model(x, y)
        return F.cross_entropy(logits.float(), y[y != -100])

    @torch.no_grad()
    def evaluate(arr, n_batches=12):
        """Mean loss over fixed windows of held-out text, over the tokens the model can emit."""
        model.eval()
        r = np.random.default_rng(0)
        tot = 0.0
        for _ in range(n_batches):
            x, y = batch(arr, r, 8)
            tot += loss_fn(x, y).item()
        model.train()
        return tot / n_batches

    @torch.no_grad()
    def evaluate_steps():
        """Masked loss on the held-out step programs (fixed windows from program starts)."""
        model.eval()
        ends = np.nonzero(steps_held == EOS)[0]
        st = np.concatenate([[0], ends[:-1] + 1])
        st = st[st < len(steps_held) - T - 1][:64]
        tot = 0.0
        for i in range(0, len(st), 16):
            x, y = steps_batch(None, None, steps_held, steps_held_mask, st[i:i + 16])
            tot += loss_fn(x, y).item()
        model.train()
        return tot / len(range(0, len(st), 16))

    total_steps = args.steps
    warmup = args.warmup
    t_start = time.time()
    t_warm = [t_start]
    budget = args.minutes * 60
    ckpt_dir = work / "ckpt"
    ckpt_dir.mkdir(exist_ok=True)
    history = []
    step, ema = 0, None
    last_save = time.time()
    meta = dict(in_ids=in_ids.tolist(), out_ids=out_ids.tolist(), args=vars(args), config=CONFIG)
    if not args.resume:  # vocab.json keeps phase 1's arguments; later phases are recorded in the checkpoint
        (ckpt_dir / "vocab.json").write_text(json.dumps(meta))

    def lr_at(s):
        """Linear warmup, then cosine decay to 10% over the step budget (--steps) or, by default, over the
        wall-clock budget (--minutes): the machine is shared, so a speed measured early is not a good guide."""
        if s < warmup:
            return args.lr * (s + 1) / warmup
        if total_steps is not None:
            p = min(1.0, (s - warmup) / max(1, total_steps - warmup))
        else:
            p = min(1.0, (time.time() - t_warm[0]) / max(1.0, budget - (t_warm[0] - t_start)))
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))

    def save(tag):
        this = dict(step=step, seconds=round(time.time() - t_start), args=vars(args), history=history)
        if args.note:
            this["note"] = args.note
        ck = dict(model={k: v.cpu() for k, v in model.state_dict().items()}, step=step + sum(p["step"] for p in phases),
                  history=history, seconds=time.time() - t_start + sum(p["seconds"] for p in phases),
                  phases=phases + [this])
        torch.save(ck, ckpt_dir / f"{tag}.pt")
        if args.parts_out:  # a device call returns small files only, and a killed run still returns its last save
            import io
            buf = io.BytesIO()
            torch.save(dict(ck, model={k: v.half() for k, v in ck["model"].items()}), buf)  # export writes fp16
            data, n = buf.getvalue(), 15 * 2**20
            parts = Path(args.parts_out)
            parts.mkdir(parents=True, exist_ok=True)
            for old in parts.glob(f"{tag}-fp16.pt.part*"):
                old.unlink()
            for i in range(0, len(data), n):
                (parts / f"{tag}-fp16.pt.part{i // n:02d}").write_bytes(data[i:i + n])
            shutil.copy(ckpt_dir / "vocab.json", parts / "vocab.json")

    while True:
        if step == warmup:
            t_warm[0] = time.time()
        if total_steps is not None and step >= total_steps:
            break
        if total_steps is None and time.time() - t_start > budget:
            log("time budget reached")
            break
        lr = lr_at(step)
        for g in opt.param_groups:
            g["lr"] = lr
        n_struct = int(round(B * args.struct_frac))
        n_drill = int(round(B * args.drill_frac))
        n_steps = int(round(B * args.steps_frac))
        parts = [batch(code, gen, B - n_struct - n_drill - n_steps)]
        if n_struct:
            parts.append(batch(struct, gen, n_struct))
        if n_drill:
            parts.append(batch(drill, gen, n_drill))
        if n_steps:
            parts.append(steps_batch(gen, n_steps))
        x, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        loss = loss_fn(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % 10 == 0:
            log(f"step {step}/{total_steps} loss {loss.item():.3f} ema {ema:.3f} lr {lr:.2e} "
                f"{(time.time() - t_start) / step:.2f}s/step")
        if step % args.eval_every == 0:
            hl, ht = evaluate(held), evaluate(held_t, 4)
            hs = evaluate_steps() if steps is not None else None
            history.append(dict(step=step, seconds=round(time.time() - t_start), train_ema=ema, heldout=hl,
                                heldout_templates=ht, heldout_steps=hs))
            log(f"EVAL step {step} heldout {hl:.3f} (ppl {math.exp(hl):.1f}) templates {ht:.3f} steps {hs}")
            save("last")
            last_save = time.time()
        if time.time() - last_save > args.save_minutes * 60:
            save("last")
            last_save = time.time()
    hl, ht = evaluate(held, 40), evaluate(held_t, 8)
    hs = evaluate_steps() if steps is not None else None
    history.append(dict(step=step, seconds=round(time.time() - t_start), train_ema=ema, heldout=hl,
                        heldout_templates=ht, heldout_steps=hs, final=True))
    log(f"FINAL step {step} train_ema {ema:.3f} heldout {hl:.3f} (ppl {math.exp(hl):.1f}) templates {ht:.3f}")
    save("last")


# -------------------------------------------------------------------------------------------------------- export
def export(args) -> Path:
    from safetensors.torch import save_file

    work = Path(args.work)
    out = Path(args.out)
    ckpt = torch.load(work / "ckpt" / "last.pt", weights_only=False)
    meta = json.loads((work / "ckpt" / "vocab.json").read_text())
    config = CodeGenConfig(**meta["config"])
    seed = meta["args"]["seed"]
    full = CodeGenModel(config).init_weights(seed)
    sd = ckpt["model"]
    in_ids = torch.tensor(meta["in_ids"])
    out_ids = torch.tensor(meta["out_ids"])
    with torch.no_grad():
        for k, v in sd.items():
            if k.startswith("h.") or k.startswith("ln_f."):
                full.state_dict()["transformer." + k].copy_(v)
        full.transformer.wte.weight[in_ids] = sd["wte.weight"]
        full.lm_head.weight.zero_()
        full.lm_head.bias.fill_(-100.0)
        full.lm_head.weight[out_ids] = sd["head.weight"]
        full.lm_head.bias[out_ids] = sd["head.bias"]
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in full.state_dict().items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    os.chmod(out / "model.safetensors", 0o644)
    cfg = config.to_dict()
    cfg.update(torch_dtype="float16", transformers_version="4.40.0", _name_or_path="convsynth-tiny",
               n_ctx=config.n_positions)
    (out / "config.json").write_text(json.dumps(dict(sorted(cfg.items())), indent=2) + "\n")
    shutil.copyfile(TOKENIZER_JSON, out / "tokenizer.json")
    train_info = dict(step=ckpt["step"], seconds=round(ckpt["seconds"]), history=ckpt["history"],
                      args=meta["args"], phases=ckpt.get("phases"), active_vocab=len(meta["out_ids"]), input_vocab=len(meta["in_ids"]))
    # next to the weights as well: a later phase (--init-from) and the model card need it, and .cache is not kept
    for where in (work, out):
        (where / "train_info.json").write_text(json.dumps(train_info, indent=1) + "\n")
    log(f"exported {out} ({(out / 'model.safetensors').stat().st_size / 1e6:.1f} MB), step {ckpt['step']}")
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["data", "drill", "steps", "train", "export", "all"])
    p.add_argument("--work", default=str(ROOT / ".cache" / "tiny"), help="intermediate files (corpus, checkpoints)")
    p.add_argument("--out", default=str(ROOT / "convsynth" / "models" / "convsynth-tiny"))
    p.add_argument("--minutes", type=float, default=40.0, help="wall-clock training budget")
    p.add_argument("--steps", type=int, default=None, help="fixed step count (default: from the measured speed)")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--wd", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--ctx", type=int, default=256)
    p.add_argument("--struct-frac", type=float, default=0.5,
                   help="share of each batch drawn from the structured part (instruction turns, functions)")
    p.add_argument("--drill-frac", type=float, default=0.0,
                   help="share of each batch drawn from the drill set (stage `drill`); 0 in phase 1")
    p.add_argument("--steps-frac", type=float, default=0.0,
                   help="share of each batch drawn from the step programs (stage `steps`), loss on code only")
    p.add_argument("--n-steps-programs", type=int, default=150000, help="programs made by stage `steps`")
    p.add_argument("--layers", type=int, default=6, help="transformer layers (more than the --init-from model's: "
                   "the body grows, new layers start as identities)")
    p.add_argument("--width", type=int, default=None, help="n_embd of a model started from scratch (default: 160, "
                   "or the --init-from model's); 256 keeps the fp16 weights under 80 MB")
    p.add_argument("--heads", type=int, default=4, help="attention heads, with --width")
    p.add_argument("--rotary", type=int, default=16, help="rotary dimensions per head, with --width")
    p.add_argument("--resume", action="store_true", help="start from ckpt/last.pt (a later training phase)")
    p.add_argument("--init-from", default=None, metavar="MODEL_DIR",
                   help="start a later phase from an exported model directory and its train_info.json")
    p.add_argument("--note", default=None, help="a sentence about this phase, kept in train_info.json and the card")
    p.add_argument("--min-count", type=int, default=30, help="active output vocab: ids seen this often")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (1.3x faster steps on a CPU with "
                   "AVX512-BF16, slower without; the usual choice on a GPU)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda where a GPU is lent (larger --batch there)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--save-minutes", type=float, default=5.0)
    p.add_argument("--parts-out", default=None, metavar="DIR", help="also write each save as an fp16 checkpoint in "
                   "15 MiB parts here, with vocab.json (what a device call can bring back; gpu_train_tiny.sh)")
    args = p.parse_args()
    if args.stage in ("data", "all"):
        build_data(Path(args.work), args.seed)
    if args.stage == "drill":
        build_drill(Path(args.work), args.seed)
    if args.stage == "steps":
        build_steps(Path(args.work), args.seed, args.n_steps_programs)
    if args.stage in ("train", "all"):
        train(args)
    if args.stage in ("export", "all"):
        export(args)


if __name__ == "__main__":
    main()
