/**
 * The sparse autoencoders' kernels (ops 70-72): jumpRelu, gatedRelu and topkRows on the backend,
 * against plain definitions (they select and copy values, so results are exact), on rows with
 * ties, zeros, negatives, NaN and infinities, and bit-identical on 1 and 2 threads.
 */
import assert from "node:assert/strict";
import { WasmBackend } from "../backend/wasm/wasm_backend.ts";
import type { Backend } from "../backend/backend.ts";
import { KernelError } from "../core/errors.ts";
import { SeededRng } from "../core/rng.ts";
import { bitsEqual } from "./assertions.ts";
import { loadBackend } from "../backend/select.ts";
import { deviceTest, TEST_DEVICES } from "./backend_harness.ts";

/** Random rows with a share of exact ties, zeros and specials. */
function rowsOf(rows: number, n: number, seed: number): Float32Array {
  const r = new SeededRng(seed, "sae-kernels");
  return Float32Array.from({ length: rows * n }, () => {
    const u = r.uniform();
    if (u < 0.05) return 0;
    if (u < 0.1) return 1.5; // ties
    if (u < 0.11) return NaN;
    if (u < 0.12) return -Infinity;
    if (u < 0.125) return Infinity;
    return r.normal();
  });
}

function refJump(x: Float32Array, t: Float32Array, n: number): Float32Array {
  return x.map((v, i) => (v > t[i % n] && v > 0 ? v : 0));
}

function refGated(gm: Float32Array, rows: number, n: number): Float32Array {
  const out = new Float32Array(rows * n);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < n; j++) {
      const g = gm[r * 2 * n + j], m = gm[r * 2 * n + n + j];
      out[r * n + j] = g > 0 && m > 0 ? m : 0;
    }
  }
  return out;
}

/** Top-k by value, NaN never, ties to the first indices; ReLU'd. */
function refTopk(x: Float32Array, rows: number, n: number, k: number): Float32Array {
  const out = new Float32Array(rows * n);
  for (let r = 0; r < rows; r++) {
    const idx = Array.from({ length: n }, (_, j) => j).filter((j) => !Number.isNaN(x[r * n + j]));
    idx.sort((a, b) => x[r * n + b] - x[r * n + a] || a - b);
    for (const j of idx.slice(0, k)) out[r * n + j] = Math.max(x[r * n + j], 0);
  }
  return out;
}

async function run(
  be: Backend,
  f: (s: ReturnType<Backend["scope"]>) => Promise<Float32Array>,
): Promise<Float32Array> {
  using scope = be.scope();
  return await f(scope);
}

const SHAPES: [number, number, number][] = [[1, 1, 1], [3, 7, 3], [5, 64, 64], [300, 257, 32]];

/** The backends: wasm on 1 and 2 threads, and webgpu where an adapter exists. */
const BACKENDS = [
  { d: TEST_DEVICES[0], label: "1 thread", load: () => WasmBackend.load({ threads: 1 }) },
  { d: TEST_DEVICES[0], label: "2 threads", load: () => WasmBackend.load({ threads: 2 }) },
  ...TEST_DEVICES.slice(1).map((d) => ({
    d,
    label: d.device,
    load: async (): Promise<Backend> => (await loadBackend(d.device)).backend,
  })),
];

for (const { d, label, load } of BACKENDS) {
  Deno.test(
    deviceTest(
      d,
      `jumpRelu, gatedRelu and topkRows match their definitions (${label})`,
      async () => {
        const be = await load();
        try {
          for (const [rows, n, k] of SHAPES) {
            const x = rowsOf(rows, n, rows + n);
            const t = rowsOf(1, n, 99).map((v) => (Number.isFinite(v) ? Math.abs(v) : 0.5));
            const jr = await run(be, (s) => {
              const a = s.upload(x), th = s.upload(t), o = s.alloc(rows * n);
              be.jumpRelu(a, th, o, rows, n);
              return be.read(o);
            });
            bitsEqual(jr, refJump(x, t, n), `jumpRelu [${rows}, ${n}]`);
            const gm = rowsOf(rows, 2 * n, 5 * rows + n);
            const gr = await run(be, (s) => {
              const a = s.upload(gm), o = s.alloc(rows * n);
              be.gatedRelu(a, o, rows, n);
              return be.read(o);
            });
            bitsEqual(gr, refGated(gm, rows, n), `gatedRelu [${rows}, ${n}]`);
            const tk = await run(be, (s) => {
              const a = s.upload(x), o = s.alloc(rows * n);
              be.topkRows(a, o, rows, n, k);
              return be.read(o);
            });
            bitsEqual(tk, refTopk(x, rows, n, k), `topkRows [${rows}, ${n}] k=${k}`);
          }
        } finally {
          be.close();
        }
      },
    ),
  );
}

for (const d of TEST_DEVICES) {
  Deno.test(
    deviceTest(
      d,
      "topkRows keeps exactly k per row (fewer when NaN leaves fewer numbers)",
      async () => {
        const be = (await loadBackend(d.device, { threads: 1 })).backend;
        const n = 10;
        const x = new Float32Array([
          ...[5, 5, 5, 5, 5, 5, 5, 5, 5, 5], // all tied: the first k
          ...[NaN, NaN, NaN, NaN, NaN, NaN, NaN, NaN, 2, 1], // two numbers
          ...[-1, -2, -3, -4, -5, -6, -7, -8, -9, -10], // all negative: selected, ReLU'd to 0
        ]);
        const out = await run(be, (s) => {
          const a = s.upload(x), o = s.alloc(x.length);
          be.topkRows(a, o, 3, n, 3);
          return be.read(o);
        });
        assert.deepEqual([...out.subarray(0, n)], [5, 5, 5, 0, 0, 0, 0, 0, 0, 0]);
        assert.deepEqual([...out.subarray(n, 2 * n)], [0, 0, 0, 0, 0, 0, 0, 0, 2, 1]);
        assert.ok(out.subarray(2 * n).every((v) => v === 0));
      },
    ),
  );

  Deno.test(
    deviceTest(
      d,
      "the backend refuses a bad k, arrays that do not fit, and topkRows in place",
      async () => {
        const be = (await loadBackend(d.device, { threads: 1 })).backend;
        using scope = be.scope();
        const x = scope.alloc(12), o = scope.alloc(12), t = scope.alloc(4);
        assert.throws(() => be.topkRows(x, o, 3, 4, 0), KernelError, "k must be");
        assert.throws(
          () => be.topkRows(x, o, 3, 4, 5),
          KernelError,
          "k must be",
        );
        assert.throws(() => be.topkRows(x, o, 3, 4, 1.5), KernelError, "k must be");
        assert.throws(() => be.topkRows(x, x, 3, 4, 2), KernelError, "overlap");
        assert.throws(() => be.topkRows(x, o, 4, 4, 2), KernelError);
        assert.throws(() => be.jumpRelu(x, t, o, 3, 5), KernelError);
        assert.throws(() => be.gatedRelu(x, o, 3, 4), KernelError);
        be.jumpRelu(x, t, x, 3, 4); // in place is fine
        be.gatedRelu(x, o, 3, 2);
      },
    ),
  );
}
