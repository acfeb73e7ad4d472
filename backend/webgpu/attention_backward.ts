/**
 * Attention backward on WebGPU, in the three steps of the interface: dPattern and dv (one
 * invocation per output), the softmax's backward (one workgroup per row) and dq, dk (one
 * invocation per output). Each output is one f32 sum in the CPU kernels' order (over the group's
 * heads, then the positions); the scale multiplies after the sum, as there.
 * @module
 */
import { f32, type GpuDevice } from "./device.ts";
import type { Bound } from "./arrays.ts";
import { entry, header, REDUCE, TANH, WG } from "./wgsl.ts";
import { FIRST_KEY } from "./attention.ts";

/** An attention backward call's geometry, resolved. */
export interface AttentionGradGeometry {
  q: Bound;
  k: Bound;
  v: Bound;
  dz: Bound;
  dq: Bound;
  dk: Bound;
  dv: Bound;
  stride: number;
  dzStride: number;
  dStride: number;
  T: number;
  nHeads: number;
  dHead: number;
  scale: number;
  group: number;
  kStart: number;
  /** Sliding window (0: none). */
  window: number;
  /** Attention softcap (0: none). */
  softcap: number;
}

const FIELDS = [
  "T: u32",
  "nHeads: u32",
  "dHead: u32",
  "stride: u32",
  "dzStride: u32",
  "dStride: u32",
  "scale: f32",
  "group: u32",
  "kStart: u32",
  "causal: u32",
  "fullRows: u32",
  "a0: u32",
  "b0: u32",
  "o0: u32",
  "s0: u32",
  "window: u32",
  "softcap: f32",
];

function fields(
  g: AttentionGradGeometry,
  causal: boolean,
  fullRows: boolean,
  a0: number,
  b0: number,
  o0: number,
  s0: number,
): number[] {
  return [
    g.T,
    g.nHeads,
    g.dHead,
    g.stride,
    g.dzStride,
    g.dStride,
    f32(g.scale),
    g.group,
    g.kStart,
    causal ? 1 : 0,
    fullRows ? 1 : 0,
    a0,
    b0,
    o0,
    s0,
    g.window,
    f32(g.softcap),
  ];
}

// dPattern[h, i, j] = dz[i, h] . v[j, h / group] over [lo, hi), 0 elsewhere.
const D_PATTERN = header(FIELDS, ["dz", "v", "dp"]) + FIRST_KEY + entry(WG) + `
  let t = item * ${WG}u + lid;
  if (t >= p.nHeads * p.T * p.T) { return; }
  let j = t % p.T;
  let hi_ = t / p.T;
  let i = hi_ % p.T;
  let h = hi_ / p.T;
  let lo = select(first_key(i, p.kStart, p.window), 0u, p.fullRows == 1u);
  let hi = select(i + 1u, p.T, p.fullRows == 1u);
  if (j < lo || j >= hi) { dp[p.o0 + t] = 0.0; return; }
  let zr = p.a0 + i * p.dzStride + h * p.dHead;
  let vr = p.b0 + j * p.stride + (h / p.group) * p.dHead;
  var s = 0.0;
  for (var d = 0u; d < p.dHead; d++) { s = s + dz[zr + d] * v[vr + d]; }
  dp[p.o0 + t] = s;
}`;

// dv[j, g, d] = sum over the group's heads h, queries i >= i0 of pattern[h, i, j] dz[i, h, d].
const D_V = header(FIELDS, ["pat", "dz", "dv"]) + entry(WG) + `
  let nKv = p.nHeads / p.group;
  let t = item * ${WG}u + lid;
  if (t >= p.T * nKv * p.dHead) { return; }
  let d = t % p.dHead;
  let jg = t / p.dHead;
  let g = jg % nKv;
  let j = jg / nKv;
  let out = p.o0 + j * p.dStride + g * p.dHead + d;
  let i0 = select(0u, max(j, p.kStart), p.causal == 1u);
  let i1 = select(p.T, min(p.T, j + p.window), p.causal == 1u && p.window > 0u);
  if ((p.causal == 1u && j < p.kStart) || i0 >= i1) { dv[out] = 0.0; return; }
  var acc = 0.0;
  for (var hh = 0u; hh < p.group; hh++) {
    let h = g * p.group + hh;
    for (var i = i0; i < i1; i++) {
      acc = acc + pat[p.a0 + (h * p.T + i) * p.T + j] * dz[p.b0 + i * p.dzStride + h * p.dHead + d];
    }
  }
  dv[out] = acc;
}`;

/** Step 1: dPattern (causal entries, or every entry with fullRows) and dv. */
export function attentionGradPattern(
  dev: GpuDevice,
  g: AttentionGradGeometry,
  pattern: Bound,
  dPattern: Bound,
  causal: boolean,
  fullRows: boolean,
): void {
  const T = g.T, nKv = g.nHeads / g.group;
  dev.dispatch(
    D_PATTERN,
    fields(g, causal, fullRows, g.dz.base, g.v.base, dPattern.base, 0),
    [g.dz.b, g.v.b, dPattern.b],
    Math.ceil(g.nHeads * T * T / WG),
  );
  dev.dispatch(
    D_V,
    fields(g, causal, fullRows, pattern.base, g.dz.base, g.dv.base, 0),
    [pattern.b, g.dz.b, g.dv.b],
    Math.ceil(T * nKv * g.dHead / WG),
  );
}

const SOFTMAX_BACK = header(["T: u32", "p0: u32", "g0: u32", "d0: u32"], ["pat", "dp", "ds"]) +
  REDUCE + entry(256) + `
  let r = item * p.T;
  var s = 0.0;
  for (var j = lid; j < p.T; j += 256u) { s = s + pat[p.p0 + r + j] * dp[p.g0 + r + j]; }
  let total = reduce_sum(s, lid);
  for (var j = lid; j < p.T; j += 256u) {
    ds[p.d0 + r + j] = pat[p.p0 + r + j] * (dp[p.g0 + r + j] - total);
  }
}`;

/** Step 2: dScores = pattern (dPattern - rowsum(pattern dPattern)). */
export function softmaxBackwardRows(
  dev: GpuDevice,
  pattern: Bound,
  dPattern: Bound,
  dScores: Bound,
  nHeads: number,
  T: number,
): void {
  dev.dispatch(
    SOFTMAX_BACK,
    [T, pattern.base, dPattern.base, dScores.base],
    [pattern.b, dPattern.b, dScores.b],
    nHeads * T,
  );
}

// dq[i, h, d] = scale sum_{j = kStart .. i} dS[h, i, j] k[j, h / group, d]
const D_Q = header(FIELDS, ["ds", "k", "dq"]) + FIRST_KEY + entry(WG) + `
  let t = item * ${WG}u + lid;
  if (t >= p.T * p.nHeads * p.dHead) { return; }
  let d = t % p.dHead;
  let ih = t / p.dHead;
  let h = ih % p.nHeads;
  let i = ih / p.nHeads;
  let out = p.o0 + i * p.dStride + h * p.dHead + d;
  let lo = first_key(i, p.kStart, p.window);
  if (i < lo) { dq[out] = 0.0; return; }
  let kc = p.b0 + (h / p.group) * p.dHead + d;
  let row = p.a0 + (h * p.T + i) * p.T;
  var acc = 0.0;
  for (var j = lo; j <= i; j++) { acc = acc + ds[row + j] * k[kc + j * p.stride]; }
  dq[out] = acc * p.scale;
}`;

// dk[j, g, d] = scale sum over the group's heads h, queries i >= j of dS[h, i, j] q[i, h, d]
const D_K = header(FIELDS, ["ds", "q", "dk"]) + entry(WG) + `
  let nKv = p.nHeads / p.group;
  let t = item * ${WG}u + lid;
  if (t >= p.T * nKv * p.dHead) { return; }
  let d = t % p.dHead;
  let jg = t / p.dHead;
  let g = jg % nKv;
  let j = jg / nKv;
  let out = p.o0 + j * p.dStride + g * p.dHead + d;
  if (j < p.kStart) { dk[out] = 0.0; return; }
  let i1 = select(p.T, min(p.T, j + p.window), p.window > 0u);
  var acc = 0.0;
  for (var hh = 0u; hh < p.group; hh++) {
    let h = g * p.group + hh;
    for (var i = j; i < i1; i++) {
      acc = acc + ds[p.a0 + (h * p.T + i) * p.T + j] * q[p.b0 + i * p.stride + h * p.dHead + d];
    }
  }
  dk[out] = acc * p.scale;
}`;

// Softcap: dS at the capped scores becomes dS at the raw ones, dS sech^2(s / cap), in place, with
// s = (q . k) scale recomputed in the forward's order (the CPU kernel's step, there in f64).
const D_CAP = header(FIELDS, ["ds", "q", "k"]) + TANH + FIRST_KEY + entry(WG) + `
  let t = item * ${WG}u + lid;
  if (t >= p.nHeads * p.T * p.T) { return; }
  let j = t % p.T;
  let hi_ = t / p.T;
  let i = hi_ % p.T;
  let h = hi_ / p.T;
  if (j < first_key(i, p.kStart, p.window) || j > i) { return; }
  let qr = p.a0 + i * p.stride + h * p.dHead;
  let kr = p.b0 + j * p.stride + (h / p.group) * p.dHead;
  var s = 0.0;
  for (var d = 0u; d < p.dHead; d++) { s = s + q[qr + d] * k[kr + d]; }
  ds[p.o0 + t] = ds[p.o0 + t] * sech2_f(s * p.scale / p.softcap);
}`;

/** Step 3: dq and dk from dScores over the causal entries (through the softcap, if any). */
export function attentionGradQK(dev: GpuDevice, g: AttentionGradGeometry, dScores: Bound): void {
  const nKv = g.nHeads / g.group;
  if (g.softcap > 0) {
    dev.dispatch(
      D_CAP,
      fields(g, true, false, g.q.base, g.k.base, dScores.base, 0),
      [dScores.b, g.q.b, g.k.b],
      Math.ceil(g.nHeads * g.T * g.T / WG),
    );
  }
  dev.dispatch(
    D_Q,
    fields(g, true, false, dScores.base, g.k.base, g.dq.base, 0),
    [dScores.b, g.k.b, g.dq.b],
    Math.ceil(g.T * g.nHeads * g.dHead / WG),
  );
  dev.dispatch(
    D_K,
    fields(g, true, false, dScores.base, g.q.base, g.dk.base, 0),
    [dScores.b, g.q.b, g.dk.b],
    Math.ceil(g.T * nKv * g.dHead / WG),
  );
}
