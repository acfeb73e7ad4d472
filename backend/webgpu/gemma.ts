/**
 * Gemma's operations on WebGPU: logit softcapping (cap tanh(x / cap)) and its backward, and
 * RMSNorm over each head with a weight (Gemma 3's q_norm / k_norm) and its backward. One
 * invocation per element (softcap) or per (row, head) (the head norm: a head is at most a few
 * hundred floats, summed in order as the CPU does, in f32 where the CPU uses f64).
 * @module
 */
import { f32, type GpuDevice } from "./device.ts";
import type { Bound } from "./arrays.ts";
import { entry, header, TANH, WG } from "./wgsl.ts";

const groups = (n: number) => Math.ceil(n / WG);

const SOFTCAP = header(["n: u32", "cap: f32", "x0: u32", "o0: u32"], ["x", "o"]) + TANH +
  entry(WG) + `
  let t = item * ${WG}u + lid;
  if (t >= p.n) { return; }
  o[p.o0 + t] = p.cap * tanh_f(x[p.x0 + t] / p.cap);
}`;

/** out = cap tanh(x / cap) over n floats (may alias). */
export function softcap(dev: GpuDevice, x: Bound, out: Bound, n: number, cap: number): void {
  dev.dispatch(SOFTCAP, [n, f32(cap), x.base, out.base], [x.b, out.b], groups(n));
}

const SOFTCAP_BACK = header(
  ["n: u32", "cap: f32", "x0: u32", "y0: u32", "o0: u32"],
  ["x", "dy", "dx"],
) + TANH + entry(WG) + `
  let t = item * ${WG}u + lid;
  if (t >= p.n) { return; }
  dx[p.o0 + t] = dy[p.y0 + t] * sech2_f(x[p.x0 + t] / p.cap);
}`;

/** dx = dy (1 - tanh(x / cap)^2) over n floats (dx may alias x or dy). */
export function softcapBackward(
  dev: GpuDevice,
  x: Bound,
  dy: Bound,
  dx: Bound,
  n: number,
  cap: number,
): void {
  dev.dispatch(
    SOFTCAP_BACK,
    [n, f32(cap), x.base, dy.base, dx.base],
    [x.b, dy.b, dx.b],
    groups(n),
  );
}

const HEAD_FIELDS = [
  "rows: u32",
  "stride: u32",
  "nHeads: u32",
  "dHead: u32",
  "eps: f32",
  "x0: u32",
  "w0: u32",
  "s0: u32",
  "hasScale: u32",
  "g0: u32",
  "gStride: u32",
];

const HEAD_NORM = header(HEAD_FIELDS, ["x", "w", "sc"]) + entry(WG) + `
  let t = item * ${WG}u + lid;
  if (t >= p.rows * p.nHeads) { return; }
  let h = t % p.nHeads;
  let r = t / p.nHeads;
  let xr = p.x0 + r * p.stride + h * p.dHead;
  let wr = p.w0 + h * p.dHead;
  var ss = 0.0;
  for (var j = 0u; j < p.dHead; j++) { ss = ss + x[xr + j] * x[xr + j]; }
  let s = sqrt(ss / f32(p.dHead) + p.eps);
  if (p.hasScale == 1u) { sc[p.s0 + t] = s; }
  let rs = 1.0 / s;
  for (var j = 0u; j < p.dHead; j++) { x[xr + j] = x[xr + j] * rs * w[wr + j]; }
}`;

/** Per (row, head): x = x / sqrt(mean(x^2) + eps) * w in place; scales into `scale`. */
export function headRmsNorm(
  dev: GpuDevice,
  x: Bound,
  w: Bound,
  scale: Bound | undefined,
  l: { rows: number; stride: number; nHeads: number; dHead: number },
  eps: number,
  dummy: Bound,
): void {
  const s = scale ?? dummy;
  dev.dispatch(
    HEAD_NORM,
    [l.rows, l.stride, l.nHeads, l.dHead, f32(eps), x.base, w.base, s.base, scale ? 1 : 0, 0, 0],
    [x.b, w.b, s.b],
    groups(l.rows * l.nHeads),
  );
}

// gw = g w; dL/ds = -sum gw x / s^2; dx = gw / s + dL/ds x / (d s), the CPU kernel's steps.
const HEAD_NORM_BACK = header(HEAD_FIELDS, ["x", "w", "g"]) + entry(WG) + `
  let t = item * ${WG}u + lid;
  if (t >= p.rows * p.nHeads) { return; }
  let h = t % p.nHeads;
  let r = t / p.nHeads;
  let xr = p.x0 + r * p.stride + h * p.dHead;
  let gr = p.g0 + r * p.gStride + h * p.dHead;
  let wr = p.w0 + h * p.dHead;
  var ss = 0.0;
  for (var j = 0u; j < p.dHead; j++) { ss = ss + x[xr + j] * x[xr + j]; }
  let s = sqrt(ss / f32(p.dHead) + p.eps);
  var dot = 0.0;
  for (var j = 0u; j < p.dHead; j++) { dot = dot + g[gr + j] * w[wr + j] * x[xr + j]; }
  let k = -dot / (s * s) / (f32(p.dHead) * s);
  for (var j = 0u; j < p.dHead; j++) { g[gr + j] = g[gr + j] * w[wr + j] / s + k * x[xr + j]; }
}`;

/** The backward of {@linkcode headRmsNorm}: `grad` (rows gStride apart) becomes dL/dx. */
export function headRmsNormBackward(
  dev: GpuDevice,
  x: Bound,
  grad: Bound,
  w: Bound,
  l: { rows: number; stride: number; nHeads: number; dHead: number; gradStride: number },
  eps: number,
): void {
  dev.dispatch(
    HEAD_NORM_BACK,
    [l.rows, l.stride, l.nHeads, l.dHead, f32(eps), x.base, w.base, 0, 0, grad.base, l.gradStride],
    [x.b, w.b, grad.b],
    groups(l.rows * l.nHeads),
  );
}
