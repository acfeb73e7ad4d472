/**
 * The sumHeads kernel (attention output from per-head results, op 60): against a float64 sum, and
 * bit-identical for 1 and 2 threads. A float32 sum of h terms plus a bias has an error of at most
 * (h + 1) 2^-24 times the sum of the absolute terms (each addition rounds once).
 */
import assert from "node:assert/strict";
import { Kernels } from "../backend/wasm/kernels.ts";
import { WasmBackend } from "../backend/wasm/wasm_backend.ts";
import { KernelError } from "../core/errors.ts";
import { SeededRng } from "../core/rng.ts";

function randn(n: number, seed: number): Float32Array {
  const r = new SeededRng(seed, "sumHeads");
  return Float32Array.from({ length: n }, () => r.normal());
}

// Shapes: a SIMD-width d, a d with a scalar tail, and one big enough to run on both threads.
const SHAPES: [number, number, number][] = [[3, 4, 8], [5, 3, 7], [400, 12, 64]];

Deno.test("sumHeads equals the float64 sum over heads plus the bias", async () => {
  const kn = await Kernels.load({ threads: 1 });
  for (const [rows, heads, d] of SHAPES) {
    const mark = kn.mark();
    const xs = randn(rows * heads * d, rows), bs = randn(d, d);
    const x = kn.alloc(rows * heads * d), out = kn.alloc(rows * d), bias = kn.alloc(d);
    kn.write(x, xs);
    kn.write(bias, bs);
    kn.sumHeads(x, out, rows, heads, d, bias);
    const got = kn.read(out, rows * d);
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < d; j++) {
        let sum = bs[j], abs = Math.abs(bs[j]);
        for (let h = 0; h < heads; h++) {
          const v = xs[(r * heads + h) * d + j];
          sum += v;
          abs += Math.abs(v);
        }
        const err = Math.abs(got[r * d + j] - sum);
        assert.ok(err <= (heads + 1) * 2 ** -24 * abs, `[${rows},${heads},${d}] ${r},${j}: ${err}`);
      }
    }
    kn.release(mark);
  }
});

Deno.test("sumHeads is bit-identical on 1 and 2 threads", async () => {
  const one = await Kernels.load({ threads: 1 });
  const two = await Kernels.load({ threads: 2 });
  try {
    assert.equal(two.threads, 2);
    const [rows, heads, d] = SHAPES[2];
    const run = (kn: Kernels) => {
      const x = kn.alloc(rows * heads * d), out = kn.alloc(rows * d);
      kn.write(x, randn(rows * heads * d, 7));
      kn.sumHeads(x, out, rows, heads, d);
      return kn.read(out, rows * d);
    };
    const a = run(one), b = run(two);
    const ua = new Uint32Array(a.buffer), ub = new Uint32Array(b.buffer);
    assert.ok(ua.every((v, i) => v === ub[i]), "2 threads vs 1");
  } finally {
    two.close();
  }
});

Deno.test("the backend's sumHeads refuses arrays that do not fit or overlap", async () => {
  const backend = await WasmBackend.load({ threads: 1 });
  using scope = backend.scope();
  const x = scope.alloc(2 * 3 * 4), out = scope.alloc(8);
  assert.throws(() => backend.sumHeads(x, out, 3, 3, 4), KernelError, "do not fit");
  assert.throws(() => backend.sumHeads(x, x.at(0, 8), 2, 3, 4), KernelError, "overlaps");
  backend.sumHeads(x, out, 2, 3, 4); // fits
});
