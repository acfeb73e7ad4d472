// The backward pass of causal attention, for one sequence of T positions
// (every query computed: qStart = 0), head by head, as three steps that mirror
// the forward's three-step path (attentionScores -> softmaxRows ->
// attentionApply) backwards:
//
//   attentionGradPattern: dP[h, i, j] = dz_i . v_j (hook_pattern's gradient)
//                         and dv_j = sum_i P[h, i, j] dz_i
//   softmaxBackwardRows:  dS[h, i, j] = P[h, i, j] (dP[h, i, j] - sum_k P dP)
//                         (hook_attn_scores's gradient)
//   attentionGradQK:      dq_i = scale sum_j dS[i, j] k_j,
//                         dk_j = scale sum_i dS[i, j] q_i
//
// Layouts are the forward's: rows of q, k, v (and of dq, dk, dv) `stride`
// floats apart, head h in columns [h dHead, (h + 1) dHead); patterns and their
// gradients [nHeads, T, T]. Keys before kStart are masked (left padding).
//
// Grouped-query attention: query head h reads key/value head h / group. The
// steps that write dk or dv take key/value heads [headStart, headEnd), each
// with its `group` query heads, so no two threads write the same columns and
// a key/value head's sum runs over its query heads in order. Every output is
// computed by one thread in a fixed order, so any split is bit-identical.

// Sliding windows (window > 0): query i sees keys [max(kStart, i - window + 1),
// i], so a key j gets gradient from queries [j, j + window). Softcapping
// (softcap > 0): attentionGradQK first turns dS, the gradient at the capped
// scores c = cap tanh(s / cap), into the gradient at s = (q.k) scale,
// dS (1 - tanh(s / cap)^2), recomputing s from q and k.

import { scoreRow, applyRow, firstKey } from "./attention";
import { madd } from "./simd";

// out[0..dHead) (+)= sum_{t < n} p[t pStrideB] x_t, x_t = x + t xStrideB:
// a column of a pattern (or of its gradient) times rows, in t order per
// element (the transposed counterpart of applyRow).
function applyCol(
  p: usize, pStrideB: usize, x: usize, xStrideB: usize, dHead: i32, n: i32,
  out: usize, accumulate: bool,
): void {
  let d = 0;
  for (; d + 16 <= dHead; d += 16) {
    const o = <usize>d << 2;
    let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
    if (accumulate) {
      a0 = v128.load(out + o, 0); a1 = v128.load(out + o, 16);
      a2 = v128.load(out + o, 32); a3 = v128.load(out + o, 48);
    }
    let xr = x + o, pr = p;
    for (let t = 0; t < n; t++) {
      const s = v128.load32_splat(pr);
      a0 = madd(s, v128.load(xr, 0), a0);
      a1 = madd(s, v128.load(xr, 16), a1);
      a2 = madd(s, v128.load(xr, 32), a2);
      a3 = madd(s, v128.load(xr, 48), a3);
      xr += xStrideB;
      pr += pStrideB;
    }
    v128.store(out + o, a0, 0); v128.store(out + o, a1, 16);
    v128.store(out + o, a2, 32); v128.store(out + o, a3, 48);
  }
  for (; d + 4 <= dHead; d += 4) {
    const o = <usize>d << 2;
    let a0 = accumulate ? v128.load(out + o) : f32x4.splat(0);
    let xr = x + o, pr = p;
    for (let t = 0; t < n; t++) {
      a0 = madd(v128.load32_splat(pr), v128.load(xr), a0);
      xr += xStrideB;
      pr += pStrideB;
    }
    v128.store(out + o, a0);
  }
  for (; d < dHead; d++) {
    const o = <usize>d << 2;
    let a: f32 = accumulate ? load<f32>(out + o) : 0;
    let xr = x + o, pr = p;
    for (let t = 0; t < n; t++) {
      a += load<f32>(pr) * load<f32>(xr);
      xr += xStrideB;
      pr += pStrideB;
    }
    store<f32>(out + o, a);
  }
}

// out[0..n) *= s
function scaleRow(out: usize, n: i32, s: f32): void {
  const sv = f32x4.splat(s);
  let d = 0;
  for (; d + 4 <= n; d += 4) {
    const o = <usize>d << 2;
    v128.store(out + o, f32x4.mul(v128.load(out + o), sv));
  }
  for (; d < n; d++) {
    const o = <usize>d << 2;
    store<f32>(out + o, load<f32>(out + o) * s);
  }
}

// dP rows of every query head of key/value heads [headStart, headEnd), and
// their dv. fullRows != 0: every key j < T (the gradient TransformerLens's
// hook_pattern sees, masked entries included); 0: the keys each query sees,
// [kStart, i], other entries 0 (enough for the softmax step). causal != 0:
// dv_j sums queries i >= max(j, kStart) (the pattern is zero elsewhere);
// 0: every query (a pattern a forward hook changed is used as is).
export function attentionGradPattern(
  dz: usize, dzStride: i32, v: usize, stride: i32, pattern: usize, dPattern: usize,
  dv: usize, dStride: i32, T: i32, dHead: i32, headStart: i32, headEnd: i32,
  group: i32, kStart: i32, causal: i32, fullRows: i32, window: i32,
): void {
  const sB = <usize>stride << 2, zB = <usize>dzStride << 2, dB = <usize>dStride << 2;
  const rowB = <usize>T << 2;
  for (let g = headStart; g < headEnd; g++) {
    const vc = <usize>(g * dHead) << 2;
    for (let hh = 0; hh < group; hh++) {
      const h = g * group + hh;
      const hc = <usize>(h * dHead) << 2;
      for (let i = 0; i < T; i++) {
        const row = dPattern + (<usize>(h * T + i) * rowB);
        const lo = fullRows ? 0 : firstKey(i, kStart, window);
        const hi = fullRows ? T : i + 1;
        if (hi <= lo) {
          memory.fill(row, 0, rowB);
          continue;
        }
        scoreRow(dz + <usize>i * zB + hc, v + vc + <usize>lo * sB, sB, dHead, hi - lo, 1.0, row + (<usize>lo << 2));
        if (!fullRows) {
          memory.fill(row, 0, <usize>lo << 2);
          memory.fill(row + (<usize>hi << 2), 0, <usize>(T - hi) << 2);
        }
      }
    }
    for (let j = 0; j < T; j++) {
      const out = dv + <usize>j * dB + vc;
      const i0 = causal ? max(j, kStart) : 0;
      const i1 = causal && window > 0 ? min(T, j + window) : T;
      if ((causal && j < kStart) || i0 >= i1) {
        memory.fill(out, 0, <usize>dHead << 2);
        continue;
      }
      for (let hh = 0; hh < group; hh++) {
        const h = g * group + hh;
        const p = pattern + <usize>(h * T + i0) * rowB + (<usize>j << 2);
        applyCol(p, rowB, dz + <usize>i0 * zB + (<usize>(h * dHead) << 2), zB, dHead, i1 - i0, out, hh > 0);
      }
    }
  }
}

// dS = P (dP - sum_k P dP) over whole rows, in f64 (each element rounded
// once), for query heads [headStart, headEnd); dScores may alias dPattern.
export function softmaxBackwardRows(
  pattern: usize, dPattern: usize, dScores: usize, T: i32, headStart: i32, headEnd: i32,
): void {
  const T4 = T & ~3;
  for (let h = headStart; h < headEnd; h++) {
    for (let i = 0; i < T; i++) {
      const off = <usize>(h * T + i) * <usize>T << 2;
      const p = pattern + off, dp = dPattern + off, ds = dScores + off;
      let acc = f64x2.splat(0);
      let j = 0;
      for (; j < T4; j += 4) {
        const o = <usize>j << 2;
        const pv = v128.load(p + o), gv = v128.load(dp + o);
        acc = f64x2.add(acc, f64x2.add(f64x2.mul(lo2(pv), lo2(gv)), f64x2.mul(hi2(pv), hi2(gv))));
      }
      let s = f64x2.extract_lane(acc, 0) + f64x2.extract_lane(acc, 1);
      for (; j < T; j++) {
        const o = <usize>j << 2;
        s += <f64>load<f32>(p + o) * <f64>load<f32>(dp + o);
      }
      const sv = f64x2.splat(s);
      j = 0;
      for (; j < T4; j += 4) {
        const o = <usize>j << 2;
        const pv = v128.load(p + o), gv = v128.load(dp + o);
        const a = f64x2.mul(lo2(pv), f64x2.sub(lo2(gv), sv));
        const b = f64x2.mul(hi2(pv), f64x2.sub(hi2(gv), sv));
        v128.store(ds + o, v128.shuffle<i32>(
          f32x4.demote_f64x2_zero(a), f32x4.demote_f64x2_zero(b), 0, 1, 4, 5));
      }
      for (; j < T; j++) {
        const o = <usize>j << 2;
        store<f32>(ds + o, <f32>(<f64>load<f32>(p + o) * (<f64>load<f32>(dp + o) - s)));
      }
    }
  }
}

// @ts-ignore: decorator
@inline
function lo2(v: v128): v128 { return f64x2.promote_low_f32x4(v); }
// @ts-ignore: decorator
@inline
function hi2(v: v128): v128 { return f64x2.promote_low_f32x4(v128.shuffle<i32>(v, v, 2, 3, 2, 3)); }

// dq of every query head of key/value heads [headStart, headEnd) and their
// dk, from dS over each query's keys [kStart, i] (entries above the diagonal
// were masked to -inf in the forward: no gradient flows through them).
export function attentionGradQK(
  dScores: usize, q: usize, k: usize, stride: i32, dq: usize, dk: usize, dStride: i32,
  T: i32, dHead: i32, scale: f32, headStart: i32, headEnd: i32, group: i32, kStart: i32,
  window: i32, softcap: f32, scratch: usize,
): void {
  const sB = <usize>stride << 2, dB = <usize>dStride << 2;
  const rowB = <usize>T << 2;
  if (softcap > 0) {
    // dS at the capped scores -> dS at the raw scores, in place (this thread's heads only).
    const c = <f64>softcap;
    for (let g = headStart; g < headEnd; g++) {
      const kc = <usize>(g * dHead) << 2;
      for (let hh = 0; hh < group; hh++) {
        const h = g * group + hh;
        const hc = <usize>(h * dHead) << 2;
        for (let i = 0; i < T; i++) {
          const lo = firstKey(i, kStart, window);
          if (i < lo) continue;
          const row = dScores + <usize>(h * T + i) * rowB + (<usize>lo << 2);
          scoreRow(q + <usize>i * sB + hc, k + kc + <usize>lo * sB, sB, dHead, i + 1 - lo, scale, scratch);
          for (let j = 0; j <= i - lo; j++) {
            const t = Math.tanh(<f64>load<f32>(scratch + (<usize>j << 2)) / c);
            const o = row + (<usize>j << 2);
            store<f32>(o, <f32>(<f64>load<f32>(o) * (1.0 - t * t)));
          }
        }
      }
    }
  }
  for (let g = headStart; g < headEnd; g++) {
    const kc = <usize>(g * dHead) << 2;
    for (let hh = 0; hh < group; hh++) {
      const h = g * group + hh;
      const hc = <usize>(h * dHead) << 2;
      for (let i = 0; i < T; i++) {
        const out = dq + <usize>i * dB + hc;
        const lo = firstKey(i, kStart, window);
        if (i < lo) {
          memory.fill(out, 0, <usize>dHead << 2);
          continue;
        }
        const row = dScores + <usize>(h * T + i) * rowB + (<usize>lo << 2);
        applyRow(row, k + kc + <usize>lo * sB, sB, dHead, i + 1 - lo, out);
        scaleRow(out, dHead, scale);
      }
    }
    for (let j = 0; j < T; j++) {
      const out = dk + <usize>j * dB + kc;
      const i1 = window > 0 ? min(T, j + window) : T;
      if (j < kStart) {
        memory.fill(out, 0, <usize>dHead << 2);
        continue;
      }
      for (let hh = 0; hh < group; hh++) {
        const h = g * group + hh;
        const p = dScores + <usize>(h * T + j) * rowB + (<usize>j << 2);
        applyCol(p, rowB, q + <usize>j * sB + (<usize>(h * dHead) << 2), sB, dHead, i1 - j, out, hh > 0);
      }
      scaleRow(out, dHead, scale);
    }
  }
}
