/**
 * Gradients on GPT-2 small's shape (12 layers, d_model 768, d_vocab 50257; seeded random weights)
 * against central differences of the loss, along random unit directions at four hook points.
 *
 * The tolerance (`central_differences.ts`) sums three bounded errors: the loss's rounding over
 * the step, the truncation error by Richardson's rule, and 1e-4 of the analytic value for the
 * float32 backward through 12 blocks.
 * Steps are 1% of the activation's norm, so the loss moves well above its rounding. A gradient
 * off by a percent fails at the residual points (measured errors are 10-100 times below the
 * bound there).
 */
import { HookedTransformer } from "../model/hooked_transformer.ts";
import { SeededRng } from "../core/rng.ts";
import { assertGradientsMatchCentralDifferences } from "./central_differences.ts";
import { syntheticGpt2 } from "../weights/synthetic.ts";

Deno.test("GPT-2-small-shape gradients match central differences of the loss", async () => {
  const { config, weights } = syntheticGpt2({
    nLayers: 12,
    nHeads: 12,
    dModel: 768,
    dVocab: 50257,
    nCtx: 1024,
    seed: 3,
  });
  const model = await HookedTransformer.fromBytes(config, weights);
  try {
    const T = 16, rng = new SeededRng(7);
    const ids = Array.from({ length: T }, () => Math.floor(rng.uniform() * 50257));
    const tokens = [ids];
    const names = [
      "blocks.0.hook_resid_pre",
      "blocks.3.attn.hook_z",
      "blocks.6.hook_resid_mid",
      "blocks.11.mlp.hook_post",
    ];
    await assertGradientsMatchCentralDifferences(model, tokens, names, rng, 2);
  } finally {
    model.dispose();
  }
});
