/**
 * Sparse autoencoders' activations on WebGPU: JumpReLU (a threshold per feature), the gated
 * SAE's ReLU and TopK along rows. The first two are one invocation per output; TopK is one
 * invocation per row, taking the k largest values in order (value, then the lower index on
 * ties) by k scans of the row, as the CPU kernel's selection rule (NaN never kept).
 * @module
 */
import type { GpuDevice } from "./device.ts";
import type { Bound } from "./arrays.ts";
import { entry, header, INF, WG } from "./wgsl.ts";

const groups = (n: number) => Math.ceil(n / WG);

/** WGSL: NaN by its bits (a fast-math compiler may fold `v != v` away). */
const IS_NAN = /* wgsl */ `
fn is_nan(v: f32) -> bool { return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u; }
`;

// NaN is tested by its bits throughout: a software adapter's fast-math may take NaN > 0 as true.
const JUMP = header(["rows: u32", "n: u32", "x0: u32", "t0: u32", "o0: u32"], ["x", "t", "o"]) +
  IS_NAN + entry(WG) + `
  let i = item * ${WG}u + lid;
  if (i >= p.rows * p.n) { return; }
  let v = x[p.x0 + i];
  let th = t[p.t0 + i % p.n];
  o[p.o0 + i] = select(0.0, v, !is_nan(v) && !is_nan(th) && v > th && v > 0.0);
}`;

/** out[r, j] = x[r, j] if it exceeds threshold[j] and 0, else 0. */
export function jumpRelu(
  dev: GpuDevice,
  x: Bound,
  threshold: Bound,
  out: Bound,
  rows: number,
  n: number,
): void {
  dev.dispatch(
    JUMP,
    [rows, n, x.base, threshold.base, out.base],
    [x.b, threshold.b, out.b],
    groups(rows * n),
  );
}

const GATED = header(["rows: u32", "n: u32", "g0: u32", "o0: u32"], ["gm", "o"]) + IS_NAN +
  entry(WG) + `
  let i = item * ${WG}u + lid;
  if (i >= p.rows * p.n) { return; }
  let r = i / p.n;
  let j = i % p.n;
  let g = gm[p.g0 + r * 2u * p.n + j];
  let m = gm[p.g0 + r * 2u * p.n + p.n + j];
  o[p.o0 + i] = select(0.0, m, !is_nan(g) && !is_nan(m) && g > 0.0 && m > 0.0);
}`;

/** Rows of [gate | magnitude] (2n floats) to gate > 0 ? max(magnitude, 0) : 0 (n floats). */
export function gatedRelu(
  dev: GpuDevice,
  gateMag: Bound,
  out: Bound,
  rows: number,
  n: number,
): void {
  dev.dispatch(GATED, [rows, n, gateMag.base, out.base], [gateMag.b, out.b], groups(rows * n));
}

const TOPK = header(["rows: u32", "n: u32", "k: u32", "x0: u32", "o0: u32"], ["x", "o"]) + IS_NAN +
  entry(WG) + `
  let r = item * ${WG}u + lid;
  if (r >= p.rows) { return; }
  let xr = p.x0 + r * p.n;
  let orow = p.o0 + r * p.n;
  for (var j = 0u; j < p.n; j++) { o[orow + j] = 0.0; }
  // the previous pick (value, index): the next is the largest (value, -index) below it
  var pv = ${INF};
  var pj = -1;
  for (var c = 0u; c < p.k; c++) {
    var bv = 0.0;
    var bj = -1;
    for (var j = 0u; j < p.n; j++) {
      let v = x[xr + j];
      let ij = i32(j);
      if (is_nan(v) || !(v < pv || (v == pv && ij > pj))) { continue; }
      if (bj < 0 || v > bv) { bv = v; bj = ij; }
    }
    if (bj < 0) { break; }
    o[orow + u32(bj)] = max(bv, 0.0);
    pv = bv;
    pj = bj;
  }
}`;

/** Each row's k largest values, ReLU'd, in place of a zero row (x and out apart). */
export function topkRows(
  dev: GpuDevice,
  x: Bound,
  out: Bound,
  rows: number,
  n: number,
  k: number,
): void {
  dev.dispatch(TOPK, [rows, n, k, x.base, out.base], [x.b, out.b], groups(rows));
}
