/**
 * allCompositionScores where its reductions (R B from the thin QR of each head's circuit) and the
 * pairs' products are large enough to run on the kernels (2^18 multiply-adds or more; the tiny
 * fixtures' run in JavaScript), against the definition computed in float64 from the d x d
 * circuits: ||W_OV(l1,h1) W(l2,h2)||_F / (||W_OV(l1,h1)||_F ||W(l2,h2)||_F).
 */
import assert from "node:assert/strict";
import { allCompositionScores, HookedTransformer } from "../mod.ts";
import { syntheticGpt2 } from "../weights/synthetic.ts";
import { frob, mm, transposed } from "./float64.ts";

Deno.test("allCompositionScores on the kernels: the definition in float64, Q, K and V", async () => {
  const { config, weights } = syntheticGpt2({
    nLayers: 2,
    nHeads: 3,
    dModel: 192,
    dVocab: 256,
    nCtx: 16,
    seed: 9,
  });
  const model = await HookedTransformer.fromBytes(config, weights, { threads: 1 });
  try {
    const { nLayers: L, nHeads: H, dModel: d, dHead: k } = model.cfg;
    assert.ok(k * k * d >= 2 ** 18, "the reductions reach the kernels");
    const head = (t: { data: Float32Array }, l: number, h: number, n: number) =>
      t.data.subarray((l * H + h) * n, (l * H + h + 1) * n);
    const ov = (l: number, h: number) =>
      mm(head(model.W_V, l, h, d * k), head(model.W_O, l, h, k * d), d, k, d);
    const qk = (l: number, h: number) =>
      mm(head(model.W_Q, l, h, d * k), transposed(head(model.W_K, l, h, d * k), d, k), d, k, d);
    for (const mode of ["Q", "K", "V"] as const) {
      const got = allCompositionScores(model, mode);
      let worst = 0, largest = 0;
      for (let l1 = 0; l1 < L; l1++) {
        for (let h1 = 0; h1 < H; h1++) {
          for (let l2 = 0; l2 < L; l2++) {
            for (let h2 = 0; h2 < H; h2++) {
              let want = 0;
              if (l1 < l2) {
                const right = mode === "V"
                  ? ov(l2, h2)
                  : mode === "Q"
                  ? qk(l2, h2)
                  : transposed(qk(l2, h2), d, d);
                const left = ov(l1, h1);
                want = frob(mm(left, right, d, d, d)) / (frob(left) * frob(right));
              }
              largest = Math.max(largest, want);
              const g = got.data[((l1 * H + h1) * L + l2) * H + h2];
              worst = Math.max(worst, Math.abs(g - want));
            }
          }
        }
      }
      assert.ok(largest > 0.01, `${mode}: scores of some size (${largest})`);
      // Ratios of float32 norms over d_head = 64 and d_model = 192 terms: 1e-6 of the largest
      // score is a few hundred float32 roundings; a wrong reduction moves them by percents.
      assert.ok(worst <= 1e-6 * largest + 1e-9, `${mode}: worst |score - definition| = ${worst}`);
    }
  } finally {
    model.dispose();
  }
});
