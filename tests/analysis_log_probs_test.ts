/**
 * logProbSummary: the study's figures on the embedded induction model, and agreement with a
 * float64 log-softmax of `model.run` logits.
 */
import assert from "node:assert/strict";
import {
  generateRepeatedTokens,
  headScores,
  HookedTransformer,
  InputError,
  logProbsAndHeadScores,
  logProbSummary,
} from "../mod.ts";
import { fixturePath } from "./fixtures.ts";

/** Float64 reference: lp[b][t] and argmax hits from full logits. */
function reference(logits: Float32Array, ids: Int32Array, batch: number, T: number, V: number) {
  const lp: number[][] = [];
  const hit: boolean[][] = [];
  for (let b = 0; b < batch; b++) {
    lp.push([]);
    hit.push([]);
    for (let t = 0; t < T - 1; t++) {
      const row = logits.subarray((b * T + t) * V, (b * T + t + 1) * V);
      let m = -Infinity;
      let best = 0;
      row.forEach((v, j) => {
        if (v > m) [m, best] = [v, j];
      });
      let s = 0;
      for (const v of row) s += Math.exp(v - m);
      const target = ids[b * T + t + 1];
      lp[b].push(row[target] - m - Math.log(s));
      hit[b].push(best === target);
    }
  }
  return { lp, hit };
}

function mean(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

Deno.test("induction-toy on the study's input: second half predicted, first half not", async () => {
  const model = await HookedTransformer.fromPretrained("induction-toy");
  const tokens = generateRepeatedTokens(model, 50, 30, { seed: 0 });
  const s = await logProbSummary(model, tokens, 50);
  assert.equal(s.logProbs.length, 30);
  assert.equal(s.logProbs[0].length, 100);
  assert.equal(s.perPosition.length, 100);
  // The model card: about -7.6 and -0.74; accuracy 0.0 and about 0.92.
  assert.ok(s.firstHalf < -7 && s.firstHalf > -8.2, `first half ${s.firstHalf}`);
  assert.ok(s.secondHalf > -1 && s.secondHalf < -0.5, `second half ${s.secondHalf}`);
  assert.ok(s.accuracySecond > 0.9, `second-half accuracy ${s.accuracySecond}`);
  assert.ok(s.accuracyFirst < 0.005, `first-half accuracy ${s.accuracyFirst}`); // chance hits only
  assert.ok(Math.abs(mean(s.perPosition.slice(0, 50)) - s.firstHalf) < 1e-9);
  assert.ok(Math.abs(mean(s.perPosition.slice(50)) - s.secondHalf) < 1e-9);
});

Deno.test("logProbSummary equals a float64 log-softmax of model.run (toy and tiny models)", async () => {
  const dir = fixturePath("tiny-hf-f32");
  const tiny = await HookedTransformer.fromBytes(
    JSON.parse(await Deno.readTextFile(`${dir}/config.json`)),
    await Deno.readFile(`${dir}/model.safetensors`),
  );
  const toy = await HookedTransformer.fromPretrained("induction-toy");
  for (const [model, seqLen, batch] of [[toy, 50, 12], [tiny, 15, 5], [tiny, 3, 2]] as const) {
    const tokens = generateRepeatedTokens(model, seqLen, batch, { seed: 11 });
    const T = 1 + 2 * seqLen;
    const logits = await model.run(tokens);
    const ref = reference(logits.data, tokens.data, batch, T, model.cfg.dVocab);
    const s = await logProbSummary(model, tokens, seqLen);
    let first = 0, second = 0, accFirst = 0, accSecond = 0;
    for (let b = 0; b < batch; b++) {
      for (let t = 0; t < T - 1; t++) {
        assert.ok(
          Math.abs(s.logProbs[b][t] - ref.lp[b][t]) < 2e-5,
          `lp[${b}][${t}] ${s.logProbs[b][t]} vs ${ref.lp[b][t]}`,
        );
        if (t < seqLen) {
          first += ref.lp[b][t];
          accFirst += +ref.hit[b][t];
        } else {
          second += ref.lp[b][t];
          accSecond += +ref.hit[b][t];
        }
      }
    }
    const n = batch * seqLen;
    assert.ok(Math.abs(s.firstHalf - first / n) < 1e-5);
    assert.ok(Math.abs(s.secondHalf - second / n) < 1e-5);
    assert.equal(s.accuracyFirst, accFirst / n);
    assert.equal(s.accuracySecond, accSecond / n);
  }
});

Deno.test("logProbSummary rejects tokens that do not match seqLen", async () => {
  const model = await HookedTransformer.fromPretrained("induction-toy");
  const tokens = generateRepeatedTokens(model, 5, 1);
  await assert.rejects(() => logProbSummary(model, tokens, 6), InputError, "seqLen 6");
});

Deno.test("logProbsAndHeadScores: one pass equals logProbSummary and headScores (several row groups)", async () => {
  const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
  // T = 41: 24 sequences a row group, so 30 sequences take two groups of different sizes.
  const tokens = generateRepeatedTokens(model, 20, 30, { seed: 3 });
  const { summary, scores } = await logProbsAndHeadScores(model, tokens, 20);
  assert.deepEqual(summary, await logProbSummary(model, tokens, 20));
  const separate = await headScores(model, tokens, 20);
  for (const key of ["induction", "previousToken", "duplicateToken"] as const) {
    separate[key].forEach((row, l) =>
      row.forEach((v, h) => {
        // Group means weighted by group size vs one mean: float64 reassociation only.
        assert.ok(Math.abs(v - scores[key][l][h]) < 1e-12, `${key} ${l}.${h}`);
      })
    );
  }
  model.dispose();
});
