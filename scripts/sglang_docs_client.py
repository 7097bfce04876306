#!/usr/bin/env python3
"""The Python snippets of SGLang's LoRA documentation (docs/advanced_features/lora.ipynb: single
adapter, multiple adapters, dynamic loading, pinning), run unchanged against a running server.

The documentation starts a fresh server for each section; here one server serves all of them, so
the adapters that the documentation's launch commands would load are loaded through the same API
first ("setup" steps). Every response is checked; any failure exits non-zero.

    loom serve --model-path Fixtures/models/llama-tiny --enable-lora --max-loras-per-batch 3 \
        --max-lora-rank 64 --lora-target-modules all &
    python3 scripts/sglang_docs_client.py http://127.0.0.1:30000

Adapter paths default to the llama-tiny fixtures; override with --lora0, --lora1, --lora0-new,
--lora2 (any paths the server can load).
"""
import argparse
import sys

import requests

FIXTURES = "Fixtures/models/llama-tiny/adapters"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base_url", help="e.g. http://127.0.0.1:30000")
    parser.add_argument("--lora0", default=f"{FIXTURES}/r4-qv")
    parser.add_argument("--lora1", default=f"{FIXTURES}/r8-all")
    parser.add_argument("--lora0-new", default=f"{FIXTURES}/r16-mlp")
    parser.add_argument("--lora2", default=f"{FIXTURES}/r32-attn-rslora")
    parser.add_argument("--api-key", default=None, help="sent as a Bearer token when the server uses --api-key")
    args = parser.parse_args()
    if args.api_key:
        session_headers = {"Authorization": f"Bearer {args.api_key}"}
        original = requests.post
        requests.post = lambda *a, **k: original(*a, headers={**session_headers, **k.pop("headers", {})}, **k)

    url = args.base_url.rstrip("/")
    lora0, lora1, lora0_new, lora2 = args.lora0, args.lora1, args.lora0_new, args.lora2

    def check_generate(response, count):
        if response.status_code != 200:
            raise SystemExit(f"/generate failed with {response.status_code}: {response.text}")
        body = response.json()
        if not (isinstance(body, list) and len(body) == count and all(isinstance(o.get("text"), str) for o in body)):
            raise SystemExit(f"/generate answered an unexpected shape: {body}")
        for o in body:
            meta = o.get("meta_info", {})
            if meta.get("finish_reason", {}).get("type") not in ("stop", "length"):
                raise SystemExit(f"/generate did not finish normally: {meta}")
        return body

    def check_adapter_call(response, what):
        if response.status_code != 200 or response.json().get("success") is not True:
            raise SystemExit(f"{what} failed with {response.status_code}: {response.text}")

    def setup_load(name, path, pinned=False):
        check_adapter_call(
            requests.post(url + "/load_lora_adapter", json={"lora_name": name, "lora_path": path, "pinned": pinned}),
            f"setup: loading {name}")

    def setup_unload(name):
        check_adapter_call(requests.post(url + "/unload_lora_adapter", json={"lora_name": name}), f"setup: unloading {name}")

    # ## Serving Single Adaptor (the documentation's server starts with --lora-paths lora0=...)
    setup_load("lora0", lora0)
    json_data = {
        "text": [
            "List 3 countries and their capitals.",
            "List 3 countries and their capitals.",
        ],
        "sampling_params": {"max_new_tokens": 32, "temperature": 0},
        # The first input uses lora0, and the second input uses the base model
        "lora_path": ["lora0", None],
    }
    response = requests.post(
        url + "/generate",
        json=json_data,
    )
    print(f"Output 0: {response.json()[0]['text']}")
    print(f"Output 1: {response.json()[1]['text']}")
    check_generate(response, 2)

    # ## Serving Multiple Adaptors (started with lora0 and lora1)
    setup_load("lora1", lora1)
    json_data = {
        "text": [
            "List 3 countries and their capitals.",
            "List 3 countries and their capitals.",
        ],
        "sampling_params": {"max_new_tokens": 32, "temperature": 0},
        # The first input uses lora0, and the second input uses lora1
        "lora_path": ["lora0", "lora1"],
    }
    response = requests.post(
        url + "/generate",
        json=json_data,
    )
    print(f"Output 0: {response.json()[0]['text']}")
    print(f"Output 1: {response.json()[1]['text']}")
    check_generate(response, 2)

    # ## Dynamic LoRA loading (started with no adapters)
    setup_unload("lora0")
    setup_unload("lora1")

    response = requests.post(
        url + "/load_lora_adapter",
        json={
            "lora_name": "lora0",
            "lora_path": lora0,
        },
    )

    if response.status_code == 200:
        print("LoRA adapter loaded successfully.", response.json())
    else:
        print("Failed to load LoRA adapter.", response.json())
    check_adapter_call(response, "loading lora0")

    response = requests.post(
        url + "/load_lora_adapter",
        json={
            "lora_name": "lora1",
            "lora_path": lora1,
        },
    )

    if response.status_code == 200:
        print("LoRA adapter loaded successfully.", response.json())
    else:
        print("Failed to load LoRA adapter.", response.json())
    check_adapter_call(response, "loading lora1")

    json_data = {
        "text": [
            "List 3 countries and their capitals.",
            "List 3 countries and their capitals.",
        ],
        "sampling_params": {"max_new_tokens": 32, "temperature": 0},
        # The first input uses lora0, and the second input uses lora1
        "lora_path": ["lora0", "lora1"],
    }
    response = requests.post(
        url + "/generate",
        json=json_data,
    )
    print(f"Output from lora0: \n{response.json()[0]['text']}\n")
    print(f"Output from lora1 (updated): \n{response.json()[1]['text']}\n")
    before = check_generate(response, 2)

    response = requests.post(
        url + "/unload_lora_adapter",
        json={
            "lora_name": "lora0",
        },
    )
    check_adapter_call(response, "unloading lora0")

    response = requests.post(
        url + "/load_lora_adapter",
        json={
            "lora_name": "lora0",
            "lora_path": lora0_new,
        },
    )

    if response.status_code == 200:
        print("LoRA adapter loaded successfully.", response.json())
    else:
        print("Failed to load LoRA adapter.", response.json())
    check_adapter_call(response, "loading lora0 (replaced)")
    if response.json().get("loaded_adapters", {}).get("lora0") != lora0_new:
        raise SystemExit(f"loaded_adapters does not show the new lora0: {response.json()}")

    json_data = {
        "text": [
            "List 3 countries and their capitals.",
            "List 3 countries and their capitals.",
        ],
        "sampling_params": {"max_new_tokens": 32, "temperature": 0},
        # The first input uses lora0, and the second input uses lora1
        "lora_path": ["lora0", "lora1"],
    }
    response = requests.post(
        url + "/generate",
        json=json_data,
    )
    print(f"Output from lora0: \n{response.json()[0]['text']}\n")
    print(f"Output from lora1 (updated): \n{response.json()[1]['text']}\n")
    after = check_generate(response, 2)
    if after[1]["output_ids"] != before[1]["output_ids"]:
        raise SystemExit("lora1 changed although only lora0 was replaced")

    # ## LoRA GPU Pinning (started with lora0 pinned, lora1, lora2)
    setup_unload("lora0")
    setup_load("lora0", lora0, pinned=True)
    setup_load("lora2", lora2)

    response = requests.post(
        url + "/unload_lora_adapter",
        json={
            "lora_name": "lora1",
        },
    )
    check_adapter_call(response, "unloading lora1")

    response = requests.post(
        url + "/load_lora_adapter",
        json={
            "lora_name": "lora1",
            "lora_path": lora1,
            "pinned": True,  # Pin the adapter to GPU
        },
    )
    check_adapter_call(response, "loading lora1 pinned")

    json_data = {
        "text": [
            "List 3 countries and their capitals.",
            "List 3 countries and their capitals.",
            "List 3 countries and their capitals.",
        ],
        "sampling_params": {"max_new_tokens": 32, "temperature": 0},
        # The first input uses lora0, and the second input uses lora1
        "lora_path": ["lora0", "lora1", "lora2"],
    }
    response = requests.post(
        url + "/generate",
        json=json_data,
    )
    print(f"Output from lora0 (pinned): \n{response.json()[0]['text']}\n")
    print(f"Output from lora1 (pinned): \n{response.json()[1]['text']}\n")
    print(f"Output from lora2 (not pinned): \n{response.json()[2]['text']}\n")
    check_generate(response, 3)

    # Leave the server as the documentation's first section found it: no adapters.
    for name in ("lora0", "lora1", "lora2"):
        setup_unload(name)
    print("sglang_docs_client: all documentation snippets passed")


if __name__ == "__main__":
    try:
        main()
    except requests.RequestException as e:
        sys.exit(f"request failed: {e}")
    except (KeyError, IndexError, TypeError, ValueError) as e:
        sys.exit(f"unexpected response: {e!r}")
