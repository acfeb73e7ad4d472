/**
 * LayerNorm and RMSNorm on WebGPU, forward and backward: one workgroup of 256 invocations per
 * row, each invocation taking every 256th element, partial sums combined by a tree in workgroup
 * memory. The mean and variance are two passes, as on the CPU (where they are summed in f64; here
 * in f32, so a row of d values carries about log2(256) + d / 256 roundings more: ~1e-6 relative
 * for d = 768, see the conformance suite).
 * @module
 */
import { f32, type GpuDevice } from "./device.ts";
import type { Bound } from "./arrays.ts";
import { entry, header, REDUCE } from "./wgsl.ts";

const NORM = header(
  ["d: u32", "eps: f32", "center: u32", "x0: u32", "o0: u32", "hasScale: u32", "s0: u32"],
  ["x", "o", "sc"],
) + REDUCE + entry(256) + `
  let r = item;
  let xr = p.x0 + r * p.d;
  var mean = 0.0;
  if (p.center == 1u) {
    var s = 0.0;
    for (var j = lid; j < p.d; j += 256u) { s = s + x[xr + j]; }
    mean = reduce_sum(s, lid) / f32(p.d);
  }
  var ss = 0.0;
  for (var j = lid; j < p.d; j += 256u) { let c = x[xr + j] - mean; ss = ss + c * c; }
  let scale = sqrt(reduce_sum(ss, lid) / f32(p.d) + p.eps);
  if (p.hasScale == 1u && lid == 0u) { sc[p.s0 + r] = scale; }
  let rs = 1.0 / scale;
  let orow = p.o0 + r * p.d;
  for (var j = lid; j < p.d; j += 256u) { o[orow + j] = (x[xr + j] - mean) * rs; }
}`;

/** LayerNorm (center) or RMSNorm of `rows` rows of d floats, before any weight. */
export function norm(
  dev: GpuDevice,
  x: Bound,
  out: Bound,
  rows: number,
  d: number,
  eps: number,
  center: boolean,
  scale: Bound | undefined,
  dummy: Bound,
): void {
  const s = scale ?? dummy;
  dev.dispatch(
    NORM,
    [d, f32(eps), center ? 1 : 0, x.base, out.base, scale ? 1 : 0, s.base],
    [x.b, out.b, s.b],
    rows,
  );
}

const NORM_BACK = header(
  [
    "d: u32",
    "eps: f32",
    "center: u32",
    "x0: u32",
    "g0: u32",
    "hasDx: u32",
    "dx0: u32",
    "hasScale: u32",
    "s0: u32",
    "scaleGiven: u32",
    "accumulate: u32",
  ],
  ["x", "g", "dx", "ds"],
) + REDUCE + entry(256) + `
  let r = item;
  let xr = p.x0 + r * p.d;
  let gr = p.g0 + r * p.d;
  let fd = f32(p.d);
  var mean = 0.0;
  if (p.center == 1u) {
    var s = 0.0;
    for (var j = lid; j < p.d; j += 256u) { s = s + x[xr + j]; }
    mean = reduce_sum(s, lid) / fd;
  }
  var ss = 0.0;
  var sg = 0.0;
  var sgc = 0.0;
  var sumc = 0.0;
  for (var j = lid; j < p.d; j += 256u) {
    let c = x[xr + j] - mean;
    let gw = g[gr + j];
    ss = ss + c * c;
    sg = sg + gw;
    sgc = sgc + gw * c;
    sumc = sumc + c;
  }
  ss = reduce_sum(ss, lid);
  sg = reduce_sum(sg, lid);
  sgc = reduce_sum(sgc, lid);
  sumc = reduce_sum(sumc, lid);
  let sc = sqrt(ss / fd + p.eps);
  var dscale: f32;
  if (p.scaleGiven == 1u) {
    dscale = ds[p.s0 + r];
  } else {
    dscale = -sgc / (sc * sc);
  }
  workgroupBarrier();
  if (p.scaleGiven == 0u && p.hasScale == 1u && lid == 0u) { ds[p.s0 + r] = dscale; }
  if (p.hasDx == 0u) { return; }
  let A = 1.0 / sc;
  let B = dscale * A / fd;
  let C = select(0.0, (sg * A + B * sumc) / fd, p.center == 1u);
  let dr = p.dx0 + r * p.d;
  for (var j = lid; j < p.d; j += 256u) {
    var y = g[gr + j] * A + (x[xr + j] - mean) * B - C;
    if (p.accumulate == 1u) { y = y + dx[dr + j]; }
    dx[dr + j] = y;
  }
}`;

/** Options of {@linkcode normBackward}, resolved. */
export interface NormBackwardArgs {
  center: boolean;
  scaleGrad?: Bound;
  scaleGiven: boolean;
  accumulate: boolean;
}

/** The backward of {@linkcode norm}: dL/dx into dx (unless null) and dL/dscale when asked. */
export function normBackward(
  dev: GpuDevice,
  x: Bound,
  grad: Bound,
  dx: Bound | null,
  rows: number,
  d: number,
  eps: number,
  o: NormBackwardArgs,
  dummy: Bound,
): void {
  const s = o.scaleGrad ?? dummy, dxb = dx ?? dummy;
  dev.dispatch(
    NORM_BACK,
    [
      d,
      f32(eps),
      o.center ? 1 : 0,
      x.base,
      grad.base,
      dx ? 1 : 0,
      dxb.base,
      o.scaleGrad ? 1 : 0,
      s.base,
      o.scaleGiven ? 1 : 0,
      o.accumulate ? 1 : 0,
    ],
    [x.b, grad.b, dxb.b, s.b],
    rows,
  );
}
