/**
 * ActivationCache's TransformerLens analyses against float64 references on tiny-hf-f32:
 * `tiny-tl-golden.json` (decompose_resid, accumulated_resid, stack_head_results, logit_attrs) and
 * `tl-toolkit/reference.json` (stack_neuron_results, get_full_resid_decomposition, the
 * cached-scale branches), labels included. Tolerance: the float32 forward pass of this 2-layer,
 * 32-wide model is within ~1e-6 of float64, and these analyses are sums and scalings of its
 * activations; 1e-5 relative to the largest reference value leaves an order of margin.
 */
import assert from "node:assert/strict";
import { ActivationCache, HookedTransformer, InputError, sum } from "../mod.ts";
import type { Tensor } from "../mod.ts";
import { fixturePath } from "./fixtures.ts";
import { syntheticGpt2 } from "../weights/synthetic.ts";

const golden = JSON.parse(Deno.readTextFileSync(fixturePath("tiny-tl-golden.json")));
const ref = JSON.parse(Deno.readTextFileSync(fixturePath("tl-toolkit/reference.json")));

async function loadTiny(): Promise<HookedTransformer> {
  const dir = fixturePath("tiny-hf-f32");
  const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  return await HookedTransformer.fromBytes(
    config,
    await Deno.readFile(`${dir}/model.safetensors`),
    {
      name: "tiny-hf-f32",
      threads: 1,
    },
  );
}

function assertClose(actual: Tensor, expected: number[], what: string, rel = 1e-5) {
  assert.equal(
    actual.data.length,
    expected.length,
    `${what}: ${actual.shape} vs ${expected.length} values`,
  );
  const scale = Math.max(...expected.map(Math.abs), 1e-30);
  let worst = 0;
  expected.forEach((v, i) => worst = Math.max(worst, Math.abs(actual.data[i] - v)));
  assert.ok(worst <= rel * scale, `${what}: max error ${worst} > ${rel} x ${scale}`);
}

const model = await loadTiny();
const { cache } = await model.runWithCache(golden.tokens);
const D = golden.decompositions, R = ref.decompositions;

Deno.test("decomposeResid, accumulatedResid, stackHeadResults match TL with their labels", () => {
  const [dec, decLabels] = cache.decomposeResid({ applyLn: true, returnLabels: true });
  assert.deepEqual(decLabels, D.decompose_resid.labels);
  assert.deepEqual(dec.shape, [6, 2, 12, 32]);
  assertClose(dec, D.decompose_resid.apply_ln.flat(3), "decompose_resid");

  const [acc, accLabels] = cache.accumulatedResid({
    inclMid: true,
    applyLn: true,
    returnLabels: true,
  });
  assert.deepEqual(accLabels, D.accumulated_resid.labels);
  assertClose(acc, D.accumulated_resid.apply_ln.flat(3), "accumulated_resid (re-normalised)");

  const [heads, headLabels] = cache.stackHeadResults({
    inclRemainder: true,
    applyLn: true,
    returnLabels: true,
  });
  assert.deepEqual(headLabels, D.stack_head_results.labels);
  assertClose(heads, D.stack_head_results.apply_ln.flat(3), "stack_head_results");
});

Deno.test("logitAttrs at the last position: TL's values, and they sum to the logit difference", async () => {
  const opts = { incorrectTokens: golden.wrong_tokens, posSlice: -1 };
  const dec = cache.decomposeResid({ posSlice: -1 });
  assert.deepEqual(dec.shape, [6, 2, 32]);
  const decAttrs = cache.logitAttrs(dec, golden.answer_tokens, opts);
  assertClose(decAttrs, D.logit_attrs_last_pos.decompose_resid.flat(), "decompose_resid attrs");
  const heads = cache.stackHeadResults({ posSlice: -1, inclRemainder: true });
  const headAttrs = cache.logitAttrs(heads, golden.answer_tokens, opts);
  assertClose(
    headAttrs,
    D.logit_attrs_last_pos.stack_head_results.flat(),
    "stack_head_results attrs",
  );
  // Attributions plus the b_U difference are the direct logit difference.
  const total = sum(decAttrs, 0);
  const bU = model.b_U.data;
  const diff = golden.answer_tokens.map((a: number, b: number) =>
    total.data[b] + bU[a] - bU[golden.wrong_tokens[b]]
  );
  assertClose({ data: Float32Array.from(diff), shape: [2] }, D.logit_diff_last_pos, "logit diff");
  // One answer for the whole batch, by id.
  assert.deepEqual(cache.logitAttrs(dec, 42, { posSlice: -1 }).shape, [6, 2]);
  const logits = (await model.run(golden.tokens)).data;
  const lastRow = (b: number) => (b * 12 + 11) * 96;
  const direct = [0, 1].map((b) => logits[lastRow(b) + 42]);
  const attrs42 = sum(cache.logitAttrs(dec, 42, { posSlice: -1 }), 0).data;
  [0, 1].forEach((b) => assert.ok(Math.abs(attrs42[b] + bU[42] - direct[b]) < 1e-4));
});

Deno.test("stackNeuronResults and getFullResidDecomposition match TL with their labels", () => {
  const [neurons, nLabels] = cache.stackNeuronResults(-1, {
    posSlice: -1,
    inclRemainder: true,
    applyLn: true,
    returnLabels: true,
  });
  assert.deepEqual(nLabels, R.stack_neuron_results.labels);
  assertClose(neurons, R.stack_neuron_results.apply_ln_last_pos.flat(2), "stack_neuron_results");
  const attrs = cache.logitAttrs(
    cache.stackNeuronResults(-1, { posSlice: -1, inclRemainder: true }),
    golden.answer_tokens,
    { incorrectTokens: golden.wrong_tokens, posSlice: -1 },
  );
  assertClose(attrs, R.stack_neuron_results.logit_attrs_last_pos.flat(), "neuron attrs");

  const [full, fLabels] = cache.getFullResidDecomposition({ posSlice: -1, returnLabels: true });
  assert.deepEqual(fLabels, R.full_resid_decomposition.labels);
  assertClose(full, R.full_resid_decomposition.last_pos.flat(2), "full decomposition");
  const [layers, lLabels] = cache.getFullResidDecomposition({
    posSlice: -1,
    expandNeurons: false,
    applyLn: true,
    returnLabels: true,
  });
  assert.deepEqual(lLabels, R.full_resid_decomposition_layers.labels);
  assertClose(layers, R.full_resid_decomposition_layers.apply_ln_last_pos.flat(2), "by layer");
});

Deno.test("the cached-scale branches: ln2 of a block (mlpInput) for both stacks", () => {
  const [acc, accLabels] = cache.accumulatedResid({
    layer: 1,
    mlpInput: true,
    applyLn: true,
    returnLabels: true,
  });
  assert.deepEqual(accLabels, R.accumulated_resid_mlp_input.labels);
  assertClose(acc, R.accumulated_resid_mlp_input.apply_ln.flat(3), "accumulated_resid layer 1");
  const [dec, decLabels] = cache.decomposeResid({
    layer: 1,
    mlpInput: true,
    applyLn: true,
    posSlice: -1,
    returnLabels: true,
  });
  assert.deepEqual(decLabels, R.decompose_resid_mlp_input.labels);
  assertClose(dec, R.decompose_resid_mlp_input.apply_ln_last_pos.flat(2), "decompose layer 1");
});

Deno.test("posSlice forms, removeBatchDim, applySliceToBatchDim, computeHeadResults", async () => {
  const range = cache.decomposeResid({ posSlice: { start: -3, stop: -1 } });
  assert.deepEqual(range.shape, [6, 2, 2, 32]);
  const picked = cache.decomposeResid({ posSlice: [0, 11] });
  assert.deepEqual(picked.shape, [6, 2, 2, 32]);
  const last = cache.decomposeResid({ posSlice: -1 });
  assert.deepEqual(Array.from(picked.data.subarray(32, 64)), Array.from(last.data.subarray(0, 32)));

  const one = cache.applySliceToBatchDim(1);
  assert.equal(one.hasBatchDim, false);
  assert.deepEqual(one.get("resid_pre", 0).shape, [12, 32]);
  const oneAttrs = one.logitAttrs(one.decomposeResid({ posSlice: -1 }), golden.answer_tokens[1], {
    incorrectTokens: golden.wrong_tokens[1],
    posSlice: -1,
  });
  assertClose(
    oneAttrs,
    D.logit_attrs_last_pos.decompose_resid.map((r: number[]) => r[1]),
    "batch 1",
  );
  assert.throws(() => cache.removeBatchDim(), InputError);
  const { cache: single } = await model.runWithCache([golden.tokens[0]]);
  single.removeBatchDim();
  assert.deepEqual(single.get("pattern", 0).shape, [4, 12, 12]);
  assert.deepEqual(single.stackHeadResults({ posSlice: -1 }).shape, [8, 32]);

  const { cache: small } = await model.runWithCache(golden.tokens, {
    namesFilter: (n) => n.endsWith("hook_z"),
  });
  small.computeHeadResults();
  const result = small.get("result", 1);
  assert.deepEqual(result.shape, [2, 12, 4, 32]);
  // attn_out = sum over heads of the results + b_O.
  const attnOut = cache.get("attn_out", 1).data;
  for (const i of [0, 100, 767]) {
    let s = model.b_O.data[32 + (i % 32)];
    for (let h = 0; h < 4; h++) s += result.data[Math.floor(i / 32) * 128 + h * 32 + (i % 32)];
    assert.ok(Math.abs(s - attnOut[i]) < 1e-5);
  }
});

Deno.test("bad input gets typed errors that say what to do", async () => {
  assert.throws(() => cache.decomposeResid({ apply_ln: true } as never), /did you mean applyLn/);
  assert.throws(() => cache.decomposeResid({ mode: "heads" as never }), InputError);
  assert.throws(() => cache.accumulatedResid({ layer: 3 }), /layer 3 must be in \[0, 2\]/);
  assert.throws(
    () => cache.applyLnToStack({ data: new Float32Array(4), shape: [2, 2] }),
    /d_model = 32/,
  );
  assert.throws(() => cache.logitAttrs(cache.decomposeResid({ posSlice: -1 }), 96), /vocabulary/);
  assert.throws(
    () => cache.logitAttrs(cache.decomposeResid({ posSlice: -1 }), [1, 2], { incorrectTokens: 3 }),
    /same shape/,
  );
  assert.throws(() => cache.decomposeResid({ posSlice: "last" as never }), /slice must be/);
  const { cache: partial } = await model.runWithCache(golden.tokens, {
    namesFilter: (n) => !n.includes("scale"),
  });
  assert.throws(() => partial.decomposeResid({ applyLn: true }), /ln_final.hook_scale/);
  const bare = new ActivationCache(new Map(), 2);
  assert.throws(() => bare.decomposeResid(), /needs the model/);
});

Deno.test("computeHeadResults on the kernels: z W_O per head within float32's summation bound", async () => {
  // Products of 64 x 64 x 256 multiply-adds run on the model's kernels (core/ops.ts sends those
  // of 2^18 or more there), unlike the tiny model's; the reference is float64. Each entry is a
  // float32 sum of d_head = 64 products, so |error| <= 64 u sum |z W| (u = 2^-24), with 1% room.
  const { config, weights } = syntheticGpt2({
    nLayers: 2,
    nHeads: 4,
    dModel: 256,
    dVocab: 512,
    nCtx: 64,
    seed: 5,
  });
  const big = await HookedTransformer.fromBytes(config, weights, { threads: 1 });
  try {
    const tokens = [Array.from({ length: 64 }, (_, i) => (i * 37) % 512)];
    const { cache: c } = await big.runWithCache(tokens);
    const { nHeads: H, dHead: K, dModel: D } = big.cfg;
    c.computeHeadResults();
    for (let l = 0; l < 2; l++) {
      const z = c.get("z", l).data, result = c.get("result", l);
      assert.deepEqual(result.shape, [1, 64, H, D]);
      const W = big.W_O.data.subarray(l * H * K * D);
      let worst = 0;
      for (let p = 0; p < 64; p++) {
        for (let h = 0; h < H; h++) {
          for (let d = 0; d < D; d++) {
            let exact = 0, mag = 0;
            for (let k = 0; k < K; k++) {
              const t = z[(p * H + h) * K + k] * W[(h * K + k) * D + d];
              exact += t;
              mag += Math.abs(t);
            }
            const err = Math.abs(result.data[(p * H + h) * D + d] - exact);
            worst = Math.max(worst, err / (1.01 * K * 2 ** -24 * mag));
          }
        }
      }
      assert.ok(worst <= 1, `layer ${l}: error ${worst} of the bound`);
    }
  } finally {
    big.dispose();
  }
});
