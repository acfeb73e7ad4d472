/**
 * The study's attribution sweep: each estimate is the derivative of the repeated half's loss
 * along (clean value - patched-over value) at the patched position, checked against central
 * differences of full runs (which also checks that positions and sources line up with
 * patchingScores'). Tolerance: the loss is accurate to a few float32 ulps (eps_L = 4 * 2^-24 |L|),
 * so a central difference with step h carries eps_L / h; its truncation error is O(h^2), below
 * 1e-3 of the value at h = 1e-3 here; the estimate itself is float32 (1e-4 of it).
 */
import assert from "node:assert/strict";
import { attributionScores, correlation } from "../analysis/attribution.ts";
import { patchPositions } from "../analysis/patching.ts";
import { generateRepeatedTokens } from "../analysis/repeated_tokens.ts";
import { HookedTransformer } from "../model/hooked_transformer.ts";
import { lossMetric } from "../model/metrics.ts";

Deno.test("attributionScores are the loss's derivative along each patch", async () => {
  const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
  const S = 6, T = 2 * S + 1, d = model.cfg.dModel, L = model.cfg.nLayers;
  const tokens = generateRepeatedTokens(model, S, 2, { seed: 3 });
  const one = { data: tokens.data.slice(0, T), shape: [1, T] };
  const metric = lossMetric({ from: S, tokens: one });
  for (const alignment of ["study", "aligned"] as const) {
    const est = await attributionScores(model, tokens, S, { alignment });
    assert.equal(est.length, L);
    assert.ok(est.every((row) => row.length === S && row.every(Number.isFinite)));
    const { targets, sources } = patchPositions(S, alignment);
    for (const l of [0, L - 1]) {
      const name = model.getActName("mlp_out", l);
      const act = (await model.runWithCache(one, { namesFilter: [name] })).cache.get(name).data;
      for (const j of [1, S - 2]) {
        const p = targets[j], s = sources[j], h = 1e-3;
        const lossAt = async (step: number) =>
          metric.value(
            (await model.runWithHooks(one, {
              fwdHooks: [[name, (a) => {
                for (let i = 0; i < d; i++) {
                  a.data[p * d + i] += step * (act[s * d + i] - act[p * d + i]);
                }
              }]],
            }))!,
          );
        const up = await lossAt(h), down = await lossAt(-h);
        const fd = (up - down) / (2 * h);
        const tol = 4 * 2 ** -24 * Math.abs(up) / h + 1e-3 * Math.abs(est[l][j]);
        assert.ok(
          Math.abs(fd - est[l][j]) <= tol,
          `${alignment} layer ${l} column ${j}: estimate ${est[l][j]}, central difference ${fd}`,
        );
      }
    }
  }
});

Deno.test("correlation is Pearson's", () => {
  assert.equal(correlation([1, 2, 3], [2, 4, 6]), 1);
  assert.ok(Math.abs(correlation([1, 2, 3], [3, 2, 1]) + 1) < 1e-12);
  assert.ok(Math.abs(correlation([1, 2, 3, 4], [1, 3, 2, 4]) - 0.8) < 1e-12);
});
