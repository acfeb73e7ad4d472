"""Float64 references for the tiny GPT-NeoX, Llama and Qwen2 checkpoints with bfloat16 weights.

The shared fixtures give Hugging Face's outputs for the float32 checkpoints only. This script
re-implements the four models' forward passes from Hugging Face's modeling semantics in float64
PyTorch (no transformers needed), checks itself against `families-golden.json` (the float32
weights: its logits must agree to 1e-9), then computes the logits of the same checkpoints with
every tensor rounded to bfloat16 (round to nearest even, as `save_pretrained` of a bf16 model
stores them) and writes `tests/fixtures/families-bf16-golden.json`.

    /usr/bin/python3 tests/reference/families_reference.py
"""
import json
import math
import os
import struct

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures")
MODELS = ["tiny-neox", "tiny-neox-sequential", "tiny-llama", "tiny-qwen2"]


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        begin, end = info["data_offsets"]
        arr = np.frombuffer(data[8 + n + begin : 8 + n + end], dtype="<f4").reshape(info["shape"])
        out[name] = arr.copy()
    return out


def to_bf16(a):
    """Rounds float32 values to bfloat16 (nearest, ties to even), returned as float32."""
    bits = a.astype("<f4").view("<u4").astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return rounded.astype("<u4").view("<f4")


def rotate(x, rot, base, pos):
    """HF's apply_rotary_pos_emb (rotate_half) on the first `rot` dims of [b, h, t, d]."""
    inv = 1.0 / base ** (torch.arange(0, rot, 2, dtype=torch.float64) / rot)
    ang = pos[:, None] * inv[None, :]
    emb = torch.cat([ang, ang], dim=-1)
    cos, sin = emb.cos(), emb.sin()
    xr, xp = x[..., :rot], x[..., rot:]
    half = rot // 2
    rotated = torch.cat([-xr[..., half:], xr[..., :half]], dim=-1)
    return torch.cat([xr * cos + rotated * sin, xp], dim=-1)


def attention(q, k, v, d_head):
    """Causal softmax attention on [b, h, t, d] (k and v already repeated per query head)."""
    t = q.shape[2]
    scores = q @ k.transpose(-1, -2) / math.sqrt(d_head)
    mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
    scores = scores.masked_fill(mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def layer_norm(x, w, b, eps):
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, eps)


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def neox(cfg, p, tokens):
    d, n_h = cfg["hidden_size"], cfg["num_attention_heads"]
    dh = d // n_h
    rot = int(dh * cfg["rotary_pct"])
    eps = cfg["layer_norm_eps"]
    b, t = tokens.shape
    pos = torch.arange(t, dtype=torch.float64)
    x = p["gpt_neox.embed_in.weight"][tokens]
    for l in range(cfg["num_hidden_layers"]):
        g = lambda k: p[f"gpt_neox.layers.{l}.{k}"]
        h = layer_norm(x, g("input_layernorm.weight"), g("input_layernorm.bias"), eps)
        qkv = h @ g("attention.query_key_value.weight").T + g("attention.query_key_value.bias")
        qkv = qkv.view(b, t, n_h, 3 * dh).transpose(1, 2)
        q, k, v = qkv[..., :dh], qkv[..., dh : 2 * dh], qkv[..., 2 * dh :]
        base = cfg["rotary_emb_base"]
        z = attention(rotate(q, rot, base, pos), rotate(k, rot, base, pos), v, dh)
        attn = z.transpose(1, 2).reshape(b, t, d) @ g("attention.dense.weight").T + g(
            "attention.dense.bias"
        )

        def mlp(y):
            y = y @ g("mlp.dense_h_to_4h.weight").T + g("mlp.dense_h_to_4h.bias")
            y = torch.nn.functional.gelu(y)
            return y @ g("mlp.dense_4h_to_h.weight").T + g("mlp.dense_4h_to_h.bias")

        ln2 = lambda y: layer_norm(
            y, g("post_attention_layernorm.weight"), g("post_attention_layernorm.bias"), eps
        )
        if cfg["use_parallel_residual"]:
            x = mlp(ln2(x)) + attn + x
        else:
            x = x + attn
            x = mlp(ln2(x)) + x
    x = layer_norm(
        x, p["gpt_neox.final_layer_norm.weight"], p["gpt_neox.final_layer_norm.bias"], eps
    )
    return x @ p["embed_out.weight"].T


def llama(cfg, p, tokens):
    d, n_h = cfg["hidden_size"], cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_h)
    dh = cfg.get("head_dim") or d // n_h
    eps = cfg["rms_norm_eps"]
    b, t = tokens.shape
    pos = torch.arange(t, dtype=torch.float64)
    x = p["model.embed_tokens.weight"][tokens]
    for l in range(cfg["num_hidden_layers"]):
        g = lambda k: p[f"model.layers.{l}.{k}"]
        opt = lambda k: p.get(f"model.layers.{l}.{k}", 0.0)
        h = rms_norm(x, g("input_layernorm.weight"), eps)
        proj = lambda name, heads: (
            (h @ g(f"self_attn.{name}_proj.weight").T + opt(f"self_attn.{name}_proj.bias"))
            .view(b, t, heads, dh)
            .transpose(1, 2)
        )
        q, k, v = proj("q", n_h), proj("k", n_kv), proj("v", n_kv)
        base = cfg["rope_theta"]
        q, k = rotate(q, dh, base, pos), rotate(k, dh, base, pos)
        rep = n_h // n_kv
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        z = attention(q, k, v, dh).transpose(1, 2).reshape(b, t, n_h * dh)
        x = x + z @ g("self_attn.o_proj.weight").T + opt("self_attn.o_proj.bias")
        h = rms_norm(x, g("post_attention_layernorm.weight"), eps)
        gate = torch.nn.functional.silu(h @ g("mlp.gate_proj.weight").T)
        x = x + (gate * (h @ g("mlp.up_proj.weight").T)) @ g("mlp.down_proj.weight").T
    x = rms_norm(x, p["model.norm.weight"], eps)
    return x @ p.get("lm_head.weight", p["model.embed_tokens.weight"]).T


def logits_of(name, cfg, arrays, tokens):
    p = {k: torch.from_numpy(v.astype(np.float64)) for k, v in arrays.items()}
    run = neox if cfg["model_type"] == "gpt_neox" else llama
    with torch.no_grad():
        return run(cfg, p, tokens)


def main():
    golden = json.load(open(os.path.join(FIXTURES, "families-golden.json")))
    tokens = torch.tensor(golden["tokens"])
    out = {
        "tokens": golden["tokens"],
        "semantics": "Hugging Face modeling code re-implemented in float64 PyTorch "
        "(tests/reference/families_reference.py), weights rounded to bfloat16",
    }
    for name in MODELS:
        cfg = json.load(open(os.path.join(FIXTURES, name, "config.json")))
        arrays = read_safetensors(os.path.join(FIXTURES, name, "model.safetensors"))
        f32 = logits_of(name, cfg, arrays, tokens)
        err = (f32 - torch.tensor(golden[name]["logits"], dtype=torch.float64)).abs().max().item()
        print(f"{name}: float32 weights vs families-golden.json: {err:.2e}")
        assert err < 1e-9, f"{name}: the reference does not reproduce the golden logits"
        bf16 = logits_of(name, cfg, {k: to_bf16(v) for k, v in arrays.items()}, tokens)
        moved = (bf16 - f32).abs().max().item()
        print(f"{name}: bfloat16 weights move the logits by {moved:.2e}")
        out[name] = {"logits": bf16.tolist()}
    path = os.path.join(FIXTURES, "families-bf16-golden.json")
    with open(path, "w") as f:
        json.dump(out, f)
    print("wrote", path)


if __name__ == "__main__":
    main()
