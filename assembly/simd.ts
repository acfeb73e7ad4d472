// Shared SIMD helpers for the kernels.
//
// `madd(a, b, c)` is a*b + c per lane. The relaxed build (compiled with
// `--enable relaxed-simd`) uses f32x4.relaxed_madd, which V8 lowers to a fused
// multiply-add where the CPU has one; the plain build uses mul then add. Within
// one build and one machine the result is deterministic, which is what the
// thread-count bit-identity guarantee relies on.

// @ts-ignore: decorator
@inline
export function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    return f32x4.relaxed_madd(a, b, c);
  } else {
    return f32x4.add(f32x4.mul(a, b), c);
  }
}

// Horizontal sum in a fixed order: (l0 + l1) + (l2 + l3).
// @ts-ignore: decorator
@inline
export function hsum(v: v128): f32 {
  return (f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1)) +
    (f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3));
}

// exp for f32 lanes, about 1-2 ulp over the whole range, no lookup tables (so
// the module has no data segments to re-initialise in shared memory).
// x = n*ln2 + r with |r| <= ln2/2 (Cody-Waite split of ln2), exp(r) by a
// degree-7 Taylor polynomial (truncation < 6e-9 relative), then 2^n applied in
// two halves so that results in the subnormal range and overflow to +inf come
// out right. exp(-inf) = 0, exp(+inf) = +inf, NaN propagates.
const LOG2E: f32 = 1.44269504088896341;
const LN2_HI: f32 = 0.693359375;
const LN2_LO: f32 = -2.12194440e-4;

// @ts-ignore: decorator
@inline
function pow2i(n: v128): v128 {
  // n: i32x4 with -126 <= n <= 127; returns 2^n as f32x4
  return i32x4.shl(i32x4.add(n, i32x4.splat(127)), 23);
}

// @ts-ignore: decorator
@inline
export function expv(x: v128): v128 {
  let t = f32x4.max(f32x4.min(x, f32x4.splat(89.0)), f32x4.splat(-104.0));
  const nf = f32x4.nearest(f32x4.mul(t, f32x4.splat(LOG2E)));
  let r = f32x4.sub(t, f32x4.mul(nf, f32x4.splat(LN2_HI)));
  r = f32x4.sub(r, f32x4.mul(nf, f32x4.splat(LN2_LO)));
  let p = f32x4.splat(1.0 / 5040.0);
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0 / 720.0));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0 / 120.0));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0 / 24.0));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0 / 6.0));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(0.5));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0));
  const n = i32x4.trunc_sat_f32x4_s(nf);
  const n1 = i32x4.shr_s(n, 1);
  const n2 = i32x4.sub(n, n1);
  return f32x4.mul(f32x4.mul(p, pow2i(n1)), pow2i(n2));
}

// Scalar exp with exactly the same operation sequence as expv (so a lane
// computed either way gives the same bits).
export function exps(x: f32): f32 {
  return f32x4.extract_lane(expv(f32x4.splat(x)), 0);
}

// exp for f64 lanes, about 1e-15 relative (degree-11 polynomial, same
// reduction as expv); used where an f32 result must be correct to ~0.5 ulp (gelu).
const MAGIC: f64 = 6755399441055744.0; // 1.5 * 2^52
const DLOG2E: f64 = 1.4426950408889634;
const DLN2_HI: f64 = 6.93147180369123816490e-01;
const DLN2_LO: f64 = 1.90821492927058770002e-10;

// @ts-ignore: decorator
@inline
function pow2d(nf: v128): v128 {
  // nf: f64x2 holding integers in [-1022, 1023]; returns 2^nf
  const bits = v128.add<i64>(f64x2.add(nf, f64x2.splat(MAGIC)), i64x2.splat(1023));
  return i64x2.shl(bits, 52);
}

// @ts-ignore: decorator
@inline
export function expd(x: v128): v128 {
  const t = f64x2.max(f64x2.min(x, f64x2.splat(709.0)), f64x2.splat(-745.0));
  const nf = f64x2.nearest(f64x2.mul(t, f64x2.splat(DLOG2E)));
  let r = f64x2.sub(t, f64x2.mul(nf, f64x2.splat(DLN2_HI)));
  r = f64x2.sub(r, f64x2.mul(nf, f64x2.splat(DLN2_LO)));
  // Taylor to degree 11: truncation (0.347^12 / 12!) < 1e-14 relative
  let p = f64x2.splat(1.0 / 39916800.0);
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(1.0 / 3628800.0));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(1.0 / 362880.0));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(1.0 / 40320.0));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(1.0 / 5040.0));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(1.0 / 720.0));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(1.0 / 120.0));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(1.0 / 24.0));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(1.0 / 6.0));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(0.5));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(1.0));
  p = f64x2.add(f64x2.mul(p, r), f64x2.splat(1.0));
  const n1 = f64x2.floor(f64x2.mul(nf, f64x2.splat(0.5)));
  const n2 = f64x2.sub(nf, n1);
  return f64x2.mul(f64x2.mul(p, pow2d(n1)), pow2d(n2));
}
