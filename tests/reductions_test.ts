/**
 * Row log-sum-exp and argmax kernels against float64 JavaScript references.
 * log-sum-exp: float32 exponentials (relative error ~1e-7 each) summed in float64, so the result
 * is within ~1e-6 absolute of the exact value for rows of logits-like magnitudes.
 */
import assert from "node:assert/strict";
import { Kernels } from "../backend/wasm/kernels.ts";
import { SeededRng } from "../core/rng.ts";

function refLse(row: Float32Array): number {
  let m = -Infinity;
  for (const v of row) m = Math.max(m, v);
  let s = 0;
  for (const v of row) s += Math.exp(v - m);
  return m + Math.log(s);
}

function refArgmax(row: Float32Array): number {
  let best = 0;
  for (let j = 1; j < row.length; j++) if (row[j] > row[best]) best = j;
  return best;
}

for (const relaxedSimd of [false, true]) {
  Deno.test(`row log-sum-exp and argmax match references (relaxed ${relaxedSimd})`, async () => {
    const k = await Kernels.load({ relaxedSimd });
    const rng = new SeededRng(7);
    for (const n of [1, 3, 4, 5, 255, 257, 1023, 50257]) {
      const rows = 5;
      const data = new Float32Array(rows * n);
      for (let i = 0; i < data.length; i++) data[i] = rng.normal() * 8;
      if (n > 3) data[2 * n + 1] = data[2 * n + n - 1] = 1000; // tie: the first must win
      const ptr = k.alloc(data.length);
      k.write(ptr, data);
      const lse = k.logSumExpRows(ptr, rows, n);
      const arg = k.argmaxRows(ptr, rows, n);
      for (let r = 0; r < rows; r++) {
        const row = data.subarray(r * n, (r + 1) * n);
        const err = Math.abs(lse[r] - refLse(row));
        assert.ok(
          err < 1e-5 * Math.max(1, Math.abs(refLse(row))),
          `n ${n} row ${r}: lse err ${err}`,
        );
        assert.equal(arg[r], refArgmax(row), `n ${n} row ${r}: argmax`);
      }
    }
  });
}
