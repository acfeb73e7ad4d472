/**
 * allCompositionScores where its reductions (R B from the thin QR of each head's circuit) and the
 * pairs' products are large enough to run on the kernels (2^18 multiply-adds or more; the tiny
 * fixtures' run in JavaScript), against the definition computed in float64 from the d x d
 * circuits: ||W_OV(l1,h1) W(l2,h2)||_F / (||W_OV(l1,h1)||_F ||W(l2,h2)||_F).
 */
import assert from "node:assert/strict";
import { allCompositionScores, HookedTransformer } from "../mod.ts";
import { syntheticGpt2 } from "../weights/synthetic.ts";
import { compositionScoreDefinition, mm, transposed } from "./float64.ts";
import { maxAbs, maxAbsDiff } from "./assertions.ts";

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
      const want = compositionScoreDefinition(mode, ov, qk, { L, H, d });
      const largest = maxAbs(want), worst = maxAbsDiff(got.data, want);
      assert.ok(largest > 0.01, `${mode}: scores of some size (${largest})`);
      // Ratios of float32 norms over d_head = 64 and d_model = 192 terms: 1e-6 of the largest
      // score is a few hundred float32 roundings; a wrong reduction moves them by percents.
      assert.ok(worst <= 1e-6 * largest + 1e-9, `${mode}: worst |score - definition| = ${worst}`);
    }
  } finally {
    model.dispose();
  }
});
