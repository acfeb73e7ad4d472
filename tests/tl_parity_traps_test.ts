/**
 * Python's indexing habits fail loudly (issue 20, item 7): `logits[0]`, `cache["pattern", 0]`
 * (which JavaScript evaluates as `cache[0]`) and `cache["blocks.0.attn.hook_pattern"]` throw an
 * InputError naming the call to use, on the tensors a run, a cache, a hook and the tensor
 * functions hand out; everything else about them behaves as a plain `{ data, shape }`.
 */
import assert from "node:assert/strict";
import { InputError } from "../core/errors.ts";
import { arange, index, item, reshape, select, tensor } from "../mod.ts";
import { tinyModel } from "./toolkit_helpers.ts";

// What a JavaScript user (no type checker) writes; TypeScript already refuses these forms.
const at = (o: unknown, k: string | number) => (o as Record<string, unknown>)[k];

Deno.test("logits[0] and t[-1] throw, naming index / select", async () => {
  const model = await tinyModel();
  const logits = await model.run([[95, 5, 9]]);
  for (const k of [0, -1, "2"]) {
    assert.throws(
      () => at(logits, k),
      (e) => e instanceof InputError && /index\(t, -?\d+\) or select\(t, -?\d+\)/.test(e.message),
    );
  }
  // Everything else still reads as a plain tensor.
  assert.deepEqual(logits.shape, [1, 3, 96]);
  assert.equal(at(logits, "missing"), undefined);
  assert.equal(JSON.parse(JSON.stringify({ s: logits.shape })).s.length, 3);
  assert.match(Deno.inspect(logits), /shape/);
  assert.equal(await Promise.resolve(logits), logits, "not a thenable");
  assert.equal(select(logits, 0, 2).data.length, 96);
  assert.equal(item(index(logits, 0, -1, 5)), logits.data[2 * 96 + 5]);
  // The tensor functions hand out the same guarded tensors.
  for (const t of [tensor(null, [2]), reshape(arange(6), [2, 3]), index(logits, 0)]) {
    assert.throws(() => at(t, 0), InputError);
  }
});

Deno.test('cache["pattern", 0] and cache["blocks.0.attn.hook_pattern"] throw, naming cache.get', async () => {
  const model = await tinyModel();
  const { cache } = await model.runWithCache([[95, 5, 9]]);
  // `cache["pattern", 0]` is `cache[0]` once JavaScript has evaluated the comma.
  assert.throws(
    () => at(cache, 0),
    (e) => e instanceof InputError && /cache\.get\("pattern", 0\)/.test(e.message),
  );
  assert.throws(
    () => at(cache, "blocks.0.attn.hook_pattern"),
    (e) =>
      e instanceof InputError && /cache\.get\("blocks\.0\.attn\.hook_pattern"\)/.test(e.message),
  );
  // Cached activations are guarded too; methods and fields work as before.
  assert.throws(() => at(cache.get("pattern", 0), 0), InputError);
  assert.deepEqual(cache.get("pattern", 0).shape, [1, 4, 3, 3]);
  assert.equal(cache.size, cache.keys().length);
  assert.equal(at(cache, "somethingElse"), undefined);
  assert.throws(() => at(cache.removeBatchDim().get("embed"), 0), InputError);
});

Deno.test("a hook's activation throws on act[0] too", async () => {
  const model = await tinyModel();
  let message = "";
  await model.runWithHooks([[95, 5]], {
    fwdHooks: [["blocks.0.hook_mlp_out", (act) => {
      try {
        at(act, 0);
      } catch (e) {
        message = (e as Error).message;
      }
    }]],
  });
  assert.match(message, /index\(t, 0\)/);
});
