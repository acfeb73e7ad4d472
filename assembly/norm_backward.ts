// The backward pass of LayerNorm (center != 0) and RMSNorm (center == 0),
// TransformerLens semantics, per row of d floats:
//   c = x - mean(x) (LayerNorm) or x (RMSNorm); s = sqrt(mean(c^2) + eps)
//   y = (c / s) (* gamma) (+ beta)            (s is hook_scale, y hook_normalized)
// Given g = dL/dy, with gw = g * gamma (or g):
//   dL/ds = -sum_j gw_j c_j / s^2             (hook_scale's gradient)
//   dc_j  = gw_j / s + dL/ds * c_j / (d s)    (s depends on c)
//   dx    = dc - mean(dc) (LayerNorm) or dc (RMSNorm)
// dL/ds may instead be given (a backward hook replaced it); either way it is
// used rounded to f32, so the two give the same dx. The mean and s are
// recomputed from x exactly as the forward kernel computes them (f64, the same
// summation order); everything else is f64 too, rounded once to f32.

// @ts-ignore: decorator
@inline
function lo2(v: v128): v128 { return f64x2.promote_low_f32x4(v); }
// @ts-ignore: decorator
@inline
function hi2(v: v128): v128 { return f64x2.promote_low_f32x4(v128.shuffle<i32>(v, v, 2, 3, 2, 3)); }

// x, g: rows x d floats. gamma: 0 or d floats. dx: 0 (only dScale) or rows x d
// floats (accumulate != 0: added to). dScale: 0 or rows floats, read when
// scaleGiven != 0, else written (when non-zero).
export function normBackward(
  x: usize, g: usize, gamma: usize, dx: usize, dScale: usize, rows: i32, d: i32, eps: f64,
  center: i32, scaleGiven: i32, accumulate: i32, rowStart: i32, rowEnd: i32,
): void {
  const d4 = d & ~3;
  const fd = <f64>d;
  for (let r = rowStart; r < rowEnd; r++) {
    const xr = x + (<usize>r * <usize>d << 2);
    const gr = g + (<usize>r * <usize>d << 2);
    // the forward's mean and scale
    let mean: f64 = 0;
    let s2 = f64x2.splat(0);
    let j = 0;
    if (center) {
      for (; j < d4; j += 4) {
        const v = v128.load(xr + (<usize>j << 2));
        s2 = f64x2.add(s2, f64x2.add(lo2(v), hi2(v)));
      }
      let sum = f64x2.extract_lane(s2, 0) + f64x2.extract_lane(s2, 1);
      for (; j < d; j++) sum += <f64>load<f32>(xr + (<usize>j << 2));
      mean = sum / fd;
    }
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
    const sc = Math.sqrt(ss / fd + eps);
    // sums of gw, gw c and c
    let sg: f64 = 0, sgc: f64 = 0, sumc: f64 = 0;
    for (j = 0; j < d; j++) {
      const o = <usize>j << 2;
      let gw = <f64>load<f32>(gr + o);
      if (gamma) gw *= <f64>load<f32>(gamma + o);
      const c = <f64>load<f32>(xr + o) - mean;
      sg += gw;
      sgc += gw * c;
      sumc += c;
    }
    let ds: f64;
    if (scaleGiven) {
      ds = <f64>load<f32>(dScale + (<usize>r << 2));
    } else {
      // rounded to f32 as if it had been stored and given back, so that reading (or hooking)
      // the scale's gradient never changes dx
      ds = <f64>(<f32>(-sgc / (sc * sc)));
      if (dScale) store<f32>(dScale + (<usize>r << 2), <f32>ds);
    }
    if (!dx) continue;
    // dx_j = gw_j A + c_j B - C
    const A = 1.0 / sc;
    const B = ds * A / fd;
    const C = center ? (sg * A + B * sumc) / fd : 0.0;
    const dr = dx + (<usize>r * <usize>d << 2);
    for (j = 0; j < d; j++) {
      const o = <usize>j << 2;
      let gw = <f64>load<f32>(gr + o);
      if (gamma) gw *= <f64>load<f32>(gamma + o);
      let y = gw * A + (<f64>load<f32>(xr + o) - mean) * B - C;
      if (accumulate) y += <f64>load<f32>(dr + o);
      store<f32>(dr + o, <f32>y);
    }
  }
}
