#!/usr/bin/env python3
"""transformers bf16 references on the GPU, for `loom gpu-check --model DIR`.

For each fixture model (and a random-weight Llama-3.1-8B-shaped model cut to 2 layers), writes
OUT/<name>/ with links to the model files and a reference.json holding, per base case: prompt_ids,
last_logits (bf16 model, fp32 copy), greedy_ids (32 tokens, KV cache) and, per step (0 = the prompt's
last position), the top-5 token ids and their logprobs. For the fixture's adapter cases, the same
fields from PEFT on the bf16 base (one PeftModel holding every adapter, the case's adapter active;
PEFT's default autocast keeps adapter weights in fp32), with "adapter": name, and OUT/<name>/adapters
links to the fixture's adapter folders. Run on the device:

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


@torch.no_grad()
def greedy(model, prompt_ids, n_new):
    ids = torch.tensor([prompt_ids], device="cuda")
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
        out = model(input_ids=torch.tensor([[nxt]], device="cuda"), past_key_values=past, use_cache=True)
        past = out.past_key_values
        logits = out.logits[0, -1].float()
    return {"prompt_ids": prompt_ids, "last_logits": last_logits, "greedy_ids": tokens,
            "step_top5_ids": top_ids, "step_top5_logprobs": top_lps}


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
def peft_cases(model, adapters: Path, cases):
    """Wraps `model` (changed in place) with every adapter under `adapters` and runs each case
    with its adapter active."""
    from peft import PeftModel
    names = sorted(d.name for d in adapters.iterdir() if (d / "adapter_config.json").exists())
    peft = PeftModel.from_pretrained(model, str(adapters / names[0]), adapter_name=names[0]).eval()
    for name in names[1:]:
        peft.load_adapter(str(adapters / name), adapter_name=name)
    out = []
    for name, prompt in cases:
        peft.set_adapter(name)
        out.append({"adapter": name, **greedy(peft, prompt, N_NEW)})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/hfref")
    ap.add_argument("--fixtures", default="Fixtures")
    ap.add_argument("--skip-8b", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    fixtures = Path(args.fixtures)
    dirs = sorted(d for d in (fixtures / "models").iterdir() if (d / "config.json").exists()) + [fixtures / "stories260k"]
    for d in dirs:
        prompts = fixture_cases(d)
        if not prompts:
            continue
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16).cuda().eval()
        cases = [greedy(model, p, N_NEW) for p in prompts]
        name = d.name + "-bf16"
        link_model(d, out / name)
        adapters, with_adapter = adapter_cases(d, fixtures)
        description = "transformers bf16 on the GPU"
        if with_adapter:
            link = out / name / "adapters"
            if not os.path.lexists(link):
                os.symlink(adapters.resolve(), link)
            cases += peft_cases(model, adapters, with_adapter)
            description += "; adapter cases: PEFT on the bf16 base (default autocast: adapter weights in fp32)"
        (out / name / "reference.json").write_text(json.dumps({"model": name, "description": description, "cases": cases}))
        print(f"{name}: {len(cases)} cases ({len(with_adapter)} with adapters)", flush=True)
        del model
    if not args.skip_8b:
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=2,
                             num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
                             rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                             rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
        with torch.device("cuda"):
            model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
        # Peakier logits than the default init gives, so greedy margins mean something.
        with torch.no_grad():
            model.lm_head.weight.mul_(8.0)
        name = "llama-3.1-8b-2layers-bf16"
        model.save_pretrained(out / name, safe_serialization=True)
        rng = random.Random(0)
        prompts = [[rng.randrange(128256) for _ in range(n)] for n in (7, 33, 100, 128)]
        cases = [greedy(model, p, N_NEW) for p in prompts]
        (out / name / "reference.json").write_text(json.dumps({"model": name, "description": "random Llama-3.1-8B shape, 2 layers, transformers bf16 on the GPU", "cases": cases}))
        print(f"{name}: {len(cases)} cases", flush=True)


if __name__ == "__main__":
    main()
