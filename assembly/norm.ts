// LayerNorm over the last axis, TransformerLens semantics:
//   centred = x - mean(x); scale = sqrt(mean(centred^2) + eps)
//   out = centred / scale (* gamma + beta when given)
// Mean and variance are accumulated in f64 (two passes), and each output is
// computed in f64 (multiplying by the f64 reciprocal of the scale) and rounded
// once to f32.

// @ts-ignore: decorator
@inline
function lo2(v: v128): v128 { return f64x2.promote_low_f32x4(v); }
// @ts-ignore: decorator
@inline
function hi2(v: v128): v128 { return f64x2.promote_low_f32x4(v128.shuffle<i32>(v, v, 2, 3, 2, 3)); }

// x, out: rows x d floats (may alias). gamma, beta, scale: 0 or pointers.
export function layerNorm(
  x: usize, out: usize, rows: i32, d: i32, eps: f64,
  gamma: usize, beta: usize, scale: usize, rowStart: i32, rowEnd: i32,
): void {
  const d4 = d & ~3;
  for (let r = rowStart; r < rowEnd; r++) {
    const xr = x + (<usize>r * <usize>d << 2);
    const or = out + (<usize>r * <usize>d << 2);
    // pass 1: mean
    let s2 = f64x2.splat(0);
    let j = 0;
    for (; j < d4; j += 4) {
      const v = v128.load(xr + (<usize>j << 2));
      s2 = f64x2.add(s2, f64x2.add(lo2(v), hi2(v)));
    }
    let sum = f64x2.extract_lane(s2, 0) + f64x2.extract_lane(s2, 1);
    for (; j < d; j++) sum += <f64>load<f32>(xr + (<usize>j << 2));
    const mean = sum / <f64>d;
    // pass 2: variance of the centred values
    const m2 = f64x2.splat(mean);
    s2 = f64x2.splat(0);
    j = 0;
    for (; j < d4; j += 4) {
      const v = v128.load(xr + (<usize>j << 2));
      const a = f64x2.sub(lo2(v), m2);
      const b = f64x2.sub(hi2(v), m2);
      s2 = f64x2.add(s2, f64x2.add(f64x2.mul(a, a), f64x2.mul(b, b)));
    }
    let ss = f64x2.extract_lane(s2, 0) + f64x2.extract_lane(s2, 1);
    for (; j < d; j++) {
      const c = <f64>load<f32>(xr + (<usize>j << 2)) - mean;
      ss += c * c;
    }
    const sc = Math.sqrt(ss / <f64>d + eps);
    if (scale) store<f32>(scale + (<usize>r << 2), <f32>sc);
    // multiply by 1/scale in f64 (error ~1e-16, far below the final f32 rounding)
    const rs: f64 = 1.0 / sc;
    const inv = f64x2.splat(rs);
    j = 0;
    if (gamma) {
      for (; j < d4; j += 4) {
        const v = v128.load(xr + (<usize>j << 2));
        const g = v128.load(gamma + (<usize>j << 2));
        let a = f64x2.mul(f64x2.mul(f64x2.sub(lo2(v), m2), inv), lo2(g));
        let b = f64x2.mul(f64x2.mul(f64x2.sub(hi2(v), m2), inv), hi2(g));
        if (beta) {
          const bt = v128.load(beta + (<usize>j << 2));
          a = f64x2.add(a, lo2(bt));
          b = f64x2.add(b, hi2(bt));
        }
        v128.store(or + (<usize>j << 2), v128.shuffle<i32>(
          f32x4.demote_f64x2_zero(a), f32x4.demote_f64x2_zero(b), 0, 1, 4, 5));
      }
      for (; j < d; j++) {
        let y = (<f64>load<f32>(xr + (<usize>j << 2)) - mean) * rs * <f64>load<f32>(gamma + (<usize>j << 2));
        if (beta) y += <f64>load<f32>(beta + (<usize>j << 2));
        store<f32>(or + (<usize>j << 2), <f32>y);
      }
    } else {
      for (; j < d4; j += 4) {
        const v = v128.load(xr + (<usize>j << 2));
        let a = f64x2.mul(f64x2.sub(lo2(v), m2), inv);
        let b = f64x2.mul(f64x2.sub(hi2(v), m2), inv);
        if (beta) {
          const bt = v128.load(beta + (<usize>j << 2));
          a = f64x2.add(a, lo2(bt));
          b = f64x2.add(b, hi2(bt));
        }
        v128.store(or + (<usize>j << 2), v128.shuffle<i32>(
          f32x4.demote_f64x2_zero(a), f32x4.demote_f64x2_zero(b), 0, 1, 4, 5));
      }
      for (; j < d; j++) {
        let y = (<f64>load<f32>(xr + (<usize>j << 2)) - mean) * rs;
        if (beta) y += <f64>load<f32>(beta + (<usize>j << 2));
        store<f32>(or + (<usize>j << 2), <f32>y);
      }
    }
  }
}

// RMSNorm over the last axis, TransformerLens semantics (RMSNorm / RMSNormPre
// before their weight):
//   scale = sqrt(mean(x^2) + eps); out = x / scale
// The mean of squares is accumulated in f64 and each output computed in f64
// (times the f64 reciprocal of the scale) and rounded once to f32, as in
// layerNorm. x, out: rows x d floats (may alias); scale: 0 or rows floats.
export function rmsNorm(
  x: usize, out: usize, rows: i32, d: i32, eps: f64, scale: usize, rowStart: i32, rowEnd: i32,
): void {
  const d4 = d & ~3;
  for (let r = rowStart; r < rowEnd; r++) {
    const xr = x + (<usize>r * <usize>d << 2);
    const or = out + (<usize>r * <usize>d << 2);
    let s2 = f64x2.splat(0);
    let j = 0;
    for (; j < d4; j += 4) {
      const v = v128.load(xr + (<usize>j << 2));
      const a = lo2(v), b = hi2(v);
      s2 = f64x2.add(s2, f64x2.add(f64x2.mul(a, a), f64x2.mul(b, b)));
    }
    let ss = f64x2.extract_lane(s2, 0) + f64x2.extract_lane(s2, 1);
    for (; j < d; j++) {
      const c = <f64>load<f32>(xr + (<usize>j << 2));
      ss += c * c;
    }
    const sc = Math.sqrt(ss / <f64>d + eps);
    if (scale) store<f32>(scale + (<usize>r << 2), <f32>sc);
    const rs: f64 = 1.0 / sc;
    const inv = f64x2.splat(rs);
    j = 0;
    for (; j < d4; j += 4) {
      const v = v128.load(xr + (<usize>j << 2));
      v128.store(or + (<usize>j << 2), v128.shuffle<i32>(
        f32x4.demote_f64x2_zero(f64x2.mul(lo2(v), inv)),
        f32x4.demote_f64x2_zero(f64x2.mul(hi2(v), inv)), 0, 1, 4, 5));
    }
    for (; j < d; j++) {
      store<f32>(or + (<usize>j << 2), <f32>(<f64>load<f32>(xr + (<usize>j << 2)) * rs));
    }
  }
}

// A normalization's weight and bias, applied after its hook_normalized (as
// TransformerLens's LayerNorm and RMSNorm do): out = x * w (+ b) per row of d
// floats, in f64 and rounded once. b: 0 for none. x and out may alias.
export function affineRows(
  x: usize, out: usize, d: i32, w: usize, b: usize, rowStart: i32, rowEnd: i32,
): void {
  const d4 = d & ~3;
  for (let r = rowStart; r < rowEnd; r++) {
    const xr = x + (<usize>r * <usize>d << 2);
    const or = out + (<usize>r * <usize>d << 2);
    let j = 0;
    for (; j < d4; j += 4) {
      const o = <usize>j << 2;
      const v = v128.load(xr + o), g = v128.load(w + o);
      let a = f64x2.mul(lo2(v), lo2(g));
      let c = f64x2.mul(hi2(v), hi2(g));
      if (b) {
        const bt = v128.load(b + o);
        a = f64x2.add(a, lo2(bt));
        c = f64x2.add(c, hi2(bt));
      }
      v128.store(or + o, v128.shuffle<i32>(
        f32x4.demote_f64x2_zero(a), f32x4.demote_f64x2_zero(c), 0, 1, 4, 5));
    }
    for (; j < d; j++) {
      const o = <usize>j << 2;
      let y = <f64>load<f32>(xr + o) * <f64>load<f32>(w + o);
      if (b) y += <f64>load<f32>(b + o);
      store<f32>(or + o, <f32>y);
    }
  }
}
