#!/usr/bin/env python3
"""Checks a running `loom serve` (any device) against a fixture model's transformers + PEFT
references, through HTTP only: every mixed batch of `reference.json` is sent as one /generate batch
with `lora_path` per row, greedy, and compared with PEFT's fp32 greedy tokens and, at the first
position, its top-5 logprobs (SGLang's tolerance: 0.1).

    python3 scripts/gpu/serve_check.py --base-url http://127.0.0.1:30000 --model Fixtures/models/llama-tiny
"""
import argparse
import json
import math
import sys
import urllib.request


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def log_softmax(xs):
    m = max(xs)
    s = math.log(sum(math.exp(x - m) for x in xs))
    return [x - m - s for x in xs]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", default="http://127.0.0.1:30000")
    p.add_argument("--model", required=True)
    args = p.parse_args()
    ref = json.load(open(f"{args.model}/reference.json"))
    rows = []
    worst = 0.0
    for b, batch in enumerate(ref["mixed_batches"]):
        body = {"input_ids": batch["prompt_ids"], "lora_path": batch["adapters"], "return_logprob": True, "top_logprobs_num": 5,
                "sampling_params": {"temperature": 0, "max_new_tokens": 32, "ignore_eos": True}}
        out = post(f"{args.base_url}/generate", body)
        for i, item in enumerate(out):
            expected = batch["greedy_ids"][i]
            got = item["output_ids"]
            agree = sum(1 for a, e in zip(got, expected) if a == e)
            first_diverge = next((k for k, (a, e) in enumerate(zip(got, expected)) if a != e), None)
            ref_lp = log_softmax(batch["last_logits"][i])
            top = item["meta_info"]["output_top_logprobs"][0]
            diff = max(abs(lp - ref_lp[tok]) for lp, tok, *_ in top)
            worst = max(worst, diff)
            rows.append({"batch": b, "row": i, "adapter": batch["adapters"][i], "tokens_equal": agree, "of": len(expected),
                         "first_divergence": first_diverge, "top5_logprob_max_diff": round(diff, 4)})
    summary = {"model": args.model, "rows": rows, "worst_top5_logprob_diff": round(worst, 4),
               "all_tokens_equal": all(r["tokens_equal"] == r["of"] for r in rows), "pass": worst < 0.1}
    print(json.dumps(summary, indent=1))
    sys.exit(0 if summary["pass"] else 1)


if __name__ == "__main__":
    main()
