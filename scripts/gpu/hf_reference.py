#!/usr/bin/env python3
"""transformers bf16 references on the GPU, for `loom gpu-check --model DIR`.

For each fixture model (and a random-weight Llama-3.1-8B-shaped model cut to 2 layers), writes
OUT/<name>/ with links to the model files and a reference.json holding, per base case: prompt_ids,
last_logits (bf16 model, fp32 copy), greedy_ids (32 tokens, KV cache) and, per step (0 = the prompt's
last position), the top-5 token ids and their logprobs. For the fixture's adapter cases, the same
fields from PEFT on the bf16 base (one PeftModel holding every adapter, the case's adapter active;
PEFT's default autocast keeps adapter weights in fp32), with "adapter": name, and OUT/<name>/adapters
links to the fixture's adapter folders. Each reference.json also records `hf_bf16_vs_f32`: how far
transformers' own bf16 run is from the same model in f32 (top-5 logprobs, the bf16 greedy tokens
fed to the f32 model), the noise floor of a check against it.

The fixture adapters are random at a scale that makes them dominate their tiny models, and those
models are peaked: in bf16 they are ill-conditioned (PEFT bf16 is 0.1-0.35 from its own f32). Two
folders test LoRA on conditioned inputs instead: stories260k (a trained model) and the 8B-shaped
model, each with four adapters made here (ranks 8-64, mixed targets, rsLoRA) whose B is scaled so
each module's LoRA term is a quarter of its base output, with PEFT bf16 references per adapter and
one mixed batch (`mixed_batches`, for `gpu-check --tp-size 2`). Run on the device:

    python3 scripts/gpu/hf_reference.py --out /tmp/hfref
"""
import argparse
import json
import os
import random
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

N_NEW = 32
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Adapters made here: (name, LoraConfig arguments).
ADAPTER_SPECS = [
    ("r8-qv", dict(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])),
    ("r16-all", dict(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])),
    ("r32-attn-rslora", dict(r=32, lora_alpha=32, use_rslora=True, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])),
    ("r64-mlp", dict(r=64, lora_alpha=64, target_modules=["gate_proj", "up_proj", "down_proj"])),
]


@torch.no_grad()
def greedy(model, prompt_ids, n_new):
    ids = torch.tensor([prompt_ids], device=DEVICE)
    out = model(input_ids=ids, use_cache=True)
    past = out.past_key_values
    logits = out.logits[0, -1].float()
    last_logits = logits.tolist()
    tokens, top_ids, top_lps = [], [], []
    for step in range(n_new):
        lp = torch.log_softmax(logits, dim=-1)
        v, i = torch.topk(lp, 5)
        top_ids.append(i.tolist())
        top_lps.append(v.tolist())
        nxt = int(torch.argmax(logits))
        tokens.append(nxt)
        if step + 1 == n_new:
            break
        out = model(input_ids=torch.tensor([[nxt]], device=DEVICE), past_key_values=past, use_cache=True)
        past = out.past_key_values
        logits = out.logits[0, -1].float()
    return {"prompt_ids": prompt_ids, "last_logits": last_logits, "greedy_ids": tokens,
            "step_top5_ids": top_ids, "step_top5_logprobs": top_lps}


@torch.no_grad()
def bf16_vs_f32(model32, cases):
    """Largest |Δ logprob| over each case's recorded bf16 top-5, against `model32` (f32) fed the
    prompt and the bf16 greedy tokens: at the prefill position and over the decode steps."""
    prefill = decode = 0.0
    for c in cases:
        if c.get("adapter") is not None:
            model32.set_adapter(c["adapter"])
        ids = c["prompt_ids"] + c["greedy_ids"][:-1]
        logits = model32(input_ids=torch.tensor([ids], device=DEVICE)).logits[0].float()
        lps = torch.log_softmax(logits[len(c["prompt_ids"]) - 1:], dim=-1)
        for s, (top, ref) in enumerate(zip(c["step_top5_ids"], c["step_top5_logprobs"])):
            d = (lps[s, top] - torch.tensor(ref, device=DEVICE)).abs().max().item()
            if s == 0:
                prefill = max(prefill, d)
            else:
                decode = max(decode, d)
    return {"prefill": round(prefill, 4), "decode": round(decode, 4)}


def lora_floor(model32, adapters: Path, cases):
    """`bf16_vs_f32` of adapter cases: `model32` (changed in place) wrapped with every adapter."""
    floor = bf16_vs_f32(with_adapters(model32, adapters), cases)
    return {"lora_prefill": floor["prefill"], "lora_decode": floor["decode"]}


@torch.no_grad()
def make_adapters(model, out: Path, ratio=0.25, seed=0):
    """Wraps `model` (bf16, changed in place) in a PeftModel with ADAPTER_SPECS, each LoRA B random
    and scaled so that on Gaussian inputs `scaling·B·A·x` has `ratio` of the norm of the base
    layer's `W·x`; saves each adapter as OUT/<name> (PEFT format, fp32 weights)."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer
    torch.manual_seed(seed)  # PEFT's own init of A draws from the global generator
    peft = None
    for name, spec in ADAPTER_SPECS:
        config = LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.0, **spec)
        if peft is None:
            peft = get_peft_model(model, config, adapter_name=name)
        else:
            peft.add_adapter(name, config)
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    for module in peft.modules():
        if not isinstance(module, LoraLayer):
            continue
        w = module.get_base_layer().weight.float()
        x = torch.randn(32, w.shape[1], device=DEVICE, generator=g)
        base = (x @ w.T).norm()
        for name in module.lora_A:
            a, b = module.lora_A[name].weight, module.lora_B[name].weight
            b.copy_(torch.randn(b.shape, device=DEVICE, generator=g))
            delta = module.scaling[name] * ((x @ a.float().T) @ b.float().T)
            b.mul_(ratio * base / delta.norm())
    out.mkdir(parents=True, exist_ok=True)
    peft.save_pretrained(str(out))
    (out / "README.md").unlink(missing_ok=True)  # PEFT's model card: the folder holds adapters only
    return peft.eval()


def conditioned_lora(peft, name, base_prompts, adapter_prompts, f32_dir: Path, adapters: Path):
    """Base and adapter cases through `peft` (bf16), one mixed batch of every adapter and the base,
    and the floor against the same model and adapters in f32."""
    cases = []
    with peft.disable_adapter():
        cases += [{"adapter": None, **greedy(peft, p, N_NEW)} for p in base_prompts]
    for (adapter, _), prompt in zip(ADAPTER_SPECS, adapter_prompts):
        peft.set_adapter(adapter)
        cases.append({"adapter": adapter, **greedy(peft, prompt, N_NEW)})
    lora_cases = [c for c in cases if c["adapter"] is not None]
    batch_cases = lora_cases + [cases[0]]
    batch = {"adapters": [c["adapter"] for c in batch_cases], "prompt_ids": [c["prompt_ids"] for c in batch_cases],
             "last_logits": [c["last_logits"] for c in batch_cases], "greedy_ids": [c["greedy_ids"] for c in batch_cases]}
    model32 = AutoModelForCausalLM.from_pretrained(f32_dir, dtype=torch.float32).to(DEVICE).eval()
    floor = bf16_vs_f32(model32, [c for c in cases if c["adapter"] is None])
    floor.update(lora_floor(model32, adapters, lora_cases))
    del model32
    return {"model": name, "description": "transformers + PEFT bf16 (adapter weights fp32, PEFT's autocast), conditioned adapters made by hf_reference.py",
            "cases": cases, "mixed_batches": [batch], "hf_bf16_vs_f32": floor}


def link_model(src: Path, dst: Path):
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name in ("config.json", "generation_config.json") or f.suffix == ".safetensors" or f.name.endswith(".index.json"):
            target = dst / f.name
            if not target.exists():
                os.symlink(f.resolve(), target)


def fixture_cases(model_dir: Path):
    for name in ("reference.json", "reference_greedy.json"):
        p = model_dir / name
        if p.exists():
            cases = json.loads(p.read_text())["cases"]
            return [c["prompt_ids"] for c in cases if c.get("adapter") is None]
    return []


def adapter_cases(model_dir: Path, fixtures: Path):
    """The fixture's adapters folder and its (adapter, prompt_ids) cases; stories260k keeps them
    apart from its weights, under models/stories260k."""
    for d in (model_dir, fixtures / "models" / model_dir.name):
        if (d / "adapters").is_dir() and (d / "reference.json").exists():
            cases = json.loads((d / "reference.json").read_text())["cases"]
            return d / "adapters", [(c["adapter"], c["prompt_ids"]) for c in cases if c.get("adapter") is not None]
    return None, []


@torch.no_grad()
def with_adapters(model, adapters: Path):
    """`model` (changed in place) wrapped in a PeftModel holding every adapter under `adapters`."""
    from peft import PeftModel
    names = sorted(d.name for d in adapters.iterdir() if (d / "adapter_config.json").exists())
    peft = PeftModel.from_pretrained(model, str(adapters / names[0]), adapter_name=names[0]).eval()
    for name in names[1:]:
        peft.load_adapter(str(adapters / name), adapter_name=name)
    return peft


def peft_cases(model, adapters: Path, cases):
    """Wraps `model` (changed in place) with every adapter under `adapters` and runs each case
    with its adapter active."""
    peft = with_adapters(model, adapters)
    out = []
    for name, prompt in cases:
        peft.set_adapter(name)
        out.append({"adapter": name, **greedy(peft, prompt, N_NEW)})
    return out


def llama_8b_shape(vocab=128256):
    """Llama-3.1-8B's configuration with 2 layers (and optionally a smaller vocabulary)."""
    return LlamaConfig(vocab_size=vocab, hidden_size=4096, intermediate_size=14336, num_hidden_layers=2,
                       num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
                       rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                       rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/hfref")
    ap.add_argument("--fixtures", default="Fixtures")
    ap.add_argument("--skip-8b", action="store_true")
    ap.add_argument("--vocab-8b", type=int, default=128256, help="a smaller vocabulary to try the script on a CPU")
    args = ap.parse_args()
    out = Path(args.out)
    fixtures = Path(args.fixtures)
    dirs = sorted(d for d in (fixtures / "models").iterdir() if (d / "config.json").exists()) + [fixtures / "stories260k"]
    for d in dirs:
        prompts = fixture_cases(d)
        if not prompts:
            continue
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16).to(DEVICE).eval()
        cases = [greedy(model, p, N_NEW) for p in prompts]
        model32 = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).to(DEVICE).eval()
        floor = bf16_vs_f32(model32, cases)
        name = d.name + "-bf16"
        link_model(d, out / name)
        adapters, with_adapter = adapter_cases(d, fixtures)
        description = "transformers bf16 on the GPU"
        if with_adapter:
            link = out / name / "adapters"
            if not os.path.lexists(link):
                os.symlink(adapters.resolve(), link)
            lora = peft_cases(model, adapters, with_adapter)
            cases += lora
            description += "; adapter cases: PEFT on the bf16 base (default autocast: adapter weights in fp32)"
            floor.update(lora_floor(model32, adapters, lora))
        (out / name / "reference.json").write_text(json.dumps({"model": name, "description": description, "cases": cases, "hf_bf16_vs_f32": floor}))
        print(f"{name}: {len(cases)} cases ({len(with_adapter)} with adapters); bf16 vs f32 {floor}", flush=True)
        del model, model32
        if d.name == "stories260k":
            # The trained model with conditioned adapters.
            name = "stories260k-lora-bf16"
            link_model(d, out / name)
            model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16).to(DEVICE).eval()
            peft = make_adapters(model, out / name / "adapters", seed=1)
            ref = conditioned_lora(peft, name, prompts[:1], [p for p in prompts for _ in range(2)][:len(ADAPTER_SPECS)], d, out / name / "adapters")
            (out / name / "reference.json").write_text(json.dumps(ref))
            print(f"{name}: {len(ref['cases'])} cases; bf16 vs f32 {ref['hf_bf16_vs_f32']}", flush=True)
            del model, peft
    if not args.skip_8b:
        torch.manual_seed(0)
        config = llama_8b_shape(args.vocab_8b)
        with torch.device(DEVICE):
            model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
        # transformers' own init (std 0.02): logits of std about 1.3, so bf16 rounding moves top-5
        # logprobs by about 0.01. (An lm_head scaled up 8x, tried before, made transformers' bf16 run
        # 1.3 from its own f32 run: no check can pass against that.)
        name = "llama-3.1-8b-2layers-bf16"
        model.save_pretrained(out / name, safe_serialization=True)
        # The reference runs the checkpoint as a user loads it. `.to(torch.bfloat16)` above also rounds
        # the rotary inv_freq buffer to bf16 (from_pretrained computes it in f32): RoPE's angles then
        # drift by up to 0.2 rad at position 127, which had put this reference 0.17 from f32
        # (scripts/gpu/bf16_bisect.py traces it).
        del model
        model = AutoModelForCausalLM.from_pretrained(out / name, dtype=torch.bfloat16).to(DEVICE).eval()
        rng = random.Random(0)
        prompts = [[rng.randrange(config.vocab_size) for _ in range(n)] for n in (7, 33, 100, 128)]
        adapter_prompts = [[rng.randrange(config.vocab_size) for _ in range(n)] for n in (12, 40, 64, 25)]
        peft = make_adapters(model, out / name / "adapters", seed=2)
        ref = conditioned_lora(peft, name, prompts, adapter_prompts, out / name, out / name / "adapters")
        ref["description"] = "random Llama-3.1-8B shape, 2 layers, transformers + PEFT bf16 on the GPU; " + ref["description"]
        (out / name / "reference.json").write_text(json.dumps(ref))
        print(f"{name}: {len(ref['cases'])} cases; bf16 vs f32 {ref['hf_bf16_vs_f32']}", flush=True)


if __name__ == "__main__":
    main()
