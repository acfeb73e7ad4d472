/**
 * Elementwise kernels on WebGPU, one invocation per output element: add, the MLP activations
 * (plain and gated) and their backward, a normalization's weight and bias (`affineRows`), the
 * sum over heads, rotary embeddings. The formulas are those of the WebAssembly kernels, in f32
 * (see wgsl.ts); in-place calls are safe because each invocation reads its inputs before writing
 * its own outputs only.
 * @module
 */
import type { Activation } from "../backend.ts";
import type { GpuDevice } from "./device.ts";
import type { Bound } from "./arrays.ts";
import { ACTIVATION_CODE, ACTIVATIONS, entry, header, WG } from "./wgsl.ts";

const groups = (n: number) => Math.ceil(n / WG);

const ADD = header(["n: u32", "a0: u32", "b0: u32", "o0: u32"], ["a", "b", "o"]) + entry(WG) + `
  let i = item * ${WG}u + lid;
  if (i >= p.n) { return; }
  o[p.o0 + i] = a[p.a0 + i] + b[p.b0 + i];
}`;

/** out = a + b over n floats. */
export function add(dev: GpuDevice, a: Bound, b: Bound, out: Bound, n: number): void {
  dev.dispatch(ADD, [n, a.base, b.base, out.base], [a.b, b.b, out.b], groups(n));
}

const ACT = header(["n: u32", "act: u32", "x0: u32", "o0: u32"], ["x", "o"]) + ACTIVATIONS +
  entry(WG) + `
  let i = item * ${WG}u + lid;
  if (i >= p.n) { return; }
  o[p.o0 + i] = act(p.act, x[p.x0 + i]);
}`;

/** out = act(x) over n floats. */
export function activation(dev: GpuDevice, a: Activation, x: Bound, out: Bound, n: number): void {
  dev.dispatch(ACT, [n, ACTIVATION_CODE[a], x.base, out.base], [x.b, out.b], groups(n));
}

const GATED = header(["rows: u32", "dMlp: u32", "act: u32", "g0: u32", "o0: u32"], ["g", "o"]) +
  ACTIVATIONS + entry(WG) + `
  let i = item * ${WG}u + lid;
  if (i >= p.rows * p.dMlp) { return; }
  let r = i / p.dMlp;
  let j = i % p.dMlp;
  let gi = p.g0 + r * 2u * p.dMlp + j;
  o[p.o0 + i] = act(p.act, g[gi]) * g[gi + p.dMlp];
}`;

/** Row r of out = act(gate) * up from row r of gateUp = [gate | up]. */
export function gatedActivation(
  dev: GpuDevice,
  a: Activation,
  gateUp: Bound,
  out: Bound,
  rows: number,
  dMlp: number,
): void {
  dev.dispatch(
    GATED,
    [rows, dMlp, ACTIVATION_CODE[a], gateUp.base, out.base],
    [gateUp.b, out.b],
    groups(rows * dMlp),
  );
}

const ACT_BACK = header(["n: u32", "act: u32", "x0: u32", "g0: u32", "d0: u32"], [
  "x",
  "g",
  "d",
]) + ACTIVATIONS + entry(WG) + `
  let i = item * ${WG}u + lid;
  if (i >= p.n) { return; }
  d[p.d0 + i] = act_grad(p.act, x[p.x0 + i], g[p.g0 + i]);
}`;

/** dx = dy act'(x) over n floats. */
export function activationBackward(
  dev: GpuDevice,
  a: Activation,
  x: Bound,
  dy: Bound,
  dx: Bound,
  n: number,
): void {
  dev.dispatch(
    ACT_BACK,
    [n, ACTIVATION_CODE[a], x.base, dy.base, dx.base],
    [x.b, dy.b, dx.b],
    groups(n),
  );
}

const GATED_BACK = header(
  ["rows: u32", "dMlp: u32", "act: u32", "g0: u32", "o0: u32", "d0: u32"],
  ["g", "o", "d"],
) + ACTIVATIONS + entry(WG) + `
  let i = item * ${WG}u + lid;
  if (i >= p.rows * p.dMlp) { return; }
  let r = i / p.dMlp;
  let j = i % p.dMlp;
  let gi = r * 2u * p.dMlp + j;
  let gate = g[p.g0 + gi];
  let up = g[p.g0 + gi + p.dMlp];
  let dout = o[p.o0 + i];
  d[p.d0 + gi] = act_grad(p.act, gate, dout * up);
  d[p.d0 + gi + p.dMlp] = dout * act(p.act, gate);
}`;

/** Row r of dGateUp = [dOut up act'(gate) | dOut act(gate)]. */
export function gatedActivationBackward(
  dev: GpuDevice,
  a: Activation,
  gateUp: Bound,
  dOut: Bound,
  dGateUp: Bound,
  rows: number,
  dMlp: number,
): void {
  dev.dispatch(
    GATED_BACK,
    [rows, dMlp, ACTIVATION_CODE[a], gateUp.base, dOut.base, dGateUp.base],
    [gateUp.b, dOut.b, dGateUp.b],
    groups(rows * dMlp),
  );
}

const AFFINE = header(
  ["rows: u32", "d: u32", "x0: u32", "o0: u32", "w0: u32", "hasB: u32", "b0: u32"],
  ["x", "o", "w", "b"],
) + entry(WG) + `
  let i = item * ${WG}u + lid;
  if (i >= p.rows * p.d) { return; }
  let j = i % p.d;
  var y = x[p.x0 + i] * w[p.w0 + j];
  if (p.hasB == 1u) { y = y + b[p.b0 + j]; }
  o[p.o0 + i] = y;
}`;

/** out = x * w (+ b) per row of d floats. */
export function affineRows(
  dev: GpuDevice,
  x: Bound,
  out: Bound,
  rows: number,
  d: number,
  w: Bound,
  b: Bound | undefined,
  dummy: Bound,
): void {
  const bb = b ?? dummy;
  dev.dispatch(
    AFFINE,
    [rows, d, x.base, out.base, w.base, b ? 1 : 0, bb.base],
    [x.b, out.b, w.b, bb.b],
    groups(rows * d),
  );
}

const SUM_HEADS = header(
  ["rows: u32", "heads: u32", "d: u32", "x0: u32", "o0: u32", "hasB: u32", "b0: u32"],
  ["x", "o", "b"],
) + entry(WG) + `
  let i = item * ${WG}u + lid;
  if (i >= p.rows * p.d) { return; }
  let r = i / p.d;
  let j = i % p.d;
  let xr = p.x0 + r * p.heads * p.d + j;
  var s = x[xr];
  for (var h = 1u; h < p.heads; h++) { s = s + x[xr + h * p.d]; }
  if (p.hasB == 1u) { s = s + b[p.b0 + j]; }
  o[p.o0 + i] = s;
}`;

/** out[r] = sum over heads of x[r, h] (+ bias), heads added in order. */
export function sumHeads(
  dev: GpuDevice,
  x: Bound,
  out: Bound,
  rows: number,
  heads: number,
  d: number,
  bias: Bound | undefined,
  dummy: Bound,
): void {
  const bb = bias ?? dummy;
  dev.dispatch(
    SUM_HEADS,
    [rows, heads, d, x.base, out.base, bias ? 1 : 0, bb.base],
    [x.b, out.b, bb.b],
    groups(rows * d),
  );
}

const ROTARY = header(
  ["rows: u32", "stride: u32", "nHeads: u32", "dHead: u32", "half: u32", "x0: u32", "c0: u32"],
  ["x", "cs"],
) + entry(WG) + `
  let t = item * ${WG}u + lid;
  if (t >= p.rows * p.nHeads * p.half) { return; }
  let i = t % p.half;
  let rh = t / p.half;
  let h = rh % p.nHeads;
  let r = rh / p.nHeads;
  let ai = p.x0 + r * p.stride + h * p.dHead + i;
  let bi = ai + p.half;
  let ci = p.c0 + r * 2u * p.half + i;
  let c = cs[ci];
  let s = cs[ci + p.half];
  let av = x[ai];
  let bv = x[bi];
  x[ai] = av * c - bv * s;
  x[bi] = bv * c + av * s;
}`;

/** Rotate-half rotary embeddings in place (one invocation per rotated pair). */
export function rotary(
  dev: GpuDevice,
  x: Bound,
  cs: Bound,
  rows: number,
  stride: number,
  nHeads: number,
  dHead: number,
  rotaryDim: number,
): void {
  const half = rotaryDim / 2;
  dev.dispatch(
    ROTARY,
    [rows, stride, nHeads, dHead, half, x.base, cs.base],
    [x.b, cs.b],
    groups(rows * nHeads * half),
  );
}
