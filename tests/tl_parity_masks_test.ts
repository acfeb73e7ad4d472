/**
 * Attention masks with zeros between real tokens (issue 20, item 3), as TransformerLens runs them:
 * a zero is never a key, gets no position embedding and does not advance the positions after it
 * (`get_offset_position_ids`), and the loss skips every prediction next to it
 * (`next_token_mask`). Checked against float64 references with TL's definitions
 * (`tl-toolkit/parity_reference.json`, `make_parity_reference.py`): logits, cached activations,
 * the loss and its gradients at hook points; and TL's `test_masked_tokens` property (a zero
 * column equals removing that token) on the GPT-2, Pythia and Llama fixtures.
 */
import assert from "node:assert/strict";
import { InputError } from "../core/errors.ts";
import { positionIds } from "../model/padding.ts";
import { paddingFromMask } from "../model/padding.ts";
import type { HookedTransformer } from "../model/hooked_transformer.ts";
import { loadFamily } from "./families_fixtures.ts";
import { fixturePath } from "./fixtures.ts";
import { tinyModel } from "./toolkit_helpers.ts";

const REF = JSON.parse(Deno.readTextFileSync(fixturePath("tl-toolkit/parity_reference.json")));

/** max |got - want| / max |want| over the entries `keep(i)` selects. */
function relErr(
  got: ArrayLike<number>,
  want: number[],
  keep: (i: number) => boolean = () => true,
): number {
  assert.equal(got.length, want.length, "lengths");
  let diff = 0, scale = 0;
  for (let i = 0; i < want.length; i++) {
    if (!keep(i)) continue;
    diff = Math.max(diff, Math.abs(got[i] - want[i]));
    scale = Math.max(scale, Math.abs(want[i]));
  }
  return diff / scale;
}

Deno.test("positions with holes are TL's get_offset_position_ids", () => {
  const { mask, position_ids } = REF.holes;
  const p = paddingFromMask(mask, 2, 8);
  assert.deepEqual(Array.from(positionIds(2, 8, undefined, p)), position_ids.flat());
  const left = paddingFromMask(REF.left_holes.mask, 2, 8);
  // cumsum(mask) - 1 clipped at 0, by hand: [0,0,0,1,1,2,3,4] and [0,1,2,3,4,5,5,6].
  assert.deepEqual(Array.from(positionIds(2, 8, undefined, left)), [
    0,
    0,
    0,
    1,
    1,
    2,
    3,
    4,
    0,
    1,
    2,
    3,
    4,
    5,
    5,
    6,
  ]);
});

Deno.test("holes: logits, cache and loss match TL's float64 reference", async () => {
  const model = await tinyModel();
  const { tokens, mask } = REF.holes;
  const T = 8, V = model.cfg.dVocab;
  // Positions past a row's last real token are pads whose own values TL computes over its mask
  // and this library does not (they are never keys and never scored): compare before them.
  const end = mask.map((r: number[]) => r.lastIndexOf(1) + 1);
  const realRow = (b: number, t: number) => t < end[b];
  const { logits, cache, loss } = await model.runWithCache(tokens, {
    attentionMask: mask,
    returnType: "both",
  });
  // float32 forward of a 2-layer model against float64: the golden tests' 1e-5 (relative).
  const eLogits = relErr(logits!.data, REF.holes.logits, (i) => {
    const r = Math.floor(i / V);
    return realRow(Math.floor(r / T), r % T);
  });
  assert.ok(eLogits < 1e-5, `logits ${eLogits}`);
  assert.ok(Math.abs(loss! - REF.holes.loss) < 1e-5 * REF.holes.loss, `loss ${loss}`);
  const perToken = await model.run(tokens, {
    attentionMask: mask,
    returnType: "loss",
    lossPerToken: true,
  });
  assert.ok(relErr(perToken.data, REF.holes.loss_per_token) < 1e-5, "per-token loss");
  const H = model.cfg.nHeads, d = model.cfg.dModel;
  const checks: [string, (i: number) => boolean][] = [
    ["hook_pos_embed", () => true],
    [
      "blocks.0.attn.hook_pattern",
      (i) => realRow(Math.floor(i / (H * T * T)), Math.floor(i / T) % T),
    ],
    [
      "blocks.1.attn.hook_pattern",
      (i) => realRow(Math.floor(i / (H * T * T)), Math.floor(i / T) % T),
    ],
    ["blocks.0.attn.hook_z", (i) => realRow(Math.floor(i / (T * d)), Math.floor(i / d) % T)],
    ["blocks.1.hook_resid_post", (i) => realRow(Math.floor(i / (T * d)), Math.floor(i / d) % T)],
  ];
  for (const [name, keep] of checks) {
    const e = relErr(cache.get(name).data, REF.holes.cache[name], keep);
    assert.ok(e < 1e-5, `${name}: ${e}`);
  }
  // The pattern gives a hole's key exactly 0 (it is -inf in the scores).
  const p0 = cache.get("blocks.0.attn.hook_pattern").data;
  for (let q = 2; q < T; q++) assert.equal(p0[q * T + 2], 0, `query ${q} reads hole 2`);
  assert.equal(cache.get("blocks.0.attn.hook_attn_scores").data[4 * T + 2], -Infinity);
});

Deno.test("holes: the loss's gradients at hook points match TL's autograd", async () => {
  const model = await tinyModel();
  const { tokens, mask, grads } = REF.holes;
  const names = Object.keys(grads);
  const { cache, loss } = await model.runWithCache(tokens, {
    attentionMask: mask,
    returnType: "loss",
    inclBwdCache: true,
    namesFilter: names,
  });
  assert.ok(Math.abs(loss! - REF.holes.loss) < 1e-5 * REF.holes.loss);
  for (const name of names) {
    const want: number[] = grads[name];
    // Scores: TL's -inf entries have gradient 0, as here; compare the finite ones the same way.
    const e = relErr(cache.get(`${name}_grad`).data, want);
    // Backward through float32 activations: the gradient golden tests' 1e-4.
    assert.ok(e < 1e-4, `${name}_grad: ${e}`);
  }
});

Deno.test("left padding with a hole matches TL from the first real token on", async () => {
  const model = await tinyModel();
  const { tokens, mask } = REF.left_holes;
  const T = 8, V = model.cfg.dVocab, H = model.cfg.nHeads;
  const first = mask.map((r: number[]) => r.indexOf(1));
  const end = mask.map((r: number[]) => r.lastIndexOf(1) + 1);
  const real = (b: number, t: number) => t >= first[b] && t < end[b];
  const { logits, cache, loss } = await model.runWithCache(tokens, {
    attentionMask: mask,
    returnType: "both",
  });
  const e = relErr(logits!.data, REF.left_holes.logits, (i) => {
    const r = Math.floor(i / V);
    return real(Math.floor(r / T), r % T);
  });
  assert.ok(e < 1e-5, `logits ${e}`);
  const ep = relErr(
    cache.get("blocks.1.attn.hook_pattern").data,
    REF.left_holes.pattern1,
    (i) => real(Math.floor(i / (H * T * T)), Math.floor(i / T) % T),
  );
  assert.ok(ep < 1e-5, `pattern ${ep}`);
  assert.ok(Math.abs(loss! - REF.left_holes.loss) < 1e-5 * REF.left_holes.loss);
});

const FAMILIES: [string, () => Promise<HookedTransformer>][] = [
  ["GPT-2", () => tinyModel()],
  ["Pythia", () => loadFamily("tiny-neox", true)],
  ["Llama", () => loadFamily("tiny-llama", true)],
];
for (const [name, load] of FAMILIES) {
  Deno.test(`${name}: a zero column equals removing that token (TL's test_masked_tokens)`, async () => {
    const model = await load();
    const V = model.cfg.dVocab;
    const full = [1, 17, 3, 88, 40, 41, 9, 61];
    const mask = [1, 1, 0, 1, 1, 0, 0, 1];
    const kept = full.filter((_, t) => mask[t]);
    const masked = await model.run([full], { attentionMask: [mask] });
    const removed = await model.run([kept]);
    let worst = 0, j = 0;
    for (let t = 0; t < full.length; t++) {
      if (!mask[t]) continue;
      for (let v = 0; v < V; v++) {
        worst = Math.max(worst, Math.abs(masked.data[t * V + v] - removed.data[j * V + v]));
      }
      j++;
    }
    // The same real keys at the same positions: float32 rounding (summation order) only.
    assert.ok(worst < 1e-5, `worst ${worst}`);
    // Gradients at the kept positions equal the shorter sequence's, for a metric on its last
    // token (the loss differs by design: TL drops predictions next to a hole).
    const g = async (tokens: number[], attentionMask?: number[][]) => {
      const { cache } = await model.runWithCache([tokens], {
        attentionMask,
        inclBwdCache: true,
        returnType: "loss",
        namesFilter: ["hook_embed"],
      });
      return cache.get("hook_embed_grad").data;
    };
    const gKept = await g(kept);
    const gMasked = await g([1, 17, 88, 40, 61, 3, 41, 9], [[1, 1, 1, 1, 1, 0, 0, 0]]);
    // Right padding is the same as removing the tail: both equal the kept sequence's gradient.
    const d = model.cfg.dModel;
    let gw = 0;
    for (let i = 0; i < kept.length * d; i++) gw = Math.max(gw, Math.abs(gKept[i] - gMasked[i]));
    assert.ok(gw < 1e-6, `gradient ${gw}`);
  });
}

Deno.test("generate refuses a mask with holes; a row of zeros is refused everywhere", async () => {
  const model = await tinyModel();
  await assert.rejects(
    () => model.generate([[95, 5, 9]], { attentionMask: [[1, 0, 1]], maxNewTokens: 1 }),
    (e) => e instanceof InputError && /0 between real tokens/.test(e.message),
  );
  await assert.rejects(
    () => model.run([[95, 5, 9]], { attentionMask: [[0, 0, 0]] }),
    (e) => e instanceof InputError && /has no 1/.test(e.message),
  );
});
