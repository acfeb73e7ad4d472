// Elementwise kernels: gelu_new (and its derivative) and add.

// gelu_new(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
// Since 0.5 (1 + tanh(u)) = 1 / (1 + exp(-2u)), we compute x / (1 + exp(-2u))
// in f64: no cancellation for negative x, no loss of precision near 0, and a
// single rounding to f32 at the end (about 0.5 ulp).
//
// exp(t) here: t = n ln2 + r (Cody-Waite, |r| <= ln2/2), exp(r) by a degree-8
// Taylor polynomial (truncation < 2.1e-10 relative, far below f32's 6e-8), 2^n
// applied in two halves so that underflow and overflow come out right.
//
// Speed: V8 rematerialises every v128 constant inside loops (three
// instructions each), so the constants are built once per call from a value
// the optimiser cannot fold (`one`) and live in locals.
const SQRT_2_OVER_PI: f64 = 0.7978845608028654;
const MAGIC: f64 = 6755399441055744.0; // 1.5 * 2^52: adding it rounds to an integer
const DLOG2E: f64 = 1.4426950408889634;
const DLN2_HI: f64 = 6.93147180369123816490e-01;
const DLN2_LO: f64 = 1.90821492927058770002e-10;

// Constants as per-instance globals, set at the start of each call (see above).
let kA: v128 = f64x2.splat(0), kB: v128 = kA, kM2: v128 = kA, kHi: v128 = kA, kLo: v128 = kA;
let kLog2e: v128 = kA, kLn2Hi: v128 = kA, kLn2Lo: v128 = kA, kMagic: v128 = kA, kHalf: v128 = kA;
let k1: v128 = kA, c2: v128 = kA, c3: v128 = kA, c4: v128 = kA, c5: v128 = kA, c6: v128 = kA;
let c7: v128 = kA, c8: v128 = kA, kBias: v128 = kA, kA2: v128 = kA, kB2: v128 = kA;

function setGeluConstants(one: f64): void {
  kA = f64x2.splat(SQRT_2_OVER_PI * one);
  kB = f64x2.splat(0.044715 * SQRT_2_OVER_PI * one);
  kM2 = f64x2.splat(-2.0 * one);
  kHi = f64x2.splat(709.0 * one);
  kLo = f64x2.splat(-745.0 * one);
  kLog2e = f64x2.splat(DLOG2E * one);
  kLn2Hi = f64x2.splat(DLN2_HI * one);
  kLn2Lo = f64x2.splat(DLN2_LO * one);
  kMagic = f64x2.splat(MAGIC * one);
  kHalf = f64x2.splat(0.5 * one);
  k1 = f64x2.splat(one);
  c2 = f64x2.splat(one / 2.0);
  c3 = f64x2.splat(one / 6.0);
  c4 = f64x2.splat(one / 24.0);
  c5 = f64x2.splat(one / 120.0);
  c6 = f64x2.splat(one / 720.0);
  c7 = f64x2.splat(one / 5040.0);
  c8 = f64x2.splat(one / 40320.0);
  kBias = i64x2.splat(<i64>(1023.0 * one));
  kA2 = f64x2.splat(2.0 * SQRT_2_OVER_PI * one);
  kB2 = f64x2.splat(6.0 * 0.044715 * SQRT_2_OVER_PI * one);
}

// exp(-2u) of two f64 lanes, u = sqrt(2/pi) (x + 0.044715 x^3): gelu_new(x)
// = x / (1 + exp(-2u)).
// @ts-ignore: decorator
@inline
function geluExp2(v: v128): v128 {
  // u = x (c + c' x^2) with c' = 0.044715 c: c (x + 0.044715 x^3) up to f64 rounding
  const u = f64x2.mul(v, f64x2.add(kA, f64x2.mul(kB, f64x2.mul(v, v))));
  // clamp t = -2u to [-745, 709] (pmin/pmax are single instructions; NaN passes through)
  const t = f64x2.pmax(f64x2.pmin(f64x2.mul(u, kM2), kHi), kLo);
  const nf = f64x2.nearest(f64x2.mul(t, kLog2e));
  let r = f64x2.sub(t, f64x2.mul(nf, kLn2Hi));
  r = f64x2.sub(r, f64x2.mul(nf, kLn2Lo));
  let p = f64x2.add(f64x2.mul(c8, r), c7);
  p = f64x2.add(f64x2.mul(p, r), c6);
  p = f64x2.add(f64x2.mul(p, r), c5);
  p = f64x2.add(f64x2.mul(p, r), c4);
  p = f64x2.add(f64x2.mul(p, r), c3);
  p = f64x2.add(f64x2.mul(p, r), c2);
  p = f64x2.add(f64x2.mul(p, r), k1);
  p = f64x2.add(f64x2.mul(p, r), k1);
  const n1 = f64x2.floor(f64x2.mul(nf, kHalf));
  const n2 = f64x2.sub(nf, n1);
  const s1 = i64x2.shl(i64x2.add(f64x2.add(n1, kMagic), kBias), 52);
  const s2 = i64x2.shl(i64x2.add(f64x2.add(n2, kMagic), kBias), 52);
  return f64x2.mul(f64x2.mul(p, s1), s2);
}

// gelu_new of two f64 lanes.
// @ts-ignore: decorator
@inline
function gelu2(v: v128): v128 {
  return f64x2.div(v, f64x2.add(k1, geluExp2(v)));
}

// gelu_new'(x) of two f64 lanes. With e = exp(-2u) and sg = 1 / (1 + e)
// (= sigmoid(2u)): gelu_new(x) = x sg, so
//   gelu_new'(x) = sg + x sg (1 - sg) 2u' = sg + x e sg^2 2 sqrt(2/pi) (1 + 3 0.044715 x^2)
// (sg (1 - sg) written as e sg^2: no cancellation when sg is near 1).
// @ts-ignore: decorator
@inline
function geluGrad2(v: v128): v128 {
  const e = geluExp2(v);
  const sg = f64x2.div(k1, f64x2.add(k1, e));
  const du = f64x2.add(kA2, f64x2.mul(kB2, f64x2.mul(v, v))); // 2u'
  return f64x2.add(sg, f64x2.mul(f64x2.mul(v, f64x2.mul(e, f64x2.mul(sg, sg))), du));
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

// dx = dy * gelu_new'(x) over elements [start, end), in f64, rounded once
// (dx may alias dy or x).
export function geluNewBackward(x: usize, dy: usize, dx: usize, start: i32, end: i32): void {
  setGeluConstants(<f64>start * 0.0 + 1.0);
  let i = start;
  for (; i + 4 <= end; i += 4) {
    const o = <usize>i << 2;
    const v = v128.load(x + o), g = v128.load(dy + o);
    const a = f64x2.mul(geluGrad2(f64x2.promote_low_f32x4(v)), f64x2.promote_low_f32x4(g));
    const b = f64x2.mul(
      geluGrad2(f64x2.promote_low_f32x4(v128.shuffle<i32>(v, v, 2, 3, 2, 3))),
      f64x2.promote_low_f32x4(v128.shuffle<i32>(g, g, 2, 3, 2, 3)),
    );
    v128.store(dx + o, v128.shuffle<i32>(
      f32x4.demote_f64x2_zero(a), f32x4.demote_f64x2_zero(b), 0, 1, 4, 5));
  }
  for (; i < end; i++) {
    const o = <usize>i << 2;
    const r = geluGrad2(f64x2.splat(<f64>load<f32>(x + o)));
    store<f32>(dx + o, <f32>(f64x2.extract_lane(r, 0) * <f64>load<f32>(dy + o)));
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
