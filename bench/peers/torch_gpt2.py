#!/usr/bin/env python3
"""PyTorch peer for `deno task bench`: GPT-2 the way TransformerLens runs it, in plain PyTorch.

TransformerLens itself cannot be installed here (PyPI is unreachable), so this file mirrors the
structure of TransformerLens 2.x's HookedTransformer forward: separate Q/K/V projections through
`F.linear` on weights kept as [head, d_model, d_head], full [batch, head, query, key] attention
scores masked with -inf, softmax, TransformerLens's LayerNorm / LayerNormPre, `gelu_new`, addmm
MLPs, a full unembed, and a hook point (with an optional cache) at every TransformerLens hook name.
Weights are processed as `HookedTransformer.from_pretrained` does by default (fold_ln,
center_writing_weights, center_unembed, fold_value_biases) unless --raw is given.

Run with Debian's interpreter, which is where `python3-torch` lives:

    /usr/bin/python3 bench/peers/torch_gpt2.py forward --model DIR --tokens FILE
    /usr/bin/python3 bench/peers/torch_gpt2.py sgemm
    /usr/bin/python3 bench/peers/torch_gpt2.py study --model DIR --tokens FILE
    /usr/bin/python3 bench/peers/torch_gpt2.py export-onnx --model DIR --tokens FILE --out F.onnx
    /usr/bin/python3 bench/peers/torch_gpt2.py backward --model DIR --tokens FILE
    python3 bench/peers/torch_gpt2.py forward --device cuda --model DIR --tokens FILE

`--device cuda` (forward and backward) runs on an NVIDIA GPU in fp32 eager mode with TF32 off
(`torch.backends.cuda.matmul.allow_tf32 = False`), synchronising before each time is read; the
forward then also reports `hostSeconds`, the same forward with the logits copied to host memory
(what our WebGPU forward returns). `bench/gpu_vs_torch.sh` runs it beside ours on WebGPU.

Prints one JSON object on stdout; progress goes to stderr. Times are seconds.
"""

import argparse
import ctypes
import json
import math
import os
import statistics
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

# A float32 tensor, as TransformerLens's IGNORE buffer (a Python float would export to ONNX as a
# double constant, which ONNX's Where rejects beside float scores).
IGNORE = torch.tensor(float("-inf"))

# --------------------------------------------------------------------------------------------
# Threads: torch's intra-op pool (OpenMP) and OpenBLAS's own pthread pool, which Debian's torch
# (BLAS_INFO=generic) does not tell about set_num_threads.


def _openblas():
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            for line in maps:
                path = line.split()[-1]
                if "openblas" in os.path.basename(path) and path.startswith("/"):
                    lib = ctypes.CDLL(path)
                    lib.openblas_get_config.restype = ctypes.c_char_p
                    lib.openblas_get_corename.restype = ctypes.c_char_p
                    return lib
    except OSError:
        pass
    return None


def set_threads(n):
    torch.set_num_threads(n)
    lib = _openblas()
    if lib is not None:
        lib.openblas_set_num_threads(n)


def blas_info():
    lib = _openblas()
    if lib is None:
        return {"library": "not OpenBLAS (reference BLAS is slow: apt-get install libopenblas0-pthread)"}
    path = getattr(lib, "_name", "")
    threading = "openmp" if "openmp" in path else "pthread" if "pthread" in path else "unknown"
    return {
        "library": lib.openblas_get_config().decode(),
        "core": lib.openblas_get_corename().decode(),
        "threading": threading,
        "path": path,
    }


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# safetensors, read with numpy (Debian has no python3-safetensors)

_DTYPES = {"F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (np.uint16, 2)}


def read_safetensors(path):
    """Returns {name: float32 numpy array}, validating the header like the reference parser."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > size - 8:
            raise ValueError(f"{path}: header length {n} exceeds file size")
        header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    header.pop("__metadata__", None)
    out = {}
    spans = []
    for name, info in header.items():
        dtype, width = _DTYPES[info["dtype"]]
        start, end = info["data_offsets"]
        count = math.prod(info["shape"])
        if end - start != count * width or end > data.shape[0]:
            raise ValueError(f"{path}: bad data_offsets for {name}")
        spans.append((start, end))
        raw = np.frombuffer(data, dtype=dtype, count=count, offset=start)
        if info["dtype"] == "BF16":
            arr = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            arr = raw.astype(np.float32)
        out[name] = arr.reshape(info["shape"])
    spans.sort()
    pos = 0
    for start, end in spans:
        if start != pos:
            raise ValueError(f"{path}: tensors do not tile the data section")
        pos = end
    if pos != data.shape[0]:
        raise ValueError(f"{path}: data section has trailing bytes")
    return out


# --------------------------------------------------------------------------------------------
# HF GPT-2 checkpoint -> TransformerLens parameter names and shapes (docs/semantics.md section 2)


def load_gpt2(model_dir):
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        hf = json.load(f)
    cfg = {
        "n_layers": hf["n_layer"],
        "n_heads": hf["n_head"],
        "d_model": hf["n_embd"],
        "d_mlp": hf.get("n_inner") or 4 * hf["n_embd"],
        "d_vocab": hf["vocab_size"],
        "n_ctx": hf["n_positions"],
        "eps": hf.get("layer_norm_epsilon", 1e-5),
    }
    cfg["d_head"] = cfg["d_model"] // cfg["n_heads"]
    raw = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    sd = {}
    for k, v in raw.items():
        if k.startswith("transformer."):
            k = k[len("transformer."):]
        if k.endswith(".attn.bias") or k.endswith(".attn.masked_bias"):
            continue  # causal-mask buffers in the official file
        sd[k] = v
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    H, D, dh = cfg["n_heads"], cfg["d_model"], cfg["d_head"]
    p = {"W_E": t(sd["wte.weight"]), "W_pos": t(sd["wpe.weight"])}
    for l in range(cfg["n_layers"]):
        h = f"h.{l}."
        w = t(sd[h + "attn.c_attn.weight"])  # [D, 3D], input-major
        b = t(sd[h + "attn.c_attn.bias"])
        for i, name in enumerate("QKV"):
            p[f"{l}.W_{name}"] = w[:, i * D:(i + 1) * D].reshape(D, H, dh).permute(1, 0, 2).contiguous()
            p[f"{l}.b_{name}"] = b[i * D:(i + 1) * D].reshape(H, dh).contiguous()
        p[f"{l}.W_O"] = t(sd[h + "attn.c_proj.weight"]).reshape(H, dh, D).contiguous()
        p[f"{l}.b_O"] = t(sd[h + "attn.c_proj.bias"])
        p[f"{l}.ln1.w"] = t(sd[h + "ln_1.weight"])
        p[f"{l}.ln1.b"] = t(sd[h + "ln_1.bias"])
        p[f"{l}.ln2.w"] = t(sd[h + "ln_2.weight"])
        p[f"{l}.ln2.b"] = t(sd[h + "ln_2.bias"])
        p[f"{l}.W_in"] = t(sd[h + "mlp.c_fc.weight"])
        p[f"{l}.b_in"] = t(sd[h + "mlp.c_fc.bias"])
        p[f"{l}.W_out"] = t(sd[h + "mlp.c_proj.weight"])
        p[f"{l}.b_out"] = t(sd[h + "mlp.c_proj.bias"])
    p["ln_final.w"] = t(sd["ln_f.weight"])
    p["ln_final.b"] = t(sd["ln_f.bias"])
    W_U = sd.get("lm_head.weight", sd["wte.weight"])
    p["W_U"] = t(W_U).T.contiguous()  # [D, V]
    p["b_U"] = torch.zeros(cfg["d_vocab"])
    return cfg, p


def process_weights(cfg, p):
    """fold_ln, center_writing_weights, center_unembed, fold_value_biases, as TransformerLens."""
    for l in range(cfg["n_layers"]):
        w, b = p.pop(f"{l}.ln1.w"), p.pop(f"{l}.ln1.b")
        for name in "QKV":
            W = p[f"{l}.W_{name}"]
            p[f"{l}.b_{name}"] = p[f"{l}.b_{name}"] + (W * b[None, :, None]).sum(-2)
            W = W * w[None, :, None]
            p[f"{l}.W_{name}"] = W - W.mean(-2, keepdim=True)
        w, b = p.pop(f"{l}.ln2.w"), p.pop(f"{l}.ln2.b")
        W = p[f"{l}.W_in"]
        p[f"{l}.b_in"] = p[f"{l}.b_in"] + (W * b[:, None]).sum(-2)
        W = W * w[:, None]
        p[f"{l}.W_in"] = W - W.mean(-2, keepdim=True)
    w, b = p.pop("ln_final.w"), p.pop("ln_final.b")
    p["b_U"] = p["b_U"] + (p["W_U"] * b[:, None]).sum(-2)
    W = p["W_U"] * w[:, None]
    p["W_U"] = W - W.mean(-2, keepdim=True)
    # center_writing_weights
    p["W_E"] = p["W_E"] - p["W_E"].mean(-1, keepdim=True)
    p["W_pos"] = p["W_pos"] - p["W_pos"].mean(-1, keepdim=True)
    for l in range(cfg["n_layers"]):
        for name in ("W_O", "b_O", "W_out", "b_out"):
            x = p[f"{l}.{name}"]
            p[f"{l}.{name}"] = x - x.mean(-1, keepdim=True)
    # center_unembed
    p["W_U"] = p["W_U"] - p["W_U"].mean(-1, keepdim=True)
    p["b_U"] = p["b_U"] - p["b_U"].mean()
    # fold_value_biases
    for l in range(cfg["n_layers"]):
        b_V = p[f"{l}.b_V"]
        p[f"{l}.b_O"] = p[f"{l}.b_O"] + torch.einsum("hd,hdm->m", b_V, p[f"{l}.W_O"])
        p[f"{l}.b_V"] = torch.zeros_like(b_V)
    for k in p:
        p[k] = p[k].contiguous()
    return p


# --------------------------------------------------------------------------------------------
# The forward pass, TransformerLens-style, with hook points


class HookedGPT2:
    def __init__(self, cfg, params, processed):
        self.cfg = cfg
        self.p = params
        self.processed = processed
        self.hooks = {}
        self.cache = None

    def hook(self, name, x):
        fn = self.hooks.get(name)
        if fn is not None:
            out = fn(x, name)
            if out is not None:
                x = out
        if self.cache is not None:
            self.cache[name] = x.detach()
        return x

    def ln(self, x, prefix):
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook(f"{prefix}.hook_scale", (x.pow(2).mean(-1, keepdim=True) + self.cfg["eps"]).sqrt())
        x = x / scale
        if not self.processed:
            x = x * self.p[f"{prefix}.w"] + self.p[f"{prefix}.b"]
        return self.hook(f"{prefix}.hook_normalized", x)

    @staticmethod
    def attn_linear(x, W, b):
        # TransformerLens's simple_attn_linear: "head d_model d_head -> (head d_head) d_model"
        H, D, dh = W.shape
        w = W.permute(0, 2, 1).reshape(H * dh, D)
        return F.linear(x, w, b.reshape(-1)).reshape(x.shape[0], x.shape[1], H, dh)

    def attention(self, x, l, name):
        p = self.p
        q = self.hook(f"{name}.hook_q", self.attn_linear(x, p[f"{l}.W_Q"], p[f"{l}.b_Q"]))
        k = self.hook(f"{name}.hook_k", self.attn_linear(x, p[f"{l}.W_K"], p[f"{l}.b_K"]))
        v = self.hook(f"{name}.hook_v", self.attn_linear(x, p[f"{l}.W_V"], p[f"{l}.b_V"]))
        T = x.shape[1]
        scores = (q.permute(0, 2, 1, 3) @ k.permute(0, 2, 3, 1)) / math.sqrt(self.cfg["d_head"])
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool, device=scores.device))
        ignore = IGNORE if scores.device == IGNORE.device else IGNORE.to(scores.device)
        scores = self.hook(f"{name}.hook_attn_scores", torch.where(mask, scores, ignore))
        pattern = F.softmax(scores, dim=-1)
        pattern = torch.where(torch.isnan(pattern), torch.zeros_like(pattern), pattern)
        pattern = self.hook(f"{name}.hook_pattern", pattern)
        z = (pattern @ v.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
        z = self.hook(f"{name}.hook_z", z)
        W_O = p[f"{l}.W_O"]
        H, dh, D = W_O.shape
        w = W_O.permute(2, 0, 1).reshape(D, H * dh)
        return F.linear(z.reshape(z.shape[0], z.shape[1], H * dh), w, p[f"{l}.b_O"])

    @staticmethod
    def gelu_new(x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))

    def mlp(self, x, l):
        p = self.p
        B, T, D = x.shape
        pre = torch.addmm(p[f"{l}.b_in"], x.reshape(B * T, D), p[f"{l}.W_in"]).reshape(B, T, -1)
        pre = self.hook(f"blocks.{l}.mlp.hook_pre", pre)
        post = self.hook(f"blocks.{l}.mlp.hook_post", self.gelu_new(pre))
        return torch.addmm(p[f"{l}.b_out"], post.reshape(B * T, -1), p[f"{l}.W_out"]).reshape(B, T, D)

    def forward(self, tokens):
        p = self.p
        B, T = tokens.shape
        embed = self.hook("hook_embed", p["W_E"][tokens])
        pos = self.hook("hook_pos_embed", p["W_pos"][:T].unsqueeze(0).expand(B, T, -1))
        resid = embed + pos
        for l in range(self.cfg["n_layers"]):
            resid = self.hook(f"blocks.{l}.hook_resid_pre", resid)
            attn_out = self.hook(
                f"blocks.{l}.hook_attn_out",
                self.attention(self.ln(resid, f"blocks.{l}.ln1"), l, f"blocks.{l}.attn"),
            )
            resid = self.hook(f"blocks.{l}.hook_resid_mid", resid + attn_out)
            mlp_out = self.hook(f"blocks.{l}.hook_mlp_out", self.mlp(self.ln(resid, f"blocks.{l}.ln2"), l))
            resid = self.hook(f"blocks.{l}.hook_resid_post", resid + mlp_out)
        x = self.ln(resid, "ln_final")
        D = x.shape[-1]
        return torch.addmm(p["b_U"], x.reshape(B * T, D), p["W_U"]).reshape(B, T, -1)

    def run_with_cache(self, tokens):
        self.cache = {}
        try:
            logits = self.forward(tokens)
            return logits, self.cache
        finally:
            self.cache = None

    def run_with_hooks(self, tokens, fwd_hooks):
        self.hooks = dict(fwd_hooks)
        try:
            return self.forward(tokens)
        finally:
            self.hooks = {}


# Renames ln1/ln2 parameter keys so HookedGPT2.ln finds them under the hook prefix.
def _ln_keys(cfg, p):
    for l in range(cfg["n_layers"]):
        for i in (1, 2):
            for s in ("w", "b"):
                k = f"{l}.ln{i}.{s}"
                if k in p:
                    p[f"blocks.{l}.ln{i}.{s}"] = p.pop(k)
    return p


def build_model(model_dir, raw=False, device="cpu"):
    t0 = time.perf_counter()
    cfg, p = load_gpt2(model_dir)
    t1 = time.perf_counter()
    if not raw:
        p = process_weights(cfg, p)
    if device != "cpu":
        p = {k: v.to(device) for k, v in p.items()}
    t2 = time.perf_counter()
    return HookedGPT2(cfg, _ln_keys(cfg, p), processed=not raw), t1 - t0, t2 - t1


def setup_device(device):
    """`cuda`: fp32 eager with TF32 off (full fp32 products, as ours computes). Returns a function
    that waits for the device, called before every time is read."""
    if device == "cpu":
        return lambda: None
    if not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: torch.cuda.is_available() is False")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch.cuda.synchronize


def device_info(device):
    if device == "cpu":
        return {"device": "cpu"}
    return {
        "device": device,
        "gpu": torch.cuda.get_device_name(),
        "cuda": torch.version.cuda,
        "allowTf32": torch.backends.cuda.matmul.allow_tf32,
    }


# --------------------------------------------------------------------------------------------
# Checksums, FLOPs, timing helpers


def checksum(logits):
    """Invariant to weight processing: logits minus their mean over the vocabulary."""
    centered = logits - logits.mean(-1, keepdim=True)
    return {
        "last5": [round(float(v), 5) for v in centered[0, -1, :5]],
        "lastRow5": [round(float(v), 5) for v in centered[-1, -1, :5]],
        "argmaxLast": int(logits[0, -1].argmax()),
        "meanAbs": round(float(centered.abs().double().mean()), 6),
        "meanRaw": round(float(logits.double().mean()), 6),
    }


def forward_flops(cfg, batch, seq):
    D, F_, V, H, dh = cfg["d_model"], cfg["d_mlp"], cfg["d_vocab"], cfg["n_heads"], cfg["d_head"]
    rows = batch * seq
    per_layer = 2 * rows * D * (4 * D + 2 * F_) + 2 * 2 * batch * H * seq * seq * dh
    return cfg["n_layers"] * per_layer + 2 * rows * D * V


def timed(fn, runs, warmup=1, sync=lambda: None):
    for _ in range(warmup):
        fn()
    sync()
    times = []
    out = None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t)
    return out, times


def read_tokens(path):
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    return spec, torch.tensor(spec["tokens"], dtype=torch.long)


# --------------------------------------------------------------------------------------------
# Modes


def mode_forward(args):
    set_threads(args.threads)
    sync = setup_device(args.device)
    model, load_s, process_s = build_model(args.model, raw=args.raw, device=args.device)
    spec, tokens = read_tokens(args.tokens)
    tokens = tokens.to(args.device)
    result = {
        **device_info(args.device),
        "peer": "pytorch",
        "mode": "forward",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "blas": blas_info(),
        "processed": not args.raw,
        "loadSeconds": round(load_s, 3),
        "processSeconds": round(process_s, 3),
        "runs": {},
    }
    with torch.inference_mode():
        for batch, runs in ((1, args.runs_small), (tokens.shape[0], args.runs_large)):
            x = tokens[:batch]
            log(f"pytorch forward {batch}x{x.shape[1]}: {runs} runs")
            logits, times = timed(lambda: model.forward(x), runs, warmup=2 if batch == 1 else 1, sync=sync)
            med = statistics.median(times)
            extra = {}
            if args.device != "cpu":
                _, host = timed(lambda: model.forward(x).cpu(), runs, warmup=1, sync=sync)
                extra["hostSeconds"] = round(statistics.median(host), 4)
            result["runs"][f"{batch}x{x.shape[1]}"] = {
                **extra,
                "batch": batch,
                "seq": int(x.shape[1]),
                "seconds": round(med, 4),
                "allSeconds": [round(t, 4) for t in times],
                "flops": forward_flops(model.cfg, batch, x.shape[1]),
                "gflops": round(forward_flops(model.cfg, batch, x.shape[1]) / med / 1e9, 2),
                "checksum": checksum(logits),
            }
    return result


ONNX_OPSET = 17


class OnnxGraph(torch.nn.Module):
    """The harness's forward as an nn.Module for torch.onnx.export. The weights are registered as
    buffers (the same tensor objects the forward reads), so the trace stores them as initializers."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        for name, tensor in model.p.items():
            self.register_buffer(name.replace(".", "_"), tensor)

    def forward(self, tokens):
        return self.model.forward(tokens)


def _write_atomically(path, write):
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def mode_export_onnx(args):
    """Exports the forward (tokens -> full logits) to ONNX, opset 17, batch and sequence dynamic,
    and writes the harness's own logits of the first and last token rows (each run alone) beside
    it, so an ONNX runtime's output can be checked against PyTorch's."""
    set_threads(args.threads)
    model, load_s, process_s = build_model(args.model, raw=args.raw)
    spec, tokens = read_tokens(args.tokens)
    out = args.out
    # Traced on a [2, 7] input, so a batch or sequence length wrongly baked into the graph fails
    # (or shows in the logits check) at the benchmark's 1 x 101 and 30 x 101.
    example = tokens[:2, :7]
    log(f"export-onnx: tracing, opset {ONNX_OPSET}, to {out}")
    t = time.perf_counter()
    with torch.no_grad():
        _write_atomically(out, lambda tmp: torch.onnx.export(
            OnnxGraph(model),
            (example,),
            tmp,
            opset_version=ONNX_OPSET,
            input_names=["input_ids"],
            output_names=["logits"],
            dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}},
            do_constant_folding=True,
        ))
    export_s = time.perf_counter() - t
    rows = [0, tokens.shape[0] - 1]
    with torch.inference_mode():
        reference = torch.cat([model.forward(tokens[r:r + 1]) for r in rows]).contiguous()
    ref_path = out + ".reference.f32"
    _write_atomically(ref_path, lambda tmp: reference.numpy().astype("<f4").tofile(tmp))
    return {
        "peer": "pytorch",
        "mode": "export-onnx",
        "torch": torch.__version__,
        "opset": ONNX_OPSET,
        "processed": not args.raw,
        "onnx": out,
        "bytes": os.path.getsize(out),
        "loadSeconds": round(load_s, 3),
        "processSeconds": round(process_s, 3),
        "exportSeconds": round(export_s, 3),
        "reference": {"path": ref_path, "rows": rows, "shape": list(reference.shape), "dtype": "float32"},
    }

SGEMM_SHAPES = [(101, 768, 2304), (101, 768, 3072), (101, 768, 50257), (3030, 768, 2304)]


def mode_sgemm(args):
    torch.manual_seed(0)
    result = {"peer": "pytorch", "mode": "sgemm", "torch": torch.__version__, "blas": blas_info(), "shapes": []}
    for m, k, n in SGEMM_SHAPES:
        a = torch.randn(m, k)
        b = torch.randn(k, n)
        an, bn = a.numpy(), b.numpy()
        flops = 2 * m * k * n
        entry = {"m": m, "k": k, "n": n, "flops": flops}
        for threads in (1, 2):
            set_threads(threads)
            for lib, fn in (("torch", lambda: torch.matmul(a, b)), ("numpy", lambda: an @ bn)):
                fn()
                fn()
                # as many repetitions as fit in ~args.seconds, at least 5
                t = time.perf_counter()
                fn()
                one = max(time.perf_counter() - t, 1e-6)
                reps = max(5, min(200, int(args.seconds / one)))
                _, times = timed(fn, reps, warmup=0)
                med = statistics.median(times)
                entry[f"{lib}{threads}"] = {
                    "seconds": med,
                    "gflops": round(flops / med / 1e9, 2),
                    "bestGflops": round(flops / min(times) / 1e9, 2),
                }
                log(f"sgemm {lib} {m}x{k}@{k}x{n} threads={threads}: {flops / med / 1e9:.1f} GFLOP/s")
        result["shapes"].append(entry)
    return result


def log_probs(logits, tokens):
    lp = F.log_softmax(logits, dim=-1)[:, :-1]
    return lp.gather(-1, tokens[:, 1:, None])[..., 0]


def mode_study(args):
    set_threads(args.threads)
    steps = {}
    t = time.perf_counter()
    model, load_s, process_s = build_model(args.model, raw=False)
    steps["load"] = load_s
    steps["processWeights"] = process_s
    spec, tokens = read_tokens(args.tokens)
    seq_len = spec["seqLen"]
    cfg = model.cfg
    L, H = cfg["n_layers"], cfg["n_heads"]
    out = {"peer": "pytorch", "mode": "study", "torch": torch.__version__, "threads": args.threads, "blas": blas_info()}

    with torch.inference_mode():
        # 1. 30 x 101: log-prob summary and head scores from the cached patterns
        log(f"study: scoring {tokens.shape[0]}x{tokens.shape[1]}")
        t = time.perf_counter()
        logits, cache = model.run_with_cache(tokens)
        lp = log_probs(logits, tokens)
        correct = (logits[:, :-1].argmax(-1) == tokens[:, 1:]).float()
        scores = {"induction": [], "previousToken": [], "duplicateToken": []}
        for l in range(L):
            pattern = cache[f"blocks.{l}.attn.hook_pattern"]
            for key, offset in (("induction", 1 - seq_len), ("previousToken", -1), ("duplicateToken", -seq_len)):
                scores[key].append(torch.diagonal(pattern, offset, -2, -1).mean((0, 2)).tolist())
        summary = {
            "logProbFirstHalf": float(lp[:, :seq_len].mean()),
            "logProbSecondHalf": float(lp[:, seq_len:].mean()),
            "accuracyFirstHalf": float(correct[:, :seq_len].mean()),
            "accuracySecondHalf": float(correct[:, seq_len:].mean()),
        }
        del cache, logits
        steps["score30x101"] = time.perf_counter() - t

        def top(mat, n=3):
            flat = sorted(((v, l, h) for l, row in enumerate(mat) for h, v in enumerate(row)), reverse=True)
            return [{"layer": l, "head": h, "score": round(v, 5)} for v, l, h in flat[:n]]

        out["scores"] = summary
        out["headScores"] = {k: [[round(v, 5) for v in row] for row in m] for k, m in scores.items()}
        out["topHeads"] = {k: top(m) for k, m in scores.items()}

        # 2. MLP patching: every patched run a full 1 x 101 forward
        x = tokens[:1]
        layers = list(range(min(args.patch_layers, L)))
        first = seq_len + 1 if args.aligned else seq_len
        positions = list(range(first, first + min(args.patch_positions, seq_len)))
        log(f"study: MLP patching {len(layers)} layers x {len(positions)} positions (full forwards)")
        t = time.perf_counter()
        clean_logits, clean_cache = model.run_with_cache(x)
        clean_loss = float(-log_probs(clean_logits, x)[:, seq_len:].mean())
        clean_mlp = [clean_cache[f"blocks.{l}.hook_mlp_out"] for l in range(L)]
        del clean_cache
        clean_s = time.perf_counter() - t
        t = time.perf_counter()
        patch = []
        for l in layers:
            row = []
            for p in positions:
                def hook(act, _name, l=l, p=p):
                    act[0, p] = clean_mlp[l][0, p - seq_len]
                    return act

                logits = model.run_with_hooks(x, [(f"blocks.{l}.hook_mlp_out", hook)])
                row.append(float(-log_probs(logits, x)[:, seq_len:].mean()) - clean_loss)
            patch.append(row)
            log(f"  layer {l} done ({time.perf_counter() - t:.1f} s)")
        elapsed = time.perf_counter() - t
        n_runs = len(layers) * len(positions)
        full_runs = L * seq_len
        steps["mlpPatching"] = clean_s + elapsed * max(1.0, full_runs / n_runs)
        out["patching"] = {
            "variant": "aligned" if args.aligned else "study",
            "cleanLoss": clean_loss,
            "layers": len(layers),
            "positions": len(positions),
            "cleanRunSeconds": round(clean_s, 4),
            "measuredSeconds": round(clean_s + elapsed, 3),
            "secondsPerPatchedRun": round(elapsed / n_runs, 4),
            "extrapolated": n_runs < full_runs,
            "firstColumn": [round(r[0], 6) for r in patch],
            "maxAbs": max(abs(v) for r in patch for v in r),
            "scores": [[round(v, 6) for v in r] for r in patch],
        }

        # 3. K-composition full circuit 4.11 -> 5.5 top-1, streamed in row blocks of 1000
        l1, h1, l2, h2 = args.kcomp
        log(f"study: K-composition {l1}.{h1} -> {l2}.{h2}, {cfg['d_vocab']}x{cfg['d_vocab']} in blocks")
        t = time.perf_counter()
        p = model.p
        W_E = p["W_E"]
        Q = W_E @ p[f"{l2}.W_Q"][h2]
        K = W_E @ (p[f"{l1}.W_V"][h1] @ p[f"{l1}.W_O"][h1] @ p[f"{l2}.W_K"][h2])
        Kt = K.T.contiguous()
        hits = 0
        V = W_E.shape[0]
        for i in range(0, V, 1000):
            block = Q[i:i + 1000] @ Kt
            hits += int((block.argmax(1) == torch.arange(i, i + block.shape[0])).sum())
        steps["kComposition"] = time.perf_counter() - t
        out["kComposition"] = {"from": f"{l1}.{h1}", "to": f"{l2}.{h2}", "top1": hits / V}

    out["steps"] = {k: round(v, 3) for k, v in steps.items()}
    out["studySeconds"] = round(steps["score30x101"] + steps["mlpPatching"] + steps["kComposition"], 3)
    out["totalSeconds"] = round(sum(steps.values()), 3)
    return out


def mode_backward(args):
    """Forward + backward of the loss, as TransformerLens users take gradients: autograd through
    every activation back to the embeddings (the weights frozen, so no weight gradients), on the
    same shapes as `forward`."""
    set_threads(args.threads)
    sync = setup_device(args.device)
    model, load_s, process_s = build_model(args.model, raw=args.raw, device=args.device)
    spec, tokens = read_tokens(args.tokens)
    tokens = tokens.to(args.device)
    result = {
        **device_info(args.device),
        "peer": "pytorch",
        "mode": "backward",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "blas": blas_info(),
        "processed": not args.raw,
        "runs": {},
    }
    # The embeddings are the leaf that requires a gradient, so every activation after them does.
    model.hooks = {"hook_embed": lambda x, _name: x.detach().requires_grad_(True)}

    def step(x):
        loss = -log_probs(model.forward(x), x).mean()
        loss.backward()
        return float(loss)

    for batch, runs in ((1, args.runs_small), (tokens.shape[0], args.runs_large)):
        x = tokens[:batch]
        log(f"pytorch forward + backward {batch}x{x.shape[1]}: {runs} runs")
        loss, times = timed(lambda: step(x), runs, warmup=2 if batch == 1 else 1, sync=sync)
        med = statistics.median(times)
        result["runs"][f"{batch}x{x.shape[1]}"] = {
            "batch": batch,
            "seq": int(x.shape[1]),
            "seconds": round(med, 4),
            "allSeconds": [round(t, 4) for t in times],
            "loss": round(loss, 6),
        }
    model.hooks = {}
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["forward", "sgemm", "study", "export-onnx", "backward", "check"])
    ap.add_argument("--model", help="directory with config.json and model.safetensors")
    ap.add_argument("--tokens", help="JSON file {seqLen, bos, tokens: [[...], ...]}")
    ap.add_argument("--out", help="export-onnx: the .onnx file to write")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="forward, backward: cpu or cuda (fp32, TF32 off)")
    ap.add_argument("--runs-small", type=int, default=5, help="timed runs of 1 x T (after 2 warm-ups)")
    ap.add_argument("--runs-large", type=int, default=3, help="timed runs of B x T (after 1 warm-up)")
    ap.add_argument("--seconds", type=float, default=1.0, help="sgemm: time budget per measurement")
    ap.add_argument("--raw", action="store_true", help="forward: unprocessed weights (LayerNorm with w, b)")
    ap.add_argument("--patch-layers", type=int, default=1000, help="study: limit layers (time extrapolated)")
    ap.add_argument("--patch-positions", type=int, default=1000, help="study: limit positions (extrapolated)")
    ap.add_argument("--aligned", action="store_true", help="study: patch p in [seq_len+1, 2 seq_len]")
    ap.add_argument("--kcomp", type=int, nargs=4, default=[4, 11, 5, 5], metavar=("L1", "H1", "L2", "H2"))
    args = ap.parse_args()
    if args.mode == "check":
        result = {"peer": "pytorch", "mode": "check", "torch": torch.__version__, "numpy": np.__version__, "blas": blas_info()}
    elif args.mode == "sgemm":
        result = mode_sgemm(args)
    else:
        if not args.model or not args.tokens:
            ap.error("--model and --tokens are required")
        if args.mode == "export-onnx" and not args.out:
            ap.error("export-onnx needs --out FILE.onnx")
        modes = {
            "forward": mode_forward,
            "study": mode_study,
            "export-onnx": mode_export_onnx,
            "backward": mode_backward,
        }
        result = modes[args.mode](args)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
