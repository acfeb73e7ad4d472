// Row reductions over f32 matrices [rows, n]: log-sum-exp (for log-softmax) and argmax.
// Rows [start, end) only, so work splits by rows across threads.

import { expv, exps } from "./simd";

// Partial sums of exp run in f32x4 over blocks of this many elements, then go into an f64
// total: the f32 error stays that of a short sum even for a 50257-wide vocabulary.
const BLOCK: i32 = 256;

// out[r] (f64) = log(sum_j exp(x[r, j])), computed as max + log(sum exp(x - max)).
export function logSumExpRows(x: usize, n: i32, out: usize, start: i32, end: i32): void {
  for (let r = start; r < end; r++) {
    const row = x + (<usize>r * <usize>n << 2);
    let mv = f32x4.splat(-Infinity);
    let j = 0;
    for (; j + 4 <= n; j += 4) mv = f32x4.max(mv, v128.load(row + (<usize>j << 2)));
    let m = max(max(f32x4.extract_lane(mv, 0), f32x4.extract_lane(mv, 1)),
      max(f32x4.extract_lane(mv, 2), f32x4.extract_lane(mv, 3)));
    for (; j < n; j++) m = max(m, load<f32>(row + (<usize>j << 2)));
    const ms = f32x4.splat(m);
    let total: f64 = 0;
    j = 0;
    while (j + 4 <= n) {
      const stop = min(j + BLOCK, n - (n - j) % 4);
      let acc = f32x4.splat(0);
      for (; j < stop; j += 4) acc = f32x4.add(acc, expv(f32x4.sub(v128.load(row + (<usize>j << 2)), ms)));
      total += <f64>f32x4.extract_lane(acc, 0) + <f64>f32x4.extract_lane(acc, 1) +
        <f64>f32x4.extract_lane(acc, 2) + <f64>f32x4.extract_lane(acc, 3);
    }
    for (; j < n; j++) total += <f64>exps(load<f32>(row + (<usize>j << 2)) - m);
    store<f64>(out + (<usize>r << 3), <f64>m + Math.log(total));
  }
}

// out[r] (i32) = the first index of the row's maximum (torch.argmax's tie rule).
export function argmaxRows(x: usize, n: i32, out: usize, start: i32, end: i32): void {
  for (let r = start; r < end; r++) {
    const row = x + (<usize>r * <usize>n << 2);
    let best = f32x4.splat(-Infinity);
    let bestIdx = i32x4(0, 1, 2, 3);
    let idx = i32x4(0, 1, 2, 3);
    const four = i32x4.splat(4);
    let j = 0;
    // Each lane keeps its first strict maximum, so lane winners are first occurrences.
    for (; j + 4 <= n; j += 4) {
      const v = v128.load(row + (<usize>j << 2));
      const gt = f32x4.gt(v, best);
      best = v128.bitselect(v, best, gt);
      bestIdx = v128.bitselect(idx, bestIdx, gt);
      idx = i32x4.add(idx, four);
    }
    let m: f32 = -Infinity;
    let mi: i32 = 0;
    if (j > 0) {
      for (let lane = 0; lane < 4; lane++) {
        const v = f32x4.extract_lane(best, 0);
        const i = i32x4.extract_lane(bestIdx, 0);
        if (v > m || (v == m && i < mi)) { m = v; mi = i; }
        best = v128.shuffle<f32>(best, best, 1, 2, 3, 0);
        bestIdx = v128.shuffle<i32>(bestIdx, bestIdx, 1, 2, 3, 0);
      }
    } else {
      m = load<f32>(row);
    }
    for (; j < n; j++) {
      const v = load<f32>(row + (<usize>j << 2));
      if (v > m) { m = v; mi = j; }
    }
    store<i32>(out + (<usize>r << 2), mi);
  }
}
