// Elementwise kernels: gelu_new and add.

import { expd } from "./simd";

// gelu_new(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
// Since 0.5 (1 + tanh(u)) = 1 / (1 + exp(-2u)), we compute x / (1 + exp(-2u))
// in f64: no cancellation for negative x, no loss of precision near 0, and a
// single rounding to f32 at the end (about 0.5 ulp).
const SQRT_2_OVER_PI: f64 = 0.7978845608028654;

// @ts-ignore: decorator
@inline
function gelu2(x: v128): v128 {
  const x3 = f64x2.mul(f64x2.mul(x, x), x);
  const u = f64x2.mul(f64x2.splat(SQRT_2_OVER_PI), f64x2.add(x, f64x2.mul(f64x2.splat(0.044715), x3)));
  const e = expd(f64x2.mul(u, f64x2.splat(-2.0)));
  return f64x2.div(x, f64x2.add(f64x2.splat(1.0), e));
}

// x, out: n floats (may alias). Elements [start, end) only.
export function geluNew(x: usize, out: usize, start: i32, end: i32): void {
  let i = start;
  for (; i + 4 <= end; i += 4) {
    const v = v128.load(x + (<usize>i << 2));
    const a = gelu2(f64x2.promote_low_f32x4(v));
    const b = gelu2(f64x2.promote_low_f32x4(v128.shuffle<i32>(v, v, 2, 3, 2, 3)));
    v128.store(out + (<usize>i << 2), v128.shuffle<i32>(
      f32x4.demote_f64x2_zero(a), f32x4.demote_f64x2_zero(b), 0, 1, 4, 5));
  }
  for (; i < end; i++) {
    const r = gelu2(f64x2.splat(<f64>load<f32>(x + (<usize>i << 2))));
    store<f32>(out + (<usize>i << 2), <f32>f64x2.extract_lane(r, 0));
  }
}

// out = a + b over elements [start, end) (any of them may alias).
export function add(a: usize, b: usize, out: usize, start: i32, end: i32): void {
  let i = start;
  for (; i + 4 <= end; i += 4) {
    const o = <usize>i << 2;
    v128.store(out + o, f32x4.add(v128.load(a + o), v128.load(b + o)));
  }
  for (; i < end; i++) {
    const o = <usize>i << 2;
    store<f32>(out + o, load<f32>(a + o) + load<f32>(b + o));
  }
}
