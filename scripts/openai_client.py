#!/usr/bin/env python3
"""The official `openai` Python client against a running Loom server: /v1/models,
/v1/completions, /v1/chat/completions (plain, streamed, with n, with adapters chosen by
"model": "base:adapter", by the adapter's name alone, and by extra_body lora_path), and the error
for an unknown adapter. Any failure exits non-zero.

    pip install openai
    python3 scripts/openai_client.py http://127.0.0.1:30000 [--api-key KEY] [--adapter NAME]

Without --adapter, the first adapter /v1/models lists is used (adapter checks are skipped when the
server has none).
"""
import argparse
import sys

import openai


def fail(message):
    raise SystemExit(f"openai_client: {message}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base_url", help="e.g. http://127.0.0.1:30000")
    parser.add_argument("--api-key", default="EMPTY")
    parser.add_argument("--adapter", default=None)
    args = parser.parse_args()

    client = openai.Client(base_url=args.base_url.rstrip("/") + "/v1", api_key=args.api_key, max_retries=0)

    # /v1/models: the base model first, then one card per adapter (root = path, parent = base).
    models = client.models.list().data
    if not models:
        fail("/v1/models is empty")
    base = models[0].id
    adapters = [m for m in models[1:] if getattr(m, "parent", None) == base]
    print("models:", [m.id for m in models])
    adapter = args.adapter or (adapters[0].id if adapters else None)

    # /v1/completions
    completion = client.completions.create(model=base, prompt="Once upon a time", max_tokens=16, temperature=0)
    text = completion.choices[0].text
    print("completion:", repr(text))
    if completion.model != base or completion.object != "text_completion":
        fail(f"unexpected completion: {completion}")
    if completion.usage.completion_tokens < 1 or completion.usage.total_tokens != completion.usage.prompt_tokens + completion.usage.completion_tokens:
        fail(f"bad usage: {completion.usage}")
    if completion.choices[0].finish_reason not in ("stop", "length"):
        fail(f"bad finish_reason: {completion.choices[0].finish_reason}")

    # Streamed, the same greedy text.
    pieces = []
    usage = None
    for chunk in client.completions.create(model=base, prompt="Once upon a time", max_tokens=16, temperature=0, stream=True,
                                           stream_options={"include_usage": True}):
        if chunk.choices:
            pieces.append(chunk.choices[0].text)
        if chunk.usage:
            usage = chunk.usage
    if "".join(pieces) != text:
        fail(f"streamed completion {''.join(pieces)!r} differs from {text!r}")
    if usage is None or usage.completion_tokens != completion.usage.completion_tokens:
        fail(f"streamed usage {usage} differs from {completion.usage}")

    # n > 1
    many = client.completions.create(model=base, prompt="The dog", max_tokens=8, temperature=0.8, n=2, seed=7)
    if sorted(c.index for c in many.choices) != [0, 1]:
        fail(f"n=2 gave {len(many.choices)} choices")

    # /v1/chat/completions
    messages = [{"role": "system", "content": "You tell short stories."}, {"role": "user", "content": "A story about a cat."}]
    chat = client.chat.completions.create(model=base, messages=messages, max_tokens=16, temperature=0)
    answer = chat.choices[0].message.content
    print("chat:", repr(answer))
    if chat.choices[0].message.role != "assistant" or chat.object != "chat.completion":
        fail(f"unexpected chat completion: {chat}")

    streamed = []
    roles = []
    for chunk in client.chat.completions.create(model=base, messages=messages, max_tokens=16, temperature=0, stream=True):
        for choice in chunk.choices:
            if choice.delta.role:
                roles.append(choice.delta.role)
            if choice.delta.content:
                streamed.append(choice.delta.content)
    if "".join(streamed) != answer or roles != ["assistant"]:
        fail(f"streamed chat {''.join(streamed)!r} (roles {roles}) differs from {answer!r}")

    # Adapters: base:adapter, the adapter's name alone, and lora_path.
    if adapter:
        by_colon = client.completions.create(model=f"{base}:{adapter}", prompt="Once upon a time", max_tokens=16, temperature=0)
        by_name = client.completions.create(model=adapter, prompt="Once upon a time", max_tokens=16, temperature=0)
        by_body = client.completions.create(model=base, prompt="Once upon a time", max_tokens=16, temperature=0,
                                            extra_body={"lora_path": adapter})
        print(f"completion with {adapter}:", repr(by_colon.choices[0].text))
        if by_colon.model != f"{base}:{adapter}" or by_name.model != adapter:
            fail("the response's model does not echo the request's")
        if not (by_colon.choices[0].text == by_name.choices[0].text == by_body.choices[0].text):
            fail("the three ways of naming an adapter gave different outputs")
        chat_adapter = client.chat.completions.create(model=f"{base}:{adapter}", messages=messages, max_tokens=16, temperature=0)
        print(f"chat with {adapter}:", repr(chat_adapter.choices[0].message.content))

        try:
            client.completions.create(model=f"{base}:no-such-adapter", prompt="Hi", max_tokens=4)
            fail("an unknown adapter was accepted")
        except openai.BadRequestError as e:
            if "no-such-adapter" not in str(e):
                fail(f"the unknown-adapter error does not name it: {e}")
    print("openai_client: all checks passed")


if __name__ == "__main__":
    try:
        main()
    except openai.OpenAIError as e:
        sys.exit(f"openai_client: {type(e).__name__}: {e}")
