// Row reductions used on logits: argmax and the parts of log-sum-exp.

import { expv, exps, setExpConstants } from "./simd";

// out[r] (i32) = index of the largest of x[r, 0..n) (first one on ties; NaN
// never wins), for rows [rowStart, rowEnd); row r at x + r * ld floats.
export function rowArgmax(x: usize, n: i32, ld: i32, out: usize, rowStart: i32, rowEnd: i32): void {
  const n4 = n & ~3;
  for (let r = rowStart; r < rowEnd; r++) {
    const row = x + (<usize>r * <usize>ld << 2);
    let bestI: i32 = -1;
    let best: f32 = -Infinity;
    let j = 0;
    if (n4 > 0) {
      let bv = f32x4.splat(-Infinity);
      let bi = i32x4.splat(-1);
      let ci = i32x4(0, 1, 2, 3);
      const four = i32x4.splat(4);
      for (; j < n4; j += 4) {
        const v = v128.load(row + (<usize>j << 2));
        const gt = f32x4.gt(v, bv);
        bv = v128.bitselect(v, bv, gt);
        bi = v128.bitselect(ci, bi, gt);
        ci = i32x4.add(ci, four);
      }
      // lanes: largest value, smallest index among equals
      for (let l = 0; l < 4; l++) {
        const v = l == 0 ? f32x4.extract_lane(bv, 0) : l == 1 ? f32x4.extract_lane(bv, 1) : l == 2 ? f32x4.extract_lane(bv, 2) : f32x4.extract_lane(bv, 3);
        const i = l == 0 ? i32x4.extract_lane(bi, 0) : l == 1 ? i32x4.extract_lane(bi, 1) : l == 2 ? i32x4.extract_lane(bi, 2) : i32x4.extract_lane(bi, 3);
        if (i >= 0 && (bestI < 0 || v > best || (v == best && i < bestI))) {
          best = v;
          bestI = i;
        }
      }
    }
    for (; j < n; j++) {
      const v = load<f32>(row + (<usize>j << 2));
      if (v > best || (v == best && bestI < 0)) {
        best = v;
        bestI = j;
      }
    }
    if (bestI < 0 || best == -Infinity) {
      // nothing above -Infinity: the first -Infinity, else (all NaN or empty) 0
      bestI = 0;
      for (let i = 0; i < n; i++) {
        if (load<f32>(row + (<usize>i << 2)) == -Infinity) {
          bestI = i;
          break;
        }
      }
    }
    store<i32>(out + (<usize>r << 2), bestI);
  }
}

// For rows [rowStart, rowEnd): out[2r] = m = max_j x[r, j] (f64),
// out[2r+1] = sum_j exp(x[r, j] - m) accumulated in f64 (exp in f32, ~1-2 ulp).
// log-sum-exp = m + log(out[2r+1]).
export function rowMaxSumExp(x: usize, n: i32, ld: i32, out: usize, rowStart: i32, rowEnd: i32): void {
  setExpConstants(<f32>n * 0.0 + 1.0);
  const n4 = n & ~3;
  for (let r = rowStart; r < rowEnd; r++) {
    const row = x + (<usize>r * <usize>ld << 2);
    let mv = f32x4.splat(-Infinity);
    let j = 0;
    for (; j < n4; j += 4) mv = f32x4.max(mv, v128.load(row + (<usize>j << 2)));
    let m = max(max(f32x4.extract_lane(mv, 0), f32x4.extract_lane(mv, 1)),
      max(f32x4.extract_lane(mv, 2), f32x4.extract_lane(mv, 3)));
    for (; j < n; j++) m = max(m, load<f32>(row + (<usize>j << 2)));
    const ms = f32x4.splat(m);
    let s2 = f64x2.splat(0);
    j = 0;
    for (; j < n4; j += 4) {
      const e = expv(f32x4.sub(v128.load(row + (<usize>j << 2)), ms));
      s2 = f64x2.add(s2, f64x2.add(f64x2.promote_low_f32x4(e),
        f64x2.promote_low_f32x4(v128.shuffle<i32>(e, e, 2, 3, 2, 3))));
    }
    let s = f64x2.extract_lane(s2, 0) + f64x2.extract_lane(s2, 1);
    for (; j < n; j++) s += <f64>exps(load<f32>(row + (<usize>j << 2)) - m);
    store<f64>(out + (<usize>r << 4), <f64>m);
    store<f64>(out + (<usize>r << 4), s, 8);
  }
}

// Gradient of a weighted cross-entropy, for rows [rowStart, rowEnd):
//   out[r, j] = coef[r] softmax(x[r])[j] - (j == target[r] ? coef[r] : 0)
// = d/dx[r] of coef[r] (logsumexp(x[r]) - x[r, target[r]]). ms holds the
// (max, sum exp) f64 pairs rowMaxSumExp wrote for the same rows; coef is f32
// per row, target i32 per row (< 0: no one-hot term). Row r of x at x + r ld
// floats, of out at out + r ldOut floats; out may alias x.
export function crossEntropyGradRows(
  x: usize, n: i32, ld: i32, ms: usize, coef: usize, target: usize, out: usize, ldOut: i32,
  rowStart: i32, rowEnd: i32,
): void {
  setExpConstants(<f32>n * 0.0 + 1.0);
  const n4 = n & ~3;
  for (let r = rowStart; r < rowEnd; r++) {
    const row = x + (<usize>r * <usize>ld << 2);
    const orow = out + (<usize>r * <usize>ldOut << 2);
    const m = <f32>load<f64>(ms + (<usize>r << 4));
    const c = load<f32>(coef + (<usize>r << 2));
    const k = <f32>(<f64>c / load<f64>(ms + (<usize>r << 4), 8));
    const mv = f32x4.splat(m), kv = f32x4.splat(k);
    let j = 0;
    for (; j < n4; j += 4) {
      const o = <usize>j << 2;
      v128.store(orow + o, f32x4.mul(expv(f32x4.sub(v128.load(row + o), mv)), kv));
    }
    for (; j < n; j++) {
      const o = <usize>j << 2;
      store<f32>(orow + o, exps(load<f32>(row + o) - m) * k);
    }
    const t = load<i32>(target + (<usize>r << 2));
    if (t >= 0 && t < n) {
      const o = <usize>t << 2;
      store<f32>(orow + o, load<f32>(orow + o) - c);
    }
  }
}
