/**
 * Model folders from strangers, past the file formats: configs whose sizes would allocate
 * gigabytes before any tensor is checked (every family), and shard names that a URL's server
 * decodes into a path outside the model's folder.
 */
import assert from "node:assert/strict";
import { ConfigError, WeightsError } from "../core/errors.ts";
import { familyOf } from "../families/registry.ts";
import { parseSafetensors } from "../io/safetensors.ts";
import { parseShardIndex } from "../io/sharded.ts";
import { HookedTransformer } from "../model/hooked_transformer.ts";
import { fixturePath } from "./fixtures.ts";
import { startStaticServer } from "./static_server.ts";

const FAMILY_DIRS: Record<string, { layers: string; mlp: string }> = {
  "tiny-hf-f32": { layers: "n_layer", mlp: "n_inner" },
  "tiny-neox": { layers: "num_hidden_layers", mlp: "intermediate_size" },
  "tiny-llama": { layers: "num_hidden_layers", mlp: "intermediate_size" },
  "tiny-qwen2": { layers: "num_hidden_layers", mlp: "intermediate_size" },
  "tiny-gemma2": { layers: "num_hidden_layers", mlp: "intermediate_size" },
  "tiny-gemma3": { layers: "num_hidden_layers", mlp: "intermediate_size" },
};

for (const [dir, keys] of Object.entries(FAMILY_DIRS)) {
  Deno.test(`${dir}: absurd config sizes are a ConfigError before anything is allocated`, () => {
    const hf = JSON.parse(Deno.readTextFileSync(fixturePath(`${dir}/config.json`)));
    const file = parseSafetensors(Deno.readFileSync(fixturePath(`${dir}/model.safetensors`)));
    const family = familyOf(hf);
    // The fixture itself loads.
    assert.ok(family.params(file, family.config(hf, dir), hf).W_E.data.length > 0);
    for (const change of [{ [keys.layers]: 1e9 }, { [keys.mlp]: 2 ** 31 - 1 }]) {
      const bad = { ...hf, ...change };
      assert.throws(
        () => family.params(file, family.config(bad, dir), bad),
        (e: unknown) => e instanceof ConfigError && /does not match the weights/.test(e.message),
        `${dir} with ${JSON.stringify(change)}`,
      );
    }
  });
}

Deno.test("shard names: percent escapes are decoded, then checked as for folders", () => {
  const index = (shard: string) => JSON.stringify({ weight_map: { "a.weight": shard } });
  for (const shard of ["%2e%2e", "%2E%2e", "..%2fconfig.json", "%2fetc", "a%5cb", "%00", "%zz"]) {
    assert.throws(() => parseShardIndex(index(shard)), WeightsError, shard);
  }
  assert.deepEqual(parseShardIndex(index("model%2d1.safetensors")).shardFiles, [
    "model%2d1.safetensors",
  ]);
});

Deno.test("a URL model whose index names %2e%2e requests nothing outside its folder", async () => {
  const root = await Deno.makeTempDir({ prefix: "untrusted_url_" });
  const server = await startStaticServer({ root });
  try {
    await Deno.mkdir(`${root}/m`);
    await Deno.copyFile(fixturePath("tiny-hf-f32/config.json"), `${root}/m/config.json`);
    await Deno.writeTextFile(
      `${root}/m/model.safetensors.index.json`,
      JSON.stringify({ weight_map: { "wte.weight": "%2e%2e" } }),
    );
    await assert.rejects(
      () => HookedTransformer.fromPretrained(`${server.origin}/m`, { threads: 1 }),
      WeightsError,
    );
    const outside = server.requests.filter((r) => !r.path.startsWith("/m/"));
    assert.deepEqual(outside, []);
  } finally {
    await server.close();
    await Deno.remove(root, { recursive: true });
  }
});
