/**
 * Token validation (`model/tokens.ts`): every accepted form gives the same tensor, and every
 * malformed one is an InputError that names the problem, before any compute.
 */
import assert from "node:assert/strict";
import { InputError } from "../core/errors.ts";
import { gpt2Config } from "../families/gpt2.ts";
import { type Tokens, toTokenTensor } from "../model/tokens.ts";

const cfg = gpt2Config(
  { model_type: "gpt2", vocab_size: 10, n_positions: 8, n_embd: 4, n_layer: 1, n_head: 1 },
  "toy",
);

function rejects(tokens: unknown, pattern: RegExp): void {
  assert.throws(
    () => toTokenTensor(tokens as Tokens, cfg),
    (e: Error) => {
      assert.ok(e instanceof InputError, `${e.name}: ${e.message}`);
      assert.match(e.message, pattern);
      return true;
    },
  );
}

Deno.test("tokens: the three forms give the same [batch, pos] tensor", () => {
  const expected = { data: Int32Array.from([1, 2, 3, 4, 5, 6]), shape: [2, 3] };
  assert.deepEqual(toTokenTensor([[1, 2, 3], [4, 5, 6]], cfg), expected);
  assert.deepEqual(
    toTokenTensor({ data: Int32Array.from([1, 2, 3, 4, 5, 6]), shape: [2, 3] }, cfg),
    expected,
  );
  assert.deepEqual(toTokenTensor([7, 8, 9], cfg), {
    data: Int32Array.from([7, 8, 9]),
    shape: [1, 3],
  });
  assert.deepEqual(
    toTokenTensor([[0, 9]], cfg).data,
    Int32Array.from([0, 9]),
    "both ends of the vocabulary",
  );
});

Deno.test("tokens: a tensor's shape must be two non-negative integers that match its data", () => {
  const data = new Int32Array(12);
  rejects(
    { data, shape: [1.5, 4] },
    /shape \[1\.5,4\] must hold non-negative integers.*batch is 1\.5/,
  );
  rejects({ data, shape: [0.5, 12] }, /batch is 0\.5/);
  rejects({ data, shape: [3, 4.0000001] }, /pos is 4\.0000001/);
  rejects({ data: new Int32Array(6), shape: [-2, -3] }, /batch is -2/);
  rejects({ data, shape: [NaN, 4] }, /batch is NaN/);
  rejects({ data, shape: [Infinity, 4] }, /batch is Infinity/);
  rejects({ data, shape: ["3", 4] }, /batch is the string "3"/);
  rejects({ data, shape: [3, 2, 2] }, /shape \[batch, pos\], got \[3,2,2\]/);
  rejects({ data, shape: [12] }, /shape \[batch, pos\], got \[12\]/);
  rejects({ data, shape: "3x4" }, /shape \[batch, pos\], got the string "3x4"/);
  rejects({ data }, /shape \[batch, pos\], got undefined/);
  rejects({ data, shape: [2, 4] }, /has 12 ids but shape \[2,4\] needs 8/);
  rejects({ data: new Int32Array(6), shape: [1, 0] }, /has 6 ids but shape \[1,0\] needs 0/);
  rejects({ data: new Int32Array(0), shape: [0, 4] }, /tokens are empty/);
});

Deno.test("tokens: a tensor's data must be an Int32Array of ids in the vocabulary", () => {
  rejects(
    { data: new Float32Array(4), shape: [1, 4] },
    /data must be an Int32Array, got a Float32Array/,
  );
  rejects({ data: new Uint32Array(4), shape: [1, 4] }, /got a Uint32Array/);
  rejects({ data: [1, 2, 3, 4], shape: [1, 4] }, /data must be an Int32Array, got an array/);
  rejects({ data: null, shape: [1, 4] }, /data must be an Int32Array, got null/);
  rejects(
    { data: Int32Array.from([1, 10]), shape: [1, 2] },
    /token id 10 at \[0, 1\] is outside the vocabulary \[0, 10\) of toy/,
  );
  rejects({ data: Int32Array.from([1, 2, 3, -1]), shape: [2, 2] }, /token id -1 at \[1, 1\]/);
});

Deno.test("tokens: holes in arrays are refused, not run as token 0", () => {
  // deno-lint-ignore no-sparse-arrays
  rejects([[1, , 3]], /token at \[0, 1\] is a hole in the array/);
  rejects([new Array(5)], /token at \[0, 0\] is a hole/);
  rejects(new Array(5), /token at \[0, 0\] is a hole/);
  // deno-lint-ignore no-sparse-arrays
  rejects([1, 2, ,], /token at \[0, 2\] is a hole/);
  const batch: number[][] = [[1, 2]];
  batch[2] = [3, 4]; // row 1 is a hole
  rejects(batch, /tokens\[1\] is a hole in the array/);
});

Deno.test("tokens: ids that are not integers say what they are", () => {
  rejects(
    [[1, "3"]],
    /token at \[0, 1\] is the string "3", not an integer token id.*not strings \(Number\("3"\)/,
  );
  rejects(["3"], /token at \[0, 0\] is the string "3"/);
  rejects([[1, 2.5]], /token at \[0, 1\] is 2\.5, not an integer token id in \[0, 10\)/);
  rejects([[1, NaN]], /token at \[0, 1\] is NaN/);
  rejects([[1, null]], /token at \[0, 1\] is null/);
  rejects([[1, undefined]], /token at \[0, 1\] is undefined/);
  rejects([[1, true]], /token at \[0, 1\] is a boolean/);
  rejects([[1, 2n]], /token at \[0, 1\] is a bigint/);
  rejects([[1, { id: 2 }]], /token at \[0, 1\] is an object/);
  rejects([[1, 10]], /token id 10 at \[0, 1\] is outside the vocabulary \[0, 10\) of toy/);
  rejects([[-1]], /token id -1 at \[0, 0\] is outside/);
});

Deno.test("tokens: wrong nesting, ragged, empty, too long or not tokens at all", () => {
  rejects([1, [2]], /token at \[0, 1\] is an array/);
  rejects(
    [[1, 2], 3],
    /tokens\[1\] is 3 but tokens\[0\] is an array: give number\[\] .* not a mix/,
  );
  rejects([[1, 2], [3]], /ragged batch: row 0 has 2 tokens but row 1 has 1/);
  rejects([], /tokens are empty/);
  rejects([[]], /tokens are empty/);
  rejects([Array.from({ length: 9 }, () => 1)], /sequence of 9 tokens is longer than .* n_ctx = 8/);
  rejects(
    "hello",
    /tokens must be number\[\].*got the string "hello" \(encode text with model\.toTokens/,
  );
  rejects(null, /tokens must be .*got null/);
  rejects(42, /tokens must be .*got 42/);
  rejects({ shape: [1, 2] }, /tokens must be .*got an object/);
});
