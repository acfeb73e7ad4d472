/**
 * The kernels of the rotary, RMSNorm and gated-MLP families (rotary, rmsNorm, affineRows,
 * activation, gatedActivation) against float64 references, on seeded random inputs, for both
 * builds, and bit-identical for 1 and 2 threads.
 *
 * Every one of these kernels computes in float64 from the float32 inputs and rounds once, so
 * each output must be within one float32 rounding of the float64 reference: |got - ref| <=
 * 2^-24 |ref| for a correctly rounded result; we allow 2 x 2^-24 |ref| (the float64 arithmetic
 * before the rounding adds at most ~1e-15 relative; exact GELU's polynomial erfc adds 2e-10).
 */
import assert from "node:assert/strict";
import { Kernels, relaxedSimdSupported } from "../backend/wasm/kernels.ts";
import { KernelError } from "../core/errors.ts";
import { SeededRng } from "../core/rng.ts";
import { ACTIVATION_REFS, erfc, geluRef } from "./activation_references.ts";
import { bitsEqual } from "./assertions.ts";

const U = 2 ** -24; // float32 unit roundoff

function randn(n: number, seed: number, sd = 1, mean = 0): Float32Array {
  const r = new SeededRng(seed, "kernels_families");
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = mean + sd * r.normal();
  return out;
}

/** Within one float32 rounding (x2) of a float64 reference; subnormal results absolutely. */
function close(got: number, want: number, what: string): void {
  const tol = Math.abs(want) < 1.2e-38 ? 1.5e-45 : 2 * U * Math.abs(want);
  if (!(Math.abs(got - want) <= tol) && !(Number.isNaN(got) && Number.isNaN(want))) {
    assert.fail(`${what}: got ${got}, want ${want} (diff ${Math.abs(got - want)}, tol ${tol})`);
  }
}

const REFS = ACTIVATION_REFS;
const ACTS = Object.keys(REFS) as (keyof typeof REFS)[];

const SPECIAL = [
  0,
  -0,
  1e-30,
  -1e-30,
  1e-8,
  -1e-8,
  1e-3,
  -1e-3,
  0.5,
  -0.5,
  1.4,
  -1.4,
  2.9,
  -2.9,
  5,
  -5,
  9,
  -9,
  12,
  -12,
  13.5,
  -13.5,
  30,
  -30,
  100,
  -100,
  1e20,
  -1e20,
];

const relaxedOk = await relaxedSimdSupported();
const builds = [{ name: "relaxed", relaxed: true }, { name: "simd", relaxed: false }];

Deno.test("the float64 erfc reference agrees with tabulated values (mpmath, 20 digits)", () => {
  // erfc at 0.5, 1, 2, 3, 5, 10 from mpmath.erfc at 30 digits.
  const table: [number, number][] = [
    [0.5, 0.47950012218695346232],
    [1, 0.15729920705028513066],
    [2, 0.0046777349810472658379],
    [3, 0.000022090496998585441373],
    [5, 1.5374597944280348502e-12],
    [10, 2.0884875837625447570e-45],
  ];
  for (const [z, want] of table) {
    const got = erfc(z);
    assert.ok(Math.abs(got - want) <= 1e-13 * want, `erfc(${z}) = ${got}, want ${want}`);
  }
});

for (const build of builds) {
  const ignore = build.relaxed && !relaxedOk;
  let kernels: Kernels | undefined;
  const load = async () => kernels ??= await Kernels.load({ relaxedSimd: build.relaxed });

  Deno.test(`[${build.name}] activation: gelu (erf), silu, relu, gelu_new within 1 ulp`, {
    ignore,
  }, async () => {
    const kn = await load();
    const mk = kn.mark();
    // Odd length: the scalar tail runs too. Wide spread: tails of every function.
    const X = new Float32Array(4003 + SPECIAL.length);
    X.set(randn(4003, 1, 4));
    X.set(SPECIAL, 4003);
    const x = kn.alloc(X.length), out = kn.alloc(X.length);
    kn.write(x, X);
    for (const act of ACTS) {
      kn.activation(act, x, out, X.length);
      const Y = kn.read(out, X.length);
      for (let i = 0; i < X.length; i++) close(Y[i], REFS[act](X[i]), `${act}(${X[i]})`);
    }
    // gelu_new through `activation` is the geluNew kernel's value, bit for bit.
    kn.activation("gelu_new", x, out, X.length);
    const viaActivation = kn.read(out, X.length);
    kn.geluNew(x, out, X.length);
    bitsEqual(viaActivation, kn.read(out, X.length), "gelu_new: activation vs geluNew");
    // In place, and NaN / infinities as torch gives them.
    kn.write(x, new Float32Array([NaN, Infinity, -Infinity, 1]));
    kn.activation("gelu", x, x, 4);
    const g = kn.read(x, 4);
    assert.ok(Number.isNaN(g[0]) && g[1] === Infinity && Number.isNaN(g[2]));
    close(g[3], geluRef(1), "in-place gelu(1)");
    assert.throws(
      // deno-lint-ignore no-explicit-any
      () => kn.activation("tanh" as any, x, x, 4),
      KernelError,
    );
    kn.release(mk);
  });

  Deno.test(`[${build.name}] gatedActivation = act(gate) * up within 1 ulp`, {
    ignore,
  }, async () => {
    const kn = await load();
    const mk = kn.mark();
    for (const [rows, dMlp] of [[7, 13], [3, 64], [1, 1]]) {
      const GU = randn(rows * 2 * dMlp, rows * 100 + dMlp, 3);
      const gu = kn.alloc(GU.length), out = kn.alloc(rows * dMlp);
      kn.write(gu, GU);
      for (const act of ACTS) {
        kn.gatedActivation(act, gu, out, rows, dMlp);
        const Y = kn.read(out, rows * dMlp);
        for (let r = 0; r < rows; r++) {
          for (let j = 0; j < dMlp; j++) {
            const g = GU[r * 2 * dMlp + j], u = GU[r * 2 * dMlp + dMlp + j];
            close(Y[r * dMlp + j], REFS[act](g) * u, `${act} gated [${r}, ${j}]`);
          }
        }
      }
    }
    kn.release(mk);
  });

  Deno.test(`[${build.name}] rmsNorm and affineRows match float64`, { ignore }, async () => {
    const kn = await load();
    const mk = kn.mark();
    for (const [rows, d] of [[5, 32], [3, 37], [2, 1]]) {
      const X = randn(rows * d, rows + d, 2, 0.5);
      const W = randn(d, d, 0.3, 1), B = randn(d, d + 1, 0.1);
      const x = kn.alloc(rows * d), y = kn.alloc(rows * d), sc = kn.alloc(rows);
      const w = kn.alloc(d), b = kn.alloc(d);
      kn.write(x, X);
      kn.write(w, W);
      kn.write(b, B);
      const eps = 1e-6;
      kn.rmsNorm(x, y, rows, d, eps, sc);
      const Y = kn.read(y, rows * d), S = kn.read(sc, rows);
      for (let r = 0; r < rows; r++) {
        let ss = 0;
        for (let j = 0; j < d; j++) ss += X[r * d + j] ** 2;
        const scale = Math.sqrt(ss / d + eps);
        close(S[r], scale, `scale[${r}]`);
        for (let j = 0; j < d; j++) close(Y[r * d + j], X[r * d + j] / scale, `rms[${r},${j}]`);
      }
      kn.affineRows(y, x, rows, d, w, b);
      const A = kn.read(x, rows * d);
      kn.affineRows(y, y, rows, d, w);
      const M = kn.read(y, rows * d);
      for (let i = 0; i < rows * d; i++) {
        close(A[i], Y[i] * W[i % d] + B[i % d], `affine ${i}`);
        close(M[i], Y[i] * W[i % d], `scale only ${i}`);
      }
      // Without a scale output, the same normalized values.
      kn.write(x, X);
      kn.rmsNorm(x, x, rows, d, eps);
      bitsEqual(kn.read(x, rows * d), Y, "rmsNorm in place, no scale");
    }
    kn.release(mk);
  });

  Deno.test(`[${build.name}] rotary turns the leading dims of each head, in place`, {
    ignore,
  }, async () => {
    const kn = await load();
    const mk = kn.mark();
    // [rows, heads, dHead, rotaryDim, stride]: partial (Pythia), full, half width 1, odd tail.
    for (
      const [rows, heads, dHead, rot, stride] of [
        [6, 3, 16, 4, 60],
        [5, 6, 8, 8, 64],
        [4, 2, 8, 2, 20],
        [3, 2, 24, 22, 50],
      ]
    ) {
      const X = randn(rows * stride, rows * 7 + rot, 2);
      const CS = new Float32Array(rows * rot);
      const angle = (r: number, i: number) => (r + 3) * 10000 ** (-2 * i / rot);
      for (let r = 0; r < rows; r++) {
        for (let i = 0; i < rot / 2; i++) {
          CS[r * rot + i] = Math.cos(angle(r, i));
          CS[r * rot + rot / 2 + i] = Math.sin(angle(r, i));
        }
      }
      const x = kn.alloc(X.length), cs = kn.alloc(CS.length);
      kn.write(x, X);
      kn.write(cs, CS);
      kn.rotary(x, stride, rows, heads, dHead, rot, cs);
      const Y = kn.read(x, X.length);
      const h = rot / 2;
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < stride; c++) {
          const i = r * stride + c, head = Math.floor(c / dHead), j = c % dHead;
          let want = X[i];
          if (head < heads && j < rot) {
            const k = j % h, co = CS[r * rot + k], si = CS[r * rot + h + k];
            want = j < h ? X[i] * co - X[i + h] * si : X[i] * co + X[i - h] * si;
          }
          close(Y[i], want, `rotary row ${r} col ${c} (${rows}x${heads}x${dHead}/${rot})`);
        }
      }
    }
    assert.throws(() => kn.rotary(0, 8, 1, 1, 8, 3, 0), KernelError);
    kn.release(mk);
  });

  Deno.test(`[${build.name}] 2 threads give bit-identical rotary, rmsNorm, affine, activations`, {
    ignore,
  }, async () => {
    const one = await Kernels.load({ relaxedSimd: build.relaxed, threads: 1 });
    const two = await Kernels.load({ relaxedSimd: build.relaxed, threads: 2 });
    try {
      assert.equal(two.threads, 2);
      // Sizes past the kernels' single-thread thresholds, so the work is split.
      const run = (kn: Kernels) => {
        const rows = 301, d = 768, dMlp = 1000, n = 100003, stride = 3 * 768;
        const outs: Float32Array[] = [];
        const x = kn.alloc(rows * d), y = kn.alloc(rows * d), sc = kn.alloc(rows);
        const w = kn.alloc(d);
        kn.write(x, randn(rows * d, 11, 2));
        kn.write(w, randn(d, 12, 0.2, 1));
        kn.rmsNorm(x, y, rows, d, 1e-5, sc);
        outs.push(kn.read(y, rows * d), kn.read(sc, rows));
        kn.affineRows(y, y, rows, d, w, w);
        outs.push(kn.read(y, rows * d));
        const u = kn.alloc(n), v = kn.alloc(n);
        kn.write(u, randn(n, 13, 3));
        for (const act of ACTS) {
          kn.activation(act, u, v, n);
          outs.push(kn.read(v, n));
        }
        const gu = kn.alloc(rows * 2 * dMlp), g = kn.alloc(rows * dMlp);
        kn.write(gu, randn(rows * 2 * dMlp, 14, 2));
        kn.gatedActivation("silu", gu, g, rows, dMlp);
        outs.push(kn.read(g, rows * dMlp));
        const qkv = kn.alloc(rows * stride), cs = kn.alloc(rows * 64);
        kn.write(qkv, randn(rows * stride, 15));
        kn.write(cs, randn(rows * 64, 16));
        kn.rotary(qkv, stride, rows, 24, 64, 64, cs);
        outs.push(kn.read(qkv, rows * stride));
        return outs;
      };
      const a = run(one), b = run(two);
      a.forEach((v, i) => bitsEqual(b[i], v, `output ${i}: 2 threads vs 1`));
    } finally {
      two.close();
    }
  });
}
