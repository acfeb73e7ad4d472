// Elementwise kernels: gelu_new and add.

// gelu_new(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
// Since 0.5 (1 + tanh(u)) = 1 / (1 + exp(-2u)), we compute x / (1 + exp(-2u))
// in f64 (expd, see simd.ts): no cancellation for negative x, no loss of
// precision near 0, and a single rounding to f32 at the end (about 0.5 ulp).
//
// Speed: V8 rematerialises every v128 constant inside loops (three
// instructions each), so the constants are built once per call from a value
// the optimiser cannot fold (`one`) and live in globals.
import { expd, setExpdConstants } from "./simd";

const SQRT_2_OVER_PI: f64 = 0.7978845608028654;

// Constants as per-instance globals, set at the start of each call (see above).
let kA: v128 = f64x2.splat(0), kB: v128 = kA, kM2: v128 = kA, k1: v128 = kA;

// Sets the constants of gelu2 (and expd's); `one` must be 1.0 computed from a runtime value.
export function setGeluConstants(one: f64): void {
  kA = f64x2.splat(SQRT_2_OVER_PI * one);
  kB = f64x2.splat(0.044715 * SQRT_2_OVER_PI * one);
  kM2 = f64x2.splat(-2.0 * one);
  k1 = f64x2.splat(one);
  setExpdConstants(one);
}

// gelu_new of two f64 lanes.
// @ts-ignore: decorator
@inline
export function gelu2(v: v128): v128 {
  // u = x (c + c' x^2) with c' = 0.044715 c: c (x + 0.044715 x^3) up to f64 rounding
  const u = f64x2.mul(v, f64x2.add(kA, f64x2.mul(kB, f64x2.mul(v, v))));
  return f64x2.div(v, f64x2.add(k1, expd(f64x2.mul(u, kM2))));
}

// x, out: n floats (may alias). Elements [start, end) only.
export function geluNew(x: usize, out: usize, start: i32, end: i32): void {
  setGeluConstants(<f64>start * 0.0 + 1.0);
  let i = start;
  for (; i + 4 <= end; i += 4) {
    const o = <usize>i << 2;
    const v = v128.load(x + o);
    const a = gelu2(f64x2.promote_low_f32x4(v));
    const b = gelu2(f64x2.promote_low_f32x4(v128.shuffle<i32>(v, v, 2, 3, 2, 3)));
    v128.store(out + o, v128.shuffle<i32>(
      f32x4.demote_f64x2_zero(a), f32x4.demote_f64x2_zero(b), 0, 1, 4, 5));
  }
  for (; i < end; i++) {
    const o = <usize>i << 2;
    const r = gelu2(f64x2.splat(<f64>load<f32>(x + o)));
    store<f32>(out + o, <f32>f64x2.extract_lane(r, 0));
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

// Copies rows [rowStart, rowEnd) of cols floats whose starts are stride floats apart at src to
// dense rows at dst (bulk memory's copy, row by row; the ranges do not overlap).
export function copyRows(
  src: usize, dst: usize, cols: i32, stride: i32, rowStart: i32, rowEnd: i32,
): void {
  const bytes = <usize>cols << 2;
  for (let r = rowStart; r < rowEnd; r++) {
    memory.copy(dst + <usize>r * bytes, src + (<usize>r * <usize>stride << 2), bytes);
  }
}
