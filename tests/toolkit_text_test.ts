/**
 * TransformerLens's tokenizer helpers on the model (issue 10, item 7) and text input to runs,
 * with a character tokenizer over the tiny model's vocabulary (id = character code - 32, BOS 95).
 */
import assert from "node:assert/strict";
import { InputError } from "../mod.ts";
import { CHAR_TOKENIZER, relErr, tinyModel } from "./toolkit_helpers.ts";

const BOS = 95;
const ids = (s: string) => CHAR_TOKENIZER.encode(s);

Deno.test("toTokens: BOS first, batches padded right (default) or left", async () => {
  const model = await tinyModel(true, CHAR_TOKENIZER);
  assert.deepEqual(model.toTokens("ab"), [[BOS, ...ids("ab")]]);
  assert.deepEqual(model.toTokens("ab", { prependBos: false }), [ids("ab")]);
  assert.deepEqual(model.toTokens(["ab", "c"]), [[BOS, ...ids("ab")], [BOS, ...ids("c"), BOS]]);
  assert.deepEqual(model.toTokens(["ab", "c"], { paddingSide: "left" }), [
    [BOS, ...ids("ab")],
    [BOS, BOS, ...ids("c")],
  ]);
  const loose = model.toTokens.bind(model) as (i: unknown, o?: unknown) => unknown;
  assert.throws(() => loose("ab", { padding_side: "left" }), InputError, "paddingSide?");
  assert.throws(() => loose(["a"], { paddingSide: "middle" }), InputError, '"left" or "right"');
  assert.throws(() => loose([], {}), InputError, "non-empty");
  assert.throws(() => loose(3, {}), InputError, "a string");
});

Deno.test("toStrTokens and toString take one sequence or a batch", async () => {
  const model = await tinyModel(true, CHAR_TOKENIZER);
  assert.deepEqual(model.toStrTokens("hi"), ["<|endoftext|>", "h", "i"]);
  assert.deepEqual(model.toStrTokens(["hi", "a"], { prependBos: false }), [["h", "i"], ["a"]]);
  assert.deepEqual(model.toStrTokens(ids("ok")), ["o", "k"]);
  assert.deepEqual(model.toStrTokens([ids("ok"), ids("no")]), [["o", "k"], ["n", "o"]]);
  const tensor = { data: Int32Array.from([...ids("ab"), ...ids("cd")]), shape: [2, 2] };
  assert.deepEqual(model.toStrTokens(tensor), [["a", "b"], ["c", "d"]]);
  assert.equal(model.toString(ids("hello")), "hello");
  assert.deepEqual(model.toString([ids("ab"), ids("cd")]), ["ab", "cd"]);
  assert.deepEqual(model.toString(tensor), ["ab", "cd"]);
  assert.equal(model.toString(), "HookedTransformer(tiny-hf-f32)");
});

Deno.test("toSingleToken, toSingleStrToken and getTokenPosition", async () => {
  const model = await tinyModel(true, CHAR_TOKENIZER);
  assert.equal(model.toSingleToken("x"), ids("x")[0]);
  assert.throws(() => model.toSingleToken("xy"), InputError, '"xy" is 2 tokens, not one');
  assert.throws(() => model.toSingleToken(""), InputError, "0 tokens");
  assert.equal(model.toSingleStrToken(ids("q")[0]), "q");
  // "abcab" with BOS: a at 1 and 4.
  assert.equal(model.getTokenPosition("a", "abcab"), 1);
  assert.equal(model.getTokenPosition("a", "abcab", { mode: "last" }), 4);
  assert.equal(model.getTokenPosition("a", "abcab", { prependBos: false }), 0);
  assert.equal(model.getTokenPosition(ids("c")[0], [ids("abcab")]), 2);
  assert.throws(() => model.getTokenPosition("z", "abc"), InputError, "does not occur");
  assert.throws(
    () => model.getTokenPosition("a", [ids("a"), ids("a")]),
    InputError,
    "one sequence",
  );
  const loose = model.getTokenPosition.bind(model) as (
    t: unknown,
    i: unknown,
    o: unknown,
  ) => number;
  assert.throws(() => loose("a", "abc", { mode: "middle" }), InputError, '"first" or "last"');
});

Deno.test("text input: tokenized, padded and masked like the token batch", async () => {
  const model = await tinyModel(true, CHAR_TOKENIZER);
  const texts = ["hello there", "hi"];
  for (const paddingSide of ["left", "right"] as const) {
    const fromText = await model.run(texts, { paddingSide, returnType: "both" });
    const tokens = model.toTokens(texts, { paddingSide });
    const mask = tokens.map((row, b) => {
      const n = texts[b].length + 1;
      return row.map((_, t) => paddingSide === "left" ? +(t >= row.length - n) : +(t < n));
    });
    const fromTokens = await model.run(tokens, { attentionMask: mask, returnType: "both" });
    assert.deepEqual(fromText.logits.data, fromTokens.logits.data, paddingSide);
    assert.equal(fromText.loss, fromTokens.loss);
  }
  // One text is one unpadded sequence.
  const one = await model.run("hello", { returnType: "loss" });
  assert.equal(one, await model.run(model.toTokens("hello"), { returnType: "loss" }));
  const noBos = await model.run("hello", { prependBos: false });
  assert.deepEqual(noBos.shape, [1, 5, 96]);
  const withBos = await model.run("hello");
  assert.ok(relErr(noBos.data, withBos.data.subarray(96)) > 1e-3, "BOS changes the logits");
});
