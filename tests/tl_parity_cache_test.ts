/**
 * Issue 20, item 4: `runWithCache({ posSlice })` as TL's `pos_slice` (the cache holds the full
 * run's activations at those positions, a number keeping the axis as TL's `Slice.unwrap`), the
 * gradient cache read with the cache's methods, `tokensToResidualDirections` (W_U's columns) and
 * `toTokens` truncating to n_ctx. The reference for each slice is the full cache indexed by the
 * definition (a loop over the positions), not the sliced code path.
 */
import assert from "node:assert/strict";
import { InputError } from "../mod.ts";
import type { Tensor } from "../mod.ts";
import { CHAR_TOKENIZER, tinyModel } from "./toolkit_helpers.ts";

const TOKENS = [[95, 5, 9, 13, 5, 9], [95, 7, 7, 2, 40, 41]];

/** t's entries with axis `axis` restricted to `positions`, by loops over multi-indices. */
function pick(t: Tensor, axis: number, positions: number[]): { data: number[]; shape: number[] } {
  const shape = t.shape.map((d, i) => i === axis ? positions.length : d);
  const outer = t.shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const inner = t.shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const data: number[] = [];
  for (let o = 0; o < outer; o++) {
    for (const p of positions) {
      for (let i = 0; i < inner; i++) data.push(t.data[(o * t.shape[axis] + p) * inner + i]);
    }
  }
  return { data, shape };
}

Deno.test("runWithCache posSlice: each point's positions as TL's pos_slice, keys of the pattern all kept", async () => {
  const model = await tinyModel();
  const { cache: full } = await model.runWithCache(TOKENS);
  const T = TOKENS[0].length;
  const cases: [unknown, number[]][] = [
    [-1, [T - 1]],
    [2, [2]],
    [[0, 3, -1], [0, 3, T - 1]],
    [{ start: 1, stop: 5, step: 2 }, [1, 3]],
  ];
  for (const [posSlice, positions] of cases) {
    const { cache } = await model.runWithCache(TOKENS, { posSlice: posSlice as never });
    assert.deepEqual(cache.keys().sort(), full.keys().sort());
    for (const name of full.keys()) {
      const f = full.get(name);
      // The position axis: the query axis (2) of [batch, head, query, key], else axis 1.
      const axis = /hook_(pattern|attn_scores)$/.test(name) ? 2 : 1;
      const want = pick(f, axis, positions);
      const got = cache.get(name);
      assert.deepEqual(got.shape, want.shape, `${name} with posSlice ${JSON.stringify(posSlice)}`);
      assert.deepEqual([...got.data], want.data.map(Math.fround), name);
    }
  }
  // A number keeps the axis; with removeBatchDim as well.
  const { cache } = await model.runWithCache([TOKENS[0]], { posSlice: -1, removeBatchDim: true });
  assert.deepEqual(cache.get("resid_post", 1).shape, [1, 32]);
  assert.deepEqual(cache.get("pattern", 0).shape, [4, 1, T]);
  // The cache's methods work on the sliced positions.
  const { cache: last } = await model.runWithCache(TOKENS, { posSlice: -1 });
  const acc = last.accumulatedResid();
  assert.deepEqual(acc.shape, [3, 2, 1, 32]);
  const fullAcc = full.accumulatedResid();
  assert.deepEqual([...acc.data], pick(fullAcc, 2, [T - 1]).data.map(Math.fround));

  await assert.rejects(
    () => model.runWithCache(TOKENS, { posSlice: 9 }),
    (e) => e instanceof InputError && /posSlice 9 does not fit 6 positions/.test(e.message),
  );
  await assert.rejects(
    () => model.runWithCache(TOKENS, { posSlice: "last" as never }),
    InputError,
  );
});

Deno.test("gradCache: the gradients under the activations' names, with the cache's methods", async () => {
  const model = await tinyModel();
  const { cache } = await model.runWithCache(TOKENS, { inclBwdCache: true, returnType: "loss" });
  const grads = cache.gradCache();
  for (const name of cache.keys().filter((n) => n.endsWith("_grad"))) {
    assert.equal(grads.get(name.slice(0, -5)), cache.get(name));
  }
  assert.equal(grads.keys().some((n) => n.endsWith("_grad")), false);
  // accumulatedResid on gradients: d loss / d resid_pre l for each layer, then resid_post last.
  const acc = grads.accumulatedResid();
  const parts = [
    "blocks.0.hook_resid_pre_grad",
    "blocks.1.hook_resid_pre_grad",
    "blocks.1.hook_resid_post_grad",
  ].map((n) => [...cache.get(n).data]);
  assert.deepEqual([...acc.data], parts.flat());
  // decomposeResid on gradients stacks embed, pos_embed, then attn_out / mlp_out per layer.
  const [dec, labels] = grads.decomposeResid({ returnLabels: true });
  assert.deepEqual(labels, [
    "embed",
    "pos_embed",
    "0_attn_out",
    "0_mlp_out",
    "1_attn_out",
    "1_mlp_out",
  ]);
  assert.deepEqual(
    [...dec.data],
    [
      "hook_embed_grad",
      "hook_pos_embed_grad",
      "blocks.0.hook_attn_out_grad",
      "blocks.0.hook_mlp_out_grad",
      "blocks.1.hook_attn_out_grad",
      "blocks.1.hook_mlp_out_grad",
    ].flatMap((n) => [...cache.get(n).data]),
  );
  // posSlice slices gradients as their activations.
  const { cache: sliced } = await model.runWithCache(TOKENS, {
    inclBwdCache: true,
    returnType: "loss",
    posSlice: -1,
  });
  const g = sliced.gradCache().get("resid_pre", 1);
  assert.deepEqual(g.shape, [2, 1, 32]);
  assert.deepEqual(
    [...g.data],
    pick(cache.get("blocks.1.hook_resid_pre_grad"), 1, [5]).data.map(Math.fround),
  );
  assert.throws(() => (cache.gradCache().gradCache()), /holds no gradients/);
  const { cache: plain } = await model.runWithCache(TOKENS);
  assert.throws(() => plain.gradCache(), /inclBwdCache: true/);
});

Deno.test("tokensToResidualDirections: W_U[:, token], with TL's shapes", async () => {
  const model = await tinyModel(true, CHAR_TOKENIZER);
  const W_U = model.W_U;
  const [d, V] = W_U.shape;
  const column = (t: number) => Array.from({ length: d }, (_, k) => W_U.data[k * V + t]);
  assert.deepEqual([...model.tokensToResidualDirections(7).data], column(7));
  assert.deepEqual(model.tokensToResidualDirections(7).shape, [d]);
  // A one-token text: "a" is id 65 in the character tokenizer.
  assert.deepEqual([...model.tokensToResidualDirections("a").data], column(65));
  const list = model.tokensToResidualDirections([3, 90, 3]);
  assert.deepEqual(list.shape, [3, d]);
  assert.deepEqual([...list.data], [3, 90, 3].flatMap(column));
  const rows = model.tokensToResidualDirections([[1, 2], [4, 8]]);
  assert.deepEqual(rows.shape, [2, 2, d]);
  assert.deepEqual([...rows.data], [1, 2, 4, 8].flatMap(column));
  const t = model.tokensToResidualDirections({ data: Int32Array.of(5), shape: [1, 1] });
  assert.deepEqual(t.shape, [d]);
  assert.throws(() => model.tokensToResidualDirections(V), /outside \[0, 96\)/);
  assert.throws(() => model.tokensToResidualDirections("ab"), /2 tokens, not one/);
});

Deno.test("toTokens truncates to n_ctx by default (BOS counted), as TL's to_tokens", async () => {
  const model = await tinyModel(true, CHAR_TOKENIZER);
  const n = model.cfg.nCtx;
  const long = "x".repeat(n + 5);
  const [row] = model.toTokens(long);
  assert.equal(row.length, n);
  assert.equal(row[0], 95);
  assert.equal(model.toTokens(long, { truncate: false })[0].length, n + 6);
  // A batch: each text truncated, then padded to the longest.
  const batch = model.toTokens([long, "ab"]);
  assert.deepEqual(batch.map((r) => r.length), [n, n]);
  // The truncated tokens run; the untruncated ones are refused.
  await model.run(model.toTokens(long));
  await assert.rejects(() => model.run(model.toTokens(long, { truncate: false })), InputError);
  assert.throws(() => model.toTokens("a", { truncate: 1 as never }), /truncate must be/);
});
