/**
 * Head scores: the embedded model's known heads, and agreement with a direct reading of cached
 * patterns (torch.diagonal semantics) on a tiny model.
 */
import assert from "node:assert/strict";
import {
  attentionPattern,
  diagonalMean,
  generateRepeatedTokens,
  headScores,
  HookedTransformer,
  InputError,
} from "../mod.ts";
import { fixturePath } from "./fixtures.ts";

/** [layer, head] pairs sorted by score, best first. */
function ranked(scores: number[][]): [number, number, number][] {
  const all: [number, number, number][] = [];
  scores.forEach((row, l) => row.forEach((v, h) => all.push([l, h, v])));
  return all.sort((a, b) => b[2] - a[2]);
}

Deno.test("induction-toy: previous-token heads 0.2 and 0.3, induction head 1.2", async () => {
  const model = await HookedTransformer.fromPretrained("induction-toy");
  const tokens = generateRepeatedTokens(model, 50, 30, { seed: 0 });
  const s = await headScores(model, tokens, 50);
  for (const m of [s.induction, s.previousToken, s.duplicateToken]) {
    assert.equal(m.length, 3);
    for (const row of m) assert.equal(row.length, 4);
  }
  const prev = ranked(s.previousToken);
  assert.deepEqual(prev.slice(0, 2).map(([l, h]) => [l, h]).sort(), [[0, 2], [0, 3]]);
  assert.ok(prev[1][2] > 0.9, `previous-token scores ${prev.slice(0, 2)}`);
  const ind = ranked(s.induction);
  assert.deepEqual(ind[0].slice(0, 2), [1, 2]);
  // The card: about 0.87 for 1.2 and 0.27 for 2.1, the weaker one.
  assert.ok(ind[0][2] > 0.8 && ind[0][2] < 0.95, `1.2 scores ${ind[0][2]}`);
  assert.deepEqual(ind[1].slice(0, 2), [2, 1]);
  assert.ok(ind[1][2] > 0.2 && ind[1][2] < 0.35, `2.1 scores ${ind[1][2]}`);
});

Deno.test("head scores equal diagonals read straight from cached patterns (tiny model)", async () => {
  const dir = fixturePath("tiny-hf-f32");
  const model = await HookedTransformer.fromBytes(
    JSON.parse(await Deno.readTextFile(`${dir}/config.json`)),
    await Deno.readFile(`${dir}/model.safetensors`),
  );
  const { nLayers, nHeads } = model.cfg;
  const seqLen = 7, batch = 3, T = 15;
  const tokens = generateRepeatedTokens(model, seqLen, batch, { seed: 5 });
  const s = await headScores(model, tokens, seqLen);
  const { cache } = await model.runWithCache(tokens);
  for (let l = 0; l < nLayers; l++) {
    const p = cache.get("pattern", l);
    assert.deepEqual(p.shape, [batch, nHeads, T, T]);
    for (let h = 0; h < nHeads; h++) {
      // Elements (q, k) with k - q = offset, every q in range, every sequence.
      const direct = (offset: number) => {
        let sum = 0, count = 0;
        for (let b = 0; b < batch; b++) {
          for (let q = 0; q < T; q++) {
            const k = q + offset;
            if (k < 0 || k >= T) continue;
            sum += p.data[((b * nHeads + h) * T + q) * T + k];
            count++;
          }
        }
        return sum / count;
      };
      const close = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-6, `${a} vs ${b}`);
      close(s.induction[l][h], direct(1 - seqLen));
      close(s.previousToken[l][h], direct(-1));
      close(s.duplicateToken[l][h], direct(-seqLen));
    }
  }
});

Deno.test("diagonalMean follows torch.diagonal for positive, zero and negative offsets", () => {
  // [1, 1, 3, 4]: rows 0..2, columns 0..3, value 10 q + k.
  const data = new Float32Array(12).map((_, i) => 10 * Math.floor(i / 4) + (i % 4));
  const p = { data, shape: [1, 1, 3, 4] };
  assert.deepEqual(diagonalMean(p, 0), [(0 + 11 + 22) / 3]);
  assert.deepEqual(diagonalMean(p, 1), [(1 + 12 + 23) / 3]);
  assert.deepEqual(diagonalMean(p, 3), [3]);
  assert.deepEqual(diagonalMean(p, -1), [(10 + 21) / 2]);
  assert.deepEqual(diagonalMean(p, -2), [20]);
  assert.throws(() => diagonalMean(p, -3), InputError);
  assert.throws(() => diagonalMean(p, 4), InputError);
});

Deno.test("attentionPattern gives the first sequence's pattern of one head", async () => {
  const model = await HookedTransformer.fromPretrained("induction-toy");
  const tokens = generateRepeatedTokens(model, 10, 2, { seed: 1 });
  const { pattern, tokens: ids } = await attentionPattern(model, tokens, 1, 2);
  assert.deepEqual(ids, Array.from(tokens.data.subarray(0, 21)));
  assert.equal(pattern.length, 21);
  const { cache } = await model.runWithCache(tokens, { namesFilter: "blocks.1.attn.hook_pattern" });
  const p = cache.get("pattern", 1).data;
  for (let q = 0; q < 21; q++) {
    assert.equal(pattern[q].length, 21);
    for (let k = 0; k < 21; k++) {
      assert.ok(Math.abs(pattern[q][k] - p[(2 * 21 + q) * 21 + k]) < 1e-6);
      if (k > q) assert.equal(pattern[q][k], 0);
    }
  }
  // The induction head looks at the token after the earlier copy.
  assert.ok(pattern[15][6] > 0.5, `pattern[15][6] = ${pattern[15][6]}`);
  await assert.rejects(() => attentionPattern(model, tokens, 3, 0), InputError);
  await assert.rejects(() => attentionPattern(model, tokens, 0, 4), InputError);
});
