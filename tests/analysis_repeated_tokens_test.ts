/** generateRepeatedTokens: shape, structure, seeding, validation. */
import assert from "node:assert/strict";
import { generateRepeatedTokens, InputError } from "../mod.ts";

const cfg = { dVocab: 2048, bosTokenId: 2047, nCtx: 256 };

Deno.test("repeated tokens are [BOS] + r + r with r in [0, d_vocab)", () => {
  const t = generateRepeatedTokens({ cfg }, 50, 30, { seed: 7 });
  assert.deepEqual(t.shape, [30, 101]);
  assert.equal(t.data.length, 30 * 101);
  const seen = new Set<number>();
  for (let b = 0; b < 30; b++) {
    const row = t.data.subarray(b * 101, (b + 1) * 101);
    assert.equal(row[0], 2047);
    for (let i = 0; i < 50; i++) {
      assert.equal(row[1 + i], row[51 + i]);
      assert.ok(Number.isInteger(row[1 + i]) && row[1 + i] >= 0 && row[1 + i] < 2048);
      seen.add(row[1 + i]);
    }
  }
  // 1500 uniform draws from 2048 ids cover roughly 2048 (1 - e^-0.73) ~ 1065 distinct ids.
  assert.ok(seen.size > 950 && seen.size < 1180, `distinct ids ${seen.size}`);
});

Deno.test("repeated tokens are repeatable: same seed same rows, batch only appends rows", () => {
  const a = generateRepeatedTokens({ cfg }, 20, 5, { seed: 3 });
  const b = generateRepeatedTokens({ cfg }, 20, 5, { seed: 3 });
  const c = generateRepeatedTokens({ cfg }, 20, 9, { seed: 3 });
  const d = generateRepeatedTokens({ cfg }, 20, 5, { seed: 4 });
  assert.deepEqual(a.data, b.data);
  assert.deepEqual(c.data.subarray(0, a.data.length), a.data);
  assert.notDeepEqual(a.data, d.data);
  assert.deepEqual(
    generateRepeatedTokens({ cfg }, 4, 2).data,
    generateRepeatedTokens({ cfg }, 4, 2, { seed: 0 }).data,
  );
});

Deno.test("repeated tokens reject bad sizes with InputErrors", () => {
  assert.throws(() => generateRepeatedTokens({ cfg }, 0, 1), InputError);
  assert.throws(() => generateRepeatedTokens({ cfg }, 5, 0), InputError);
  assert.throws(() => generateRepeatedTokens({ cfg }, 2.5, 1), InputError);
  assert.throws(() => generateRepeatedTokens({ cfg }, 128, 1), InputError, "seqLen <= 127");
  assert.throws(() => generateRepeatedTokens({ cfg }, 5, 1, { seed: NaN }), InputError);
});
