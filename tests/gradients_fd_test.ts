/**
 * Gradients on GPT-2 small's shape (12 layers, d_model 768, d_vocab 50257; seeded random weights)
 * against central differences of the loss, along random unit directions at four hook points.
 *
 * The tolerance is the sum of the three error sources of the comparison, each bounded:
 *  - rounding: the loss is a mean of log-softmax values of float32 logits, computed in float64;
 *    it is accurate to a few float32 ulps of itself, eps_L = 4 * 2^-24 |L|, so a central
 *    difference with step h carries at most eps_L / h of it;
 *  - truncation: estimated by Richardson's rule, |D(2h) - D(h)| / 3 (D(h) ~ D + c h^2);
 *  - the analytic gradient itself: float32 through 12 blocks, 1e-4 of its value (the tiny
 *    model's gradients are within 1e-6 of float64; depth and width cost at most two orders).
 * Steps are 1% of the activation's norm, so the loss moves well above its rounding. A gradient
 * off by a percent fails at the residual points (measured errors are 10-100 times below the
 * bound there).
 */
import assert from "node:assert/strict";
import { HookedTransformer } from "../model/hooked_transformer.ts";
import { lossMetric } from "../model/metrics.ts";
import { SeededRng } from "../core/rng.ts";
import { syntheticGpt2 } from "../weights/synthetic.ts";

function norm2(x: Float32Array): number {
  let s = 0;
  for (const v of x) s += v * v;
  return Math.sqrt(s);
}

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
    const metric = lossMetric({ tokens: { data: Int32Array.from(ids), shape: [1, T] } });
    const names = [
      "blocks.0.hook_resid_pre",
      "blocks.3.attn.hook_z",
      "blocks.6.hook_resid_mid",
      "blocks.11.mlp.hook_post",
    ];
    const { loss, cache } = await model.runWithCache(tokens, {
      returnType: "loss",
      inclBwdCache: true,
      namesFilter: names,
    });
    const lossAt = async (name: string, dir: Float32Array, h: number) => {
      const logits = await model.runWithHooks(tokens, {
        fwdHooks: [[name, (a) => void a.data.forEach((v, i) => a.data[i] = v + h * dir[i])]],
      });
      return metric.value(logits!);
    };
    const epsL = 4 * 2 ** -24 * loss!;
    for (const name of names) {
      const act = cache.get(name).data, grad = cache.get(`${name}_grad`).data;
      for (let k = 0; k < 2; k++) {
        const dir = Float32Array.from(act, () => rng.normal());
        const norm = norm2(dir);
        dir.forEach((v, i) => dir[i] = v / norm);
        let analytic = 0;
        dir.forEach((v, i) => analytic += v * grad[i]);
        const h = 1e-2 * norm2(act);
        const D = async (step: number) =>
          ((await lossAt(name, dir, step)) - (await lossAt(name, dir, -step))) / (2 * step);
        const d1 = await D(h), d2 = await D(2 * h);
        const tol = epsL / h + Math.abs(d2 - d1) / 3 + 1e-4 * Math.abs(analytic);
        const err = Math.abs(d1 - analytic);
        assert.ok(
          err <= tol,
          `${name}, direction ${k}: analytic ${analytic}, central difference ${d1} ` +
            `(error ${err}, tolerance ${tol})`,
        );
      }
    }
  } finally {
    model.dispose();
  }
});
