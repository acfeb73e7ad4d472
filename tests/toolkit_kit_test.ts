/**
 * The rest of the TransformerLens kit on tiny-hf-f32 against float64 references
 * (tl-toolkit/reference.json, from tests/fixtures/tl-toolkit/make_reference.py, and
 * tiny-tl-golden.json's loss): detectHead, model.OV / model.QK, allCompositionScores, OV
 * eigenvalues, refactorFactoredAttnMatrices, lmCrossEntropyLoss, lmAccuracy, testPrompt.
 */
import assert from "node:assert/strict";
import {
  allCompositionScores,
  detectHead,
  detectionPattern,
  HookedTransformer,
  InputError,
  lmAccuracy,
  lmCrossEntropyLoss,
  matmul,
  testPrompt,
  transpose,
} from "../mod.ts";
import { fixturePath } from "./fixtures.ts";

const golden = JSON.parse(Deno.readTextFileSync(fixturePath("tiny-tl-golden.json")));
const ref = JSON.parse(Deno.readTextFileSync(fixturePath("tl-toolkit/reference.json")));
const dir = fixturePath("tiny-hf-f32");
const config = JSON.parse(Deno.readTextFileSync(`${dir}/config.json`));
const bytes = Deno.readFileSync(`${dir}/model.safetensors`);
const model = await HookedTransformer.fromBytes(config, bytes, { name: "tiny", threads: 1 });

function maxErr(actual: ArrayLike<number>, expected: number[]): number {
  assert.equal(actual.length, expected.length);
  let m = 0;
  for (let i = 0; i < expected.length; i++) m = Math.max(m, Math.abs(actual[i] - expected[i]));
  return m;
}

Deno.test("detectHead: TL's scores for the three head kinds, both error measures, exclusions", async () => {
  const { seqs, cases } = ref.detect_head;
  for (const c of cases) {
    const scores = await detectHead(model, seqs, c.pattern, {
      errorMeasure: c.errorMeasure,
      excludeBos: c.excludeBos,
      excludeCurrentToken: c.excludeCurrentToken,
    });
    assert.deepEqual(scores.shape, [2, 4]);
    // Ratios and means of float32 patterns (observed error 3e-8). "abs" is rounded to 3 decimals
    // as TL does; none of these values lies near a rounding edge.
    const err = maxErr(scores.data, c.scores.flat());
    assert.ok(err <= 1e-6, `${c.pattern} ${c.errorMeasure}: ${err}`);
  }
  // A custom pattern equals the named one; heads limits the search (others -1).
  const seq = seqs[0];
  const custom = await detectHead(model, seq, detectionPattern("previous_token_head", seq));
  const named = await detectHead(model, [seq], "previous_token_head");
  assert.deepEqual(Array.from(custom.data), Array.from(named.data));
  const some = await detectHead(model, seq, "induction_head", { heads: [[1, 2]] });
  assert.equal(some.data.filter((v) => v === -1).length, 7);
  // Patterns follow TL's definitions.
  const p = detectionPattern("duplicate_token_head", [9, 4, 9, 4]);
  assert.deepEqual(Array.from(p.data), [0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0]);
  await assert.rejects(() => detectHead(model, seq, "copy_head" as never), /unknown head kind/);
  await assert.rejects(
    () => detectHead(model, seq, { data: new Float32Array(4).fill(1), shape: [2, 2] }),
    /\[10, 10\]/,
  );
  await assert.rejects(
    () => detectHead(model, seq, "induction_head", { error_measure: "abs" } as never),
    /errorMeasure/,
  );
});

Deno.test("model.OV and model.QK: [n_layers, n_heads, d_model, d_model] factored circuits", () => {
  assert.deepEqual(model.OV.shape, [2, 4, 32, 32]);
  assert.deepEqual(model.QK.shape, [2, 4, 32, 32]);
  const WV = { data: model.W_V.data.slice(5 * 32 * 8, 6 * 32 * 8), shape: [32, 8] };
  const WO = { data: model.W_O.data.slice(5 * 8 * 32, 6 * 8 * 32), shape: [8, 32] };
  const ov = matmul(WV, WO);
  assert.ok(maxErr(model.OV.get(1, 1).AB.data, Array.from(ov.data)) < 1e-6);
  const WQ = { data: model.W_Q.data.slice(5 * 32 * 8, 6 * 32 * 8), shape: [32, 8] };
  const WK = { data: model.W_K.data.slice(5 * 32 * 8, 6 * 32 * 8), shape: [32, 8] };
  const qk = matmul(WQ, transpose(WK));
  assert.ok(maxErr(model.QK.get(1, 1).AB.data, Array.from(qk.data)) < 1e-6);
  // Eigenvalues of every head's OV circuit equal numpy's (float64) on the processed weights.
  const { re, im } = model.OV.eigenvalues;
  assert.deepEqual(re.shape, [2, 4, 8]);
  for (let l = 0; l < 2; l++) {
    for (let h = 0; h < 4; h++) {
      const expected: [number, number][] = ref.ov_eigenvalues[l][h];
      const ours = Array.from(
        { length: 8 },
        (_, i) => [re.data[(l * 4 + h) * 8 + i], im.data[(l * 4 + h) * 8 + i]],
      );
      const scale = Math.hypot(...expected[0]);
      for (const [a, b] of expected) {
        const nearest = Math.min(...ours.map(([x, y]) => Math.hypot(x - a, y - b)));
        assert.ok(nearest < 1e-5 * scale, `L${l}H${h} eigenvalue ${a}+${b}i: ${nearest}`);
      }
    }
  }
});

Deno.test("allCompositionScores: TL's Q, K and V scores, zero unless the first head is earlier", () => {
  for (const mode of ["Q", "K", "V"] as const) {
    const scores = allCompositionScores(model, mode);
    assert.deepEqual(scores.shape, [2, 4, 2, 4]);
    const err = maxErr(scores.data, ref.composition_scores[mode].flat(3));
    assert.ok(err < 1e-5, `${mode}: ${err}`);
  }
  assert.throws(() => allCompositionScores(model, "O" as never), InputError);
});

Deno.test("refactorFactoredAttnMatrices: same logits, W_O a rotation, b_V folded, even QK", async () => {
  const refactored = await HookedTransformer.fromBytes(config, bytes, {
    threads: 1,
    refactorFactoredAttnMatrices: true,
  });
  const a = await model.run(golden.tokens), b = await refactored.run(golden.tokens);
  assert.ok(maxErr(b.data, Array.from(a.data)) < 1e-4, "logits unchanged");
  assert.ok(refactored.b_V.data.every((v) => v === 0));
  for (const [l, h] of [[0, 0], [1, 3]]) {
    const i = l * 4 + h;
    const WO = { data: refactored.W_O.data.slice(i * 256, (i + 1) * 256), shape: [8, 32] };
    const gram = matmul(WO, transpose(WO)).data;
    gram.forEach((v, k) => assert.ok(Math.abs(v - (k % 9 === 0 ? 1 : 0)) < 1e-5, "W_O W_O^T = I"));
    // The QK and OV products are unchanged.
    const ovBefore = model.OV.get(l, h).AB.data, ovAfter = refactored.OV.get(l, h).AB.data;
    assert.ok(maxErr(ovAfter, Array.from(ovBefore)) < 1e-5);
    const qkBefore = model.QK.get(l, h).AB.data, qkAfter = refactored.QK.get(l, h).AB.data;
    assert.ok(maxErr(qkAfter, Array.from(qkBefore)) < 1e-5);
    // Even split: column j of [W_Q; b_Q] and of [W_K; b_K] have the same norm.
    for (let j = 0; j < 8; j++) {
      let q = 0, k = 0;
      for (let r = 0; r < 32; r++) {
        q += refactored.W_Q.data[i * 256 + r * 8 + j] ** 2;
        k += refactored.W_K.data[i * 256 + r * 8 + j] ** 2;
      }
      q += refactored.b_Q.data[i * 8 + j] ** 2;
      k += refactored.b_K.data[i * 8 + j] ** 2;
      assert.ok(Math.abs(q - k) < 1e-4 * Math.max(q, 1e-6), `column ${j}: ${q} vs ${k}`);
    }
  }
});

Deno.test("lmCrossEntropyLoss and lmAccuracy: TL's loss, per token and masked", async () => {
  const logits = await model.run(golden.tokens);
  const loss = lmCrossEntropyLoss(logits, golden.tokens);
  assert.ok(
    Math.abs(loss - golden.loss_grads.processed.loss) < 1e-5 * golden.loss_grads.processed.loss,
  );
  const per = lmCrossEntropyLoss(logits, golden.tokens, { perToken: true });
  assert.deepEqual(per.shape, [2, 11]);
  assert.ok(Math.abs(per.data.reduce((s, v) => s + v, 0) / 22 - loss) < 1e-6);
  // Masking the second sequence's last token drops its last pair (TL's next-token mask).
  const mask = [new Array(12).fill(1), [...new Array(11).fill(1), 0]];
  const masked = lmCrossEntropyLoss(logits, golden.tokens, { attentionMask: mask });
  const expected = (per.data.reduce((s, v) => s + v, 0) - per.data[21]) / 21;
  assert.ok(Math.abs(masked - expected) < 1e-6);
  assert.ok(Math.abs(lmAccuracy(logits, golden.tokens) - ref.lm_accuracy) < 1e-9);
  assert.deepEqual(lmAccuracy(logits, golden.tokens, { perToken: true }).shape, [2, 11]);
  assert.throws(() => lmCrossEntropyLoss(logits, [[1, 2, 3]]), /do not match/);
  assert.throws(
    () => lmCrossEntropyLoss({ data: new Float32Array(4), shape: [4] }, [[1]]),
    /batch, pos, d_vocab/,
  );
  assert.throws(() => lmAccuracy(logits, golden.tokens, { per_token: true } as never), /perToken/);
});

Deno.test("testPrompt: rank, logit and probability of the answer, and TL's printout", async () => {
  const lines: string[] = [];
  const prompt = golden.tokens[1].slice(0, 8), answer = golden.tokens[1].slice(8, 10);
  const result = await testPrompt(model, prompt, answer, { topK: 3, print: (l) => lines.push(l) });
  assert.equal(result.positions.length, 2);
  const logits = await model.run([[...prompt, ...answer]]);
  const V = 96;
  for (let i = 0; i < 2; i++) {
    const row = logits.data.subarray((7 + i) * V, (8 + i) * V);
    const a = result.positions[i].answers[0];
    assert.equal(a.token, answer[i]);
    assert.equal(a.logit, row[answer[i]]);
    assert.equal(a.rank, row.filter((v) => v > row[answer[i]]).length);
    const z = row.reduce((s, v) => s + Math.exp(v), 0);
    assert.ok(Math.abs(a.prob - Math.exp(row[answer[i]]) / z) < 1e-6);
    assert.equal(result.positions[i].top.length, 3);
    assert.equal(result.positions[i].top[0].rank, 0);
  }
  assert.match(lines[0], /^Tokenized prompt: /);
  assert.match(lines[2], /^Performance on answer token:$/);
  assert.match(lines[3], /^Rank: \d+ +Logit: +-?\d+\.\d\d Prob: +\d+\.\d\d% Token: \|\[\d+\]\|$/);
  assert.match(
    lines.at(-1)!,
    /^Ranks of the answer tokens: \[\('\[\d+\]', \d+\), \('\[\d+\]', \d+\)\]$/,
  );
  await assert.rejects(() => testPrompt(model, "text", "answer"), /no text tokenizer/);
});
