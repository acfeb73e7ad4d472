// Causal self-attention for one sequence, head by head.
//
// Query i (0..nQ-1) sits at absolute position qStart + i and sees keys
// j = 0..qStart+i; keys beyond are never read. Rows have `stride` floats; head
// h uses columns [h*dHead, (h+1)*dHead). Patterns and scores are laid out
// [nHeads, nQ, nK] with nK = qStart + nQ, indexed by absolute head.
//
// Sliding windows (Gemma): with window > 0, query i sees only keys
// j > qStart + i - window (itself and the window - 1 keys before it), on top of
// the causal and padding masks. Softcapping (Gemma 2): with softcap > 0, each
// score s = (q.k) scale becomes softcap tanh(s / softcap) (in f64, rounded
// once) before the mask and the softmax.
//
// The fused `attention` and the three-step path (attentionScores ->
// softmaxRows -> attentionApply) call the same row functions, so they
// produce bit-identical z.

import { madd, hsum, expv, exps, setExpConstants } from "./simd";

// scores[j] = dot(q, k_j) * scale for j < nk.
// dot: 4-lane madd over d in chunks of 4, horizontal sum (l0+l1)+(l2+l3),
// then the scalar tail. Keys are taken four at a time (four independent
// accumulator chains, so the multiply-add latency overlaps); each key's
// arithmetic is the same as in the one-key loop.
export function scoreRow(q: usize, k: usize, strideB: usize, dHead: i32, nk: i32, scale: f32, out: usize): void {
  const d4 = dHead & ~3;
  let kr = k;
  let j = 0;
  for (; j + 4 <= nk; j += 4) {
    const k1 = kr + strideB, k2 = k1 + strideB, k3 = k2 + strideB;
    let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
    let d = 0;
    for (; d < d4; d += 4) {
      const o = <usize>d << 2;
      const qv = v128.load(q + o);
      a0 = madd(qv, v128.load(kr + o), a0);
      a1 = madd(qv, v128.load(k1 + o), a1);
      a2 = madd(qv, v128.load(k2 + o), a2);
      a3 = madd(qv, v128.load(k3 + o), a3);
    }
    let s0 = hsum(a0), s1 = hsum(a1), s2 = hsum(a2), s3 = hsum(a3);
    for (; d < dHead; d++) {
      const o = <usize>d << 2;
      const qs = load<f32>(q + o);
      s0 += qs * load<f32>(kr + o);
      s1 += qs * load<f32>(k1 + o);
      s2 += qs * load<f32>(k2 + o);
      s3 += qs * load<f32>(k3 + o);
    }
    const op = out + (<usize>j << 2);
    store<f32>(op, s0 * scale, 0);
    store<f32>(op, s1 * scale, 4);
    store<f32>(op, s2 * scale, 8);
    store<f32>(op, s3 * scale, 12);
    kr = k3 + strideB;
  }
  for (; j < nk; j++) {
    let acc = f32x4.splat(0);
    let d = 0;
    for (; d < d4; d += 4) {
      const o = <usize>d << 2;
      acc = madd(v128.load(q + o), v128.load(kr + o), acc);
    }
    let s = hsum(acc);
    for (; d < dHead; d++) {
      const o = <usize>d << 2;
      s += load<f32>(q + o) * load<f32>(kr + o);
    }
    store<f32>(out + (<usize>j << 2), s * scale);
    kr += strideB;
  }
}

// dst[j] = softmax(src[0..nk))[j]; src and dst may alias.
function softmaxRow(src: usize, dst: usize, nk: i32): void {
  const n4 = nk & ~3;
  let mx = f32x4.splat(-Infinity);
  let j = 0;
  for (; j < n4; j += 4) mx = f32x4.max(mx, v128.load(src + (<usize>j << 2)));
  let m = max(max(f32x4.extract_lane(mx, 0), f32x4.extract_lane(mx, 1)),
    max(f32x4.extract_lane(mx, 2), f32x4.extract_lane(mx, 3)));
  for (; j < nk; j++) m = max(m, load<f32>(src + (<usize>j << 2)));
  const mv = f32x4.splat(m);
  let sv = f32x4.splat(0);
  j = 0;
  for (; j < n4; j += 4) {
    const o = <usize>j << 2;
    const e = expv(f32x4.sub(v128.load(src + o), mv));
    v128.store(dst + o, e);
    sv = f32x4.add(sv, e);
  }
  let s = hsum(sv);
  for (; j < nk; j++) {
    const o = <usize>j << 2;
    const e = exps(load<f32>(src + o) - m);
    store<f32>(dst + o, e);
    s += e;
  }
  const ss = f32x4.splat(s);
  j = 0;
  for (; j < n4; j += 4) {
    const o = <usize>j << 2;
    v128.store(dst + o, f32x4.div(v128.load(dst + o), ss));
  }
  for (; j < nk; j++) {
    const o = <usize>j << 2;
    store<f32>(dst + o, load<f32>(dst + o) / s);
  }
}

// z[0..dHead) = sum_{j < nk} p[j] * v_j, accumulated in j order per element.
export function applyRow(p: usize, v: usize, strideB: usize, dHead: i32, nk: i32, z: usize): void {
  let d = 0;
  for (; d + 16 <= dHead; d += 16) {
    const o = <usize>d << 2;
    let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
    let vr = v + o;
    for (let j = 0; j < nk; j++) {
      const s = v128.load32_splat(p + (<usize>j << 2));
      a0 = madd(s, v128.load(vr, 0), a0);
      a1 = madd(s, v128.load(vr, 16), a1);
      a2 = madd(s, v128.load(vr, 32), a2);
      a3 = madd(s, v128.load(vr, 48), a3);
      vr += strideB;
    }
    v128.store(z + o, a0, 0); v128.store(z + o, a1, 16);
    v128.store(z + o, a2, 32); v128.store(z + o, a3, 48);
  }
  for (; d + 4 <= dHead; d += 4) {
    const o = <usize>d << 2;
    let a0 = f32x4.splat(0);
    let vr = v + o;
    for (let j = 0; j < nk; j++) {
      a0 = madd(v128.load32_splat(p + (<usize>j << 2)), v128.load(vr), a0);
      vr += strideB;
    }
    v128.store(z + o, a0);
  }
  for (; d < dHead; d++) {
    const o = <usize>d << 2;
    let a: f32 = 0;
    let vr = v + o;
    for (let j = 0; j < nk; j++) {
      a += load<f32>(p + (<usize>j << 2)) * load<f32>(vr);
      vr += strideB;
    }
    store<f32>(z + o, a);
  }
}

// First key query i (at absolute position qpos) sees: kStart, raised by a
// sliding window.
// @ts-ignore: decorator
@inline
export function firstKey(qpos: i32, kStart: i32, window: i32): i32 {
  return window > 0 ? max(kStart, qpos - window + 1) : kStart;
}

// x[0..n) = cap tanh(x / cap), in f64 and rounded once (Gemma 2's softcap).
export function capRow(x: usize, n: i32, cap: f32): void {
  const c = <f64>cap;
  for (let j = 0; j < n; j++) {
    const o = x + (<usize>j << 2);
    store<f32>(o, <f32>(c * Math.tanh(<f64>load<f32>(o) / c)));
  }
}

// Which keys query i sees: [kStart, qStart + i] (causal; keys before kStart
// are padding). A query with no key (qStart + i < kStart) gets a zero pattern
// row and z = 0, as TransformerLens does for fully masked rows.
//
// Grouped-query attention: query head h reads key/value head h / group (k and
// v point at the first key/value head's columns).

// Fused attention. pattern: 0, or [nHeads, nQ, nK] to receive the softmax
// (masked entries 0). scratch: at least nK floats (used when pattern == 0).
export function attention(
  q: usize, k: usize, v: usize, stride: i32, z: usize, zStride: i32,
  nQ: i32, qStart: i32, dHead: i32, scale: f32, pattern: usize,
  headStart: i32, headEnd: i32, scratch: usize, group: i32, kStart: i32,
  window: i32, softcap: f32,
): void {
  setExpConstants(<f32>nQ * 0.0 + 1.0);
  const nK = qStart + nQ;
  const sB = <usize>stride << 2;
  const zB = <usize>zStride << 2;
  for (let h = headStart; h < headEnd; h++) {
    const hc = <usize>(h * dHead) << 2;
    const kc = <usize>((h / group) * dHead) << 2;
    for (let i = 0; i < nQ; i++) {
      const nk = qStart + i + 1;
      const lo = firstKey(qStart + i, kStart, window);
      const k0 = <usize>lo * sB;
      const row: usize = pattern ? pattern + ((<usize>h * <usize>nQ + <usize>i) * <usize>nK << 2) : scratch;
      const zr = z + <usize>i * zB + hc;
      if (nk <= lo) {
        if (pattern) memory.fill(row, 0, <usize>nK << 2);
        memory.fill(zr, 0, <usize>dHead << 2);
        continue;
      }
      const seen = nk - lo;
      const r0 = row + (<usize>lo << 2);
      scoreRow(q + <usize>i * sB + hc, k + kc + k0, sB, dHead, seen, scale, r0);
      if (softcap > 0) capRow(r0, seen, softcap);
      softmaxRow(r0, r0, seen);
      if (pattern) {
        memory.fill(row, 0, <usize>lo << 2);
        memory.fill(row + (<usize>nk << 2), 0, <usize>(nK - nk) << 2);
      }
      applyRow(r0, v + kc + k0, sB, dHead, seen, zr);
    }
  }
}

// scores [nHeads, nQ, nK]: (q.k)*scale, masked entries -Infinity.
export function attentionScores(
  q: usize, k: usize, stride: i32, nQ: i32, qStart: i32, dHead: i32, scale: f32,
  scores: usize, headStart: i32, headEnd: i32, group: i32, kStart: i32,
  window: i32, softcap: f32,
): void {
  const nK = qStart + nQ;
  const sB = <usize>stride << 2;
  for (let h = headStart; h < headEnd; h++) {
    const hc = <usize>(h * dHead) << 2;
    const kc = <usize>((h / group) * dHead) << 2;
    for (let i = 0; i < nQ; i++) {
      const nk = qStart + i + 1;
      const lo = firstKey(qStart + i, kStart, window);
      const row = scores + ((<usize>h * <usize>nQ + <usize>i) * <usize>nK << 2);
      const first = min(lo, nk);
      for (let j = 0; j < first; j++) store<f32>(row + (<usize>j << 2), -Infinity);
      if (nk > lo) {
        const r0 = row + (<usize>lo << 2);
        scoreRow(q + <usize>i * sB + hc, k + kc + <usize>lo * sB, sB, dHead, nk - lo, scale, r0);
        if (softcap > 0) capRow(r0, nk - lo, softcap);
      }
      for (let j = nk; j < nK; j++) store<f32>(row + (<usize>j << 2), -Infinity);
    }
  }
}

// Pattern rows from score rows; scores and pattern may alias. causal != 0:
// softmax over the keys query i sees, [kStart, qStart + i], other entries 0.
// causal == 0: softmax over the whole row of nK scores (what a hook on the
// scores returned is used as is); a row with no finite score gives zeros.
export function softmaxRows(
  scores: usize, pattern: usize, nQ: i32, qStart: i32, headStart: i32, headEnd: i32,
  kStart: i32, causal: i32, window: i32,
): void {
  setExpConstants(<f32>nQ * 0.0 + 1.0);
  const nK = qStart + nQ;
  for (let h = headStart; h < headEnd; h++) {
    for (let i = 0; i < nQ; i++) {
      const off = (<usize>h * <usize>nQ + <usize>i) * <usize>nK << 2;
      const lo = causal ? firstKey(qStart + i, kStart, window) : 0;
      const hi = causal ? qStart + i + 1 : nK;
      if (hi <= lo || rowMax(scores + off + (<usize>lo << 2), hi - lo) == -Infinity) {
        memory.fill(pattern + off, 0, <usize>nK << 2);
        continue;
      }
      softmaxRow(scores + off + (<usize>lo << 2), pattern + off + (<usize>lo << 2), hi - lo);
      memory.fill(pattern + off, 0, <usize>lo << 2);
      memory.fill(pattern + off + (<usize>hi << 2), 0, <usize>(nK - hi) << 2);
    }
  }
}

// Largest of x[0..n) (-Infinity when all are; NaN is ignored by max's order).
function rowMax(x: usize, n: i32): f32 {
  let m: f32 = -Infinity;
  for (let j = 0; j < n; j++) m = max(m, load<f32>(x + (<usize>j << 2)));
  return m;
}

// z = pattern @ v per head. causal != 0: reads only keys [kStart, qStart + i];
// causal == 0: reads every key of the row (a hooked pattern is used as is).
export function attentionApply(
  pattern: usize, v: usize, stride: i32, z: usize, zStride: i32,
  nQ: i32, qStart: i32, dHead: i32, headStart: i32, headEnd: i32,
  group: i32, kStart: i32, causal: i32, window: i32,
): void {
  const nK = qStart + nQ;
  const sB = <usize>stride << 2;
  const zB = <usize>zStride << 2;
  for (let h = headStart; h < headEnd; h++) {
    const hc = <usize>(h * dHead) << 2;
    const kc = <usize>((h / group) * dHead) << 2;
    for (let i = 0; i < nQ; i++) {
      const lo = causal ? firstKey(qStart + i, kStart, window) : 0;
      const hi = causal ? qStart + i + 1 : nK;
      const row = pattern + ((<usize>h * <usize>nQ + <usize>i) * <usize>nK << 2);
      const zr = z + <usize>i * zB + hc;
      if (hi <= lo) {
        memory.fill(zr, 0, <usize>dHead << 2);
        continue;
      }
      applyRow(row + (<usize>lo << 2), v + kc + <usize>lo * sB, sB, dHead, hi - lo, zr);
    }
  }
}
