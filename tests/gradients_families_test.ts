/**
 * The families' backward pass (GPT-NeoX parallel and sequential, Llama, Qwen2: RMSNorm, rotary,
 * grouped-query attention, gated SiLU and exact-GELU MLPs, parallel blocks) against central
 * differences of the loss, at every hook point a forward hook may change, along a random unit
 * direction each.
 *
 * The tolerance is the one of `central_differences.ts`, the sum of three bounded errors: the loss's
 * rounding (4 float32 ulps of it) over the step, the truncation error by Richardson's rule
 * (|D(2h) - D(h)| / 3), and 1e-4 of the analytic value for the float32 backward. Steps are 1% of
 * the activation's norm. A wrong rotation sign, a missing norm weight or a wrong activation
 * derivative moves the directional derivative by far more (checked: each fails here).
 */
import { SeededRng } from "../core/rng.ts";
import { assertGradientsMatchCentralDifferences } from "./central_differences.ts";
import { FAMILY_FIXTURES, loadFamily } from "./families_fixtures.ts";

for (const { dir } of FAMILY_FIXTURES) {
  for (const processed of [false, true]) {
    const how = processed ? "processed" : "unprocessed";
    Deno.test(`${dir} (${how}): gradients match central differences of the loss`, async () => {
      const model = await loadFamily(dir, processed);
      try {
        const T = 12, rng = new SeededRng(11);
        const ids = Array.from(
          { length: 2 * T },
          () => Math.floor(rng.uniform() * model.cfg.dVocab),
        );
        const tokens = [ids.slice(0, T), ids.slice(T)];
        // hook_scale is read-only in the forward pass (its value was already used).
        const names = model.hookNames.filter((n) => !n.endsWith("hook_scale"));
        await assertGradientsMatchCentralDifferences(model, tokens, names, rng);
      } finally {
        model.dispose();
      }
    });
  }
}
