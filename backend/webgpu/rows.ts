/**
 * Row reductions on WebGPU (one workgroup per row): each row's maximum and sum of exp(x - max)
 * (the host finishes log-sum-exp in f64), the argmax (first on ties, NaN never wins, the CPU's
 * rule for rows without a finite maximum), a gather along rows, and the cross-entropy's gradient.
 * The sum of exp is f32 over 256 partial sums (the CPU sums in f64): for 50257 terms in (0, 1]
 * its relative error stays below ~200 ulp, 1e-5 in the log, typically far less.
 * @module
 */
import type { GpuDevice } from "./device.ts";
import type { Bound } from "./arrays.ts";
import { entry, EXP, header, NEG_INF, REDUCE, WG } from "./wgsl.ts";

/**
 * WGSL, by the bits (software adapters compile with fast-math, where NaN and infinity compare
 * unreliably): whether a value makes its row's log-sum-exp NaN on the CPU (NaN, or +Infinity,
 * whose x - max is NaN), and a row whose maximum is -Infinity (every x - max NaN).
 */
const NONFINITE = /* wgsl */ `
fn spoils_lse(v: f32) -> bool {
  let b = bitcast<u32>(v);
  return (b & 0x7fffffffu) > 0x7f800000u || b == 0x7f800000u;
}
fn is_neg_inf(v: f32) -> bool { return bitcast<u32>(v) == 0xff800000u; }
const NAN_BITS: u32 = 0x7fc00000u;
`;

/**
 * WGSL (after EXP, NONFINITE and REDUCE, in a shader whose row data is `x`): row x[xr ..< xr + n]'s
 * maximum, its sum of exp(x - max), and whether the CPU's rule makes the row's results NaN (a NaN
 * or +Infinity entry, or no entry above -Infinity). Every invocation of the workgroup calls it.
 */
const ROW_LSE = /* wgsl */ `
struct RowLse { m: f32, total: f32, spoilt: bool }
fn row_lse(xr: u32, n: u32, lid: u32) -> RowLse {
  var mx = ${NEG_INF};
  var bad = 0.0;
  for (var j = lid; j < n; j += 256u) {
    let v = x[xr + j];
    if (spoils_lse(v)) { bad = 1.0; } else { mx = max(mx, v); }
  }
  let m = reduce_max(mx, lid);
  let spoilt = reduce_max(bad, lid) > 0.0 || is_neg_inf(m);
  var s = 0.0;
  for (var j = lid; j < n; j += 256u) { s = s + expf(x[xr + j] - m); }
  return RowLse(m, reduce_sum(s, lid), spoilt);
}
`;

const MAX_SUM_EXP = header(["n: u32", "ld: u32", "x0: u32", "o0: u32"], ["x", "o"]) + EXP +
  NONFINITE + REDUCE + ROW_LSE + entry(256) + `
  let r = row_lse(p.x0 + item * p.ld, p.n, lid);
  if (lid == 0u) {
    o[p.o0 + 2u * item] = r.m;
    o[p.o0 + 2u * item + 1u] = select(r.total, bitcast<f32>(NAN_BITS), r.spoilt);
  }
}`;

/** Per row: (max, sum exp(x - max)) into out[2r], out[2r + 1]. */
export function maxSumExp(
  dev: GpuDevice,
  x: Bound,
  rows: number,
  n: number,
  ld: number,
  out: Bound,
): void {
  dev.dispatch(MAX_SUM_EXP, [n, ld, x.base, out.base], [x.b, out.b], rows);
}

const ARGMAX = header(["n: u32", "ld: u32", "x0: u32", "o0: u32"], ["x", "o"], { o: "i32" }) + `
var<workgroup> bv: array<f32, 256>;
var<workgroup> bi: array<i32, 256>;
` + entry(256) + `
  let xr = p.x0 + item * p.ld;
  var best = ${NEG_INF};
  var besti = -1;
  var firstInf = -1;
  for (var j = lid; j < p.n; j += 256u) {
    let v = x[xr + j];
    if (v > best) { best = v; besti = i32(j); }
    if (v == ${NEG_INF} && firstInf < 0) { firstInf = i32(j); }
  }
  bv[lid] = best;
  bi[lid] = besti;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s >> 1u) {
    if (lid < s) {
      let v = bv[lid + s];
      let i = bi[lid + s];
      if (i >= 0 && (bi[lid] < 0 || v > bv[lid] || (v == bv[lid] && i < bi[lid]))) {
        bv[lid] = v;
        bi[lid] = i;
      }
    }
    workgroupBarrier();
  }
  // no finite maximum: the first -Infinity, else 0 (the CPU kernel's rule)
  let found = bi[0];
  workgroupBarrier();
  bi[lid] = select(0x7fffffff, firstInf, firstInf >= 0);
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s >> 1u) {
    if (lid < s) { bi[lid] = min(bi[lid], bi[lid + s]); }
    workgroupBarrier();
  }
  if (lid == 0u) {
    if (found >= 0) { o[p.o0 + item] = found; }
    else { o[p.o0 + item] = select(0, bi[0], bi[0] != 0x7fffffff); }
  }
}`;

/** Per row: the index of the largest value (i32 into out). */
export function argmax(
  dev: GpuDevice,
  x: Bound,
  rows: number,
  n: number,
  ld: number,
  out: Bound,
): void {
  dev.dispatch(ARGMAX, [n, ld, x.base, out.base], [x.b, out.b], rows);
}

const TAKE = header(["rows: u32", "n: u32", "x0: u32", "i0: u32", "o0: u32"], ["x", "idx", "o"], {
  idx: "i32",
}) + entry(WG) + `
  let r = item * ${WG}u + lid;
  if (r >= p.rows) { return; }
  o[p.o0 + r] = x[p.x0 + r * p.n + u32(idx[p.i0 + r])];
}`;

/** out[r] = x[r, index[r]] (indices checked by the caller). */
export function takeAlongRows(
  dev: GpuDevice,
  x: Bound,
  n: number,
  index: Bound,
  rows: number,
  out: Bound,
): void {
  dev.dispatch(
    TAKE,
    [rows, n, x.base, index.base, out.base],
    [x.b, index.b, out.b],
    Math.ceil(rows / WG),
  );
}

const CE_GRAD = header(["n: u32", "x0: u32", "o0: u32", "c0: u32", "t0: u32", "m0: u32"], [
  "x",
  "o",
  "coef",
  "tgt",
  "ms",
], { tgt: "i32" }) + EXP + NONFINITE + REDUCE + ROW_LSE + entry(256) + `
  let xr = p.x0 + item * p.n;
  let orow = p.o0 + item * p.n;
  // as on the CPU: a NaN or +Infinity logit, or no finite one, makes the row's results NaN
  let r = row_lse(xr, p.n, lid);
  let c = coef[p.c0 + item];
  let k = c / r.total;
  let t = tgt[p.t0 + item];
  for (var j = lid; j < p.n; j += 256u) {
    var v = expf(x[xr + j] - r.m) * k;
    if (i32(j) == t) { v = v - c; }
    o[orow + j] = select(v, bitcast<f32>(NAN_BITS), r.spoilt);
  }
  if (lid == 0u) {
    ms[p.m0 + 2u * item] = r.m;
    ms[p.m0 + 2u * item + 1u] = select(r.total, bitcast<f32>(NAN_BITS), r.spoilt);
  }
}`;

/**
 * out[r] = coef[r] (softmax(x[r]) - onehot(target[r])) and (max, sum exp) per row into ms, as
 * {@linkcode maxSumExp}.
 */
export function crossEntropyGrad(
  dev: GpuDevice,
  x: Bound,
  rows: number,
  n: number,
  coef: Bound,
  target: Bound,
  out: Bound,
  ms: Bound,
): void {
  dev.dispatch(
    CE_GRAD,
    [n, x.base, out.base, coef.base, target.base, ms.base],
    [x.b, out.b, coef.b, target.b, ms.b],
    rows,
  );
}
