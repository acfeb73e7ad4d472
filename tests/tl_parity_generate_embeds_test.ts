/**
 * Issue 20, item 4: `generate` from token embeddings (TL's `input_type="embeds"`). TL's rule: the
 * embeddings take the place of W_E[tokens] (position embeddings are added by the model), each new
 * token is embedded with W_E, and the result is the new tokens only. So W_E rows of a prompt must
 * generate what the prompt's ids generate, on learned (GPT-2) and rotary (Llama) positions, with
 * and without the key/value cache; and an embedding that is no token's row must give, as its
 * first token, the argmax of a run whose hook_embed holds that row.
 */
import assert from "node:assert/strict";
import { argmax, index, InputError } from "../mod.ts";
import type { HookedTransformer, Tensor } from "../mod.ts";
import { loadFamily } from "./families_fixtures.ts";
import { tinyModel } from "./toolkit_helpers.ts";

function embeddingsOf(model: HookedTransformer, rows: number[][]): Tensor {
  const d = model.cfg.dModel, WE = model.W_E.data;
  const data = new Float32Array(rows.length * rows[0].length * d);
  rows.flat().forEach((id, i) => data.set(WE.subarray(id * d, (id + 1) * d), i * d));
  return { data, shape: [rows.length, rows[0].length, d] };
}

for (const family of ["tiny-gpt2", "tiny-llama"] as const) {
  Deno.test(`generate from W_E rows equals generate from the ids (${family})`, async () => {
    const model = family === "tiny-gpt2" ? await tinyModel() : await loadFamily("tiny-llama", true);
    const prompt = [[3, 17, 5, 9, 17], [8, 8, 2, 40, 41]];
    for (const usePastKvCache of [true, false]) {
      const opts = { maxNewTokens: 4, temperature: 0, stopAtEos: false, usePastKvCache };
      const fromIds = await model.generate(prompt, opts) as number[][];
      const fromEmbeds = await model.generate(embeddingsOf(model, prompt), opts) as number[][];
      assert.deepEqual(fromEmbeds, fromIds.map((r) => r.slice(prompt[0].length)));
    }
  });
}

Deno.test("generate from an embedding that is no token's: the first token is the argmax of a run with that hook_embed", async () => {
  const model = await tinyModel();
  const prompt = [[3, 17, 5, 9]];
  const d = model.cfg.dModel, WE = model.W_E.data;
  const plain = argmax(index(await model.run(prompt), 0, -1)).data[0];
  // The last position holds the mean of token 9's row and another's: the first mix that moves
  // the argmax (so the given row is seen to matter), checked against the hooked run.
  let moved = false;
  for (const other of [60, 70, 80, 90, 11, 22, 33, 44]) {
    const e = embeddingsOf(model, prompt);
    for (let k = 0; k < d; k++) e.data[3 * d + k] = 0.5 * (WE[9 * d + k] + WE[other * d + k]);
    const logits = await model.runWithHooks(prompt, {
      fwdHooks: [["hook_embed", (act) => void act.data.set(e.data)]],
    });
    const want = argmax(index(logits, 0, -1)).data[0];
    const [[first]] = await model.generate(e, { maxNewTokens: 1, temperature: 0 }) as number[][];
    assert.equal(first, want, `mixed with ${other}`);
    if (want !== plain) moved = true;
  }
  assert.ok(moved, "some mixed row moved the argmax");
});

Deno.test("generate from embeddings: wrong width, masks and non-finite values are InputErrors", async () => {
  const model = await tinyModel();
  const e = embeddingsOf(model, [[3, 17]]);
  await assert.rejects(
    () => model.generate({ data: new Float32Array(2 * 16), shape: [1, 2, 16] }),
    (err) => err instanceof InputError && /d_model = 32/.test(err.message),
  );
  await assert.rejects(
    () => model.generate(e, { attentionMask: [[1, 1]] }),
    (err) => err instanceof InputError && /no attentionMask/.test(err.message),
  );
  const bad = { data: e.data.slice(), shape: e.shape };
  bad.data[5] = NaN;
  await assert.rejects(() => model.generate(bad), /non-finite value at index 5/);
});
