// Backward of the MLP activations of activations.ts: dx = dy act'(x), alone or
// in a gated MLP. As in the forward, every value is computed in f64 from the
// f32 inputs and rounded once to f32, with the same instruction sequence in
// the SIMD body and the scalar tail, so any split of the range across threads
// gives the same bits.
//
// Special values are PyTorch autograd's: relu passes the gradient where
// x > 0 or x is NaN and gives 0 elsewhere, at 0 too, whatever dy is (torch's
// threshold_backward: x <= 0 ? 0 : dy); the smooth activations' derivatives
// are NaN at +-Infinity (torch's formulas meet inf * 0 there) and at NaN.

import { expd } from "./simd";
import {
  GELU, GELU_NEW, RELU, SILU, act2, gaussian, hi, lo, normalCdf, pack, setActivationConstants,
} from "./activations";

const SQRT_2_OVER_PI: f64 = 0.7978845608028654;

// Constants as per-instance globals set at the start of each call (see simd.ts on V8 and v128
// constants).
let bOne: v128 = f64x2.splat(0), bZero: v128 = bOne, bInvSqrt2Pi: v128 = bOne;
let bA: v128 = bOne, bB: v128 = bOne, bM2: v128 = bOne, bA2: v128 = bOne, bB2: v128 = bOne;

// `one` must be 1.0 computed from a runtime value.
function setBackwardConstants(one: f64): void {
  setActivationConstants(one);
  bOne = f64x2.splat(one);
  bZero = f64x2.splat(0.0 * one);
  bInvSqrt2Pi = f64x2.splat(0.3989422804014327 * one);
  bA = f64x2.splat(SQRT_2_OVER_PI * one);
  bB = f64x2.splat(0.044715 * SQRT_2_OVER_PI * one);
  bM2 = f64x2.splat(-2.0 * one);
  bA2 = f64x2.splat(2.0 * SQRT_2_OVER_PI * one);
  bB2 = f64x2.splat(6.0 * 0.044715 * SQRT_2_OVER_PI * one);
}

// gelu'(x) = Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi): Phi is the
// forward's (erfc polynomial, no cancellation in either tail), and both share
// one exp.
// @ts-ignore: decorator
@inline
function geluGrad(x: v128): v128 {
  const g = gaussian(x);
  return f64x2.add(normalCdf(x, g), f64x2.mul(x, f64x2.mul(g, bInvSqrt2Pi)));
}

// silu'(x) = s (1 + x (1 - s)), s = 1 / (1 + e), e = exp(-x), with 1 - s
// written as e s (no cancellation when s is near 1).
// @ts-ignore: decorator
@inline
function siluGrad(x: v128): v128 {
  const e = expd(f64x2.neg(x));
  const s = f64x2.div(bOne, f64x2.add(bOne, e));
  return f64x2.mul(s, f64x2.add(bOne, f64x2.mul(x, f64x2.mul(e, s))));
}

// gelu_new(x) = x sg, sg = 1 / (1 + e), e = exp(-2u), u = sqrt(2/pi) (x + 0.044715 x^3)
// (elementwise.ts), so gelu_new'(x) = sg + x sg (1 - sg) 2u' with sg (1 - sg)
// written as e sg^2 (no cancellation when sg is near 1) and
// 2u' = 2 sqrt(2/pi) (1 + 3 0.044715 x^2).
// @ts-ignore: decorator
@inline
function geluNewGrad(x: v128): v128 {
  const u = f64x2.mul(x, f64x2.add(bA, f64x2.mul(bB, f64x2.mul(x, x))));
  const e = expd(f64x2.mul(u, bM2));
  const sg = f64x2.div(bOne, f64x2.add(bOne, e));
  const du = f64x2.add(bA2, f64x2.mul(bB2, f64x2.mul(x, x)));
  return f64x2.add(sg, f64x2.mul(f64x2.mul(x, f64x2.mul(e, f64x2.mul(sg, sg))), du));
}

// g act'(x) of two f64 lanes, act a constant after inlining.
// @ts-ignore: decorator
@inline
function backward2(act: i32, x: v128, g: v128): v128 {
  if (act == RELU) return v128.andnot(g, f64x2.le(x, bZero));
  let d: v128;
  if (act == GELU) d = geluGrad(x);
  else if (act == SILU) d = siluGrad(x);
  else d = geluNewGrad(x);
  // x - x is NaN for an infinite x and 0 otherwise: the NaN PyTorch gives there
  return f64x2.mul(f64x2.add(d, f64x2.sub(x, x)), g);
}

// dx = dy act'(x) over elements [start, end) (dx may alias x or dy).
export function activationBackward(
  x: usize, dy: usize, dx: usize, act: i32, start: i32, end: i32,
): void {
  setBackwardConstants(<f64>start * 0.0 + 1.0);
  // One loop per activation (constant `act` after inlining), so no loop body branches.
  if (act == GELU) backwardLoop(x, dy, dx, GELU, start, end);
  else if (act == SILU) backwardLoop(x, dy, dx, SILU, start, end);
  else if (act == GELU_NEW) backwardLoop(x, dy, dx, GELU_NEW, start, end);
  else backwardLoop(x, dy, dx, RELU, start, end);
}

// @ts-ignore: decorator
@inline
function backwardLoop(x: usize, dy: usize, dx: usize, act: i32, start: i32, end: i32): void {
  let i = start;
  for (; i + 4 <= end; i += 4) {
    const o = <usize>i << 2;
    const v = v128.load(x + o), g = v128.load(dy + o);
    v128.store(dx + o, pack(backward2(act, lo(v), lo(g)), backward2(act, hi(v), hi(g))));
  }
  for (; i < end; i++) {
    const o = <usize>i << 2;
    const r = backward2(
      act, f64x2.splat(<f64>load<f32>(x + o)), f64x2.splat(<f64>load<f32>(dy + o)),
    );
    store<f32>(dx + o, <f32>f64x2.extract_lane(r, 0));
  }
}

// Backward of the gated MLP out = act(gate) * up (rows of gateUp: [gate | up],
// dMlp floats each; rows of dOut: dMlp floats): rows [rowStart, rowEnd) of
// dGateUp get [dOut up act'(gate) | dOut act(gate)]. dGateUp may alias gateUp.
export function gatedActivationBackward(
  gateUp: usize, dOut: usize, dGateUp: usize, dMlp: i32, act: i32, rowStart: i32, rowEnd: i32,
): void {
  setBackwardConstants(<f64>dMlp * 0.0 + 1.0);
  if (act == SILU) gatedBackwardLoop(gateUp, dOut, dGateUp, dMlp, SILU, rowStart, rowEnd);
  else if (act == GELU) gatedBackwardLoop(gateUp, dOut, dGateUp, dMlp, GELU, rowStart, rowEnd);
  else if (act == GELU_NEW) {
    gatedBackwardLoop(gateUp, dOut, dGateUp, dMlp, GELU_NEW, rowStart, rowEnd);
  } else gatedBackwardLoop(gateUp, dOut, dGateUp, dMlp, RELU, rowStart, rowEnd);
}

// @ts-ignore: decorator
@inline
function gatedBackwardLoop(
  gateUp: usize, dOut: usize, dGateUp: usize, dMlp: i32, act: i32, rowStart: i32, rowEnd: i32,
): void {
  const m = <usize>dMlp;
  for (let r = rowStart; r < rowEnd; r++) {
    const g = gateUp + (<usize>r * m << 3);
    const u = g + (m << 2);
    const dg = dGateUp + (<usize>r * m << 3);
    const du = dg + (m << 2);
    const o = dOut + (<usize>r * m << 2);
    let j = 0;
    for (; j + 4 <= dMlp; j += 4) {
      const b = <usize>j << 2;
      // every load before the stores: dGateUp may be gateUp
      const gv = v128.load(g + b), uv = v128.load(u + b), ov = v128.load(o + b);
      // dOut * up is exact in f64 (two 24-bit significands), so each result rounds once
      v128.store(dg + b, pack(
        backward2(act, lo(gv), f64x2.mul(lo(ov), lo(uv))),
        backward2(act, hi(gv), f64x2.mul(hi(ov), hi(uv))),
      ));
      v128.store(du + b, pack(
        f64x2.mul(lo(ov), act2(act, lo(gv))),
        f64x2.mul(hi(ov), act2(act, hi(gv))),
      ));
    }
    for (; j < dMlp; j++) {
      const b = <usize>j << 2;
      const gs = f64x2.splat(<f64>load<f32>(g + b));
      const us = f64x2.splat(<f64>load<f32>(u + b));
      const os = f64x2.splat(<f64>load<f32>(o + b));
      store<f32>(dg + b, <f32>f64x2.extract_lane(backward2(act, gs, f64x2.mul(os, us)), 0));
      store<f32>(du + b, <f32>f64x2.extract_lane(f64x2.mul(os, act2(act, gs)), 0));
    }
  }
}
