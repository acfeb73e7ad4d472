/**
 * f16 weight storage (`WeightDtype` `"f16"`), below the model: the rounding, and the matrix
 * products on each backend.
 *
 * - Rounding: known bit patterns (1/3, 65504, subnormals, ties to even, signed zero, infinities),
 *   on both paths of `backend/f16.ts` (the platform's `Float16Array` and the written-out
 *   rounding), and the two paths bit for bit against each other and against `core/dtype.ts`'s
 *   `f32ToF16Bits` over every f16 value, its neighbours and the midpoints between them.
 * - Exactness: a product with one-hot rows of A gives the stored weights themselves (a product
 *   by 1 and sums with zeros are exact in f32), so matmul and matmulTransposed must return the
 *   f16-rounded weights bit for bit, subnormals included, on both backends; so must readMatrix.
 * - The column blocks the WebGPU backend splits large matrices into (forced small here), plain
 *   and transposed, against float64 from the f16-rounded weights. Tolerance: the float32
 *   accumulation bound gamma_{k+2} sum |a w| (Higham, eq. 3.5) for any summation order, with
 *   gamma_k = k u / (1 - k u), u = 2^-24: the reference uses the same f16 weights in float64, so
 *   only f32 arithmetic separates the two (the conformance suite's matmul test does the same on
 *   the backends' own layouts).
 * - A weight beyond f16's range is a KernelError that names f32 and bf16, and allocates nothing.
 */
import assert from "node:assert/strict";
import { f16BitsToF32, f32ToF16Bits } from "../core/dtype.ts";
import { KernelError } from "../core/errors.ts";
import { SeededRng } from "../core/rng.ts";
import { checkF16Range, F16_MAX, f16BitsInto, roundToF16 } from "../backend/f16.ts";
import { loadBackend } from "../backend/select.ts";
import type { Backend } from "../backend/backend.ts";
import { GpuDevice } from "../backend/webgpu/device.ts";
import { bind, GpuArray, GpuMatrix, GpuStore, packF16 } from "../backend/webgpu/arrays.ts";
import { matmul } from "../backend/webgpu/matmul.ts";
import { deviceTest, TEST_DEVICES } from "./backend_harness.ts";

const U = 2 ** -24;
const gamma = (k: number) => k * U / (1 - k * U);

/** f16 bits of each value, by the platform's Float16Array (true) or the written-out code. */
function bitsOf(values: number[], platform: boolean): number[] {
  const out = new Uint16Array(values.length);
  f16BitsInto(Float32Array.from(values), out, 0, platform);
  return [...out];
}

const KNOWN: [string, number, number][] = [
  ["1", 1, 0x3c00],
  ["1/3", 1 / 3, 0x3555],
  ["-2", -2, 0xc000],
  ["65504 (largest)", 65504, 0x7bff],
  ["65519 (below the tie to infinity)", 65519, 0x7bff],
  ["65520 (the tie: to even, infinity)", 65520, 0x7c00],
  ["2^-14 (smallest normal)", 2 ** -14, 0x0400],
  ["1023 x 2^-24 (largest subnormal)", 1023 * 2 ** -24, 0x03ff],
  ["2^-24 (smallest subnormal)", 2 ** -24, 0x0001],
  ["2^-25 (tie between 0 and 2^-24: to even, 0)", 2 ** -25, 0x0000],
  ["3 x 2^-25 (tie between 2^-24 and 2^-23: to even)", 3 * 2 ** -25, 0x0002],
  ["2^-25 + 2^-40 (just past the tie)", 2 ** -25 + 2 ** -40, 0x0001],
  ["1 + 2^-11 (tie: to even 1)", 1 + 2 ** -11, 0x3c00],
  ["1 + 3 x 2^-11 (tie: to even 1 + 2^-9)", 1 + 3 * 2 ** -11, 0x3c02],
  ["2049 (tie: to even 2048)", 2049, 0x6800],
  ["2051 (tie: to even 2052)", 2051, 0x6802],
  ["-0", -0, 0x8000],
  ["Infinity", Infinity, 0x7c00],
  ["-Infinity", -Infinity, 0xfc00],
];

for (const platform of [true, false]) {
  const path = platform ? "Float16Array" : "written-out";
  Deno.test(`f16 rounding (${path}): known bit patterns`, () => {
    if (platform && typeof globalThis.Float16Array !== "function") return; // runtime lacks it
    const got = bitsOf(KNOWN.map((k) => k[1]), platform);
    KNOWN.forEach(([what, , want], i) => {
      assert.equal(got[i], want, `${what}: 0x${got[i].toString(16)}, want 0x${want.toString(16)}`);
    });
    const [nan] = bitsOf([NaN], platform);
    assert.ok((nan & 0x7c00) === 0x7c00 && (nan & 0x3ff) !== 0, "NaN stays NaN");
    // roundToF16 gives the values of those bit patterns (finite inputs within range)
    const finite = KNOWN.filter(([, v]) => Number.isFinite(v) && Math.abs(v) < 65520);
    const r = roundToF16(Float32Array.from(finite.map((k) => k[1])), 1, finite.length, platform);
    finite.forEach(([what, , want], i) => {
      assert.ok(Object.is(r[i], f16BitsToF32(want)), `${what}: ${r[i]}`);
    });
  });
}

Deno.test("f16 rounding: Float16Array, the written-out code and core/dtype agree everywhere", () => {
  if (typeof globalThis.Float16Array !== "function") return;
  // every f16 value, the f32 values one ulp either side, and the midpoints to the next f16 value
  const values: number[] = [];
  const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
  for (let h = 0; h < 0x7c00; h++) {
    for (const sign of [1, -1]) {
      const v = sign * f16BitsToF32(h), next = sign * f16BitsToF32(h + 1);
      f32[0] = v;
      const bits = u32[0];
      values.push(v, (v + next) / 2);
      for (const d of [-1, 1]) {
        u32[0] = bits + d;
        values.push(f32[0]);
      }
    }
  }
  const rng = new SeededRng(7);
  for (let i = 0; i < 20000; i++) values.push(rng.normal() * 2 ** (rng.normal() * 8));
  // (NaN is left out: Float16Array makes every NaN the canonical 0x7e00, the written-out code
  // keeps sign and payload; both are NaN, as the known-patterns test checks)
  const finite = values.filter((v) => !Number.isNaN(v));
  const a = bitsOf(finite, true), b = bitsOf(finite, false);
  for (let i = 0; i < finite.length; i++) {
    const c = f32ToF16Bits(finite[i]);
    if (a[i] !== b[i] || a[i] !== c) {
      assert.fail(
        `${finite[i]}: Float16Array 0x${a[i].toString(16)}, written-out ` +
          `0x${b[i].toString(16)}, core/dtype 0x${c.toString(16)}`,
      );
    }
  }
});

Deno.test("f16 range: beyond 65504 by half an ulp or more is a KernelError naming f32 and bf16", () => {
  checkF16Range(new Float32Array([F16_MAX, 65519.99, -65519.99, Infinity, -Infinity, NaN]), 1, 6);
  for (const v of [65520, -65520, 1e5, 3e38]) {
    assert.throws(
      () => checkF16Range(new Float32Array([0, 0, 0, v]), 2, 2),
      (e: Error) =>
        e instanceof KernelError && e.message.includes(`${Math.fround(v)} at row 1, column 1`) &&
        e.message.includes('"f32" or "bf16"'),
    );
    assert.throws(() => roundToF16(new Float32Array([v])), KernelError);
  }
});

/** Weights spanning f16's range: normal values, subnormals, exact ties, values near 65504. */
function awkwardWeights(k: number, n: number, seed: number): Float32Array {
  const rng = new SeededRng(seed);
  const specials = [2 ** -24, -3 * 2 ** -24, 1023 * 2 ** -24, 2 ** -25 * 3, 65504, -65519, 1 / 3];
  return Float32Array.from({ length: k * n }, (_, i) => {
    if (i % 11 === 3) return specials[(i / 11 | 0) % specials.length];
    if (i % 11 === 7) return rng.normal() * 2 ** -16; // subnormal range
    return rng.normal() * 0.5;
  });
}

/** The weights f16 storage holds, by core/dtype's rounding (independent of backend/f16.ts). */
function f16Reference(w: Float32Array): Float32Array {
  return w.map((v) => f16BitsToF32(f32ToF16Bits(v)));
}

/** Equal values (a sum of zeros and -0 is +0, so signed zeros compare equal here). */
function sameValues(got: Float32Array, want: Float32Array, what: string): void {
  assert.equal(got.length, want.length, what);
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i]) assert.fail(`${what}: element ${i}: ${got[i]}, want ${want[i]}`);
  }
}

for (const d of TEST_DEVICES) {
  Deno.test(
    deviceTest(d, "f16 weights: one-hot products return the rounded weights exactly", async () => {
      const { backend } = await loadBackend(d.device as "wasm" | "webgpu", { threads: 1 });
      try {
        for (const [k, n] of [[5, 3], [37, 70], [130, 65]]) {
          const W = awkwardWeights(k, n, k + n), want = f16Reference(W);
          using scope = backend.scope();
          const Wm = scope.uploadMatrix(W, k, n, "f16");
          assert.equal(Wm.dtype, "f16");
          assert.deepEqual(await backend.readMatrix(Wm), want, `readMatrix ${k}x${n}`);
          // C [k, n] = I_k W = W; C2 [n, k] = I_n W^T = W^T
          const eye = (s: number) => {
            const e = new Float32Array(s * s);
            for (let i = 0; i < s; i++) e[i * s + i] = 1;
            return e;
          };
          const c = scope.alloc(k * n), c2 = scope.alloc(n * k);
          backend.matmul(scope.upload(eye(k)), Wm, c, k);
          backend.matmulTransposed(scope.upload(eye(n)), Wm, c2, n);
          sameValues(await backend.read(c), want, `matmul ${k}x${n}`);
          const wt = new Float32Array(n * k);
          for (let r = 0; r < k; r++) for (let j = 0; j < n; j++) wt[j * k + r] = want[r * n + j];
          sameValues(await backend.read(c2), wt, `matmulTransposed ${k}x${n}`);
        }
      } finally {
        backend.close();
      }
    }),
  );

  Deno.test(
    deviceTest(
      d,
      "f16 weights: out of range refused, nothing allocated, backend usable",
      async () => {
        const { backend } = await loadBackend(d.device as "wasm" | "webgpu", { threads: 1 });
        try {
          const bytes = () => (backend as Backend & { weightBytes?: number }).weightBytes;
          const before = bytes();
          const W = new Float32Array(64).fill(1);
          W[37] = -7e4;
          assert.throws(() => backend.uploadMatrix(W, 8, 8, "f16"), /row 4, column 5/);
          assert.equal(bytes(), before);
          W[37] = 7;
          const Wm = backend.uploadMatrix(W, 8, 8, "f16");
          using scope = backend.scope();
          const c = scope.alloc(8);
          backend.matmul(scope.upload(new Float32Array(8).fill(1)), Wm, c, 1);
          assert.deepEqual([...await backend.read(c)], [8, 8, 8, 8, 8, 14, 8, 8]);
        } finally {
          backend.close();
        }
      },
    ),
  );
}

const webgpu = TEST_DEVICES.find((x) => x.device === "webgpu")!;
Deno.test(
  deviceTest(webgpu, "f16 weights: WebGPU column blocks, plain and transposed", async () => {
    const gpu = await GpuDevice.load();
    try {
      const store = (bytes: number) => new GpuStore(gpu.createBuffer(bytes), null);
      const floats = (data: Float32Array) => {
        const s = store(data.byteLength);
        gpu.write(s.buffer, 0, data);
        return new GpuArray(s, 0, data.length);
      };
      const rng = new SeededRng(11);
      const randn = (len: number) => Float32Array.from({ length: len }, () => rng.normal());
      // n = 64 + 64 + 31: three blocks, the last of an odd column count (a padded half)
      const m = 9, k = 45, n = 159, blockCols = 64;
      const W = awkwardWeights(k, n, 5), Wr = f16Reference(W);
      const blocks: GpuStore[] = [];
      for (let c0 = 0; c0 < n; c0 += blockCols) {
        const words = packF16(W, k, n, c0, Math.min(blockCols, n - c0));
        const s = store(words.byteLength);
        gpu.write(s.buffer, 0, words);
        blocks.push(s);
      }
      const w = new GpuMatrix(k, n, "f16", blockCols, blocks, null);
      assert.equal(w.words(2), 16);
      const dummy = bind(gpu, floats(new Float32Array(4)));
      const A = randn(m * k), bias = randn(n), G = randn(m * n);
      const a = floats(A), c = floats(new Float32Array(m * n)), bb = floats(bias);
      const g = floats(G), c2 = floats(new Float32Array(m * k).fill(1));
      const common = { w, m, accumulate: false, transposed: false };
      matmul(gpu, {
        ...common,
        a: bind(gpu, a),
        c: bind(gpu, c),
        lda: k,
        ldc: n,
        bias: bind(gpu, bb),
      }, dummy);
      matmul(gpu, {
        ...common,
        a: bind(gpu, g),
        c: bind(gpu, c2),
        lda: n,
        ldc: k,
        accumulate: true,
        transposed: true,
      }, dummy);
      const C = new Float32Array(await gpu.read(c.store.buffer, 0, m * n * 4));
      const C2 = new Float32Array(await gpu.read(c2.store.buffer, 0, m * k * 4));
      let worst = 0;
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          let s = bias[j], mag = Math.abs(bias[j]);
          for (let t = 0; t < k; t++) {
            s += A[i * k + t] * Wr[t * n + j];
            mag += Math.abs(A[i * k + t] * Wr[t * n + j]);
          }
          const e = Math.abs(C[i * n + j] - s), bound = gamma(k + 2) * mag;
          assert.ok(e <= bound, `C[${i}, ${j}]: ${C[i * n + j]} vs ${s} (bound ${bound})`);
          worst = Math.max(worst, e / bound);
        }
        for (let r = 0; r < k; r++) {
          let s = 1, mag = 1;
          for (let j = 0; j < n; j++) {
            s += G[i * n + j] * Wr[r * n + j];
            mag += Math.abs(G[i * n + j] * Wr[r * n + j]);
          }
          // summed over three blocks, each an f32 sum, then added: still one sum of n + 1 terms
          const e = Math.abs(C2[i * k + r] - s), bound = gamma(n + 2) * mag;
          assert.ok(e <= bound, `C2[${i}, ${r}]: ${C2[i * k + r]} vs ${s} (bound ${bound})`);
          worst = Math.max(worst, e / bound);
        }
      }
      console.log(`f16 column blocks: max error ${worst.toFixed(3)} of the bound`);
    } finally {
      gpu.destroy();
    }
  }),
);
