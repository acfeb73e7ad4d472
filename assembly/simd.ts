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
//
// V8 rematerialises v128 constants inside loops (three instructions each), so
// the constants are per-instance globals built by setExpConstants(), which
// every exported function using expv/exps calls first; the value `one` comes
// from a runtime argument so the optimiser cannot fold them back.
const LOG2E: f32 = 1.44269504088896341;
const LN2_HI: f32 = 0.693359375;
const LN2_LO: f32 = -2.12194440e-4;

let eHi: v128 = f32x4.splat(0), eLo: v128 = eHi, eLog2e: v128 = eHi, eLn2Hi: v128 = eHi;
let eLn2Lo: v128 = eHi, e7: v128 = eHi, e6: v128 = eHi, e5: v128 = eHi, e4: v128 = eHi;
let e3: v128 = eHi, e2: v128 = eHi, e1: v128 = eHi, eBias: v128 = eHi;

// `one` must be 1.0, computed from a runtime value.
export function setExpConstants(one: f32): void {
  eHi = f32x4.splat(89.0 * one);
  eLo = f32x4.splat(-104.0 * one);
  eLog2e = f32x4.splat(LOG2E * one);
  eLn2Hi = f32x4.splat(LN2_HI * one);
  eLn2Lo = f32x4.splat(LN2_LO * one);
  e7 = f32x4.splat(one / 5040.0);
  e6 = f32x4.splat(one / 720.0);
  e5 = f32x4.splat(one / 120.0);
  e4 = f32x4.splat(one / 24.0);
  e3 = f32x4.splat(one / 6.0);
  e2 = f32x4.splat(one * 0.5);
  e1 = f32x4.splat(one);
  eBias = i32x4.splat(<i32>(127.0 * one));
}

// @ts-ignore: decorator
@inline
export function expv(x: v128): v128 {
  // clamp (pmin/pmax are single instructions; a NaN x passes through)
  const t = f32x4.pmax(f32x4.pmin(x, eHi), eLo);
  const nf = f32x4.nearest(f32x4.mul(t, eLog2e));
  let r = f32x4.sub(t, f32x4.mul(nf, eLn2Hi));
  r = f32x4.sub(r, f32x4.mul(nf, eLn2Lo));
  let p = f32x4.add(f32x4.mul(e7, r), e6);
  p = f32x4.add(f32x4.mul(p, r), e5);
  p = f32x4.add(f32x4.mul(p, r), e4);
  p = f32x4.add(f32x4.mul(p, r), e3);
  p = f32x4.add(f32x4.mul(p, r), e2);
  p = f32x4.add(f32x4.mul(p, r), e1);
  p = f32x4.add(f32x4.mul(p, r), e1);
  const n = i32x4.trunc_sat_f32x4_s(nf);
  const n1 = i32x4.shr_s(n, 1);
  const n2 = i32x4.sub(n, n1);
  return f32x4.mul(f32x4.mul(p, i32x4.shl(i32x4.add(n1, eBias), 23)), i32x4.shl(i32x4.add(n2, eBias), 23));
}

// Scalar exp with exactly the same operation sequence as expv (so a lane
// computed either way gives the same bits).
// @ts-ignore: decorator
@inline
export function exps(x: f32): f32 {
  return f32x4.extract_lane(expv(f32x4.splat(x)), 0);
}

// exp for f64 lanes to 2.1e-10 relative, no lookup tables: t is clamped to
// [-745, 709] (NaN passes through), t = n ln2 + r (Cody-Waite, |r| <= ln2/2),
// exp(r) by a degree-8 Taylor polynomial (its truncation is that error, far
// below the f32 rounding of the kernels' results), 2^n applied in two halves
// so that underflow and overflow come out right. Constants as for expv:
// globals set by setExpdConstants() at the start of every exported function
// that uses expd.
const MAGIC: f64 = 6755399441055744.0; // 1.5 * 2^52: adding it rounds to an integer
const DLOG2E: f64 = 1.4426950408889634;
const DLN2_HI: f64 = 6.93147180369123816490e-01;
const DLN2_LO: f64 = 1.90821492927058770002e-10;

let dHi: v128 = f64x2.splat(0), dLo: v128 = dHi, dLog2e: v128 = dHi, dLn2Hi: v128 = dHi;
let dLn2Lo: v128 = dHi, dMagic: v128 = dHi, dHalf: v128 = dHi, d1: v128 = dHi, d2: v128 = dHi;
let d3: v128 = dHi, d4: v128 = dHi, d5: v128 = dHi, d6: v128 = dHi, d7: v128 = dHi;
let d8: v128 = dHi, dBias: v128 = dHi;

// `one` must be 1.0, computed from a runtime value.
export function setExpdConstants(one: f64): void {
  dHi = f64x2.splat(709.0 * one);
  dLo = f64x2.splat(-745.0 * one);
  dLog2e = f64x2.splat(DLOG2E * one);
  dLn2Hi = f64x2.splat(DLN2_HI * one);
  dLn2Lo = f64x2.splat(DLN2_LO * one);
  dMagic = f64x2.splat(MAGIC * one);
  dHalf = f64x2.splat(0.5 * one);
  d1 = f64x2.splat(one);
  d2 = f64x2.splat(one / 2.0);
  d3 = f64x2.splat(one / 6.0);
  d4 = f64x2.splat(one / 24.0);
  d5 = f64x2.splat(one / 120.0);
  d6 = f64x2.splat(one / 720.0);
  d7 = f64x2.splat(one / 5040.0);
  d8 = f64x2.splat(one / 40320.0);
  dBias = i64x2.splat(<i64>(1023.0 * one));
}

// @ts-ignore: decorator
@inline
export function expd(x: v128): v128 {
  const t = f64x2.pmax(f64x2.pmin(x, dHi), dLo);
  const nf = f64x2.nearest(f64x2.mul(t, dLog2e));
  let r = f64x2.sub(t, f64x2.mul(nf, dLn2Hi));
  r = f64x2.sub(r, f64x2.mul(nf, dLn2Lo));
  let p = f64x2.add(f64x2.mul(d8, r), d7);
  p = f64x2.add(f64x2.mul(p, r), d6);
  p = f64x2.add(f64x2.mul(p, r), d5);
  p = f64x2.add(f64x2.mul(p, r), d4);
  p = f64x2.add(f64x2.mul(p, r), d3);
  p = f64x2.add(f64x2.mul(p, r), d2);
  p = f64x2.add(f64x2.mul(p, r), d1);
  p = f64x2.add(f64x2.mul(p, r), d1);
  const n1 = f64x2.floor(f64x2.mul(nf, dHalf));
  const n2 = f64x2.sub(nf, n1);
  const s1 = i64x2.shl(i64x2.add(f64x2.add(n1, dMagic), dBias), 52);
  const s2 = i64x2.shl(i64x2.add(f64x2.add(n2, dMagic), dBias), 52);
  return f64x2.mul(f64x2.mul(p, s1), s2);
}
