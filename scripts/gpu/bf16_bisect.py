#!/usr/bin/env python3
"""Why is transformers' bf16 forward far from its own f32 forward, and where does Loom's bf16 differ?

Metric (as scripts/gpu/hf_reference.py): at a position, the top-5 token ids of the run under test and
max |logprob(test) - logprob(f32 reference)| over them. `prefill` = max over prompts at the last prompt
position; `all` = max over every teacher-forced position (fixtures: prompt + stored greedy tokens, the
positions after the prompt are the "decode" steps of hf_reference.py, here teacher-forced); `mean` = mean
over all positions of the per-position Δ (less noisy than the maxima, for ranking contributions).

Reference for every row: transformers' f32 model holding the bf16 model's weights upcast (inv_freq computed in
f32, as from_pretrained(dtype=f32) gives), sdpa. For fixtures stored in f16/f32, hf_reference.py's f32 model
instead holds the stored (unrounded) weights: the row "hf:f32 stored weights" and the field
"hf_reference_floor" (hf bf16 against that model) show what that adds.

Variants:
  hf:*      transformers itself, bf16, with monkeypatches (attention in f32, lm_head in f32, inv_freq f32 ...)
  man:*     a hand-written forward in f32 arithmetic over the same bf16 weights that rounds to bf16 exactly at
            the chosen points (flags below). man:loom = Loom's CUDA points; man:hf = Loom's + transformers' extra
            points (P before P.V, logits, and for the 8B-shape model the bf16 inv_freq buffer).
Rounding flags:
  resid   residual = bf16(residual + x)
  norm    out = bf16(w * bf16(x * rsqrt(mean x^2 + eps)))   (sum of squares f32)
  proj    every projection's f32-accumulated GEMM output rounded once (bias added after, rounded again)
  rope    cos/sin rounded, each product and the sum rounded
  invfreq inv_freq rounded to bf16 (what LlamaForCausalLM(config).to(torch.bfloat16) does to the buffer)
  attn_s  attention scores rounded (eager attention: bf16 q.k^T and its * scaling)
  attn_p  P = exp(s - max) rounded to bf16 before P.V (flash kernels, eager's bf16 softmax output)
  attn_o  attention output rounded
  silu    bf16(bf16(silu(g)) * u)
  logits  lm_head output rounded to bf16 (transformers bf16; Loom keeps f32 logits)

Run: python3 scripts/gpu/bf16_bisect.py [--vocab 32000] [--skip-fixtures] [--skip-8b] [--fixtures DIR]. Prints progress on
stderr and one JSON summary on stdout.
"""
import argparse
import sys
import contextlib
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from hf_reference import llama_8b_shape

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BF = torch.bfloat16
LOOM = frozenset({"resid", "norm", "proj", "rope", "attn_o", "silu"})
ALL_FLAGS = ["resid", "norm", "proj", "rope", "invfreq", "attn_s", "attn_p", "attn_o", "silu", "logits"]
T0 = time.time()


def log(*a):
    print(f"[{time.time() - T0:7.1f}s]", *a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------- metric

def top5_delta(test, ref, n_prompt):
    """test/ref [T, V] logits (any float dtype). Returns (Δ at the last prompt position, max Δ over all
    positions, Δ per position)."""
    lt = torch.log_softmax(test.float(), -1)
    lr = torch.log_softmax(ref.float(), -1)
    top = lt.topk(5, dim=-1).indices
    d = (lt.gather(-1, top) - lr.gather(-1, top)).abs().amax(-1)
    return d[n_prompt - 1].item(), d.max().item(), d


def summarize(results, refs, cases):
    pre = allp = 0.0
    ds = []
    for out, ref, (ids, n_prompt) in zip(results, refs, cases):
        p, a, d = top5_delta(out, ref, n_prompt)
        pre, allp = max(pre, p), max(allp, a)
        ds.append(d)
    return {"prefill": round(pre, 4), "all": round(allp, 4), "mean": round(torch.cat(ds).mean().item(), 4)}


# ------------------------------------------------------------------------------------ transformers runs

@torch.no_grad()
def hf_logits(model, cases):
    return [model(input_ids=torch.tensor([ids], device=DEVICE)).logits[0].float() for ids, _ in cases]


_sdpa = F.scaled_dot_product_attention


@contextlib.contextmanager
def sdpa_in_f32():
    """scaled_dot_product_attention with q, k, v (and a float mask) upcast to f32, output cast back:
    attention computed in f32 and rounded once, as Loom's kernels."""
    def f(q, k, v, attn_mask=None, *a, **kw):
        if attn_mask is not None and attn_mask.is_floating_point():
            attn_mask = attn_mask.float()
        return _sdpa(q.float(), k.float(), v.float(), attn_mask, *a, **kw).to(q.dtype)
    F.scaled_dot_product_attention = f
    torch.nn.functional.scaled_dot_product_attention = f
    try:
        yield
    finally:
        F.scaled_dot_product_attention = _sdpa
        torch.nn.functional.scaled_dot_product_attention = _sdpa


@contextlib.contextmanager
def lm_head_in_f32(model):
    """lm_head computed in f32 (logits not rounded to bf16), as Loom."""
    head = model.lm_head
    orig = head.forward
    head.forward = lambda x: F.linear(x.float(), head.weight.float(), None if head.bias is None else head.bias.float())
    try:
        yield
    finally:
        head.forward = orig


@contextlib.contextmanager
def inv_freq(model, value):
    rot = model.model.rotary_emb
    old = rot.inv_freq.clone()
    rot.inv_freq = value.to(device=old.device, dtype=value.dtype)
    try:
        yield
    finally:
        rot.inv_freq = old


@contextlib.contextmanager
def attn_impl(model, impl):
    old = model.config._attn_implementation
    model.set_attn_implementation(impl)
    try:
        yield
    finally:
        model.set_attn_implementation(old)


@contextlib.contextmanager
def cublas_bf16_full_reduction():
    if DEVICE != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = old


# --------------------------------------------------------------------------- hand-written forward

def r(x, on):
    return x.to(BF).float() if on else x


class Manual:
    """Llama/Mistral/Qwen2 forward in f32 arithmetic over bf16-valued weights, rounding at chosen points."""

    def __init__(self, model, inv_freq_f32, attention_scaling):
        c = model.config
        self.nh, self.nkv = c.num_attention_heads, c.num_key_value_heads
        self.hd = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        self.eps = c.rms_norm_eps
        self.inv_freq = inv_freq_f32.float().to(DEVICE)
        self.att_scaling = attention_scaling
        f = lambda t: None if t is None else t.detach().float()
        m = model.model
        self.embed = m.embed_tokens.weight  # bf16, gathered then upcast
        self.final_norm = f(m.norm.weight)
        self.lm_head = f(model.lm_head.weight)
        self.layers = []
        for L in m.layers:
            a, p = L.self_attn, L.mlp
            self.layers.append(dict(
                ln1=f(L.input_layernorm.weight), ln2=f(L.post_attention_layernorm.weight),
                q=f(a.q_proj.weight), k=f(a.k_proj.weight), v=f(a.v_proj.weight), o=f(a.o_proj.weight),
                qb=f(a.q_proj.bias), kb=f(a.k_proj.bias), vb=f(a.v_proj.bias), ob=f(a.o_proj.bias),
                gate=f(p.gate_proj.weight), up=f(p.up_proj.weight), down=f(p.down_proj.weight)))

    def norm(self, x, w, R):
        s = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return r(w * r(x * s, "norm" in R), "norm" in R)

    def proj(self, x, w, b, R):
        y = r(x @ w.T, "proj" in R)
        return y if b is None else r(y + b, "proj" in R)

    @torch.no_grad()
    def __call__(self, ids, R):
        T = len(ids)
        x = self.embed[torch.tensor(ids, device=DEVICE)].float()
        invf = r(self.inv_freq, "invfreq" in R)
        ang = torch.arange(T, device=DEVICE, dtype=torch.float32)[:, None] * invf[None]
        ang = torch.cat([ang, ang], -1)
        cos, sin = r(ang.cos() * self.att_scaling, "rope" in R), r(ang.sin() * self.att_scaling, "rope" in R)
        h2 = self.hd // 2
        mask = torch.full((T, T), float("-inf"), device=DEVICE).triu(1)
        scale = self.hd ** -0.5
        g = self.nh // self.nkv

        def rope(t):  # t [T, heads, hd]
            rot = torch.cat([-t[..., h2:], t[..., :h2]], -1)
            return r(r(t * cos[:, None], "rope" in R) + r(rot * sin[:, None], "rope" in R), "rope" in R)

        for L in self.layers:
            h = self.norm(x, L["ln1"], R)
            q = rope(self.proj(h, L["q"], L["qb"], R).view(T, self.nh, self.hd))
            k = rope(self.proj(h, L["k"], L["kb"], R).view(T, self.nkv, self.hd))
            v = self.proj(h, L["v"], L["vb"], R).view(T, self.nkv, self.hd)
            q, k, v = q.transpose(0, 1), k.repeat_interleave(g, 1).transpose(0, 1), v.repeat_interleave(g, 1).transpose(0, 1)
            if "attn_s" in R:  # eager: bf16 matmul, then bf16 * scaling
                s = r(r(q @ k.transpose(-1, -2), True) * scale, True)
            else:  # Loom / flash: q pre-scaled in f32, f32 dots
                s = (q * scale) @ k.transpose(-1, -2)
            s = s + mask
            p = torch.exp(s - s.amax(-1, keepdim=True))
            l = p.sum(-1, keepdim=True)
            o = (r(p, "attn_p" in R) @ v) / l
            o = r(o, "attn_o" in R).transpose(0, 1).reshape(T, -1)
            x = r(x + self.proj(o, L["o"], L["ob"], R), "resid" in R)
            h = self.norm(x, L["ln2"], R)
            gt, up = self.proj(h, L["gate"], None, R), self.proj(h, L["up"], None, R)
            a = r(r(F.silu(gt), "silu" in R) * up, "silu" in R)
            x = r(x + self.proj(a, L["down"], None, R), "resid" in R)
        h = self.norm(x, self.final_norm, R)
        return r(h @ self.lm_head.T, "logits" in R)


# --------------------------------------------------------------------------------------- sdpa probe

@torch.no_grad()
def sdpa_probe(model, ids):
    """Captures the first sdpa call of the bf16 model and compares the backend's bf16 output with f32
    attention rounded once (Loom) and with P also rounded before P.V (flash style)."""
    captured = {}

    def grab(q, k, v, attn_mask=None, *a, **kw):
        if not captured:
            captured.update(q=q, k=k, v=v, mask=attn_mask, kw=dict(kw), args=a)
        return _sdpa(q, k, v, attn_mask, *a, **kw)
    F.scaled_dot_product_attention = grab
    try:
        model(input_ids=torch.tensor([ids], device=DEVICE))
    finally:
        F.scaled_dot_product_attention = _sdpa
    q, k, v, kw = captured["q"], captured["k"], captured["v"], captured["kw"]
    info = {"q_shape": list(q.shape), "k_shape": list(k.shape), "mask": captured["mask"] is not None,
            "kwargs": {a: (b if isinstance(b, (bool, int, float)) or b is None else str(b)) for a, b in kw.items()}}
    out = _sdpa(q, k, v, captured["mask"], **kw).float()
    # f32 emulations
    T, S = q.shape[2], k.shape[2]
    rep = q.shape[1] // k.shape[1]
    kf, vf = k.float().repeat_interleave(rep, 1), v.float().repeat_interleave(rep, 1)
    scale = kw.get("scale") or q.shape[-1] ** -0.5
    s = (q.float() * scale) @ kf.transpose(-1, -2)
    if kw.get("is_causal"):
        s = s + torch.full((T, S), float("-inf"), device=q.device).triu(1 + S - T)
    elif captured["mask"] is not None:
        m = captured["mask"]
        s = s.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else s + m.float()
    p = torch.exp(s - s.amax(-1, keepdim=True))
    l = p.sum(-1, keepdim=True)
    exact = (p @ vf) / l
    emul = {"f32_round_out (Loom)": r(exact, True), "P_bf16_round_out (flash)": r((r(p, True) @ vf) / l, True),
            "normalized_P_bf16 (eager)": r(r(p / l, True) @ vf, True)}

    def err(x):
        e = (x - exact).abs()
        return {"max": float(f"{e.max().item():.3g}"), "rms": float(f"{e.pow(2).mean().sqrt().item():.3g}")}
    info["err_vs_f32_exact"] = {"sdpa_bf16 default": err(out), **{n: err(t) for n, t in emul.items()}}
    info["default_equals"] = {n: bool(torch.equal(out, t)) for n, t in emul.items()}
    # Which backend the default picks: the one whose output is bitwise equal.
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        names = ["FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"]
        per = {}
        for n in names:
            b = getattr(SDPBackend, n, None)
            if b is None:
                continue
            try:
                with sdpa_kernel([b]):
                    o = _sdpa(q, k, v, captured["mask"], **kw).float()
                per[n] = {"equal_to_default": bool(torch.equal(o, out)), **err(o)}
            except Exception as e:  # backend not available for these inputs
                per[n] = f"unavailable: {type(e).__name__}"
        info["backends"] = per
    except ImportError:
        pass
    return info


# --------------------------------------------------------------------------------------------- models

def fresh_inv_freq(model):
    """inv_freq and attention scaling as computed in f32 at init (what from_pretrained(dtype=...) keeps)."""
    rot = model.model.rotary_emb
    cfg = model.config
    if rot.rope_type == "default":
        invf, att = rot.compute_default_rope_parameters(cfg)
    else:
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
        invf, att = ROPE_INIT_FUNCTIONS[rot.rope_type](cfg)
    return invf.float(), float(att)


def build_8b(vocab):
    torch.manual_seed(0)
    config = llama_8b_shape(vocab)
    with torch.device(DEVICE):
        # As hf_reference.py built it until session 9: .to() casts the inv_freq buffer too.
        m16 = LlamaForCausalLM(config).to(BF).eval()
    with torch.device(DEVICE):
        m32 = LlamaForCausalLM(config).float().eval()  # fresh f32 inv_freq, as from_pretrained(dtype=f32)
    m32.load_state_dict({n: t.float() for n, t in m16.state_dict().items()})
    rng = random.Random(0)
    prompts = [[rng.randrange(config.vocab_size) for _ in range(n)] for n in (7, 33, 100, 128)]
    return m16, m32, [(p, len(p)) for p in prompts]


def fixture_sequences(d: Path):
    for name in ("reference.json", "reference_greedy.json"):
        p = d / name
        if p.exists():
            cases = [c for c in json.loads(p.read_text())["cases"] if c.get("adapter") is None]
            seqs = []
            for c in cases:
                new = c.get("greedy_ids") or c.get("greedy_new_ids") or []
                seqs.append((c["prompt_ids"] + new[:-1], len(c["prompt_ids"])))
            return seqs
    return []


def load_fixture(d: Path):
    """bf16 model, f32 model with the bf16 weights upcast, f32 model with the stored weights (hf_reference.py's)."""
    m16 = AutoModelForCausalLM.from_pretrained(d, dtype=BF).to(DEVICE).eval()
    stored = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).to(DEVICE).eval()
    m32 = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).to(DEVICE).eval()
    m32.load_state_dict({n: t.float() for n, t in m16.state_dict().items()})
    return m16, m32, stored, fixture_sequences(d)


# ---------------------------------------------------------------------------------------------- study

def study(name, m16, m32, cases, full, stored=None):
    log(f"{name}: {len(cases)} sequences, lengths {[len(c[0]) for c in cases]}, attn {m16.config._attn_implementation}")
    res = {"attn_implementation": m16.config._attn_implementation,
           "inv_freq_dtype_bf16_model": str(m16.model.rotary_emb.inv_freq.dtype).replace("torch.", ""),
           "seq_lengths": [len(c[0]) for c in cases], "prompt_lengths": [c[1] for c in cases]}
    ref = hf_logits(m32, cases)
    invf32, att = fresh_inv_freq(m32)
    invf_rounded = m16.model.rotary_emb.inv_freq.dtype == BF
    if invf_rounded:  # the RoPE angle error that the bf16 buffer makes at the last position used
        err = (invf32.to(BF).float() - invf32).abs().to(DEVICE) * (max(len(c[0]) for c in cases) - 1)
        res["bf16_inv_freq_max_angle_error_rad"] = round(err.max().item(), 4)
    rows = {}

    def add(key, logits):
        rows[key] = summarize(logits, ref, cases)
        log(f"  {key:40s} {rows[key]}")
        return logits

    hf16 = add("hf:bf16", hf_logits(m16, cases))
    if stored is not None:
        st = hf_logits(stored, cases)
        res["stored_weights_equal_bf16"] = all(torch.equal(a.float(), b.float()) for a, b in
                                               zip(stored.state_dict().values(), m16.state_dict().values()))
        add("hf:f32 stored weights", st)
        res["hf_reference_floor"] = summarize(hf16, st, cases)
        log(f"  hf_reference_floor (hf bf16 vs f32 of stored weights): {res['hf_reference_floor']}")
    with inv_freq(m16, invf32):
        add("hf:bf16 +inv_freq f32", hf_logits(m16, cases))
        with lm_head_in_f32(m16):
            add("hf:bf16 +inv_freq f32 +logits f32", hf_logits(m16, cases))
            with sdpa_in_f32():
                add("hf:bf16 +inv_freq f32 +logits f32 +attn f32", hf_logits(m16, cases))
    with lm_head_in_f32(m16):
        add("hf:bf16 +logits f32", hf_logits(m16, cases))
    with sdpa_in_f32():
        add("hf:bf16 +attn f32", hf_logits(m16, cases))
    with attn_impl(m16, "eager"):
        add("hf:bf16 eager attention", hf_logits(m16, cases))
    if DEVICE == "cuda":
        with cublas_bf16_full_reduction():
            add("hf:bf16 no cublas bf16 reduced-precision reduction", hf_logits(m16, cases))
    with inv_freq(m32, invf32.to(BF)):
        add("hf:f32 with bf16 inv_freq", hf_logits(m32, cases))

    man = Manual(m16, invf32, att)
    hf_pts = LOOM | {"attn_p", "logits"} | ({"invfreq"} if invf_rounded else set())
    variants = {"man:f32 (no rounding)": set(), "man:loom": set(LOOM), "man:loom +logits": LOOM | {"logits"},
                "man:loom +attn_p": LOOM | {"attn_p"}, "man:loom +logits +attn_p": LOOM | {"attn_p", "logits"},
                "man:hf " + "+".join(sorted(hf_pts - LOOM)): hf_pts}
    if invf_rounded:
        variants["man:loom +invfreq"] = LOOM | {"invfreq"}
    if full:
        for f in ALL_FLAGS:
            variants[f"man:f32 +{f} only"] = {f}
        for f in sorted(hf_pts):
            variants[f"man:hf -{f}"] = hf_pts - {f}
    man_out = {}
    for key, R in variants.items():
        man_out[key] = add(key, [man(ids, R) for ids, _ in cases])
    # Cross checks: emulation against the real thing.
    hf_key = "man:hf " + "+".join(sorted(hf_pts - LOOM))
    res["check_man_f32_vs_hf_f32"] = summarize(man_out["man:f32 (no rounding)"], ref, cases)
    res["check_man_hf_vs_hf_bf16"] = summarize(man_out[hf_key], hf16, cases)
    res["man_loom_vs_hf_bf16"] = summarize(man_out["man:loom"], hf16, cases)
    log(f"  checks: {res['check_man_f32_vs_hf_f32']} {res['check_man_hf_vs_hf_bf16']} loom-vs-hfbf16 {res['man_loom_vs_hf_bf16']}")
    # Scale of things that set how much a rounding moves a logprob.
    last = ref[-1]
    res["ref_logit_std"] = round(last.std().item(), 3)
    res["ref_top1_logprob"] = round(torch.log_softmax(last, -1).max().item(), 3)
    res["delta_vs_hf_f32"] = rows
    res["sdpa_probe"] = sdpa_probe(m16, cases[-1][0])
    log(f"  sdpa probe: {json.dumps(res['sdpa_probe'])}")
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", type=int, default=32000, help="vocabulary of the 8B-shaped model (128256 = real)")
    found = [p / "Fixtures" for p in [Path.cwd(), *Path(__file__).resolve().parents] if (p / "Fixtures" / "models").is_dir()]
    ap.add_argument("--fixtures", default=str(found[0]) if found else "Fixtures",
                    help="Loom's Fixtures folder (default: ./Fixtures, else the one above this script)")
    ap.add_argument("--skip-8b", action="store_true")
    ap.add_argument("--skip-fixtures", action="store_true")
    ap.add_argument("--quick", action="store_true", help="skip the one-flag-at-a-time rows")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_grad_enabled(False)
    summary = {"device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu", "torch": torch.__version__,
               "transformers": __import__("transformers").__version__, "threads": torch.get_num_threads(), "models": {}}
    if DEVICE == "cuda":
        summary["cublas_allow_bf16_reduced_precision_reduction"] = torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction
    if not args.skip_8b:
        m16, m32, cases = build_8b(args.vocab)
        summary["models"][f"llama-8b-shape-2layers-vocab{args.vocab}"] = study("8b", m16, m32, cases, not args.quick)
        del m16, m32
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    fx = Path(args.fixtures)
    if not args.skip_fixtures and not (fx / "models").is_dir():
        log(f"no fixtures at {fx}; skipped")
    elif not args.skip_fixtures:
        dirs = sorted(d for d in (fx / "models").iterdir() if (d / "config.json").exists()) + [fx / "stories260k"]
        for d in dirs:
            if not (d / "config.json").exists():
                continue
            m16, m32, stored, cases = load_fixture(d)
            if cases:
                summary["models"][d.name] = study(d.name, m16, m32, cases, not args.quick, stored)
    summary["seconds"] = round(time.time() - T0, 1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
