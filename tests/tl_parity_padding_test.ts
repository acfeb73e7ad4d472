/**
 * Padded token ids (issue 20, item 2): `paddingSide` on token input masks the pads found by
 * TransformerLens's `utils.get_attention_mask` rule, so each row of a padded batch gives, at its
 * real positions, the logits of the row run alone (GPT-2, Pythia and Llama fixtures); the mask
 * itself follows TL's definition (leading pads on the left, trailing pads on the right, the BOS
 * kept when it is the pad token); what cannot be masked is an InputError, never an unmasked run.
 */
import assert from "node:assert/strict";
import { InputError } from "../core/errors.ts";
import { getAttentionMask } from "../mod.ts";
import type { HookedTransformer } from "../model/hooked_transformer.ts";
import { loadFamily } from "./families_fixtures.ts";
import { tinyModel } from "./toolkit_helpers.ts";

// Real tokens avoid every fixture's pad ids (95 for GPT-2, 0 for Pythia, 2 for Llama) except as
// the BOS the model prepends.
const BODY_LONG = [17, 3, 88, 40, 41, 9, 61];
const BODY_SHORT = [70, 33, 12];

const FIXTURES: [string, () => Promise<HookedTransformer>][] = [
  ["GPT-2 (tiny-hf-f32, pad = BOS = EOS)", () => tinyModel(true)],
  ["Pythia (tiny-neox, pad = EOS, no BOS prepended)", () => loadFamily("tiny-neox", true)],
  ["Llama (tiny-llama, pad = EOS != BOS)", () => loadFamily("tiny-llama", true)],
];

function maxDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

for (const [name, load] of FIXTURES) {
  Deno.test(`${name}: a padded token batch equals each row alone at its real positions`, async () => {
    const model = await load();
    const { bosTokenId: bos, dVocab: V } = model.cfg;
    const pad = model.cfg.eosTokenId ?? bos;
    // As toTokens makes them: BOS first where the model prepends it (not Pythia's).
    const head = model.cfg.defaultPrependBos ? [bos] : [];
    const long = [...head, ...BODY_LONG], short = [...head, ...BODY_SHORT];
    const T = long.length, n = short.length, pads = T - n;
    const alone = [await model.run([long]), await model.run([short])];
    for (const side of ["left", "right"] as const) {
      const padded = side === "left"
        ? [...Array(pads).fill(pad), ...short]
        : [...short, ...Array(pads).fill(pad)];
      const batch = await model.run([long, padded], { paddingSide: side });
      assert.deepEqual(batch.shape, [2, T, V]);
      // Row 0 has no padding: every position.
      const d0 = maxDiff(batch.data.subarray(0, T * V), alone[0].data);
      const at = side === "left" ? pads : 0;
      const row1 = batch.data.subarray((T + at) * V, (T + at + n) * V);
      const d1 = maxDiff(row1, alone[1].data);
      // Same kernels over the same real keys: float32 rounding only (summation order may differ
      // with the row's length), far below 1e-5 on logits of magnitude ~1.
      assert.ok(d0 < 1e-5 && d1 < 1e-5, `${side}: row 0 ${d0}, row 1 ${d1}`);
      if (side === "left") {
        // Unmasked, the pads change the real positions: the test can fail.
        const unmasked = await model.run([long, padded]);
        const u = maxDiff(unmasked.data.subarray((T + at) * V, (T + at + n) * V), alone[1].data);
        assert.ok(u > 1e-3, `without the mask the row differs by ${u}`);
      }
      // The loss skips the pads: each row's mean loss equals the row alone (masked mean).
      const perToken = await model.run([long, padded], {
        paddingSide: side,
        returnType: "loss",
        lossPerToken: true,
      });
      const shortLoss = await model.run([short], { returnType: "loss", lossPerToken: true });
      for (let t = 0; t < n - 1; t++) {
        const got = perToken.data[(T - 1) + at + t], want = shortLoss.data[t];
        assert.ok(Math.abs(got - want) < 1e-5, `${side} loss at ${t}: ${got} vs ${want}`);
      }
    }
  });
}

Deno.test("getAttentionMask follows TL's utils.get_attention_mask", () => {
  // GPT-2-like: pad = BOS = EOS = 9.
  const gpt2 = { cfg: { bosTokenId: 9, eosTokenId: 9, defaultPrependBos: true } };
  const left = [[9, 9, 9, 4, 5], [9, 4, 9, 5, 6], [4, 5, 6, 7, 8]];
  // Leading pads masked, the last of them kept as the BOS; a pad between real tokens stays.
  assert.deepEqual(getAttentionMask(gpt2, left, true, "left"), [
    [0, 0, 1, 1, 1],
    [1, 1, 1, 1, 1],
    [1, 1, 1, 1, 1],
  ]);
  // Without BOS prepended every leading pad is masked.
  assert.deepEqual(getAttentionMask(gpt2, left, false, "left"), [
    [0, 0, 0, 1, 1],
    [0, 1, 1, 1, 1],
    [1, 1, 1, 1, 1],
  ]);
  // Right: trailing pads only (TL's default side); the leading BOS is not a trailing pad.
  assert.deepEqual(getAttentionMask(gpt2, [[9, 4, 9, 5, 9, 9]], true, "right"), [
    [1, 1, 1, 1, 0, 0],
  ]);
  // Llama-like: pad = EOS = 2, BOS = 1: BOS is never a pad.
  const llama = { cfg: { bosTokenId: 1, eosTokenId: 2, defaultPrependBos: true } };
  assert.deepEqual(getAttentionMask(llama, [[2, 2, 1, 5], [1, 5, 6, 7]], true, "left"), [
    [0, 0, 1, 1],
    [1, 1, 1, 1],
  ]);
  // No EOS: the pad is BOS.
  const noEos = { cfg: { bosTokenId: 3, eosTokenId: null, defaultPrependBos: false } };
  assert.deepEqual(getAttentionMask(noEos, [4, 3, 3]), [[1, 0, 0]]);
  // A token tensor is accepted too.
  assert.deepEqual(
    getAttentionMask(llama, { data: Int32Array.of(2, 1, 5, 1, 5, 6), shape: [2, 3] }, true, "left"),
    [[0, 1, 1], [1, 1, 1]],
  );
  assert.throws(
    () => getAttentionMask(llama, [[1]], true, "top" as "left"),
    (e) => e instanceof InputError && /paddingSide must be "left" or "right"/.test(e.message),
  );
});

Deno.test("paddingSide that cannot find the padding is an InputError, never an unmasked run", async () => {
  const model = await loadFamily("tiny-llama", true);
  const pad = model.cfg.eosTokenId!;
  // A row of pads only has no real token.
  await assert.rejects(
    () => model.run([[1, 5, 6], [pad, pad, pad]], { paddingSide: "left" }),
    (e) => e instanceof InputError && /row 1 has no 1/.test(e.message),
  );
  // A residual-stream input has no tokens to find pads in.
  const resid = { data: new Float32Array(3 * model.cfg.dModel), shape: [1, 3, model.cfg.dModel] };
  await assert.rejects(
    () => model.run(resid, { startAtLayer: 1, paddingSide: "left" }),
    (e) => e instanceof InputError && /pass attentionMask/.test(e.message),
  );
  // An explicit mask wins over the pad tokens.
  const masked = await model.run([[pad, 1, 5]], {
    paddingSide: "left",
    attentionMask: [[1, 1, 1]],
  });
  const plain = await model.run([[pad, 1, 5]]);
  assert.ok(maxDiff(masked.data, plain.data) === 0);
});
