#!/usr/bin/env python3
"""Trains the demo adapters that `loom serve` loads when no --model-path is given.

Each adapter is a real PEFT LoRA (r 8, all linear projections) fine-tuned on the CPU for a few
hundred steps on stories260K, over a small corpus this script writes itself, so that the same
prompt visibly continues differently under each adapter:

- `pirate`: stories about a pirate named Jack, his ship and a treasure chest.
- `dragon`: stories about a friendly dragon named Spark who flies over the hills.

Output: Fixtures/demo-adapters/<name>/ (adapter_config.json + adapter_model.safetensors).
Deterministic (fixed seeds). Needs torch, transformers and peft (scripts/requirements-fixtures.txt).

    python scripts/make_demo_adapters.py
"""
import json
import os
import random

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(ROOT, "Fixtures", "stories260k")
OUT = os.path.join(ROOT, "Fixtures", "demo-adapters")

CORPORA = {
    "pirate": {
        "names": ["Jack", "Captain Jack", "the pirate Jack"],
        "templates": [
            "Once upon a time, there was a pirate named Jack. He had a big ship and a red flag. Every day he sailed on the sea to find treasure.",
            "One day, {n} sailed his ship to a small island. He found a treasure chest full of gold. He was very happy and said, \"Arr, I am rich!\"",
            "Once upon a time, {n} and his parrot looked at a map. The map showed where the treasure was. They sailed the ship over the big waves.",
            "{n} lived on a pirate ship. He loved the sea and the wind. One day, he saw a chest of gold on the beach and he dug it up.",
            "Lily met a pirate named Jack. He showed her his ship and his gold. They sailed on the sea and found a treasure on an island.",
        ],
    },
    "dragon": {
        "names": ["Spark", "the dragon Spark", "Spark the dragon"],
        "templates": [
            "Once upon a time, there was a friendly dragon named Spark. Spark had green wings and could fly high over the hills.",
            "One day, {n} flew over the village. The children waved and Spark blew warm fire to cook their soup. Everyone loved the dragon.",
            "Once upon a time, {n} lived in a cave on a hill. Every morning the dragon flew in the sky and looked at the sun.",
            "{n} was a kind dragon. He flew over the forest and helped a lost bird find its nest. The bird said thank you to the dragon.",
            "Lily and Tom saw a big dragon in the sky. It was Spark, the friendly dragon. Spark flew down and gave them a ride over the hills.",
        ],
    },
}


def corpus(name, count=64, seed=0):
    rng = random.Random(seed)
    spec = CORPORA[name]
    texts = []
    for _ in range(count):
        text = " ".join(rng.choice(spec["templates"]).format(n=rng.choice(spec["names"])) for _ in range(3))
        texts.append(text)
    return texts


def train(name, steps=300, seed=0):
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(BASE)
    model = AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    texts = corpus(name, seed=seed)
    batches = [tokenizer(t, return_tensors="pt").input_ids[:, :256] for t in texts]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for step in range(steps):
        ids = batches[step % len(batches)]
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 100 == 0 or step == steps - 1:
            print(f"{name}: step {step} loss {loss.item():.3f}")
    model.eval()
    path = os.path.join(OUT, name)
    model.save_pretrained(path)
    cfg_path = os.path.join(path, "adapter_config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["base_model_name_or_path"] = "Fixtures/stories260k"
    cfg["target_modules"] = sorted(cfg["target_modules"])
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    readme = os.path.join(path, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
    prompt = tokenizer("Once upon a time", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=40, do_sample=False)
        with model.disable_adapter():
            base = model.generate(prompt, max_new_tokens=40, do_sample=False)
    print(f"{name}: {tokenizer.decode(out[0], skip_special_tokens=True)!r}")
    print(f"base: {tokenizer.decode(base[0], skip_special_tokens=True)!r}")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for name in CORPORA:
        train(name)
