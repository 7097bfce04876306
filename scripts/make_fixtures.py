#!/usr/bin/env python3
"""Generate the tiny-model / LoRA-adapter fixtures and their transformers+PEFT references.

Writes everything under Fixtures/models/ (re-runnable, deterministic: fixed seeds, explicit
torch.Generator for every random tensor, Python `random.Random` for prompts).

    python3 -m venv /tmp/fixtures-venv && . /tmp/fixtures-venv/bin/activate
    pip install -r scripts/requirements-fixtures.txt
    python scripts/make_fixtures.py            # all models
    python scripts/make_fixtures.py llama-tiny # just one

For each model:
  * Fixtures/models/<name>/               config.json, weights (safetensors), generation_config.json,
                                          tokenizer files copied from Fixtures/stories260k
                                          (stories260k itself: weights stay in Fixtures/stories260k)
  * Fixtures/models/<name>/adapters/<a>/  PEFT LoRA adapters (adapter_config.json + adapter_model.safetensors)
  * Fixtures/models/<name>/reference.json fp32 CPU references (last-position logits, 32 greedy tokens
                                          with KV cache, mixed-adapter batches), computed from the
                                          models *reloaded from disk*.

Every greedy step of every recorded case/row has a top1 - top2 logit margin >= MIN_MARGIN; prompts
that violate it are replaced deterministically (next attempt seed).
"""
import json
import os
import random
import shutil
import warnings
import sys
from pathlib import Path

import torch
import transformers
import peft
import safetensors
from safetensors import safe_open
from transformers import (AutoModelForCausalLM, GenerationConfig, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer

REPO = Path(__file__).resolve().parent.parent
os.chdir(REPO)  # so that base_model_name_or_path / model_dir are repo-relative paths
OUT = Path("Fixtures/models")
STORIES = Path("Fixtures/stories260k")
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]

MIN_MARGIN = 2e-3
N_NEW = 32
VOCAB = 512
BASE = "__base__"

torch.use_deterministic_algorithms(True)
transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()
warnings.filterwarnings("ignore", category=FutureWarning)
torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

VERSIONS = (f"torch {torch.__version__}, transformers {transformers.__version__}, "
            f"peft {peft.__version__}, safetensors {safetensors.__version__}")

ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# name -> LoraConfig kwargs (task_type CAUSAL_LM, init_lora_weights=False, dropout 0 added below)
ADAPTERS = {
    "r4-qv": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    "r8-all": dict(r=8, lora_alpha=16, target_modules="all-linear"),
    "r16-mlp": dict(r=16, lora_alpha=16, target_modules=["gate_proj", "up_proj", "down_proj"]),
    "r32-attn-rslora": dict(r=32, lora_alpha=32, use_rslora=True,
                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
    "r64-pattern": dict(r=64, lora_alpha=64, target_modules=ALL7,
                        rank_pattern={"q_proj": 8, "down_proj": 16}, alpha_pattern={"v_proj": 32}),
    "r8-layers": dict(r=8, lora_alpha=16, target_modules=ALL7, layers_to_transform=[0, 2]),
}
ADAPTER_NAMES = list(ADAPTERS)

MIXED_LAYOUTS = [
    ["r4-qv", None, "r8-all", "r16-mlp", "r32-attn-rslora", "r64-pattern", "r8-layers", None],
    ["r64-pattern", "r4-qv", None, "r4-qv", "r8-layers", "r8-all", "r8-all"],
]
MIXED_LENGTHS = [9, 12]

# ---------------------------------------------------------------------------------------------
# model specs

MODELS = {
    "llama-tiny": dict(
        cls=LlamaForCausalLM, seed=1001, out_std=0.25, dtype=torch.bfloat16, shard=None,
        config=LlamaConfig(
            vocab_size=VOCAB, hidden_size=128, intermediate_size=344, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, head_dim=48, rope_theta=500000.0,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
            max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False,
            initializer_range=0.1, bos_token_id=1, eos_token_id=2, hidden_act="silu",
            attention_bias=False, mlp_bias=False)),
    "mistral-tiny": dict(
        cls=MistralForCausalLM, seed=2002, out_std=0.25, dtype=torch.float16, shard="300KB",
        config=MistralConfig(
            vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=3,
            num_attention_heads=8, num_key_value_heads=2, head_dim=16, rope_theta=10000.0,
            sliding_window=None, max_position_embeddings=256, rms_norm_eps=1e-5,
            tie_word_embeddings=False, initializer_range=0.1, bos_token_id=1, eos_token_id=2,
            hidden_act="silu")),
    "qwen2-tiny": dict(
        cls=Qwen2ForCausalLM, seed=3003, out_std=0.25, dtype=torch.float32, shard=None,
        config=Qwen2Config(
            vocab_size=VOCAB, hidden_size=96, intermediate_size=256, num_hidden_layers=3,
            num_attention_heads=6, num_key_value_heads=2, rope_theta=1000000.0,
            max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=True,
            use_sliding_window=False, sliding_window=None, initializer_range=0.1,
            bos_token_id=1, eos_token_id=2, hidden_act="silu")),
    "stories260k": dict(cls=None, seed=4004, dtype=torch.float32, shard=None, config=None),
}
# adapters are saved in the dtype of their base checkpoint (bf16 / f16 / f32 / f32)
LORA_REL = {"llama-tiny": 0.4, "mistral-tiny": 0.4, "qwen2-tiny": 0.4, "stories260k": 0.3}

# ---------------------------------------------------------------------------------------------
# helpers


def gen(seed):
    return torch.Generator().manual_seed(seed)


def model_dir(name):
    return STORIES if name == "stories260k" else OUT / name


@torch.no_grad()
def init_weights(model, seed, std, out_std):
    """Deterministic init: N(0, std) matrices / embeddings, N(0, out_std) output embedding (lm_head, or the
    tied embed_tokens) so that logits are peaked, 1 + N(0, 0.1) norm gains, N(0, 0.2) biases."""
    g = gen(seed)
    tied = model.config.tie_word_embeddings
    out_name = "model.embed_tokens.weight" if tied else "lm_head.weight"
    for pname, p in sorted(model.named_parameters()):  # tied params appear once
        if pname == out_name:
            p.copy_(out_std * torch.randn(p.shape, generator=g))
        elif "norm" in pname:
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        elif pname.endswith(".bias"):
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(std * torch.randn(p.shape, generator=g))


def build_base(name, spec):
    d = model_dir(name)
    d.mkdir(parents=True, exist_ok=True)
    for f in list(d.iterdir()):
        if f.is_file() and (f.suffix == ".safetensors" or f.name.endswith(".index.json")):
            f.unlink()
    cfg = spec["config"]
    model = spec["cls"](cfg).eval()
    init_weights(model, spec["seed"], cfg.initializer_range, spec["out_std"])
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    model = model.to(spec["dtype"])
    kw = {"max_shard_size": spec["shard"]} if spec["shard"] else {}
    model.save_pretrained(d, safe_serialization=True, **kw)
    GenerationConfig(bos_token_id=1, eos_token_id=2).save_pretrained(d)
    for f in TOKENIZER_FILES:
        shutil.copyfile(STORIES / f, d / f)
    if spec["shard"]:
        idx = json.loads((d / "model.safetensors.index.json").read_text())
        shards = sorted(set(idx["weight_map"].values()))
        assert len(shards) >= 2, shards
        print(f"  {name}: {len(shards)} shards")
    # saved dtype check
    for f in d.glob("*.safetensors"):
        with safe_open(f, "pt") as sf:
            for k in sf.keys():
                assert sf.get_tensor(k).dtype == spec["dtype"], (f, k)


def load_base(name):
    m = AutoModelForCausalLM.from_pretrained(str(model_dir(name)), dtype=torch.float32).eval()
    for p in m.parameters():
        assert p.dtype == torch.float32
    return m


def lora_layers(model, adapter):
    for mname, mod in model.named_modules():
        if isinstance(mod, LoraLayer) and adapter in mod.lora_A:
            yield mname, mod


@torch.no_grad()
def make_adapter(name, spec, aname, idx):
    out = OUT / name / "adapters" / aname
    if out.exists():
        shutil.rmtree(out)
    base = load_base(name)
    cfg = LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.0, bias="none", init_lora_weights=False,
                     **ADAPTERS[aname])
    pm = get_peft_model(base, cfg, adapter_name="default")
    g = gen(spec["seed"] * 100 + idx)
    rel = LORA_REL[name]
    shapes = {}
    for mname, mod in sorted(lora_layers(pm, "default")):
        A = mod.lora_A["default"].weight
        B = mod.lora_B["default"].weight
        r = A.shape[0]
        in_f = A.shape[1]
        scale = mod.scaling["default"]
        w_rms = mod.get_base_layer().weight.float().pow(2).mean().sqrt().item()
        # A ~ N(0, 1/in), B chosen so that rms(scale * B @ A) ~= rel * rms(W)
        A.copy_(torch.randn(A.shape, generator=g) / in_f ** 0.5)
        b_std = rel * w_rms * in_f ** 0.5 / (scale * r ** 0.5)
        B.copy_(b_std * torch.randn(B.shape, generator=g))
        A.data = A.data.to(spec["dtype"])
        B.data = B.data.to(spec["dtype"])
        shapes[mname] = (r, scale)
    pm.save_pretrained(str(out))
    (out / "README.md").unlink(missing_ok=True)  # auto-generated model card, not needed
    # PEFT stores target_modules from a set: make the order deterministic (same format as PEFT writes)
    cfg_path = out / "adapter_config.json"
    c = json.loads(cfg_path.read_text())
    if isinstance(c.get("target_modules"), list):
        c["target_modules"] = sorted(c["target_modules"])
    cfg_path.write_text(json.dumps(c, indent=2, sort_keys=True))
    return shapes


def check_adapter_file(name, aname, n_layers):
    """Verify that the saved tensors reflect r / rank_pattern / layers_to_transform / all-linear."""
    spec = ADAPTERS[aname]
    path = OUT / name / "adapters" / aname / "adapter_model.safetensors"
    with safe_open(path, "pt") as f:
        keys = list(f.keys())
        tensors = {k: f.get_tensor(k) for k in keys}
    mods = {}
    for k in keys:
        assert k.startswith("base_model.model.model.layers."), k
        assert k.endswith(".lora_A.weight") or k.endswith(".lora_B.weight"), k
        mod = k.rsplit(".", 2)[0]
        mods.setdefault(mod, {})[k.rsplit(".", 2)[1]] = tensors[k]
    seen_types, seen_layers = set(), set()
    for mod, ab in mods.items():
        layer = int(mod.split(".")[4])
        mtype = mod.split(".")[-1]
        seen_types.add(mtype)
        seen_layers.add(layer)
        r = ab["lora_A"].shape[0]
        assert ab["lora_B"].shape[1] == r
        want = spec.get("rank_pattern", {}).get(mtype, spec["r"])
        assert r == want, (aname, mod, r, want)
        assert ab["lora_A"].abs().sum() > 0 and ab["lora_B"].abs().sum() > 0
    if spec["target_modules"] == "all-linear":
        assert seen_types == set(ALL7), seen_types  # lm_head excluded
    else:
        assert seen_types == set(spec["target_modules"]), seen_types
    want_layers = set(spec.get("layers_to_transform", range(n_layers)))
    assert seen_layers == want_layers, (seen_layers, want_layers)
    return keys


# ---------------------------------------------------------------------------------------------
# reference computation


def margin(logits):
    t = torch.topk(logits, 2, dim=-1).values
    return t[..., 0] - t[..., 1]


@torch.no_grad()
def greedy(model, prompts, adapter_names=None):
    """prompts: list of equal-length id lists. Returns (last_logits [B,V], greedy ids [B,N], min margin per row)."""
    ids = torch.tensor(prompts, dtype=torch.long)
    kw = {} if adapter_names is None else {"adapter_names": adapter_names}
    out = model(input_ids=ids, use_cache=True, **kw)
    past = out.past_key_values
    logits = out.logits[:, -1, :].float()
    last = logits.clone()
    toks, margins = [], []
    for step in range(N_NEW):
        margins.append(margin(logits))
        nxt = logits.argmax(-1)
        toks.append(nxt)
        if step == N_NEW - 1:
            break
        out = model(input_ids=nxt[:, None], past_key_values=past, use_cache=True, **kw)
        past = out.past_key_values
        logits = out.logits[:, -1, :].float()
    return last, torch.stack(toks, 1), torch.stack(margins, 1).min(1).values


def run_single(pm, adapter, prompt):
    if adapter is None:
        with pm.disable_adapter():
            return greedy(pm, [prompt])
    pm.set_adapter(adapter)
    return greedy(pm, [prompt])


class Prompts:
    """Deterministic prompts: `case(slot, attempt)` and `row(batch, row, attempt, length)` -> list of ids."""

    def __init__(self, name):
        self.name = name
        self.real = name == "stories260k"
        if self.real:
            from tokenizers import Tokenizer
            tok = Tokenizer.from_file(str(STORIES / "tokenizer.json"))
            self.texts = [tok.encode(t).ids for t in STORY_TEXTS]
            self.words = [tok.encode(w).ids[1:] for w in ["Tom", "The", "Lily", "One", "Sue", "Ben"]]

    def rand_ids(self, seed, n):
        rng = random.Random(seed)
        return [rng.randrange(3, VOCAB) for _ in range(n)]

    def case(self, slot, attempt):
        seed = hash_seed(self.name, "case", slot, attempt)
        if self.real:
            n = len(self.texts)
            if slot == 0:
                return [1] if attempt == 0 else [1] + self.words[(attempt - 1) % len(self.words)][:1]
            if slot == 1:
                return [1, 403, 407, 261, 378] if attempt == 0 else self.texts[attempt % n][:7]
            # two stories joined (BOS + ~60 tokens), 40-token window, shifted on later attempts
            t = self.texts[(attempt + 3) % n] + self.texts[(attempt + 4) % n][1:]
            off = attempt // n
            return [1] + t[1 + off:40 + off]
        if slot == 0:
            return [1] if attempt == 0 else self.rand_ids(seed, 1)
        if slot == 1:
            return [1] + self.rand_ids(seed, 6)
        return [1] + self.rand_ids(seed, 39)

    def row(self, batch, row, attempt, length):
        if self.real:
            t = self.texts[(batch * 5 + row) % len(self.texts)]
            assert len(t) >= attempt + length
            return [1] + t[1 + attempt:attempt + length]
        return [1] + self.rand_ids(hash_seed(self.name, "mixed", batch, row, attempt), length - 1)


def hash_seed(*parts):
    s = "|".join(str(p) for p in parts)
    h = 1469598103934665603
    for ch in s.encode():
        h = ((h ^ ch) * 1099511628211) & 0xFFFFFFFFFFFF
    return h


STORY_TEXTS = [
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends every day.",
    "The little dog ran to the park. He saw a big red ball and wanted to play with it, but the ball was too high in the tree.",
    "Tom and Sue went to the beach with their mom. They built a big sand castle and found many pretty shells near the water.",
    "One day, a small bird was flying in the sky. It saw a tall tree with a nest and decided to rest there for a while.",
    "Ben had a red car. He liked to drive it around the house. One day, the car broke and Ben was very sad about it.",
    "Mia wanted to bake a cake for her mom. She got flour, eggs and sugar from the kitchen and started to mix them together.",
    "There was a big bear in the forest. The bear was hungry and looked for honey. He found a tree full of bees and honey.",
    "Lucy found a shiny key in the garden. She wondered what it could open. She looked around the house for a small door.",
    "Max was a happy cat who liked to sleep in the sun. Every morning he would find a warm spot on the floor and nap.",
    "Anna and her brother played with blocks. They made a tall tower. Then the tower fell down and they both laughed a lot.",
    "The sun was shining and the sky was blue. Sam took his kite to the hill and let it fly high above the green trees.",
    "A little frog lived in a pond. He liked to jump from leaf to leaf. One day he met a fish who wanted to be his friend.",
]


def fmt_logits(t):
    # 9 significant digits round-trip float32 exactly
    return [float(f"{x:.9g}") for x in t.tolist()]


def compute_references(name, spec):
    base = load_base(name)
    pm = PeftModel.from_pretrained(base, str(OUT / name / "adapters" / ADAPTER_NAMES[0]),
                                   adapter_name=ADAPTER_NAMES[0])
    for a in ADAPTER_NAMES[1:]:
        pm.load_adapter(str(OUT / name / "adapters" / a), adapter_name=a)
    pm.eval()
    # loaded adapter weights are fp32 and equal to the saved (possibly bf16/f16) tensors
    for a in ADAPTER_NAMES:
        with safe_open(str(OUT / name / "adapters" / a / "adapter_model.safetensors"), "pt") as f:
            saved = {k: f.get_tensor(k) for k in f.keys()}
        n = 0
        for mname, mod in lora_layers(pm, a):
            key = mname.replace(f".{a}", "")
            for ab in ("lora_A", "lora_B"):
                w = getattr(mod, ab)[a].weight
                assert w.dtype == torch.float32
                assert torch.equal(w, saved[f"{mname}.{ab}.weight"].float()), (a, mname)
                n += 1
        assert n == len(saved), (a, n, len(saved))

    prompts = Prompts(name)
    configs = [None] + ADAPTER_NAMES
    cases, min_m = [], float("inf")
    changed = {a: 0 for a in ADAPTER_NAMES}
    for slot in range(3):
        for attempt in range(200):
            p = prompts.case(slot, attempt)
            res = {c: run_single(pm, c, p) for c in configs}
            worst = min(r[2].item() for r in res.values())
            if worst >= MIN_MARGIN:
                break
            print(f"  {name}: slot {slot} attempt {attempt} margin {worst:.2e} < {MIN_MARGIN}, next prompt")
        else:
            raise RuntimeError(f"{name}: no prompt for slot {slot}")
        base_ids = res[None][1][0].tolist()
        for c in configs:
            last, ids, m = res[c]
            min_m = min(min_m, m.item())
            if c is not None and ids[0].tolist() != base_ids:
                changed[c] += 1
            cases.append({"adapter": c, "prompt_ids": p, "last_logits": fmt_logits(last[0]),
                          "greedy_ids": ids[0].tolist()})
    for a, n in changed.items():
        assert n >= 1, f"{name}: adapter {a} never changes greedy output"
    cases.sort(key=lambda c: (configs.index(c["adapter"]), len(c["prompt_ids"])))

    batches = []
    max_mixed_diff = 0.0
    for b, (layout, length) in enumerate(zip(MIXED_LAYOUTS, MIXED_LENGTHS)):
        names = [a if a is not None else BASE for a in layout]
        attempts = [0] * len(layout)
        for _ in range(200):
            rows = [prompts.row(b, i, attempts[i], length) for i in range(len(layout))]
            assert len({tuple(r) for r in rows}) == len(rows), "rows must differ"
            last, ids, m = greedy(pm, rows, adapter_names=names)
            bad = [i for i in range(len(rows)) if m[i].item() < MIN_MARGIN]
            if not bad:
                break
            print(f"  {name}: batch {b} rows {bad} margin {m.min().item():.2e} < {MIN_MARGIN}, next prompt")
            for i in bad:
                attempts[i] += 1
        else:
            raise RuntimeError(f"{name}: no prompts for batch {b}")
        min_m = min(min_m, m.min().item())
        for i, a in enumerate(layout):
            l1, ids1, m1 = run_single(pm, a, rows[i])
            assert ids1[0].tolist() == ids[i].tolist(), f"{name}: mixed batch {b} row {i} != alone"
            max_mixed_diff = max(max_mixed_diff, (l1[0] - last[i]).abs().max().item())
        batches.append({"adapters": layout, "prompt_ids": rows,
                        "last_logits": [fmt_logits(last[i]) for i in range(len(rows))],
                        "greedy_ids": ids.tolist()})
    return cases, batches, min_m, changed, max_mixed_diff


def dump_reference(path, obj):
    """JSON with each number list on one line (keeps the file small and diffable)."""
    def enc(o, ind):
        pad = " " * ind
        if isinstance(o, dict):
            items = [f'{pad} {json.dumps(k)}: {enc(v, ind + 1).lstrip()}' for k, v in o.items()]
            return pad + "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(o, list) and o and all(isinstance(x, (dict, list)) for x in o):
            return pad + "[\n" + ",\n".join(enc(x, ind + 1) for x in o) + "\n" + pad + "]"
        return pad + json.dumps(o, separators=(", ", ": "))
    path.write_text(enc(obj, 0) + "\n")
    assert json.loads(path.read_text()) == obj


def describe(name, spec):
    how = {
        "llama-tiny": "random-init LlamaForCausalLM (head_dim 48, llama3 rope scaling), weights saved in bf16",
        "mistral-tiny": "random-init MistralForCausalLM (no sliding window), weights saved in f16, sharded (max_shard_size 300KB)",
        "qwen2-tiny": "random-init Qwen2ForCausalLM (random nonzero q/k/v biases, tied embeddings), weights saved in f32",
        "stories260k": "the real stories260k checkpoint in Fixtures/stories260k (fp32, tied)",
    }[name]
    init = "" if name == "stories260k" else (
        f"; init seed {spec['seed']}: matrices N(0, {spec['config'].initializer_range}), "
        f"output embedding N(0, {spec['out_std']}), "
        "norm gains 1+N(0,0.1), biases N(0,0.2)")
    adt = {torch.bfloat16: "bf16", torch.float16: "f16", torch.float32: "f32"}[spec["dtype"]]
    return (f"{how}{init}. PEFT LoRA adapters (init_lora_weights=False then deterministic random A,B; "
            f"rms(scaling*B@A) ~= {LORA_REL[name]}*rms(W)), saved in {adt}. References computed by "
            f"scripts/make_fixtures.py in float32 on CPU from the checkpoint and adapters reloaded from disk "
            f"(AutoModelForCausalLM dtype=float32, PeftModel.from_pretrained + load_adapter, set_adapter per case, "
            f"disable_adapter for base; mixed_batches use forward(adapter_names=...) with '__base__' for null rows), "
            f"with {VERSIONS}. last_logits: fp32 logits at the last prompt position (9 significant digits). "
            f"greedy_ids: {N_NEW} argmax tokens with KV cache, no EOS stop, prompt excluded. "
            f"Every greedy step has top1-top2 logit margin >= {MIN_MARGIN}.")


def file_sizes(d):
    total = 0
    for f in sorted(d.rglob("*")):
        if f.is_file():
            total += f.stat().st_size
    return total


def main():
    names = sys.argv[1:] or list(MODELS)
    OUT.mkdir(parents=True, exist_ok=True)
    summary = []
    for name in names:
        spec = MODELS[name]
        print(f"== {name}")
        if spec["cls"] is not None:
            build_base(name, spec)
        n_layers = load_base(name).config.num_hidden_layers
        (OUT / name / "adapters").mkdir(parents=True, exist_ok=True)
        for i, a in enumerate(ADAPTER_NAMES):
            make_adapter(name, spec, a, i)
            keys = check_adapter_file(name, a, n_layers)
            if a == "r4-qv":
                print(f"  {a}: {len(keys)} tensors, e.g. {keys[:2]}")
        cases, batches, min_m, changed, mdiff = compute_references(name, spec)
        ref = {"model": name, "model_dir": str(model_dir(name)), "description": describe(name, spec),
               "cases": cases, "mixed_batches": batches}
        dump_reference(OUT / name / "reference.json", ref)
        print(f"  min top1-top2 margin {min_m:.4g}; cases whose greedy ids differ from base (of 3): {changed}; "
              f"max |logit| diff mixed-vs-alone {mdiff:.2e}")
        summary.append((name, min_m))
    print("\n== sizes")
    grand = 0
    for name in MODELS:
        d = OUT / name
        if not d.exists():
            continue
        for f in sorted(d.rglob("*")):
            if f.is_file():
                print(f"  {f.stat().st_size:>9}  {f}")
        s = file_sizes(d)
        grand += s
        print(f"  {s:>9}  {d}/ (total)")
    print(f"  {grand:>9}  Fixtures/models/ (total)")
    print("\n== min top1-top2 margin per model")
    for name, m in summary:
        print(f"  {name}: {m:.4g}")


if __name__ == "__main__":
    main()
