/**
 * top1Accuracy by bounds (analysis/top1_bounds.ts) against the dense computation it must equal
 * exactly: per row, on factored matrices whose diagonal is the maximum in none, some or most rows,
 * with exact ties, on the embedded model's circuits, and on a block of rows at GPT-2 small's shape
 * (50257 x 50257, inner 64).
 */
import assert from "node:assert/strict";
import { FactoredMatrix, HookedTransformer, kCompositionCircuit, ovCircuit } from "../mod.ts";
import { top1Accuracy } from "../mod.ts";
import type { Backend } from "../backend/backend.ts";
import { WasmBackend } from "../backend/wasm/wasm_backend.ts";
import { SeededRng } from "../core/rng.ts";
import { TOP1_HIT, TOP1_MISS, TOP1_UNDECIDED, top1ByBounds } from "../analysis/top1_bounds.ts";

/**
 * A [n, k] and B [k, n] with B = lambda A^T + noise: the diagonal lambda |a_i|^2 + noise beats the
 * other columns in more rows as lambda grows; `scale` spreads the row norms (some rows' diagonals
 * dominate, others do not).
 */
function factors(n: number, k: number, lambda: number, seed: number) {
  const rng = new SeededRng(seed, "top1-bounds-test");
  const a = new Float32Array(n * k), noise = new Float32Array(k * n);
  rng.fillNormal(a);
  rng.fillNormal(noise);
  for (let i = 0; i < n; i++) {
    const scale = 0.5 + (i % 7) / 4;
    for (let p = 0; p < k; p++) a[i * k + p] *= scale;
  }
  const b = new Float32Array(k * n);
  for (let p = 0; p < k; p++) {
    for (let j = 0; j < n; j++) b[p * n + j] = lambda * a[j * k + p] + noise[p * n + j];
  }
  return { a, b };
}

/** The dense answer per row: the backend's own product and argmax, row block by row block. */
async function denseHits(a: Float32Array, b: Float32Array, n: number, k: number, backend: Backend) {
  const M = new FactoredMatrix({ data: a, shape: [n, k] }, { data: b, shape: [k, n] }, {
    backend,
  });
  const hits = new Uint8Array(n);
  const acc = await top1Accuracy(M, { method: "dense", blockRows: 64 });
  for await (const { start, rows, data } of M.rowBlocks(64)) {
    for (let r = 0; r < rows; r++) {
      let best = 0;
      for (let j = 1; j < n; j++) if (data[r * n + j] > data[r * n + best]) best = j;
      hits[start + r] = best === start + r ? 1 : 0;
    }
  }
  return { hits, acc, M };
}

for (const threads of [1, 2]) {
  Deno.test(`top1 bounds (${threads} thread(s)): every decided row agrees with the dense argmax`, async () => {
    const backend = await WasmBackend.load({ threads });
    try {
      const n = 1500, k = 24;
      const seen = new Set<string>();
      for (const lambda of [0, 0.05, 0.15, 1]) {
        const { a, b } = factors(n, k, lambda, 7);
        const dense = await denseHits(a, b, n, k, backend);
        const r = await top1ByBounds(a, b, n, k, backend, { chunkColumns: 128, blockRows: 256 });
        assert.ok(r);
        let undecided = 0;
        for (let i = 0; i < n; i++) {
          const o: number = r.outcome[i];
          if (o === TOP1_UNDECIDED) undecided++;
          else assert.equal(o === TOP1_HIT ? 1 : 0, dense.hits[i], `lambda ${lambda}, row ${i}`);
          assert.ok(o === TOP1_HIT || o === TOP1_MISS || o === TOP1_UNDECIDED);
        }
        // Ties within float32 rounding are rare: the bounds decide nearly every row.
        assert.ok(undecided <= n / 100, `lambda ${lambda}: ${undecided} rows undecided`);
        const acc = dense.acc;
        seen.add(acc === 0 ? "none" : acc === 1 ? "all" : "some");
        assert.equal(await top1Accuracy(dense.M, { method: "bounds" }), acc, `lambda ${lambda}`);
      }
      // The diagonal is the maximum in no row, in some rows and (lambda 1) in nearly all.
      assert.ok(seen.has("none") && seen.has("some"), [...seen].join());
    } finally {
      backend.close();
    }
  });
}

Deno.test("top1 bounds: exact ties go to the first column, as the dense argmax", async () => {
  const backend = await WasmBackend.load({ threads: 1 });
  try {
    const n = 600, k = 8;
    const { a, b } = factors(n, k, 1, 3);
    // Column j copies column i: M[i, j] equals M[i, i] exactly; for j < i the row is a miss.
    for (const [i, j] of [[10, 3], [20, 400], [300, 299], [301, 302]]) {
      for (let p = 0; p < k; p++) b[p * n + j] = b[p * n + i];
    }
    const dense = await denseHits(a, b, n, k, backend);
    const r = await top1ByBounds(a, b, n, k, backend, { chunkColumns: 64 });
    assert.ok(r);
    for (const i of [10, 20, 300, 301]) {
      assert.ok(r.outcome[i] === TOP1_UNDECIDED || r.outcome[i] === TOP1_MISS, `row ${i}`);
    }
    assert.equal(dense.hits[10], 0);
    assert.equal(await top1Accuracy(dense.M, { method: "bounds" }), dense.acc);
  } finally {
    backend.close();
  }
});

Deno.test("top1 bounds: the embedded model's circuits, as dense", async () => {
  const model = await HookedTransformer.fromPretrained("induction-toy");
  for (
    const M of [
      kCompositionCircuit(model, [0, 3], [1, 2]), // top-1 0.416: the diagonal wins in some rows
      ovCircuit(model, 1, 2), // 0.907: in most
    ]
  ) {
    const dense = await top1Accuracy(M, { method: "dense" });
    assert.ok(dense > 0.3 && dense < 0.95, `${dense}`);
    assert.equal(await top1Accuracy(M, { method: "bounds" }), dense);
  }
});

Deno.test("top1 bounds: the trained kjv-small's circuits (tied embeddings), as dense", async () => {
  const model = await HookedTransformer.fromPretrained("kjv-small");
  const n = model.cfg.dVocab;
  for (
    const M of [
      ovCircuit(model, 0, 0),
      ovCircuit(model, 3, 1),
      kCompositionCircuit(model, [0, 0], [1, 3]),
    ]
  ) {
    const dense = await top1Accuracy(M, { method: "dense" });
    assert.equal(await top1Accuracy(M, { method: "bounds" }), dense);
    // Trained circuits: bounds decide every row from a few percent of M in small chunks.
    const r = await top1ByBounds(M.A.data, M.B.data, n, M.mdim, model.backend, {
      chunkColumns: 128,
    });
    assert.ok(r && r.computed < 0.1 * n * n, `computed ${r?.computed} of ${n * n}`);
  }
});

Deno.test("top1 bounds: rows of a GPT-2-small-shape matrix, as dense", async () => {
  const backend = await WasmBackend.load({ threads: 2 });
  try {
    const n = 50257, k = 64, rows = 512;
    const { a, b } = factors(n, k, 0.12, 11);
    const r = await top1ByBounds(a, b, n, k, backend, { rowStart: 1000, rowEnd: 1000 + rows });
    assert.ok(r);
    const M = new FactoredMatrix({ data: a, shape: [n, k] }, { data: b, shape: [k, n] }, {
      backend,
    });
    // The dense rows, from the backend's product like top1Accuracy's dense path.
    const block = M.rowSlice(1000, 1000 + rows);
    let hits = 0, decided = 0;
    for await (const { start, rows: count, data } of block.rowBlocks(64)) {
      for (let q = 0; q < count; q++) {
        const i = 1000 + start + q;
        let best = 0;
        for (let j = 1; j < n; j++) if (data[q * n + j] > data[q * n + best]) best = j;
        const o: number = r.outcome[i - 1000];
        if (best === i) hits++;
        if (o === TOP1_UNDECIDED) continue;
        decided++;
        assert.equal(o === TOP1_HIT, best === i, `row ${i}`);
      }
    }
    assert.ok(hits > 0 && hits < rows, `${hits} hits: the diagonal wins in some rows only`);
    assert.ok(decided >= rows - 5, `${decided} of ${rows} rows decided`);
    assert.ok(r.computed < 0.5 * rows * n, `computed ${r.computed} of ${rows * n} entries`);
  } finally {
    backend.close();
  }
});

Deno.test("top1 bounds: model calls between its awaits change nothing", async () => {
  const model = await HookedTransformer.fromPretrained("induction-toy");
  const M = kCompositionCircuit(model, [0, 3], [1, 2]);
  const alone = await top1Accuracy(M, { method: "bounds" });
  const tokens = [[2047, 5, 9, 14, 5, 9]];
  const logits = await model.run(tokens);
  const [together, , logitsBetween] = await Promise.all([
    top1Accuracy(M, { method: "bounds" }),
    top1Accuracy(ovCircuit(model, 1, 2), { method: "bounds" }),
    model.run(tokens),
  ]);
  assert.equal(together, alone);
  assert.deepEqual(logitsBetween.data, logits.data);
});
