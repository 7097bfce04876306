#!/usr/bin/env python3
"""Soak test of a running `loom serve` on loopback: load, adapter churn and client disconnects.

Concurrent clients send /generate requests (random prompts, random adapters or the base model,
streaming or not, greedy); a churn task loads and unloads adapters every second; some clients
disconnect mid-stream. Bounded by --duration seconds and --max-requests. Then it asserts:

- no unexpected failure (a 400 for a churned adapter that was just unloaded is expected; a
  request to a stable adapter or the base model must always succeed);
- every finished request's output_ids equal the same request run alone afterwards (greedy
  decoding is batch-invariant in Loom);
- after the run the server is idle: no running or waiting requests, every KV block free or held
  only by the prefix cache, no in-flight adapter counts.

Prints a JSON summary and exits 1 on any violation. Only talks to the --base-url, which must be a
loopback address.

    python3 scripts/soak.py --base-url http://127.0.0.1:30000 --duration 120 \\
        --adapters pirate dragon --churn-path Fixtures/models/stories260k/adapters/r8-all
"""
import argparse
import json
import random
import sys
import threading
import time
import urllib.parse

import requests

PROMPTS = [
    "Once upon a time",
    "Lily and Tom went to the",
    "One day, a little dog",
    "The sun was shining and",
    "Tim had a red ball. He",
    "There was a big tree in the park",
]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:30000")
    p.add_argument("--duration", type=float, default=120)
    p.add_argument("--max-requests", type=int, default=100000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--adapters", nargs="*", default=[], help="stable adapters, loaded at server start")
    p.add_argument("--churn-path", default=None, help="an adapter folder the churn task loads and unloads")
    p.add_argument("--disconnect-rate", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--api-key", default=None)
    p.add_argument("--admin-api-key", default=None)
    args = p.parse_args()

    host = urllib.parse.urlparse(args.base_url).hostname
    if host not in ("127.0.0.1", "localhost", "::1") and not (host or "").startswith("127."):
        sys.exit(f"refusing to soak {host}: loopback only")

    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    admin = {"Authorization": f"Bearer {args.admin_api_key or args.api_key}"} if (args.admin_api_key or args.api_key) else {}
    deadline = time.time() + args.duration
    lock = threading.Lock()
    stats = {"requests": 0, "finished": 0, "disconnects": 0, "expected_refusals": 0, "churn_loads": 0,
             "churn_unloads": 0, "churn_requests": 0}
    failures = []
    finished = []  # (prompt, adapter, max_new_tokens, output_ids)
    stop = threading.Event()

    def record_failure(what):
        with lock:
            failures.append(what)

    def client(index):
        rng = random.Random(args.seed * 1000 + index)
        session = requests.Session()
        while not stop.is_set() and time.time() < deadline:
            with lock:
                if stats["requests"] >= args.max_requests:
                    return
                stats["requests"] += 1
            prompt = rng.choice(PROMPTS)
            choices = [None] + list(args.adapters) + (["churn"] if args.churn_path else [])
            adapter = rng.choice(choices)
            max_new = rng.randint(4, 24)
            body = {"text": prompt, "lora_path": adapter,
                    "sampling_params": {"temperature": 0, "max_new_tokens": max_new, "ignore_eos": True}}
            stream = rng.random() < 0.5
            disconnect = stream and rng.random() < args.disconnect_rate
            body["stream"] = stream
            try:
                r = session.post(f"{args.base_url}/generate", json=body, headers=headers, stream=stream, timeout=60)
                if r.status_code != 200:
                    text = r.text
                    if adapter == "churn" and r.status_code == 400 and "not loaded" in text:
                        with lock:
                            stats["expected_refusals"] += 1
                        continue
                    record_failure({"status": r.status_code, "body": text[:300], "adapter": adapter})
                    continue
                if not stream:
                    out = r.json()
                    ids = out["output_ids"]
                else:
                    ids = None
                    for line in r.iter_lines():
                        if not line:
                            continue
                        if disconnect:
                            r.close()
                            with lock:
                                stats["disconnects"] += 1
                            break
                        data = line.decode()[len("data: "):]
                        if data == "[DONE]":
                            break
                        chunk = json.loads(data)
                        if "error" in chunk:
                            record_failure({"stream_error": chunk, "adapter": adapter})
                            break
                        ids = chunk["output_ids"]
                    if disconnect:
                        continue
                with lock:
                    stats["finished"] += 1
                    if adapter == "churn":
                        stats["churn_requests"] += 1
                    else:
                        finished.append((prompt, adapter, max_new, ids))
            except requests.RequestException as e:
                record_failure({"exception": repr(e), "adapter": adapter})

    def churn():
        loaded = False
        while not stop.is_set() and time.time() < deadline:
            try:
                if not loaded:
                    r = requests.post(f"{args.base_url}/load_lora_adapter", headers=admin,
                                      json={"lora_name": "churn", "lora_path": args.churn_path}, timeout=60)
                    if r.status_code != 200 or not r.json().get("success"):
                        record_failure({"churn_load": r.status_code, "body": r.text[:300]})
                    else:
                        loaded = True
                        with lock:
                            stats["churn_loads"] += 1
                else:
                    r = requests.post(f"{args.base_url}/unload_lora_adapter", headers=admin,
                                      json={"lora_name": "churn"}, timeout=60)
                    if r.status_code != 200 or not r.json().get("success"):
                        record_failure({"churn_unload": r.status_code, "body": r.text[:300]})
                    else:
                        loaded = False
                        with lock:
                            stats["churn_unloads"] += 1
            except requests.RequestException as e:
                record_failure({"churn_exception": repr(e)})
            time.sleep(1)
        if loaded:
            requests.post(f"{args.base_url}/unload_lora_adapter", headers=admin, json={"lora_name": "churn"}, timeout=60)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    if args.churn_path:
        threads.append(threading.Thread(target=churn))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()

    # Each distinct finished request, run alone, must give the same tokens.
    seen = {}
    for prompt, adapter, max_new, ids in finished:
        seen.setdefault((prompt, adapter, max_new), set()).add(tuple(ids))
    mismatches = 0
    for (prompt, adapter, max_new), outputs in seen.items():
        body = {"text": prompt, "lora_path": adapter,
                "sampling_params": {"temperature": 0, "max_new_tokens": max_new, "ignore_eos": True}}
        r = requests.post(f"{args.base_url}/generate", json=body, headers=headers, timeout=60)
        alone = tuple(r.json()["output_ids"]) if r.status_code == 200 else None
        if outputs != {alone}:
            mismatches += 1
            record_failure({"mismatch": [prompt, adapter, max_new], "alone": alone, "under_load": [list(o) for o in outputs]})

    # The server must come back to idle.
    idle = None
    for _ in range(200):
        info = requests.get(f"{args.base_url}/get_server_info", headers=headers, timeout=10).json()
        state = info["internal_states"][0]
        idle = {k: state[k] for k in ("running", "waiting", "free_kv_blocks", "cached_kv_blocks", "total_kv_blocks",
                                       "in_flight_by_adapter", "slot_occupants")}
        if (state["running"] == 0 and state["waiting"] == 0 and not state["in_flight_by_adapter"]
                and state["free_kv_blocks"] + state["cached_kv_blocks"] == state["total_kv_blocks"]):
            break
        time.sleep(0.05)
    else:
        record_failure({"not_idle": idle})

    summary = dict(stats, churn_operations=stats["churn_loads"] + stats["churn_unloads"],
                   distinct_checked=len(seen), mismatches=mismatches, failures=len(failures),
                   idle=idle, duration_s=args.duration, leaks="none" if not any("not_idle" in f for f in failures) else "yes",
                   command=redacted_command())
    print(json.dumps(summary, indent=2))
    for f in failures[:20]:
        print("FAILURE:", json.dumps(f)[:500], file=sys.stderr)
    sys.exit(1 if failures else 0)


def redacted_command():
    """The command line that ran this soak, keys replaced by <redacted>."""
    words = ["python3"] + sys.argv
    return " ".join("<redacted>" if i > 0 and words[i - 1] in ("--api-key", "--admin-api-key") else w
                    for i, w in enumerate(words))


if __name__ == "__main__":
    main()
