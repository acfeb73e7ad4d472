/**
 * Loading every weight format from a folder, a URL and the loopback hub: sharded safetensors,
 * `pytorch_model.bin`, and sharded `.bin`, each checked tensor by tensor against the single
 * safetensors fixture; an interrupted sharded download resumes.
 * @module
 */
import assert from "node:assert/strict";
import { ModelNotFoundError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";
import { repoFolderName } from "../io/hub.ts";
import { isModelCached, resolveModel } from "../io/resolve.ts";
import { parseSafetensors, writeSafetensors } from "../io/safetensors.ts";
import type { TensorSource } from "../io/tensor_source.ts";
import { fixturePath } from "./fixtures.ts";
import { type FakeHubOptions, startFakeHub } from "./hub_server.ts";
import { fromFileUrl } from "./path.ts";

const TORCH_BIN = fromFileUrl(new URL("./fixtures/torch-bin/", import.meta.url));

function reference(fixture: string): TensorSource {
  return parseSafetensors(Deno.readFileSync(`${fixturePath(fixture)}/model.safetensors`));
}

/** Every tensor of the reference is in `source`, bit for bit. */
function assertSameWeights(source: TensorSource, expected: TensorSource): void {
  for (const name of expected.names()) {
    assert.deepEqual(source.tensor(name), expected.tensor(name), name);
  }
}

/** A folder with tiny-llama's config and its weights cut into two safetensors shards. */
function writeShardedSafetensors(dir: string): void {
  const single = reference("tiny-llama");
  Deno.copyFileSync(`${fixturePath("tiny-llama")}/config.json`, `${dir}/config.json`);
  const names = single.names();
  const half = Math.ceil(names.length / 2);
  const weightMap: Record<string, string> = {};
  [names.slice(0, half), names.slice(half)].forEach((part, i) => {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    const tensors = part.map((n): [string, Tensor] => [n, single.tensor(n)]);
    Deno.writeFileSync(`${dir}/${file}`, writeSafetensors(tensors));
    for (const n of part) weightMap[n] = file;
  });
  Deno.writeTextFileSync(
    `${dir}/model.safetensors.index.json`,
    JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }),
  );
}

async function withTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "resolve_formats_" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("folders: pytorch_model.bin, sharded .bin and sharded safetensors load", async () => {
  const bin = await resolveModel(`${TORCH_BIN}tiny-gpt2-bf16`);
  assert.deepEqual(bin.weightFiles, ["pytorch_model.bin"]);
  assertSameWeights(bin.tensors, reference("tiny-hf-bf16"));
  assert.equal(bin.weightBytes.length, 1);
  assert.ok(isModelCached(`${TORCH_BIN}tiny-gpt2-bf16`));

  const neox = await resolveModel(`${TORCH_BIN}tiny-neox-sharded`);
  assert.deepEqual(neox.weightFiles, [
    "pytorch_model.bin.index.json",
    "pytorch_model-00001-of-00002.bin",
    "pytorch_model-00002-of-00002.bin",
  ]);
  assertSameWeights(neox.tensors, reference("tiny-neox"));

  await withTempDir(async (dir) => {
    writeShardedSafetensors(dir);
    const llama = await resolveModel(dir);
    assert.equal(llama.weightFiles.length, 3);
    assertSameWeights(llama.tensors, reference("tiny-llama"));
    assert.ok(isModelCached(dir));
    // A shard gone: the folder is not loadable, and the error names the shard.
    Deno.removeSync(`${dir}/model-00002-of-00002.safetensors`);
    assert.ok(!isModelCached(dir));
    await assert.rejects(resolveModel(dir), (e: Error) => {
      assert.ok(e instanceof ModelNotFoundError);
      assert.match(
        e.message,
        /no model-00002-of-00002\.safetensors in .*model\.safetensors\.index\.json lists it/,
      );
      return true;
    });
    // model.safetensors wins over everything else when both exist, as in transformers.
    Deno.writeFileSync(`${dir}/model.safetensors`, writeSafetensors({}));
    assert.deepEqual((await resolveModel(dir)).weightFiles, ["model.safetensors"]);
  });
});

Deno.test("an http(s) URL of a sharded .bin folder", async () => {
  const root = `${TORCH_BIN}tiny-neox-sharded`;
  const requests: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const name = new URL(req.url).pathname.slice(1);
    requests.push(name);
    try {
      if (name.includes("/") || name.includes("..")) throw new Error("no");
      return new Response(await Deno.readFile(`${root}/${name}`));
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  try {
    const m = await resolveModel(`http://127.0.0.1:${server.addr.port}`, { progress: false });
    assertSameWeights(m.tensors, reference("tiny-neox"));
    assert.deepEqual(requests.slice(0, 6), [
      "config.json",
      "model.safetensors",
      "model.safetensors.index.json",
      "pytorch_model.bin",
      "pytorch_model.bin.index.json",
      "pytorch_model-00001-of-00002.bin",
    ]);
  } finally {
    await server.shutdown();
  }
});

async function withHub(
  opts: FakeHubOptions,
  body: (hub: Awaited<ReturnType<typeof startFakeHub>>, cacheDir: string) => Promise<void>,
): Promise<void> {
  const hub = await startFakeHub(opts);
  const cacheDir = await Deno.makeTempDir({ prefix: "resolve_formats_cache_" });
  try {
    await body(hub, cacheDir);
  } finally {
    await hub.close();
    await Deno.remove(cacheDir, { recursive: true });
  }
}

const isLfs = (f: string) => f.endsWith(".safetensors") || f.endsWith(".bin");

Deno.test("hub: a .bin-only repository loads, then loads from the cache with no request", async () => {
  const dir = `${TORCH_BIN}tiny-gpt2-f16`;
  await withHub({ dir, repoId: "tiny/gpt2-bin", isLfs }, async (hub, cacheDir) => {
    const opts = { endpoint: hub.endpoint, cacheDir, progress: false };
    const first = await resolveModel(hub.repoId, opts);
    assert.deepEqual(first.weightFiles, ["pytorch_model.bin"]);
    assertSameWeights(first.tensors, reference("tiny-hf-f16"));
    // Asked for safetensors first, as transformers does: both are now known to be absent.
    const noExist = `${cacheDir}/${repoFolderName(hub.repoId)}/.no_exist/${hub.commit}`;
    assert.ok(Deno.statSync(`${noExist}/model.safetensors`).isFile);
    assert.ok(Deno.statSync(`${noExist}/model.safetensors.index.json`).isFile);
    assert.ok(isModelCached(hub.repoId, { cacheDir }));

    const before = hub.requests.length;
    const again = await resolveModel(hub.repoId, opts);
    assert.equal(hub.requests.length, before, "a cached .bin repository makes no request");
    assertSameWeights(again.tensors, reference("tiny-hf-f16"));
    const offline = await resolveModel(hub.repoId, { ...opts, offline: true });
    assert.deepEqual(offline.weightFiles, ["pytorch_model.bin"]);
  });
});

Deno.test("hub: a sharded repository downloads the index, then each shard", async () => {
  await withTempDir(async (dir) => {
    writeShardedSafetensors(dir);
    await withHub({ dir, repoId: "tiny/llama-sharded" }, async (hub, cacheDir) => {
      const opts = { endpoint: hub.endpoint, cacheDir, progress: false };
      const m = await resolveModel(hub.repoId, opts);
      assertSameWeights(m.tensors, reference("tiny-llama"));
      const gets = hub.requests.filter((r) => r.method === "GET").map((r) => r.path);
      assert.ok(gets.some((p) => p.endsWith("/model.safetensors.index.json")));
      assert.equal(gets.filter((p) => p.startsWith("/lfs/")).length, 2, "two shards from the CDN");
      const before = hub.requests.length;
      await resolveModel(hub.repoId, opts);
      assert.equal(hub.requests.length, before, "a cached sharded repository makes no request");
    });
  });
});

Deno.test("hub: an interrupted sharded download resumes where it stopped", async () => {
  const dir = `${TORCH_BIN}tiny-neox-sharded`;
  const shard2 = "pytorch_model-00002-of-00002.bin";
  const cut = { file: shard2, at: 30_000, times: Infinity };
  const slow = { chunk: 10_000, delayMs: 0 };
  const cacheDir = await Deno.makeTempDir({ prefix: "resolve_formats_cache_" });
  try {
    const broken = await startFakeHub({ dir, repoId: "tiny/neox", isLfs, cut, slow });
    try {
      await assert.rejects(
        resolveModel(broken.repoId, { endpoint: broken.endpoint, cacheDir, progress: false }),
        (e: Error) => {
          assert.ok(e instanceof ModelNotFoundError, String(e));
          assert.match(e.message, /interrupted.*30000 of \d+ bytes.*resumes/);
          return true;
        },
      );
      assert.ok(!isModelCached(broken.repoId, { cacheDir }));
    } finally {
      await broken.close();
    }
    const healthy = await startFakeHub({ dir, repoId: "tiny/neox", isLfs });
    try {
      const m = await resolveModel(healthy.repoId, {
        endpoint: healthy.endpoint,
        cacheDir,
        progress: false,
      });
      assertSameWeights(m.tensors, reference("tiny-neox"));
      // Shard 1 was complete and is not fetched again; shard 2 resumes from byte 30000.
      const cdn = healthy.requests.filter((r) => r.server === "cdn" && r.method === "GET");
      assert.deepEqual(cdn.map((r) => r.range), ["bytes=30000-"]);
      assert.ok(isModelCached(healthy.repoId, { cacheDir }));
    } finally {
      await healthy.close();
    }
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});

Deno.test("hub: a repository without any weight file names what was looked for", async () => {
  await withHub({ missing: ["model.safetensors"] }, async (hub, cacheDir) => {
    await assert.rejects(
      resolveModel(hub.repoId, { endpoint: hub.endpoint, cacheDir, progress: false }),
      (e: Error) => {
        assert.ok(e instanceof ModelNotFoundError);
        assert.match(
          e.message,
          /has none of model\.safetensors, model\.safetensors\.index\.json, pytorch_model\.bin, pytorch_model\.bin\.index\.json/,
        );
        return true;
      },
    );
  });
});
