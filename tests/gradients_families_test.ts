/**
 * The families' backward pass (GPT-NeoX parallel and sequential, Llama, Qwen2: RMSNorm, rotary,
 * grouped-query attention, gated SiLU and exact-GELU MLPs, parallel blocks) against central
 * differences of the loss, at every hook point a forward hook may change, along a random unit
 * direction each.
 *
 * The tolerance is the one of `gradients_fd_test.ts`, the sum of three bounded errors: the loss's
 * rounding (4 float32 ulps of it) over the step, the truncation error by Richardson's rule
 * (|D(2h) - D(h)| / 3), and 1e-4 of the analytic value for the float32 backward. Steps are 1% of
 * the activation's norm. A wrong rotation sign, a missing norm weight or a wrong activation
 * derivative moves the directional derivative by far more (checked: each fails here).
 */
import assert from "node:assert/strict";
import { lossMetric } from "../model/metrics.ts";
import { SeededRng } from "../core/rng.ts";
import { FAMILY_FIXTURES, loadFamily } from "./families_fixtures.ts";

function norm2(x: Float32Array): number {
  let s = 0;
  for (const v of x) s += v * v;
  return Math.sqrt(s);
}

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
        const metric = lossMetric({ tokens: { data: Int32Array.from(ids), shape: [2, T] } });
        // hook_scale is read-only in the forward pass (its value was already used).
        const names = model.hookNames.filter((n) => !n.endsWith("hook_scale"));
        const { loss, cache } = await model.runWithCache(tokens, {
          returnType: "loss",
          inclBwdCache: true,
          namesFilter: names,
        });
        const lossAt = async (name: string, d: Float32Array, h: number) => {
          const logits = await model.runWithHooks(tokens, {
            fwdHooks: [[name, (a) => void a.data.forEach((v, i) => a.data[i] = v + h * d[i])]],
          });
          return metric.value(logits!);
        };
        const epsL = 4 * 2 ** -24 * loss!;
        for (const name of names) {
          const act = cache.get(name).data, grad = cache.get(`${name}_grad`).data;
          assert.equal(grad.length, act.length, `${name}_grad size`);
          // Finite entries only: masked scores are -Infinity and stay so.
          const d = Float32Array.from(act, (a) => Number.isFinite(a) ? rng.normal() : 0);
          const n = norm2(d);
          d.forEach((v, i) => d[i] = v / n);
          let analytic = 0;
          d.forEach((v, i) => analytic += v ? v * grad[i] : 0);
          const h = 1e-2 * norm2(act.filter(Number.isFinite));
          const D = async (step: number) =>
            ((await lossAt(name, d, step)) - (await lossAt(name, d, -step))) / (2 * step);
          const d1 = await D(h), d2 = await D(2 * h);
          const tol = epsL / h + Math.abs(d2 - d1) / 3 + 1e-4 * Math.abs(analytic);
          assert.ok(
            Math.abs(d1 - analytic) <= tol,
            `${name}: analytic ${analytic}, central difference ${d1} (tolerance ${tol})`,
          );
        }
      } finally {
        model.dispose();
      }
    });
  }
}
