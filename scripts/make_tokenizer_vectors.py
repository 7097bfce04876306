#!/usr/bin/env python3
"""Builds the tokenizer fixtures and reference vectors used by Tests/TokenizationTests.

Usage:  pip install tokenizers && python3 scripts/make_tokenizer_vectors.py

(a) Trains three small byte-level BPE tokenizers with the Hugging Face `tokenizers` library on a
    corpus that this script generates itself (deterministic, no downloads):
      Fixtures/tokenizers/gpt2-bytelevel/    GPT-2 style: ByteLevel(use_regex) pre-tokenizer,
                                             <|endoftext|> as BOS = EOS, ByteLevel post-processor
      Fixtures/tokenizers/llama3-bytelevel/  Llama 3 style: Sequence[Split(regex), ByteLevel],
                                             ignore_merges, TemplateProcessing adding <|begin_of_text|>
      Fixtures/tokenizers/qwen2-bytelevel/   Qwen2 style: NFC normalizer, Qwen regex, no BOS
    Each folder gets tokenizer.json and tokenizer_config.json.
    It also writes Fixtures/tokenizers/stories260k-legacy/: the stories260k tokenizer in the older
    Llama 2 layout (normalizer Prepend("\u2581") + Replace(" ", "\u2581"), no pre-tokenizer), as
    `legacy: true` conversions produce it.
(b) For those and for Fixtures/stories260k and Fixtures/tokenizer-mistral-v1 writes
    Fixtures/tokenizers/vectors/<name>.json with encode/decode results of `tokenizers`.

The output is deterministic: re-running the script rewrites identical files.
"""

import json
import os
import random
import sys

import tokenizers
from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
FIXTURES = os.path.join(ROOT, "Fixtures")
OUT = os.path.join(FIXTURES, "tokenizers")

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# ---------------------------------------------------------------------------------------------
# Training corpus (generated, deterministic)
# ---------------------------------------------------------------------------------------------

PARAGRAPHS = [
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
    "park with her friends. One day, she found a shiny red ball under a big tree.",
    "The quick brown fox jumps over the lazy dog. It's a sentence that contains every letter "
    "of the English alphabet, and it's often used to test typewriters and fonts.",
    "In 2024, the company reported revenue of $1,234,567.89, up 12.5% from 2023. The CEO said: "
    "\"We're proud of what we've built, and we'll keep going.\"",
    "def tokenize(text):\n    # split on whitespace\n    return [w for w in text.split() if w]\n\n"
    "for i in range(10):\n    print(i ** 2)\n",
    "if (a && b) { return a->b; } else { x += 1; }  // C++ style comment\n"
    "let numbers = [1, 2, 3, 42, 1000]; console.log(numbers.map(n => n * 2));",
    "Caf\u00e9 au lait, na\u00efve r\u00e9sum\u00e9, fa\u00e7ade, co\u00f6perate, \u00fcber, "
    "Stra\u00dfe, \u00c5ngstr\u00f6m, \u00d8resund, \u00bfQu\u00e9 tal? \u00a1Muy bien!",
    "\u4eca\u65e5\u306f\u3044\u3044\u5929\u6c17\u3067\u3059\u3002\u6771\u4eac\u306f\u65e5\u672c"
    "\u306e\u9996\u90fd\u3067\u3059\u3002\u6211\u7231\u81ea\u7136\u8bed\u8a00\u5904\u7406\u3002"
    "\ud55c\uad6d\uc5b4\ub3c4 \uc870\uae08 \uc788\uc2b5\ub2c8\ub2e4.",
    "Emoji are fun \U0001F600 \U0001F44D \u2764\ufe0f \U0001F680 and so are symbols: "
    "\u2211 \u221e \u00b1 \u221a2 \u2264 \u2265 \u2192 \u00a9 \u2122.",
    "THE END. IT'S OVER! DON'T PANIC, WE'RE FINE, THEY'VE GONE, I'M HERE, YOU'LL SEE, HE'D KNOW.",
    "Tabs\tand\tnewlines\nare\n\nwhitespace too.   Multiple   spaces   matter.\r\nWindows lines.",
]

WORDS = (
    "the a an and or but if then when while because so very quite really little big small "
    "happy sad red blue green yellow dog cat bird fish tree house car ball book friend mom dad "
    "girl boy park school garden river mountain sky sun moon star time day night morning "
    "evening play run jump walk talk read write sing dance look see find make take give want "
    "love like help think know feel said asked went came saw found made took gave wanted "
    "loved liked helped thought knew felt model token server request response stream batch "
    "adapter weight matrix vector layer attention cache memory latency throughput inference"
).split()
NAMES = ["Lily", "Tom", "Ben", "Sue", "Max", "Anna", "Tim", "Mia", "Sam", "Zoe"]


def corpus() -> list:
    rng = random.Random(20240607)
    lines = list(PARAGRAPHS)
    for _ in range(260):
        n = rng.randint(5, 16)
        words = [rng.choice(WORDS) for _ in range(n)]
        if rng.random() < 0.5:
            words.insert(rng.randint(0, n), rng.choice(NAMES))
        if rng.random() < 0.3:
            words.insert(rng.randint(0, n), str(rng.randint(0, 99999)))
        if rng.random() < 0.2:
            words.insert(rng.randint(0, n), rng.choice(["it's", "don't", "we're", "I've", "you'll"]))
        s = " ".join(words)
        s = s[0].upper() + s[1:] + rng.choice([".", ".", "!", "?", "...", ","])
        lines.append(s)
    # Repeat the paragraphs so that their pairs are frequent.
    return lines + PARAGRAPHS * 3


# ---------------------------------------------------------------------------------------------
# Tokenizer construction
# ---------------------------------------------------------------------------------------------


def train_gpt2(lines):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=1000, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    # An extra RoBERTa-style mask token that swallows the spaces on its left.
    tok.add_special_tokens([AddedToken("<mask>", special=True, lstrip=True, normalized=False)])
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_prefix_space": False,
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1024,
    }
    return tok, config


def train_llama3(lines):
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1200, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                "<|reserved_special_token_1|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|reserved_special_token_2|>", "<|eot_id|>"]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    # A non-special added token (matched before pre-tokenization, decoded like text).
    tok.add_tokens([AddedToken("<tool_call>", special=False, normalized=False)])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(
            single="<|begin_of_text|> $A",
            pair="<|begin_of_text|> $A:0 <|begin_of_text|>:1 $B:1",
            special_tokens=[("<|begin_of_text|>", bos)],
        ),
    ])
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot_id|>",
        "clean_up_tokenization_spaces": True,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072,
    }
    return tok, config


def train_qwen2(lines):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=1000, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False)
                            for s in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]])
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "add_prefix_space": False,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 32768,
    }
    return tok, config


def legacy_stories():
    """stories260k's tokenizer.json rewritten in the legacy Llama 2 layout."""
    with open(os.path.join(FIXTURES, "stories260k", "tokenizer.json"), encoding="utf-8") as f:
        data = json.load(f)
    data["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
    ]}
    data["pre_tokenizer"] = None
    tok = Tokenizer.from_str(json.dumps(data))
    with open(os.path.join(FIXTURES, "stories260k", "tokenizer_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    config["legacy"] = True
    return tok, config


def write_json(path, obj, indent=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent, sort_keys=False)
        f.write("\n")


def save_tokenizer(tok, config, name):
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    # Re-serialize through json to get a stable, compact layout.
    data = json.loads(tok.to_str())
    write_json(os.path.join(folder, "tokenizer.json"), data)
    write_json(os.path.join(folder, "tokenizer_config.json"), config, indent=2)
    return Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))


# ---------------------------------------------------------------------------------------------
# Vectors
# ---------------------------------------------------------------------------------------------

LONG_TEXT = (
    "Loom serves many LoRA adapters on one base model. Each request names its adapter; the "
    "scheduler batches requests that share a base, and the kernels apply the low-rank deltas "
    "on the fly. Throughput stays high, latency stays low, and memory use grows slowly!"
)

TEXTS = [
    "Hello world",
    "Once upon a time, there was a little girl named Lily.",
    "The quick brown fox jumps over the lazy dog.",
    " leading space",
    "trailing space ",
    "  two leading spaces and  double  spaces",
    "multiple     spaces    inside   ",
    "",
    " ",
    "   ",
    "Tabs\tand\nnewlines\n\nhere",
    "line one\r\nline two\r\n",
    "\n\nstarts with newlines",
    "Numbers: 1234567890, 3.14159, -42",
    "Year 2024 and 1000000 dollars; 007 x1y22z333",
    "Punctuation!!! ... ??? --- ;;; (((nested))) [x] {y}",
    "Wow!? \"quoted\" 'single' `back` @#$%^&*",
    "It's, don't, they're, we've, I'm, you'll, he'd",
    "IT'S DON'T THEY'RE WE'VE I'M YOU'LL HE'D It'S",
    "Unicode: caf\u00e9 na\u00efve \u00dcn\u00efc\u00f6d\u00e9 \u2014 \u201cquotes\u201d \U0001F600 "
    "\u4e2d\u6587 \u65e5\u672c\u8a9e \ud55c\uad6d\uc5b4",
    "\u00c7a va? O\u00f9 est la biblioth\u00e8que? Stra\u00dfe, \u00d8resund, \u00c5ngstr\u00f6m",
    "Decomposed: cafe\u0301 and n\u0303 and A\u030a",
    "\u6211\u7231\u81ea\u7136\u8bed\u8a00\u5904\u7406\u3002\u6771\u4eac\u306f\u65e5\u672c\u306e"
    "\u9996\u90fd\u3067\u3059\u3002",
    "emoji: \U0001F44D\U0001F3FD \U0001F1EB\U0001F1F7 \U0001F468\u200d\U0001F469\u200d\U0001F467"
    "\u200d\U0001F466 \u2764\ufe0f\u200d\U0001F525 \U0001F9D1\U0001F3FF\u200d\U0001F4BB",
    "Rare: \U0001D518\U0001D52B\U0001D526\U0001D520\U0001D52C\U0001D521\U0001D522 "
    "\u16a0\u16c7\u16bb \ua9a7\ua9b1 \U00013000 \u222e E\u22c5da = Q",
    "Math: \u2211_{i=1}^{n} x_i\u00b2 \u2264 \u221e \u00b1 \u221a2",
    "Code: def f(x):\n    return x**2  # square",
    "if (a && b) { return a->b; } // C++",
    "<s>",
    "Hello</s>world <s> again",
    "<s> Hello",
    "<|eot_id|>",
    "<|begin_of_text|>Hi<|eot_id|>",
    "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "<|endoftext|>The end.<|endoftext|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n",
    "Fill the <mask> here and   <mask>there <tool_call>{\"a\": 1}",
    "Text with <unk> token and <0x41> literal",
    "\u2581 already has metaspace \u2581\u2581 chars",
    "Vertical\u000btab, form\u000cfeed, nel\u0085, nbsp\u00a0, ideographic\u3000space",
    "Zero-width: a\u200bb\u200dc\ufeffd",
    "Mixed: Hello\u4e16\u754c123abc!?\U0001F44B",
    "A",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "The end.\n",
    LONG_TEXT,
]


def make_vectors(name, tok, tokenizer_dir, rng_seed):
    cases = []
    for text in TEXTS:
        with_special = tok.encode(text, add_special_tokens=True).ids
        without = tok.encode(text, add_special_tokens=False).ids
        cases.append({
            "text": text,
            "ids_with_special": with_special,
            "ids": without,
            "decoded": tok.decode(with_special, skip_special_tokens=True),
            "decoded_with_special": tok.decode(with_special, skip_special_tokens=False),
        })
    # Decodes of arbitrary windows of id sequences (they may cut characters in the middle):
    # these pin down how incomplete UTF-8 is rendered.
    rng = random.Random(rng_seed)
    decode_cases = []
    sources = [c["ids_with_special"] for c in cases
               if any(ord(ch) > 127 for ch in c["text"]) and len(c["ids_with_special"]) > 2]
    for _ in range(60):
        ids = rng.choice(sources)
        i = rng.randrange(0, len(ids) - 1)
        j = rng.randrange(i + 1, min(len(ids), i + 8) + 1)
        window = ids[i:j]
        skip = rng.random() < 0.5
        decode_cases.append({"ids": window, "skip_special_tokens": skip,
                             "decoded": tok.decode(window, skip_special_tokens=skip)})
    return {
        "tokenizer": name,
        "tokenizer_dir": tokenizer_dir,
        "generator": "scripts/make_tokenizer_vectors.py",
        "tokenizers_version": tokenizers.__version__,
        "note": "ids_with_special = encode(text, add_special_tokens=True).ids, ids = encode(text, "
                "add_special_tokens=False).ids, decoded = decode(ids_with_special, "
                "skip_special_tokens=True), decoded_with_special = decode(ids_with_special, "
                "skip_special_tokens=False); all from HF tokenizers reading tokenizer.json.",
        "cases": cases,
        "decode_cases": decode_cases,
    }


def main():
    lines = corpus()
    built = {}
    for name, fn in [("gpt2-bytelevel", lambda: train_gpt2(lines)),
                     ("llama3-bytelevel", lambda: train_llama3(lines)),
                     ("qwen2-bytelevel", lambda: train_qwen2(lines)),
                     ("stories260k-legacy", legacy_stories)]:
        tok, config = fn()
        built[name] = (save_tokenizer(tok, config, name), "Fixtures/tokenizers/" + name)

    built["stories260k"] = (Tokenizer.from_file(os.path.join(FIXTURES, "stories260k", "tokenizer.json")),
                            "Fixtures/stories260k")
    built["mistral"] = (Tokenizer.from_file(os.path.join(FIXTURES, "tokenizer-mistral-v1", "tokenizer.json")),
                        "Fixtures/tokenizer-mistral-v1")

    for seed, name in enumerate(sorted(built)):
        tok, folder = built[name]
        vectors = make_vectors(name, tok, folder, 1000 + seed)
        path = os.path.join(OUT, "vectors", name + ".json")
        write_json(path, vectors, indent=1)
        size = os.path.getsize(path)
        print(f"{name}: vocab {tok.get_vocab_size(with_added_tokens=True)}, "
              f"{len(vectors['cases'])} cases, {path} ({size} bytes)")
        if size > 200_000:
            sys.exit(f"{path} is too large")


if __name__ == "__main__":
    main()
