import assert from "node:assert/strict";
import { WeightsError } from "../core/errors.ts";
import { parseSafetensors, writeSafetensors } from "../io/safetensors.ts";
import { parseShardIndex, shardedTensorSource } from "../io/sharded.ts";
import type { TensorSource } from "../io/tensor_source.ts";
import type { Tensor } from "../core/tensor.ts";
import { fixturePath } from "./fixtures.ts";

/** tiny-hf-bf16 cut into shards the way save_pretrained cuts them, stored as BF16. */
function shardFixture(parts: number): {
  single: TensorSource;
  index: string;
  shards: Map<string, Uint8Array>;
} {
  const single = parseSafetensors(
    Deno.readFileSync(`${fixturePath("tiny-hf-bf16")}/model.safetensors`),
  );
  const names = single.names();
  const shards = new Map<string, Uint8Array>();
  const weightMap: Record<string, string> = {};
  for (let p = 0; p < parts; p++) {
    const file = `model-0000${p + 1}-of-0000${parts}.safetensors`;
    const mine = names.filter((_, i) => i % parts === p);
    // BF16 values widened to f32 and narrowed back are the same bits: the shards hold the file's.
    shards.set(
      file,
      writeSafetensors(mine.map((n): [string, Tensor] => [n, single.tensor(n)]), {
        dtype: "BF16",
        metadata: { format: "pt" },
      }),
    );
    for (const n of mine) weightMap[n] = file;
  }
  const index = JSON.stringify({ metadata: { total_size: 61000 }, weight_map: weightMap });
  return { single, index, shards };
}

function parseAll(shards: Map<string, Uint8Array>): Map<string, TensorSource> {
  return new Map([...shards].map(([f, b]) => [f, parseSafetensors(b, f)]));
}

Deno.test("sharded safetensors: three BF16 shards read as the single file", () => {
  const { single, index, shards } = shardFixture(3);
  const parsed = parseShardIndex(index);
  assert.equal(parsed.fileName, "model.safetensors.index.json");
  assert.deepEqual(parsed.metadata, { total_size: 61000 });
  assert.deepEqual(parsed.shardFiles, [...shards.keys()]);
  const source = shardedTensorSource(parsed, parseAll(shards));
  assert.deepEqual(source.names().sort(), single.names().sort());
  for (const name of single.names()) {
    assert.deepEqual(source.info(name), { dtype: "BF16", shape: single.info(name).shape });
    assert.deepEqual(source.tensor(name), single.tensor(name), name);
  }
  assert.throws(() => source.tensor("lm_head.weight"), /no tensor named "lm_head\.weight"/);
});

Deno.test("sharded: malformed indexes are WeightsErrors that say what is wrong", () => {
  const cases: Array<[string, RegExp]> = [
    ["{", /not valid JSON/],
    ["[]", /must hold a JSON object with a weight_map/],
    ["{}", /weight_map must be an object/],
    [`{"weight_map": {}}`, /weight_map is empty/],
    [`{"weight_map": {"a": 3}}`, /entry "a" must name a shard file, not 3/],
    [`{"weight_map": {"a": "../../etc/passwd"}}`, /shards must be plain file names/],
    [`{"weight_map": {"a": "sub\\\\x.bin"}}`, /plain file names/],
    [`{"weight_map": {"a": "x"}, "metadata": 3}`, /metadata must be an object/],
  ];
  for (const [text, pattern] of cases) {
    assert.throws(() => parseShardIndex(text, "idx.json"), (e: Error) => {
      assert.ok(e instanceof WeightsError, `${e}`);
      assert.match(e.message, /^idx\.json: /);
      assert.match(e.message, pattern);
      return true;
    });
  }
});

Deno.test("sharded: a missing shard, a misplaced name and a duplicate are WeightsErrors", () => {
  const { index, shards } = shardFixture(2);
  const parsed = parseShardIndex(index);
  const [first, second] = parsed.shardFiles;
  const expect = (sources: Map<string, TensorSource>, idx = parsed, pattern: RegExp) =>
    assert.throws(() => shardedTensorSource(idx, sources), (e: Error) => {
      assert.ok(e instanceof WeightsError, `${e}`);
      assert.match(e.message, pattern);
      return true;
    });
  const all = parseAll(shards);
  expect(
    new Map([[first, all.get(first)!]]),
    parsed,
    /lists shard "model-00002-of-00002.safetensors", which was not loaded/,
  );

  // The index says a tensor lives in the other shard.
  const moved = JSON.parse(index);
  const name = Object.keys(moved.weight_map).find((n) => moved.weight_map[n] === first)!;
  moved.weight_map[name] = second;
  expect(
    all,
    parseShardIndex(JSON.stringify(moved)),
    /maps tensor .* to "model-00002-of-00002\.safetensors", but it is in "model-00001/,
  );

  // The index names a tensor no shard holds.
  const ghost = JSON.parse(index);
  ghost.weight_map["ghost.weight"] = first;
  expect(
    all,
    parseShardIndex(JSON.stringify(ghost)),
    /"ghost\.weight" to .*, but no shard holds it/,
  );

  // The same tensor in both shards.
  const dup = new Map(all);
  const one: Tensor = { data: new Float32Array([1]), shape: [1] };
  const firstNames = all.get(first)!.names();
  dup.set(
    second,
    parseSafetensors(writeSafetensors([
      ...all.get(second)!.names().map((n): [string, Tensor] => [n, all.get(second)!.tensor(n)]),
      [firstNames[0], one],
    ])),
  );
  expect(dup, parsed, /is stored in two shards/);
});
