/**
 * Messages that send a TransformerLens user the right way (issue 20, item 8): a layer out of
 * range says so, a hook point the architecture lacks says why, an option point says which setter
 * adds it, and embeddings given where token ids are expected say what to do with them.
 */
import assert from "node:assert/strict";
import { HookError, InputError } from "../core/errors.ts";
import { loadFamily } from "./families_fixtures.ts";
import { tinyModel } from "./toolkit_helpers.ts";

Deno.test("cache.get: a layer out of range is named as such, not as a namesFilter problem", async () => {
  const model = await tinyModel(); // 2 layers
  const { cache } = await model.runWithCache([[95, 5, 9]]);
  for (const [name, layer] of [["pattern", 7], ["resid_pre", 2]] as const) {
    assert.throws(
      () => cache.get(name, layer),
      (e) =>
        e instanceof HookError &&
        new RegExp(`layer ${layer} is out of range: the model has 2 layers`).test(e.message) &&
        !/namesFilter/.test(e.message),
    );
  }
  assert.throws(
    () => cache.get("pattern", -3),
    (e) => e instanceof HookError && /-3/.test(e.message),
  );
  // The same on the model's own name check (hooks, namesFilter).
  await assert.rejects(
    () => model.runWithHooks([[95, 5]], { fwdHooks: [["blocks.5.hook_mlp_out", () => {}]] }),
    (e) => e instanceof HookError && /layer 5 is out of range/.test(e.message),
  );
});

Deno.test("cache.get: a point the architecture lacks says why", async () => {
  const pythia = await loadFamily("tiny-neox", true); // parallel attention and MLP, rotary
  const { cache } = await pythia.runWithCache([[5, 9, 13]]);
  assert.throws(
    () => cache.get("resid_mid", 0),
    (e) =>
      e instanceof HookError && /does not exist in this architecture/.test(e.message) &&
      /parallel/.test(e.message) && !/namesFilter/.test(e.message),
  );
  assert.throws(
    () => cache.get("pos_embed"),
    (e) => e instanceof HookError && /rotary/.test(e.message),
  );
  assert.throws(
    () => cache.get("pre_linear", 0),
    (e) => e instanceof HookError && /not gated/.test(e.message),
  );
  const gpt2 = await tinyModel();
  const { cache: c2 } = await gpt2.runWithCache([[95, 5]]);
  assert.throws(
    () => c2.get("rot_q", 0),
    (e) => e instanceof HookError && /learned/.test(e.message),
  );
  // An option point not cached: the setter is named.
  assert.throws(
    () => c2.get("result", 0),
    (e) => e instanceof HookError && /setUseAttnResult\(true\)/.test(e.message),
  );
  // A point that exists but was filtered out: then namesFilter is the advice.
  const { cache: c3 } = await gpt2.runWithCache([[95, 5]], { namesFilter: ["hook_embed"] });
  assert.throws(
    () => c3.get("mlp_out", 1),
    (e) => e instanceof HookError && /widen namesFilter/.test(e.message),
  );
  // A hook on a point the architecture lacks.
  await assert.rejects(
    () => pythia.runWithHooks([[5, 9]], { fwdHooks: [["blocks.0.hook_resid_mid", () => {}]] }),
    (e) => e instanceof HookError && /does not exist in this architecture/.test(e.message),
  );
});

Deno.test("token input: embeddings are not refused as 'convert with Int32Array.from'", async () => {
  const model = await tinyModel();
  const embeds = { data: new Float32Array(3 * 32), shape: [1, 3, 32] };
  const narrow = { data: new Float32Array(3 * 16), shape: [1, 3, 16] };
  for (
    const call of [
      () => model.generate(narrow, { maxNewTokens: 1 }),
      () => model.run(embeds as never, { attentionMask: [[1, 1, 1]] }),
    ]
  ) {
    await assert.rejects(
      async () => await call(),
      (e) =>
        e instanceof InputError && !/Int32Array\.from/.test(e.message) &&
        /(startAtLayer|embeds|embeddings)/.test(e.message),
    );
  }
});
