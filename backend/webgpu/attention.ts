/**
 * Causal attention on WebGPU. Fused: one workgroup per (head, query) computes the query's scores
 * into workgroup memory, their softmax and z = pattern v, writing the pattern only when asked
 * (a hook, the cache or an edit), for up to {@linkcode FUSED_MAX_KEYS} keys; longer rows go
 * through the three unfused kernels, which also serve hooked passes: scores (one invocation per
 * entry), softmax over rows (one workgroup per row) and pattern v (one invocation per output).
 * Scores, exp (the CPU's `expv`), the row maximum, the sum and the division are the WebAssembly
 * kernels' steps; sums run in a different order (a tree over 256 partial sums).
 * @module
 */
import { f32, type GpuDevice } from "./device.ts";
import type { Bound } from "./arrays.ts";
import { entry, EXP, header, NEG_INF, REDUCE, TANH, WG } from "./wgsl.ts";

/** Keys a fused attention row holds in workgroup memory. */
export const FUSED_MAX_KEYS = 2048;

/**
 * WGSL: the first key a query at absolute position `qpos` sees: kStart (left padding), raised
 * by a sliding window (Gemma; 0: none) to qpos - window + 1.
 */
export const FIRST_KEY = /* wgsl */ `
fn first_key(qpos: u32, ks: u32, win: u32) -> u32 {
  if (win > 0u && qpos + 1u > win) { return max(ks, qpos + 1u - win); }
  return ks;
}
`;

/** WGSL: Gemma 2's attention softcap applied to a score (cap 0: none). */
const CAP = /* wgsl */ `
fn cap_score(s: f32, cap: f32) -> f32 {
  if (cap > 0.0) { return cap * tanh_f(s / cap); }
  return s;
}
`;

/** An attention call's geometry, resolved (group = query heads per key/value head). */
export interface AttentionGeometry {
  q: Bound;
  k: Bound;
  v: Bound;
  z: Bound;
  stride: number;
  zStride: number;
  nQ: number;
  qStart: number;
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

const GEOMETRY = [
  "nQ: u32",
  "qStart: u32",
  "nHeads: u32",
  "dHead: u32",
  "stride: u32",
  "zStride: u32",
  "scale: f32",
  "group: u32",
  "kStart: u32",
  "q0: u32",
  "k0: u32",
  "v0: u32",
  "z0: u32",
  "window: u32",
  "softcap: f32",
];

function geometry(g: AttentionGeometry): number[] {
  return [
    g.nQ,
    g.qStart,
    g.nHeads,
    g.dHead,
    g.stride,
    g.zStride,
    f32(g.scale),
    g.group,
    g.kStart,
    g.q.base,
    g.k.base,
    g.v.base,
    g.z.base,
    g.window,
    f32(g.softcap),
  ];
}

/**
 * The fused kernel for rows of at most `cap` keys. Workgroup memory is sized to the row (a power
 * of two from 64): WGSL zero-initialises it for every workgroup, and software adapters (Mesa's
 * llvmpipe) pay for that per invocation, so a 2048-float array made a 12-key row 100x slower.
 */
const fusedCode = (cap: number) =>
  header([...GEOMETRY, "hasPattern: u32", "p0: u32"], ["q", "k", "v", "z", "pat"]) +
  TANH + CAP + FIRST_KEY + REDUCE + `
var<workgroup> sc: array<f32, ${cap}>;
` + entry(256) + `
  let h = item / p.nQ;
  let i = item % p.nQ;
  let nk = p.qStart + i + 1u;
  let nK = p.qStart + p.nQ;
  let zr = p.z0 + i * p.zStride + h * p.dHead;
  let prow = p.p0 + (h * p.nQ + i) * nK;
  let lo = first_key(p.qStart + i, p.kStart, p.window);
  if (nk <= lo) {
    for (var d = lid; d < p.dHead; d += 256u) { z[zr + d] = 0.0; }
    if (p.hasPattern == 1u) { for (var j = lid; j < nK; j += 256u) { pat[prow + j] = 0.0; } }
    return;
  }
  let seen = nk - lo;
  let qr = p.q0 + i * p.stride + h * p.dHead;
  let kc = (h / p.group) * p.dHead;
  var mx = ${NEG_INF};
  for (var j = lid; j < seen; j += 256u) {
    let kr = p.k0 + (lo + j) * p.stride + kc;
    var s = 0.0;
    for (var d = 0u; d < p.dHead; d++) { s = s + q[qr + d] * k[kr + d]; }
    s = cap_score(s * p.scale, p.softcap);
    sc[j] = s;
    mx = max(mx, s);
  }
  let m = reduce_max(mx, lid);
  var sum = 0.0;
  for (var j = lid; j < seen; j += 256u) { let e = expf(sc[j] - m); sc[j] = e; sum = sum + e; }
  let total = reduce_sum(sum, lid);
  for (var j = lid; j < seen; j += 256u) { sc[j] = sc[j] / total; }
  workgroupBarrier();
  if (p.hasPattern == 1u) {
    for (var j = lid; j < nK; j += 256u) {
      pat[prow + j] = select(0.0, sc[j - lo], j >= lo && j < nk);
    }
  }
  let vc = p.v0 + lo * p.stride + kc;
  for (var d = lid; d < p.dHead; d += 256u) {
    var acc = 0.0;
    for (var j = 0u; j < seen; j++) { acc = acc + sc[j] * v[vc + j * p.stride + d]; }
    z[zr + d] = acc;
  }
}`;

const FUSED = new Map<number, string>();

/** Fused causal attention (nK <= FUSED_MAX_KEYS), writing the pattern when given. */
export function attentionFused(
  dev: GpuDevice,
  g: AttentionGeometry,
  pattern: Bound | undefined,
  dummy: Bound,
): void {
  const pb = pattern ?? dummy;
  let cap = 64;
  while (cap < g.qStart + g.nQ) cap *= 2;
  let code = FUSED.get(cap);
  if (!code) FUSED.set(cap, code = fusedCode(cap));
  dev.dispatch(
    code,
    [...geometry(g), pattern ? 1 : 0, pb.base],
    [g.q.b, g.k.b, g.v.b, g.z.b, pb.b],
    g.nHeads * g.nQ,
  );
}

const SCORES = header([...GEOMETRY, "s0: u32"], ["q", "k", "sc"]) + TANH + CAP + FIRST_KEY +
  entry(WG) + `
  let nK = p.qStart + p.nQ;
  let t = item * ${WG}u + lid;
  if (t >= p.nHeads * p.nQ * nK) { return; }
  let j = t % nK;
  let hi = t / nK;
  let i = hi % p.nQ;
  let h = hi / p.nQ;
  let nk = p.qStart + i + 1u;
  if (j < first_key(p.qStart + i, p.kStart, p.window) || j >= nk) {
    sc[p.s0 + t] = ${NEG_INF};
    return;
  }
  let qr = p.q0 + i * p.stride + h * p.dHead;
  let kr = p.k0 + j * p.stride + (h / p.group) * p.dHead;
  var s = 0.0;
  for (var d = 0u; d < p.dHead; d++) { s = s + q[qr + d] * k[kr + d]; }
  sc[p.s0 + t] = cap_score(s * p.scale, p.softcap);
}`;

/** Scores [nHeads, nQ, nK], -Infinity outside each query's keys [kStart, qStart + i]. */
export function attentionScores(dev: GpuDevice, g: AttentionGeometry, scores: Bound): void {
  const n = g.nHeads * g.nQ * (g.qStart + g.nQ);
  dev.dispatch(
    SCORES,
    [...geometry(g), scores.base],
    [g.q.b, g.k.b, scores.b],
    Math.ceil(n / WG),
  );
}

const SOFTMAX = header(
  ["nQ: u32", "qStart: u32", "kStart: u32", "causal: u32", "s0: u32", "p0: u32", "window: u32"],
  ["sc", "pat"],
) + EXP + FIRST_KEY + REDUCE + entry(256) + `
  let i = item % p.nQ;
  let nK = p.qStart + p.nQ;
  let sr = p.s0 + item * nK;
  let pr = p.p0 + item * nK;
  let lo = select(0u, first_key(p.qStart + i, p.kStart, p.window), p.causal == 1u);
  let hi = select(nK, p.qStart + i + 1u, p.causal == 1u);
  var mx = ${NEG_INF};
  for (var j = lo + lid; j < hi; j += 256u) { mx = max(mx, sc[sr + j]); }
  let m = reduce_max(mx, lid);
  // a row with no finite score becomes zeros (no branch around the barriers below)
  let live = hi > lo && m != ${NEG_INF};
  var sum = 0.0;
  for (var j = lid; j < nK; j += 256u) {
    if (live && j >= lo && j < hi) { let e = expf(sc[sr + j] - m); pat[pr + j] = e; sum = sum + e; }
  }
  let total = reduce_sum(sum, lid);
  for (var j = lid; j < nK; j += 256u) {
    pat[pr + j] = select(0.0, pat[pr + j] / total, live && j >= lo && j < hi);
  }
}`;

/** Softmax of score rows [nHeads, nQ, nK] into pattern rows (may alias). */
export function softmaxRows(
  dev: GpuDevice,
  scores: Bound,
  pattern: Bound,
  nHeads: number,
  nQ: number,
  qStart: number,
  kStart: number,
  causal: boolean,
  window = 0,
): void {
  dev.dispatch(
    SOFTMAX,
    [nQ, qStart, kStart, causal ? 1 : 0, scores.base, pattern.base, window],
    [scores.b, pattern.b],
    nHeads * nQ,
  );
}

const APPLY = header([...GEOMETRY, "p0: u32", "causal: u32"], ["v", "z", "pat"]) + FIRST_KEY +
  entry(WG) + `
  let nK = p.qStart + p.nQ;
  let t = item * ${WG}u + lid;
  if (t >= p.nQ * p.nHeads * p.dHead) { return; }
  let d = t % p.dHead;
  let ih = t / p.dHead;
  let h = ih % p.nHeads;
  let i = ih / p.nHeads;
  let lo = select(0u, first_key(p.qStart + i, p.kStart, p.window), p.causal == 1u);
  let hi = select(nK, p.qStart + i + 1u, p.causal == 1u);
  let prow = p.p0 + (h * p.nQ + i) * nK;
  let vc = p.v0 + (h / p.group) * p.dHead + d;
  var acc = 0.0;
  for (var j = lo; j < hi; j++) { acc = acc + pat[prow + j] * v[vc + j * p.stride]; }
  z[p.z0 + i * p.zStride + h * p.dHead + d] = acc;
}`;

/** z = pattern v over each query's causal keys (or every key). */
export function attentionApply(
  dev: GpuDevice,
  g: AttentionGeometry,
  pattern: Bound,
  causal: boolean,
): void {
  dev.dispatch(
    APPLY,
    [...geometry(g), pattern.base, causal ? 1 : 0],
    [g.v.b, g.z.b, pattern.b],
    Math.ceil(g.nQ * g.nHeads * g.dHead / WG),
  );
}
