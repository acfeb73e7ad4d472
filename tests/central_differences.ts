/**
 * The gradient check the gradient tests share: at each named hook point, the backward pass's
 * directional derivative of the loss along random unit directions against a central difference of
 * the loss, the direction added by a forward hook.
 *
 * The tolerance is the sum of the three error sources of the comparison, each bounded:
 *  - rounding: the loss is a mean of log-softmax values of float32 logits, computed in float64;
 *    it is accurate to a few float32 ulps of itself, eps_L = 4 * 2^-24 |L|, so a central
 *    difference with step h carries at most eps_L / h of it;
 *  - truncation: estimated by Richardson's rule, |D(2h) - D(h)| / 3 (D(h) ~ D + c h^2);
 *  - the analytic gradient itself: float32 through the blocks, 1e-4 of its value (the tiny
 *    models' gradients are within 1e-6 of float64; depth and width cost at most two orders).
 * Steps are 1% of the activation's norm (its finite entries: masked scores are -Infinity and stay
 * so, and get no direction), so the loss moves well above its rounding.
 */
import assert from "node:assert/strict";
import type { HookedTransformer } from "../model/hooked_transformer.ts";
import { lossMetric } from "../model/metrics.ts";
import type { SeededRng } from "../core/rng.ts";

function norm2(x: Float32Array): number {
  let s = 0;
  for (const v of x) s += v * v;
  return Math.sqrt(s);
}

/**
 * Asserts that the gradients of the loss on `tokens` at every point of `names` match central
 * differences along `directions` random unit directions each (drawn from `rng`).
 */
export async function assertGradientsMatchCentralDifferences(
  model: HookedTransformer,
  tokens: number[][],
  names: string[],
  rng: SeededRng,
  directions = 1,
): Promise<void> {
  const shape = [tokens.length, tokens[0].length];
  const metric = lossMetric({ tokens: { data: Int32Array.from(tokens.flat()), shape } });
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
    assert.equal(grad.length, act.length, `${name}_grad size`);
    for (let k = 0; k < directions; k++) {
      const dir = Float32Array.from(act, (a) => Number.isFinite(a) ? rng.normal() : 0);
      const n = norm2(dir);
      dir.forEach((v, i) => dir[i] = v / n);
      let analytic = 0;
      dir.forEach((v, i) => analytic += v ? v * grad[i] : 0);
      const h = 1e-2 * norm2(act.filter(Number.isFinite));
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
}
