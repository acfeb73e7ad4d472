// MLP activations beyond gelu_new: exact GELU (erf), SiLU and ReLU, alone or
// in a gated MLP (act(gate) * up). Every value is computed in f64 from the f32
// inputs and rounded once to f32 (about 0.5 ulp), the same instruction
// sequence in the SIMD body and the scalar tail, so any split of the range
// across threads gives the same bits.
//
// Activation codes (the host's ACTIVATION_CODES in backend/wasm/abi.ts):
// 0 gelu_new, 1 gelu (erf), 2 silu, 3 relu.

import { expd, setExpdConstants } from "./simd";
import { gelu2, setGeluConstants } from "./elementwise";

// @ts-ignore: decorator
@inline export const GELU_NEW: i32 = 0;
// @ts-ignore: decorator
@inline export const GELU: i32 = 1;
// @ts-ignore: decorator
@inline export const SILU: i32 = 2;
// @ts-ignore: decorator
@inline export const RELU: i32 = 3;

// Exact GELU: gelu(x) = x Phi(x), Phi(x) = erfc(-x / sqrt 2) / 2. AssemblyScript
// has no erf, and a SIMD one needs no branches, so erfc comes from
// erfc(z) = t P(u) exp(-z^2), z = |x| / sqrt 2 >= 0, t = 2 / (2 + z),
// u = 2t - 1 = (2 - z) / (2 + z) in (-1, 1], where P (degree 14, coefficients
// below) interpolates erfc(z) exp(z^2) / t at the Chebyshev nodes in u
// (assembly/erfc_fit.py). The smooth scaled function makes one polynomial good
// for every z: gelu's relative error is below 2e-10 in f64, far below the f32
// rounding. z^2 = x^2 / 2 is exact in f64 for an f32 x, so exp(-z^2) loses
// nothing in the tail; for x < 0, Phi = erfc(z) / 2 directly (no 1 - p
// cancellation); for x >= 0, Phi = 1 - erfc(z) / 2.
let g0: v128 = f64x2.splat(0), g1: v128 = g0, g2: v128 = g0, g3: v128 = g0, g4: v128 = g0;
let g5: v128 = g0, g6: v128 = g0, g7: v128 = g0, g8: v128 = g0, g9: v128 = g0, g10: v128 = g0;
let g11: v128 = g0, g12: v128 = g0, g13: v128 = g0, g14: v128 = g0;
let cOne: v128 = g0, cTwo: v128 = g0, cQuarter: v128 = g0, cMinusHalf: v128 = g0;
let cRsqrt2: v128 = g0, cZmax: v128 = g0, cZero: v128 = g0;

// Sets the constants of the activations (and of expd and gelu2); `one` must be 1.0 computed
// from a runtime value (see simd.ts on V8 and v128 constants).
export function setActivationConstants(one: f64): void {
  g0 = f64x2.splat(0.5107913526210115 * one);
  g1 = f64x2.splat(0.3435803411742941 * one);
  g2 = f64x2.splat(0.13973604642869117 * one);
  g3 = f64x2.splat(0.01822115452474287 * one);
  g4 = f64x2.splat(-0.010755336719970848 * one);
  g5 = f64x2.splat(-0.003240017102150852 * one);
  g6 = f64x2.splat(0.0015453724331298485 * one);
  g7 = f64x2.splat(0.00042071907109662014 * one);
  g8 = f64x2.splat(-0.00033188814950468507 * one);
  g9 = f64x2.splat(-2.2449633699957507e-05 * one);
  g10 = f64x2.splat(7.324707326631622e-05 * one);
  g11 = f64x2.splat(-9.728992850089116e-06 * one);
  g12 = f64x2.splat(-1.2554078565314834e-05 * one);
  g13 = f64x2.splat(2.5851262348797273e-06 * one);
  g14 = f64x2.splat(1.1562763326840017e-06 * one);
  cOne = f64x2.splat(one);
  cTwo = f64x2.splat(2.0 * one);
  cQuarter = f64x2.splat(0.25 * one);
  cMinusHalf = f64x2.splat(-0.5 * one);
  cRsqrt2 = f64x2.splat(0.7071067811865476 * one);
  // exp(-z^2) is 0 in f64 past z = 27.3; clamping keeps u finite for x = +-Infinity
  cZmax = f64x2.splat(40.0 * one);
  cZero = f64x2.splat(0.0 * one);
  setExpdConstants(one);
  setGeluConstants(one);
}

// exp(-x^2 / 2) of two lanes: the Gaussian factor of Phi and phi.
// @ts-ignore: decorator
@inline
export function gaussian(x: v128): v128 {
  return expd(f64x2.mul(f64x2.mul(x, x), cMinusHalf));
}

// Phi(x), the standard normal CDF, of two lanes, given g = gaussian(x).
// @ts-ignore: decorator
@inline
export function normalCdf(x: v128, g: v128): v128 {
  const z = f64x2.pmin(f64x2.mul(f64x2.abs(x), cRsqrt2), cZmax);
  const u = f64x2.div(f64x2.sub(cTwo, z), f64x2.add(cTwo, z));
  let p = f64x2.add(f64x2.mul(g14, u), g13);
  p = f64x2.add(f64x2.mul(p, u), g12);
  p = f64x2.add(f64x2.mul(p, u), g11);
  p = f64x2.add(f64x2.mul(p, u), g10);
  p = f64x2.add(f64x2.mul(p, u), g9);
  p = f64x2.add(f64x2.mul(p, u), g8);
  p = f64x2.add(f64x2.mul(p, u), g7);
  p = f64x2.add(f64x2.mul(p, u), g6);
  p = f64x2.add(f64x2.mul(p, u), g5);
  p = f64x2.add(f64x2.mul(p, u), g4);
  p = f64x2.add(f64x2.mul(p, u), g3);
  p = f64x2.add(f64x2.mul(p, u), g2);
  p = f64x2.add(f64x2.mul(p, u), g1);
  p = f64x2.add(f64x2.mul(p, u), g0);
  // erfc(z) / 2 = (t / 2) P(u) exp(-z^2), t / 2 = (1 + u) / 4
  const half = f64x2.mul(f64x2.mul(f64x2.mul(f64x2.add(cOne, u), cQuarter), p), g);
  return v128.bitselect(half, f64x2.sub(cOne, half), f64x2.lt(x, cZero));
}

// @ts-ignore: decorator
@inline
function gelu(x: v128): v128 {
  return f64x2.mul(x, normalCdf(x, gaussian(x)));
}

// silu(x) = x / (1 + exp(-x)).
// @ts-ignore: decorator
@inline
function silu(x: v128): v128 {
  return f64x2.div(x, f64x2.add(cOne, expd(f64x2.neg(x))));
}

// relu(x) = max(x, 0) (NaN stays NaN; exact, so computed the same in f64).
// @ts-ignore: decorator
@inline
function relu(x: v128): v128 {
  return f64x2.max(x, cZero);
}

// act(x) of two f64 lanes, act a constant after inlining.
// @ts-ignore: decorator
@inline
export function act2(act: i32, x: v128): v128 {
  if (act == GELU) return gelu(x);
  if (act == SILU) return silu(x);
  if (act == GELU_NEW) return gelu2(x);
  return relu(x);
}

// Lanes 0-1 and 2-3 of four f32 as f64, and two f64 pairs back to four f32 (rounded once).
// @ts-ignore: decorator
@inline
export function lo(v: v128): v128 { return f64x2.promote_low_f32x4(v); }
// @ts-ignore: decorator
@inline
export function hi(v: v128): v128 { return f64x2.promote_low_f32x4(v128.shuffle<i32>(v, v, 2, 3, 2, 3)); }
// @ts-ignore: decorator
@inline
export function pack(a: v128, b: v128): v128 {
  return v128.shuffle<i32>(f32x4.demote_f64x2_zero(a), f32x4.demote_f64x2_zero(b), 0, 1, 4, 5);
}

// out = act(x) over elements [start, end) (x and out may alias).
export function activation(x: usize, out: usize, act: i32, start: i32, end: i32): void {
  setActivationConstants(<f64>start * 0.0 + 1.0);
  // One loop per activation (constant `act` after inlining), so no loop body branches.
  if (act == GELU) activationLoop(x, out, GELU, start, end);
  else if (act == SILU) activationLoop(x, out, SILU, start, end);
  else if (act == GELU_NEW) activationLoop(x, out, GELU_NEW, start, end);
  else activationLoop(x, out, RELU, start, end);
}

// @ts-ignore: decorator
@inline
function activationLoop(x: usize, out: usize, act: i32, start: i32, end: i32): void {
  let i = start;
  for (; i + 4 <= end; i += 4) {
    const o = <usize>i << 2;
    const v = v128.load(x + o);
    v128.store(out + o, pack(act2(act, lo(v)), act2(act, hi(v))));
  }
  for (; i < end; i++) {
    const o = <usize>i << 2;
    store<f32>(out + o, <f32>f64x2.extract_lane(act2(act, f64x2.splat(<f64>load<f32>(x + o))), 0));
  }
}

// Gated MLP: rows of gateUp hold [gate (dMlp floats) | up (dMlp floats)];
// out[r, j] = act(gate[r, j]) * up[r, j] for rows [rowStart, rowEnd).
export function gatedActivation(
  gateUp: usize, out: usize, dMlp: i32, act: i32, rowStart: i32, rowEnd: i32,
): void {
  setActivationConstants(<f64>dMlp * 0.0 + 1.0);
  if (act == SILU) gatedLoop(gateUp, out, dMlp, SILU, rowStart, rowEnd);
  else if (act == GELU) gatedLoop(gateUp, out, dMlp, GELU, rowStart, rowEnd);
  else if (act == GELU_NEW) gatedLoop(gateUp, out, dMlp, GELU_NEW, rowStart, rowEnd);
  else gatedLoop(gateUp, out, dMlp, RELU, rowStart, rowEnd);
}

// @ts-ignore: decorator
@inline
function gatedLoop(
  gateUp: usize, out: usize, dMlp: i32, act: i32, rowStart: i32, rowEnd: i32,
): void {
  const m = <usize>dMlp;
  for (let r = rowStart; r < rowEnd; r++) {
    const g = gateUp + (<usize>r * m << 3);
    const u = g + (m << 2);
    const o = out + (<usize>r * m << 2);
    let j = 0;
    for (; j + 4 <= dMlp; j += 4) {
      const b = <usize>j << 2;
      const gv = v128.load(g + b), uv = v128.load(u + b);
      v128.store(o + b, pack(
        f64x2.mul(act2(act, lo(gv)), lo(uv)),
        f64x2.mul(act2(act, hi(gv)), hi(uv)),
      ));
    }
    for (; j < dMlp; j++) {
      const b = <usize>j << 2;
      const y = f64x2.mul(
        act2(act, f64x2.splat(<f64>load<f32>(g + b))),
        f64x2.splat(<f64>load<f32>(u + b)),
      );
      store<f32>(o + b, <f32>f64x2.extract_lane(y, 0));
    }
  }
}
