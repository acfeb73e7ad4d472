/**
 * `generate` must not turn NaN logits into a token: when a hook made every logit NaN it used to
 * return token 0 (greedy: the argmax kernel skips NaN) or d_vocab - 1 (sampling: the draw never
 * fell below a NaN sum and the last token was the fallback). Now a NumericError that says which
 * new token of which sequence, as `torch.multinomial` refuses probabilities that hold NaN.
 */
import assert from "node:assert/strict";
import { NumericError } from "../core/errors.ts";
import { SeededRng } from "../core/rng.ts";
import { sampleLogits } from "../model/generate.ts";
import { HookedTransformer } from "../model/hooked_transformer.ts";

Deno.test("generate with a hook that makes every logit NaN: NumericError, greedy and sampling, with and without the KV cache", async () => {
  const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
  try {
    const prompt = [[2047, 5, 9, 13, 5, 9], [2047, 7, 8, 7, 8, 7]];
    const clean = await model.generate(prompt, { maxNewTokens: 3, temperature: 0 });
    // From the second new token on (step 1: the cached path), or from the first.
    for (const fromStep of [0, 1]) {
      let calls = 0;
      const poison = (act: { data: Float32Array; shape: number[] }) => {
        // One call per forward pass at this hook: pass fromStep onwards is poisoned.
        if (calls++ >= fromStep) act.data.fill(NaN);
      };
      for (const usePastKvCache of [true, false]) {
        for (const sampling of [{ temperature: 0 }, { temperature: 1, seed: 3 }, { topK: 5 }]) {
          calls = 0;
          const remove = model.addHook("ln_final.hook_normalized", poison);
          try {
            await assert.rejects(
              () => model.generate(prompt, { maxNewTokens: 3, usePastKvCache, ...sampling }),
              (e: unknown) =>
                e instanceof NumericError &&
                new RegExp(`new token ${fromStep + 1} of sequence 0: .*NaN`).test(e.message),
              `from step ${fromStep}, cache ${usePastKvCache}, ${JSON.stringify(sampling)}`,
            );
          } finally {
            remove();
          }
        }
      }
    }
    // The hooks are gone: the same generation as before.
    assert.deepEqual(await model.generate(prompt, { maxNewTokens: 3, temperature: 0 }), clean);
  } finally {
    model.dispose();
  }
});

Deno.test("sampleLogits refuses rows it cannot draw from, and still draws from the rest", () => {
  const rng = new SeededRng(1);
  const nanAt2 = new Float32Array([0, 5, NaN, 1]);
  for (const s of [{ temperature: 0 }, { temperature: 1 }, { temperature: 1, topK: 2 }]) {
    assert.throws(() => sampleLogits(nanAt2, s, rng), /NaN \(token 2 first\)/);
  }
  assert.throws(
    () => sampleLogits(new Float32Array([0, Infinity, 1]), { temperature: 1 }, rng),
    NumericError,
  );
  assert.throws(
    () => sampleLogits(new Float32Array(3).fill(-Infinity), { temperature: 0.5, topP: 0.9 }, rng),
    /every logit is -Infinity/,
  );
  // Greedy over +Infinity and -Infinity is defined (torch.argmax): the first maximum.
  assert.equal(sampleLogits(new Float32Array([0, Infinity, Infinity]), { temperature: 0 }, rng), 1);
  assert.equal(
    sampleLogits(new Float32Array([-Infinity, 2, -Infinity]), { temperature: 1 }, rng),
    1,
  );
});
