/**
 * Gemma 2 and Gemma 3's backward pass (`tiny-gemma2`, `tiny-gemma3`: the attention and final
 * softcaps, sliding windows, the post-norms `ln1_post` / `ln2_post`, q_norm / k_norm before
 * rotary, the local and global rotary tables, grouped-query attention with head_dim != d_model /
 * n_heads) against central differences of the loss, at every hook point a forward hook may
 * change, along a random unit direction each, with raw and processed weights.
 *
 * The tolerance is the one of `central_differences.ts` and `gradients_families_test.ts`: the loss's
 * rounding (4 float32 ulps of it) over the step, the truncation error by Richardson's rule
 * (|D(2h) - D(h)| / 3), and 1e-4 of the analytic value for the float32 backward. Steps are 1% of
 * the activation's norm.
 */
import assert from "node:assert/strict";
import { lossMetric } from "../model/metrics.ts";
import { SeededRng } from "../core/rng.ts";
import { assertGradientsMatchCentralDifferences } from "./central_differences.ts";
import { GEMMA_FIXTURES, loadGemma } from "./gemma_fixtures.ts";

for (const dir of GEMMA_FIXTURES) {
  for (const processed of [false, true]) {
    const how = processed ? "processed" : "unprocessed";
    Deno.test(`${dir} (${how}): gradients match central differences of the loss`, async () => {
      const model = await loadGemma(dir, processed);
      try {
        // 10 positions: the window (4) bites on every local layer.
        const T = 10, rng = new SeededRng(19);
        const ids = Array.from(
          { length: 2 * T },
          () => Math.floor(rng.uniform() * model.cfg.dVocab),
        );
        const tokens = [ids.slice(0, T), ids.slice(T)];
        // hook_scale is read-only in the forward pass (its value was already used).
        const names = model.hookNames.filter((n) => !n.endsWith("hook_scale"));
        assert.ok(names.includes("blocks.0.ln1_post.hook_normalized"));
        await assertGradientsMatchCentralDifferences(model, tokens, names, rng);
      } finally {
        model.dispose();
      }
    });
  }
}

Deno.test("tiny-gemma2: the final softcap's gradient, chunked metric and full logits alike", async () => {
  // The built-in loss runs chunk by chunk on the backend (returnType "loss"); a metric of the
  // user's own reads full logits (returnType "both"): both carry the gradient through the cap.
  const model = await loadGemma("tiny-gemma2", false);
  try {
    const tokens = [[2, 5, 9, 33, 17, 8, 90, 4, 61, 12]];
    const metric = lossMetric({ tokens: { data: Int32Array.from(tokens[0]), shape: [1, 10] } });
    const name = "ln_final.hook_normalized";
    const a = await model.runWithCache(tokens, {
      returnType: "loss",
      inclBwdCache: true,
      namesFilter: [name],
    });
    const b = await model.runWithCache(tokens, {
      returnType: "both",
      metric,
      inclBwdCache: true,
      namesFilter: [name],
    });
    const ga = a.cache.get(`${name}_grad`).data, gb = b.cache.get(`${name}_grad`).data;
    let err = 0, scale = 0;
    for (let i = 0; i < ga.length; i++) {
      err = Math.max(err, Math.abs(ga[i] - gb[i]));
      scale = Math.max(scale, Math.abs(ga[i]));
    }
    assert.ok(err <= 1e-5 * scale, `chunked vs full: ${err} (scale ${scale})`);
  } finally {
    model.dispose();
  }
});
