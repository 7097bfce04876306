"""Renders the chat templates in this folder with jinja2 exactly as Hugging Face's
`apply_chat_template` does, and writes vectors.json, which ChatTemplateTests compares against.

Run from the repository root: python3 Tests/ServerTests/ChatTemplates/make_vectors.py
(needs jinja2; the vectors are committed, so tests do not).
"""
import json
import os
from datetime import datetime

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = strftime_now

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]

CONVERSATIONS = {
    "user": [{"role": "user", "content": "Hello there!"}],
    "system_user": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "  Name a colour.  "}],
    "multi_turn": [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a story about a cat.\nMake it short."},
    ],
    "user_assistant": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
    "not_alternating": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
    "tool_call": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "{\"temp\": 21}"},
        {"role": "user", "content": "Thanks – and «Zürich»?"},
    ],
}

vectors = []
for name in sorted(os.listdir(HERE)):
    if not name.endswith(".jinja"):
        continue
    source = open(os.path.join(HERE, name), encoding="utf-8").read()
    template = env.from_string(source)
    for conv_name, messages in CONVERSATIONS.items():
        for add_generation_prompt in (True, False):
            for tools in ([None, TOOLS] if "qwen2.5" in name or "stress" in name else [None]):
                context = dict(messages=messages, bos_token="<s>", eos_token="</s>",
                               add_generation_prompt=add_generation_prompt)
                if tools is not None:
                    context["tools"] = tools
                case = {"template": name, "conversation": conv_name, "add_generation_prompt": add_generation_prompt,
                        "tools": tools}
                try:
                    case["output"] = template.render(**context)
                except jinja2.exceptions.TemplateError as e:
                    case["error"] = str(e)
                vectors.append(case)

with open(os.path.join(HERE, "vectors.json"), "w", encoding="utf-8") as f:
    json.dump({"conversations": CONVERSATIONS, "cases": vectors}, f, ensure_ascii=False, indent=1)
print(f"{len(vectors)} cases")
