/**
 * The backward kernels of the MLP activations (activationBackward, gatedActivationBackward, ops
 * 48-49) against float64 derivatives and float64 finite differences of the activations, for both
 * builds; bit-identical for 1 and 2 threads and in place; PyTorch autograd's values at 0,
 * +-Infinity and NaN; typed errors for bad arguments.
 *
 * Tolerances. Each result is computed in float64 from the float32 inputs and rounded once, so it
 * is within 2^-24 |exact| of the exact value plus the float64 error before the rounding. That
 * error is dominated by expd's truncation (2.1e-10 relative, simd.ts) times the derivative's
 * sensitivity to it (below 1: the terms are at most ~1.2), plus for exact GELU the erfc fit's
 * 2e-10 relative on Phi: at most 3e-10 |dy| (5e-10 |dy| for GELU), absolute, which matters only
 * near the derivative's zero, where the terms cancel (measured: 3.3e-11 |dy|). We allow
 * max(2 x 2^-24 |want|, that bound): the rounding, with room for the reference's own ~1e-12; a
 * subnormal result is checked absolutely (its spacing is 1.4e-45).
 */
import assert from "node:assert/strict";
import { Kernels, relaxedSimdSupported } from "../backend/wasm/kernels.ts";
import type { DeviceArray } from "../backend/backend.ts";
import { WasmBackend } from "../backend/wasm/wasm_backend.ts";
import { KernelError } from "../core/errors.ts";
import { SeededRng } from "../core/rng.ts";
import {
  ACTIVATION_GRAD_REFS,
  ACTIVATION_REFS,
  type ActivationName,
} from "./activation_references.ts";
import { bitsEqual } from "./assertions.ts";

const U = 2 ** -24; // float32 unit roundoff
const ACTS = Object.keys(ACTIVATION_REFS) as ActivationName[];
/** The float64 error of act'(x) before the rounding, per unit of |dy| (see the header). */
const ABS_ERR: Record<ActivationName, number> = {
  gelu: 5e-10,
  silu: 3e-10,
  relu: 0,
  gelu_new: 3e-10,
};

function randn(n: number, seed: number, sd = 1): Float32Array {
  const r = new SeededRng(seed, "kernels_activation_grad");
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = sd * r.normal();
  return out;
}

/**
 * |got - want| <= max(2^-23 |want|, absErr) (NaN only for NaN; subnormal results absolutely; an
 * overflow to +-Infinity as float32 rounds it).
 */
function close(got: number, want: number, absErr: number, what: string): void {
  if (Number.isNaN(want) || Number.isNaN(got)) {
    if (Number.isNaN(want) && Number.isNaN(got)) return;
    assert.fail(`${what}: got ${got}, want ${want}`);
  }
  const tol = Math.max(Math.abs(want) < 1.2e-38 ? 1.5e-45 : 2 * U * Math.abs(want), absErr);
  if (!(Math.abs(got - want) <= tol) && got !== Math.fround(want)) {
    assert.fail(`${what}: got ${got}, want ${want} (diff ${Math.abs(got - want)}, tol ${tol})`);
  }
}

/**
 * dy * act'(x) as PyTorch's autograd gives it: ReLU is torch's threshold_backward (0 where
 * x <= 0, whatever dy is; dy elsewhere, a NaN x too); the smooth ones are NaN at +-Infinity and
 * NaN, where their formulas meet inf * 0.
 */
function wantGrad(act: ActivationName, x: number, dy: number): number {
  if (act === "relu") return x <= 0 ? 0 : dy;
  if (!Number.isFinite(x)) return NaN;
  return dy * ACTIVATION_GRAD_REFS[act](x);
}

/** The float32 neighbours of the zero of a derivative in (lo, hi) (found by bisection). */
function aroundZero(f: (x: number) => number, lo: number, hi: number, count: number): number[] {
  for (let i = 0; i < 200; i++) {
    const mid = (lo + hi) / 2;
    if (Math.sign(f(mid)) === Math.sign(f(lo))) lo = mid;
    else hi = mid;
  }
  const bits = new Uint32Array(new Float32Array([lo]).buffer)[0];
  const u = new Uint32Array(count);
  for (let i = 0; i < count; i++) u[i] = bits - count / 2 + i;
  return Array.from(new Float32Array(u.buffer));
}

/**
 * Inputs over the whole float32 range: normals (sd 4), a uniform sweep of [-16, 16], +-2^e for
 * every exponent with a random significand, the float32 neighbours of each derivative's zero
 * (where the two terms cancel), and the special values; an odd count, so the scalar tail runs.
 */
function inputs(): Float32Array {
  const r = new SeededRng(3, "kernels_activation_grad");
  const xs: number[] = Array.from(randn(4001, 1, 4));
  for (let i = 0; i <= 16000; i++) xs.push(-16 + i / 500);
  for (let e = -149; e <= 127; e++) {
    const v = 2 ** e * (1 + r.uniform());
    xs.push(v, -v);
  }
  xs.push(...aroundZero(ACTIVATION_GRAD_REFS.gelu, -1, -0.5, 64));
  xs.push(...aroundZero(ACTIVATION_GRAD_REFS.silu, -1.5, -1, 64));
  xs.push(...aroundZero(ACTIVATION_GRAD_REFS.gelu_new, -1, -0.5, 64));
  xs.push(0, -0, 1e-45, -1e-45, 3.4028234663852886e38, -3.4028234663852886e38, 88, -88, 710);
  xs.push(-710, 30, -30, 9, -9, Infinity, -Infinity, NaN);
  if (xs.length % 4 === 0) xs.push(0.5);
  return new Float32Array(xs);
}

/**
 * act'(x) by central differences of the float64 activation, with one Richardson step:
 * (4 D(h/2) - D(h)) / 3, D(h) = (f(x + h) - f(x - h)) / 2h, h = 2^-10 max(1, |x|) as a power of
 * two (so x +- h is exact). Truncation h^4 f^(5) / 480 < 1e-14, rounding ~1e-16 |f| / h < 1e-12
 * relative, the erfc reference's noise (~1e-14) / h ~ 1e-11: 1e-10 bounds it (measured 1.4e-12).
 */
function finiteDifference(f: (x: number) => number, x: number): number {
  const h = 2 ** (Math.floor(Math.log2(Math.max(1, Math.abs(x)))) - 10);
  const d = (s: number) => (f(x + s) - f(x - s)) / (2 * s);
  return (4 * d(h / 2) - d(h)) / 3;
}

const relaxedOk = await relaxedSimdSupported();
const builds = [{ name: "relaxed", relaxed: true }, { name: "simd", relaxed: false }];

Deno.test("the float64 derivatives agree with finite differences of the float64 activations", () => {
  for (const act of ACTS) {
    for (const x of inputs()) {
      // ReLU's kink: a difference across 0 is no derivative.
      if (!Number.isFinite(x) || (act === "relu" && Math.abs(x) < 1)) continue;
      const fd = finiteDifference(ACTIVATION_REFS[act], x);
      const want = ACTIVATION_GRAD_REFS[act](x);
      assert.ok(Math.abs(fd - want) <= 1e-10, `${act}'(${x}): ${want}, differences give ${fd}`);
    }
  }
});

for (const build of builds) {
  const ignore = build.relaxed && !relaxedOk;
  let kernels: Kernels | undefined;
  const load = async () => kernels ??= await Kernels.load({ relaxedSimd: build.relaxed });

  Deno.test(`[${build.name}] activationBackward = dy * act'(x) within one rounding`, {
    ignore,
  }, async () => {
    const kn = await load();
    const mk = kn.mark();
    const X = inputs(), n = X.length;
    const DY = randn(n, 2, 2);
    const x = kn.alloc(n), dy = kn.alloc(n), dx = kn.alloc(n);
    kn.write(x, X);
    kn.write(dy, DY);
    for (const act of ACTS) {
      kn.activationBackward(act, x, dy, dx, n);
      const DX = kn.read(dx, n);
      for (let i = 0; i < n; i++) {
        const what = `${act}' at ${X[i]} (dy ${DY[i]})`;
        close(DX[i], wantGrad(act, X[i], DY[i]), ABS_ERR[act] * Math.abs(DY[i]), what);
        // Independently of the derivative's formula: finite differences of the activation.
        if (Number.isFinite(X[i]) && (act !== "relu" || Math.abs(X[i]) >= 1)) {
          const fd = DY[i] * finiteDifference(ACTIVATION_REFS[act], X[i]);
          close(DX[i], fd, (ABS_ERR[act] + 1e-10) * Math.abs(DY[i]), `${what}, differences`);
        }
      }
      // In place over dy, then over x: the same bits.
      kn.write(dx, DY);
      kn.activationBackward(act, x, dx, dx, n);
      const overDy = kn.read(dx, n);
      kn.write(dx, X);
      kn.activationBackward(act, dx, dy, dx, n);
      bitsEqual(overDy, DX, `${act}: dx over dy`);
      bitsEqual(kn.read(dx, n), DX, `${act}: dx over x`);
    }
    kn.release(mk);
  });

  Deno.test(`[${build.name}] activationBackward at 0, +-Infinity, NaN and special dy`, {
    ignore,
  }, async () => {
    const kn = await load();
    const mk = kn.mark();
    const xs = [0, -0, 1, -1, 40, -40, Infinity, -Infinity, NaN];
    const dys = [1, 0, -2.5, 1e-45, 3e38, Infinity, -Infinity, NaN];
    const X = new Float32Array(xs.length * dys.length), DY = new Float32Array(X.length);
    xs.forEach((v, i) =>
      dys.forEach((g, j) => [X[i * dys.length + j], DY[i * dys.length + j]] = [v, g])
    );
    const x = kn.alloc(X.length), dy = kn.alloc(X.length), dx = kn.alloc(X.length);
    kn.write(x, X);
    kn.write(dy, DY);
    for (const act of ACTS) {
      kn.activationBackward(act, x, dy, dx, X.length);
      const DX = kn.read(dx, X.length);
      for (let i = 0; i < X.length; i++) {
        // Where act'(x) is 0 in float64 but gelu_new's saturated exp (e^709 below x ~ -21) leaves
        // it ~1e-308, an infinite dy gives +-Infinity, not torch's NaN: a lost run either way.
        if (X[i] === -40 && !Number.isFinite(DY[i])) continue;
        const want = wantGrad(act, X[i], DY[i]);
        close(DX[i], want, ABS_ERR[act] * Math.abs(DY[i]), `${act}' at ${X[i]} (dy ${DY[i]})`);
      }
    }
    // The values PyTorch's autograd gives at 0 (torch 1.13, float64, dy = 1).
    kn.write(x, new Float32Array([0, 0, 0, 0]));
    kn.write(dy, new Float32Array([1, 1, 1, 1]));
    const at0 = ACTS.map((act) => (kn.activationBackward(act, x, dy, dx, 1), kn.read(dx, 1)[0]));
    assert.deepEqual(at0, ACTS.map((act) => act === "relu" ? 0 : 0.5));
    kn.release(mk);
  });

  Deno.test(`[${build.name}] gatedActivationBackward = [dOut up act'(gate) | dOut act(gate)]`, {
    ignore,
  }, async () => {
    const kn = await load();
    const mk = kn.mark();
    for (const [rows, dMlp] of [[7, 13], [3, 64], [1, 1], [2, 6]]) {
      const GU = randn(rows * 2 * dMlp, rows * 100 + dMlp, 3), DO = randn(rows * dMlp, dMlp, 2);
      if (rows === 2) { // special gates, and an infinite dOut * up where relu' is 0
        GU.set([0, -0, Infinity, -Infinity, NaN, -1]);
        DO.set([3e38, 1, 1, 1, 1, Infinity]);
        GU.set([3e38, 1, 1, 1, 1, 2], dMlp);
      }
      const gu = kn.alloc(GU.length), dOut = kn.alloc(DO.length), dgu = kn.alloc(GU.length);
      kn.write(gu, GU);
      kn.write(dOut, DO);
      // [gate | dOut] rows: the forward's act(gate) * dOut is d up, bit for bit (one rounding).
      const GO = GU.slice(), gateDOut = kn.alloc(GU.length), fwd = kn.alloc(DO.length);
      for (let r = 0; r < rows; r++) {
        GO.set(DO.subarray(r * dMlp, (r + 1) * dMlp), (2 * r + 1) * dMlp);
      }
      kn.write(gateDOut, GO);
      for (const act of ACTS) {
        kn.gatedActivationBackward(act, gu, dOut, dgu, rows, dMlp);
        const D = kn.read(dgu, GU.length);
        kn.gatedActivation(act, gateDOut, fwd, rows, dMlp);
        const F = kn.read(fwd, DO.length);
        for (let r = 0; r < rows; r++) {
          for (let j = 0; j < dMlp; j++) {
            const g = GU[r * 2 * dMlp + j], u = GU[r * 2 * dMlp + dMlp + j];
            const o = DO[r * dMlp + j], dyGate = o * u; // exact in float64
            const what = `${act} gated [${r}, ${j}] gate ${g} up ${u} dOut ${o}`;
            const dGate = D[r * 2 * dMlp + j], dUp = D[r * 2 * dMlp + dMlp + j];
            const tol = ABS_ERR[act] * Math.abs(dyGate);
            close(dGate, wantGrad(act, g, dyGate), tol, `${what}: d gate`);
            bitsEqual(new Float32Array([dUp]), F.subarray(r * dMlp + j, r * dMlp + j + 1), what);
            // (the forward's values at +-Infinity are its own test's)
            if (Number.isFinite(g)) close(dUp, o * ACTIVATION_REFS[act](g), 0, `${what}: d up`);
          }
        }
        // In place over gateUp: the same bits.
        kn.gatedActivationBackward(act, gu, dOut, gu, rows, dMlp);
        bitsEqual(kn.read(gu, GU.length), D, `${act} gated in place (${rows}x${dMlp})`);
        kn.write(gu, GU);
      }
    }
    kn.release(mk);
  });

  Deno.test(`[${build.name}] 2 threads give bit-identical activation backwards`, {
    ignore,
  }, async () => {
    const one = await Kernels.load({ relaxedSimd: build.relaxed, threads: 1 });
    const two = await Kernels.load({ relaxedSimd: build.relaxed, threads: 2 });
    try {
      assert.equal(two.threads, 2);
      // Sizes past the single-thread thresholds, so the work is split (odd: a scalar tail).
      const n = 100003, rows = 301, dMlp = 1001;
      const run = (kn: Kernels) => {
        const outs: Float32Array[] = [];
        const x = kn.alloc(n), dy = kn.alloc(n), dx = kn.alloc(n);
        kn.write(x, randn(n, 21, 3));
        kn.write(dy, randn(n, 22));
        const gu = kn.alloc(rows * 2 * dMlp), dOut = kn.alloc(rows * dMlp);
        const dgu = kn.alloc(rows * 2 * dMlp);
        kn.write(gu, randn(rows * 2 * dMlp, 23, 2));
        kn.write(dOut, randn(rows * dMlp, 24));
        for (const act of ACTS) {
          kn.activationBackward(act, x, dy, dx, n);
          kn.gatedActivationBackward(act, gu, dOut, dgu, rows, dMlp);
          outs.push(kn.read(dx, n), kn.read(dgu, rows * 2 * dMlp));
        }
        return outs;
      };
      const a = run(one), b = run(two);
      a.forEach((v, i) => bitsEqual(b[i], v, `${ACTS[i >> 1]} output ${i % 2}: 2 threads vs 1`));
    } finally {
      two.close();
    }
  });
}

Deno.test("activation backwards refuse an unknown activation, wrong sizes and overlaps", async () => {
  const kn = await Kernels.load({ threads: 1 });
  // deno-lint-ignore no-explicit-any
  const tanh = "tanh" as any;
  assert.throws(() => kn.activationBackward(tanh, 0, 0, 0, 4), KernelError, "unknown activation");
  assert.throws(() => kn.gatedActivationBackward(tanh, 0, 0, 0, 1, 4), KernelError, "tanh");

  const backend = await WasmBackend.load({ threads: 1 });
  using scope = backend.scope();
  const big = scope.alloc(10), x = big.at(0, 8), dy = scope.alloc(8), dx = scope.alloc(8);
  assert.throws(() => backend.activationBackward(tanh, x, dy, dx), KernelError, "unknown");
  assert.throws(() => backend.activationBackward("silu", x, scope.alloc(7), dx), KernelError, "7");
  assert.throws(() => backend.activationBackward("silu", x, dy, scope.alloc(7)), KernelError);
  assert.throws(() => backend.activationBackward("silu", x, dy, big.at(2)), KernelError, "overlap");
  backend.activationBackward("silu", x, dy, dy); // in place
  backend.activationBackward("silu", x, dy, x);

  const rows = 2, dMlp = 3, wide = scope.alloc(13), gu = wide.at(0, 12);
  const dOut = scope.alloc(rows * dMlp), dgu = scope.alloc(12);
  const gated = (gu: DeviceArray, dOut: DeviceArray, dgu: DeviceArray, rows: number) =>
    backend.gatedActivationBackward("gelu", gu, dOut, dgu, rows, dMlp);
  assert.throws(() => gated(gu, dOut, dgu, 3), KernelError, "gateUp: 3 rows of 6 floats");
  assert.throws(() => gated(gu, dOut.at(1), dgu, rows), KernelError, "dOut: 2 rows");
  assert.throws(() => gated(gu, dOut, dgu.at(1), rows), KernelError, "dGateUp: 2 rows");
  assert.throws(() => gated(gu, dOut, wide.at(1), rows), KernelError, "overlap");
  const both = scope.alloc(18);
  assert.throws(() => gated(gu, both.at(0, 6), both.at(3, 12), rows), KernelError, "overlaps dOut");
  gated(gu, dOut, gu, rows); // in place
});
