import assert from "node:assert/strict";
import { IntegrityError, ModelNotFoundError } from "../core/errors.ts";
import {
  cacheView,
  fetchHubFiles,
  hubFileUrl,
  hubSettings,
  isRepoId,
  repoFolderName,
} from "../io/hub.ts";
import { formatBytes, formatDuration, ProgressBar } from "../core/progress.ts";
import { isModelCached, resolveModel } from "../io/resolve.ts";
import { type FakeHub, type FakeHubOptions, startFakeHub } from "./hub_server.ts";
import { fileTree } from "./path.ts";

const REQUIRED = ["config.json", "model.safetensors"];
const TOKENIZER_GROUPS = [["tokenizer.json"], ["vocab.json", "merges.txt"]];

/** Runs `body` with a fake hub and a fresh cache folder, and cleans both up. */
async function withHub(
  opts: FakeHubOptions,
  body: (hub: FakeHub, cacheDir: string) => Promise<void>,
): Promise<void> {
  const hub = await startFakeHub(opts);
  const cacheDir = await Deno.makeTempDir({ prefix: "hub_test_cache_" });
  try {
    await body(hub, cacheDir);
  } finally {
    await hub.close();
    await Deno.remove(cacheDir, { recursive: true });
  }
}

function repoDir(cacheDir: string, hub: FakeHub): string {
  return `${cacheDir}/${repoFolderName(hub.repoId)}`;
}

Deno.test("hub names: repo ids, folder names and resolve URLs", () => {
  assert.equal(repoFolderName("openai-community/gpt2"), "models--openai-community--gpt2");
  assert.ok(isRepoId("distilbert/distilgpt2"));
  assert.ok(!isRepoId("gpt2"));
  assert.ok(!isRepoId("a--b/c"));
  assert.ok(!isRepoId("../x/y"));
  assert.equal(
    hubFileUrl("https://huggingface.co", "openai-community/gpt2", "refs/pr/1", "config.json"),
    "https://huggingface.co/openai-community/gpt2/resolve/refs%2Fpr%2F1/config.json",
  );
  const s = hubSettings({
    endpoint: "http://x/",
    cacheDir: "/tmp/c/",
    offline: true,
    downloadTimeoutMs: 2500,
  });
  assert.deepEqual(s, {
    endpoint: "http://x",
    token: s.token,
    cacheDir: "/tmp/c",
    offline: true,
    downloadTimeoutMs: 2500,
  });
});

Deno.test("first load downloads into the HF cache layout; the second makes no request", async () => {
  await withHub({}, async (hub, cacheDir) => {
    const opts = { endpoint: hub.endpoint, cacheDir, progress: false };
    const first = await resolveModel(hub.repoId, opts);
    assert.deepEqual(first.weightBytes[0], hub.files["model.safetensors"]);
    assert.deepEqual(first.config, JSON.parse(new TextDecoder().decode(hub.files["config.json"])));
    assert.equal(first.tokenizer, undefined, "the tiny fixture has no tokenizer files");
    assert.match(first.source, new RegExp(`^${hub.endpoint}/${hub.repoId} \\(revision main`));

    const dir = repoDir(cacheDir, hub);
    const modelSha = hub.sha256["model.safetensors"];
    const { commit } = hub;
    const configBlob = Deno.readLinkSync(`${dir}/snapshots/${commit}/config.json`);
    assert.match(configBlob, /^\.\.\/\.\.\/blobs\/[0-9a-f]{40}$/, "git blob sha1 for a small file");
    assert.deepEqual(
      fileTree(dir),
      [
        `.no_exist/${commit}/tokenizer.json`,
        `.no_exist/${commit}/vocab.json`,
        configBlob.replace("../../", ""),
        `blobs/${modelSha}`,
        "refs/main",
        `snapshots/${commit}/config.json`,
        `snapshots/${commit}/model.safetensors`,
      ].sort(),
    );
    assert.equal(Deno.readTextFileSync(`${dir}/refs/main`), commit);
    assert.equal(
      Deno.readLinkSync(`${dir}/snapshots/${commit}/model.safetensors`),
      `../../blobs/${modelSha}`,
    );
    assert.ok(hub.requests.some((r) => r.server === "cdn"), "the LFS file came from the CDN");

    const before = hub.requests.length;
    const second = await resolveModel(hub.repoId, opts);
    assert.equal(hub.requests.length, before, "no request on a cached load");
    assert.deepEqual(second.weightBytes[0], first.weightBytes[0]);
    assert.equal(second.source, `hub cache ${dir} (revision main, commit ${commit.slice(0, 7)})`);

    const offline = await resolveModel(hub.repoId, { ...opts, offline: true });
    assert.deepEqual(offline.weightBytes[0], first.weightBytes[0]);
    const byCommit = await resolveModel(hub.repoId, { ...opts, revision: commit });
    assert.deepEqual(byCommit.weightBytes[0], first.weightBytes[0]);
    assert.equal(hub.requests.length, before, "no request offline or by commit either");
    assert.ok(isModelCached(hub.repoId, { cacheDir }));
    assert.ok(!isModelCached(hub.repoId, { cacheDir, revision: "v2" }));
  });
});

Deno.test("HF_HUB_OFFLINE=1 and HF_HUB_CACHE / HF_ENDPOINT from the environment", async () => {
  await withHub({}, async (hub, cacheDir) => {
    const saved = ["HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_ENDPOINT"].map((
      k,
    ) => [k, Deno.env.get(k)]);
    try {
      Deno.env.set("HF_HUB_CACHE", cacheDir);
      Deno.env.set("HF_HUB_OFFLINE", "1");
      await assert.rejects(resolveModel(hub.repoId), (e: Error) => {
        assert.ok(e instanceof ModelNotFoundError);
        assert.ok(e.message.includes(repoDir(cacheDir, hub)), e.message);
        assert.ok(e.message.includes("--model induction-toy"), e.message);
        return true;
      });
      assert.equal(hub.requests.length, 0, "offline: no request at all");

      Deno.env.delete("HF_HUB_OFFLINE");
      Deno.env.set("HF_ENDPOINT", hub.endpoint);
      await resolveModel(hub.repoId, { progress: false });
      const count = hub.requests.length;
      assert.ok(count > 0);

      Deno.env.set("HF_HUB_OFFLINE", "1");
      const cached = await resolveModel(hub.repoId);
      assert.equal(cached.weightBytes[0].length, hub.files["model.safetensors"].length);
      assert.equal(hub.requests.length, count);
    } finally {
      for (const [k, v] of saved) v === undefined ? Deno.env.delete(k!) : Deno.env.set(k!, v);
    }
  });
});

Deno.test("no network and nothing cached: one clear error naming the cache folder", async () => {
  // A port nothing listens on: take one from the OS, then close it.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const cacheDir = await Deno.makeTempDir({ prefix: "hub_test_cache_" });
  try {
    await assert.rejects(
      resolveModel("gpt2", { endpoint: `http://127.0.0.1:${port}`, cacheDir }),
      (e: Error) => {
        assert.ok(e instanceof ModelNotFoundError);
        assert.ok(e.message.includes(`${cacheDir}/models--openai-community--gpt2`), e.message);
        assert.ok(e.message.includes("--model induction-toy"), e.message);
        return true;
      },
    );
    assert.ok(!isModelCached("gpt2", { cacheDir }));
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});

Deno.test("a connection cut mid-file is resumed with a Range request", async () => {
  const cut = { file: "model.safetensors", at: 50_000, times: 1 };
  await withHub({ cut, slow: { chunk: 8192, delayMs: 0 } }, async (hub, cacheDir) => {
    const files = await resolveModel(hub.repoId, { endpoint: hub.endpoint, cacheDir });
    assert.deepEqual(files.weightBytes[0], hub.files["model.safetensors"]);
    const cdn = hub.requests.filter((r) => r.server === "cdn" && r.method === "GET");
    assert.deepEqual(cdn.map((r) => r.range), [null, "bytes=50000-"]);
    assert.ok(!fileTree(repoDir(cacheDir, hub)).some((f) => f.endsWith(".incomplete")));
  });
});

Deno.test("a connection that always breaks fails cleanly, and the next load resumes", async () => {
  const cut = { file: "model.safetensors", at: 40_000, times: Infinity };
  await withHub({ cut, slow: { chunk: 10_000, delayMs: 0 } }, async (hub, cacheDir) => {
    const opts = { endpoint: hub.endpoint, cacheDir };
    await assert.rejects(resolveModel(hub.repoId, opts), (e: Error) => {
      assert.ok(e instanceof ModelNotFoundError, String(e));
      assert.match(e.message, /interrupted/);
      assert.match(e.message, /40000 of 120872 bytes/);
      return true;
    });
    const dir = repoDir(cacheDir, hub);
    const sha = hub.sha256["model.safetensors"];
    const inBlobs = fileTree(`${dir}/blobs`);
    assert.ok(inBlobs.includes(`${sha}.incomplete`));
    assert.ok(!inBlobs.includes(sha), "no complete-looking model blob");
    assert.ok(!fileTree(`${dir}/snapshots`).some((f) => f.endsWith("model.safetensors")));
    assert.ok(!isModelCached(hub.repoId, { cacheDir }));

    // The server is healthy again: the next load picks up from byte 40000.
    await hub.close();
    const healthy = await startFakeHub({});
    try {
      const files = await resolveModel(hub.repoId, { ...opts, endpoint: healthy.endpoint });
      assert.deepEqual(files.weightBytes[0], healthy.files["model.safetensors"]);
      const get = healthy.requests.filter((r) => r.server === "cdn" && r.method === "GET");
      assert.deepEqual(get.map((r) => r.range), ["bytes=40000-"]);
      assert.ok(!fileTree(dir).some((f) => f.endsWith(".incomplete")));
    } finally {
      await healthy.close();
    }
  });
});

Deno.test("a wrong announced sha256 is an IntegrityError and nothing is cached", async () => {
  await withHub({ wrongSha: true }, async (hub, cacheDir) => {
    await assert.rejects(
      resolveModel(hub.repoId, { endpoint: hub.endpoint, cacheDir }),
      (e: Error) => {
        assert.ok(e instanceof IntegrityError, String(e));
        assert.ok(e.message.includes("model.safetensors"), e.message);
        assert.ok(e.message.includes("f".repeat(64)), "names the announced hash");
        assert.ok(e.message.includes(hub.sha256["model.safetensors"]), "names the actual hash");
        return true;
      },
    );
    const dir = repoDir(cacheDir, hub);
    assert.ok(!fileTree(`${dir}/blobs`).some((f) => f.startsWith("f".repeat(64))));
    assert.ok(!fileTree(`${dir}/snapshots`).some((f) => f.endsWith("model.safetensors")));
    assert.ok(!isModelCached(hub.repoId, { cacheDir }));
  });
});

Deno.test("404s name the URL: a missing file, repository or revision", async () => {
  await withHub({ missing: ["model.safetensors"] }, async (hub, cacheDir) => {
    const opts = { endpoint: hub.endpoint, cacheDir };
    const url = `${hub.endpoint}/${hub.repoId}/resolve/${hub.commit}/model.safetensors`;
    await assert.rejects(resolveModel(hub.repoId, opts), (e: Error) => {
      assert.ok(e instanceof ModelNotFoundError);
      assert.ok(e.message.includes(url), e.message);
      return true;
    });
    await assert.rejects(
      resolveModel("nobody/nothing", opts),
      new RegExp(`${hub.endpoint}/nobody/nothing/resolve/main/config.json`),
    );
    await assert.rejects(
      resolveModel(hub.repoId, { ...opts, revision: "v9" }),
      /resolve\/v9\/config.json: revision "v9" does not exist/,
    );
    await assert.rejects(
      resolveModel(hub.repoId, { ...opts, revision: "../x" }),
      /invalid revision/,
    );
  });
});

Deno.test("a token goes to the hub but not to the CDN; without it, a clear 401", async () => {
  await withHub({ token: "hf_secret" }, async (hub, cacheDir) => {
    const opts = { endpoint: hub.endpoint, cacheDir };
    await assert.rejects(resolveModel(hub.repoId, opts), /HF_TOKEN/);
    await resolveModel(hub.repoId, { ...opts, token: "hf_secret" });
    const hubAuth = hub.requests.filter((r) => r.server === "hub").slice(1);
    assert.ok(hubAuth.every((r) => r.authorization === "Bearer hf_secret"));
    const cdn = hub.requests.filter((r) => r.server === "cdn");
    assert.ok(cdn.length > 0 && cdn.every((r) => r.authorization === null));
  });
});

Deno.test("tokenizer files on the hub are downloaded and cached with the model", async () => {
  const vocab = { "a": 0, "b": 1, "Ġ": 2, "ab": 3, "Ġab": 4 };
  const extraFiles = {
    "vocab.json": JSON.stringify(vocab),
    "merges.txt": "#version: 0.2\na b\nĠ ab\n",
  };
  await withHub({ extraFiles }, async (hub, cacheDir) => {
    const opts = { endpoint: hub.endpoint, cacheDir };
    const first = await resolveModel(hub.repoId, opts);
    assert.deepEqual(first.tokenizer?.encode("ab ab"), [3, 4]);
    const before = hub.requests.length;
    const second = await resolveModel(hub.repoId, opts);
    assert.equal(hub.requests.length, before);
    assert.deepEqual(second.tokenizer?.tokenStrings([3, 4]), ["ab", " ab"]);
    const dir = repoDir(cacheDir, hub);
    assert.ok(fileTree(dir).includes(`.no_exist/${hub.commit}/tokenizer.json`));
    assert.ok(fileTree(dir).includes(`snapshots/${hub.commit}/merges.txt`));
  });
});

Deno.test("two loads at once share one download (the blob lock)", async () => {
  await withHub({ slow: { chunk: 16_384, delayMs: 5 } }, async (hub, cacheDir) => {
    const opts = { endpoint: hub.endpoint, cacheDir };
    const [a, b] = await Promise.all([
      resolveModel(hub.repoId, opts),
      resolveModel(hub.repoId, opts),
    ]);
    assert.deepEqual(a.weightBytes[0], b.weightBytes[0]);
    const gets = hub.requests.filter((r) => r.server === "cdn" && r.method === "GET");
    assert.equal(gets.length, 1);
  });
});

Deno.test("fetchHubFiles: optional groups stop at the first complete one", async () => {
  await withHub({ extraFiles: { "tokenizer.json": "{}" } }, async (hub, cacheDir) => {
    const settings = hubSettings({ endpoint: hub.endpoint, cacheDir, offline: false });
    const snap = await fetchHubFiles(settings, hub.repoId, {
      required: REQUIRED,
      optional: TOKENIZER_GROUPS,
      progress: false,
    });
    assert.deepEqual(Object.keys(snap.paths).sort(), [...REQUIRED, "tokenizer.json"].sort());
    assert.ok(!hub.requests.some((r) => r.path.endsWith("vocab.json")), "vocab.json not asked");
    const view = cacheView(cacheDir, hub.repoId, "main");
    assert.equal(view.commit, hub.commit);
    assert.equal(view.state("tokenizer.json"), "present");
    assert.equal(view.state("vocab.json"), "unknown");
  });
});

Deno.test("without symlink permission the snapshot holds real files", async () => {
  await withHub({}, async (hub, cacheDir) => {
    // Deno.symlink needs full --allow-read/--allow-write; with access to the cache only, the
    // download falls back to files, as huggingface_hub does where symlinks are unavailable.
    const script = `
      import { resolveModel } from ${
      JSON.stringify(new URL("../io/resolve.ts", import.meta.url).href)
    };
      const m = await resolveModel(${JSON.stringify(hub.repoId)}, {
        endpoint: ${JSON.stringify(hub.endpoint)}, cacheDir: ${JSON.stringify(cacheDir)} });
      console.log(m.weightBytes[0].length);
    `;
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        `--allow-read=${cacheDir}`,
        `--allow-write=${cacheDir}`,
        `--allow-net=127.0.0.1`,
        "--no-config",
        "-",
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const writer = out.stdin.getWriter();
    await writer.write(new TextEncoder().encode(script));
    await writer.close();
    const res = await out.output();
    const stderr = new TextDecoder().decode(res.stderr);
    assert.equal(res.code, 0, stderr);
    assert.equal(new TextDecoder().decode(res.stdout).trim(), "120872");
    const pointer = `${repoDir(cacheDir, hub)}/snapshots/${hub.commit}/model.safetensors`;
    assert.ok(Deno.lstatSync(pointer).isFile);
    const again = await resolveModel(hub.repoId, { endpoint: hub.endpoint, cacheDir });
    assert.deepEqual(again.weightBytes[0], hub.files["model.safetensors"]);
  });
});

Deno.test("a slow download draws a progress line on stderr when progress is on", async () => {
  await withHub({ slow: { chunk: 4096, delayMs: 15 } }, async (hub, cacheDir) => {
    const script = `
      import { resolveModel } from ${
      JSON.stringify(new URL("../io/resolve.ts", import.meta.url).href)
    };
      await resolveModel(${JSON.stringify(hub.repoId)}, { endpoint: ${JSON.stringify(hub.endpoint)},
        cacheDir: ${JSON.stringify(cacheDir)}, progress: true });
    `;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-config", "-"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(script));
    await writer.close();
    const res = await child.output();
    const stderr = new TextDecoder().decode(res.stderr);
    assert.equal(res.code, 0, stderr);
    const lines = stderr.split("\n").filter((l) => l.includes("model.safetensors"));
    assert.equal(lines.length, 1, JSON.stringify(stderr));
    const redraws = lines[0].split("\r").filter((s) => s.trim() !== "");
    assert.ok(redraws.length >= 3, `several redraws: ${JSON.stringify(lines[0])}`);
    assert.match(redraws.at(-1)!, /model\.safetensors \[#{20}\] 100% 120\.9 kB \/ 120\.9 kB/);
    assert.match(redraws[1], /\d+(\.\d)? kB\/s \d+:\d\d left/);
  });
});

Deno.test("quiet when progress is off", async () => {
  await withHub({}, async (hub, cacheDir) => {
    const script = `
      import { resolveModel } from ${
      JSON.stringify(new URL("../io/resolve.ts", import.meta.url).href)
    };
      await resolveModel(${JSON.stringify(hub.repoId)}, { endpoint: ${JSON.stringify(hub.endpoint)},
        cacheDir: ${JSON.stringify(cacheDir)} });
    `;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-config", "-"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(script));
    await writer.close();
    const res = await child.output();
    assert.equal(res.code, 0);
    assert.equal(new TextDecoder().decode(res.stderr), "", "stderr is not a terminal: quiet");
  });
});

Deno.test("ProgressBar: bytes, rate, time left, \\r redraws and a final newline", () => {
  let now = 0;
  const out: string[] = [];
  const bar = new ProgressBar({
    label: "model.safetensors",
    total: 10_000_000,
    enabled: true,
    write: (s) => out.push(s),
    now: () => now,
  });
  bar.start(2_000_000); // resumed: rate counts only new bytes
  now = 1000;
  bar.advance(4_000_000);
  now = 1050;
  bar.advance(1); // within 100 ms: no redraw
  now = 2000;
  bar.advance(3_999_999);
  bar.finish();
  bar.finish();
  assert.equal(out.length, 5); // start, 1 s, 2 s, final, newline
  assert.ok(out.slice(0, 4).every((s) => s.startsWith("\r")));
  assert.equal(
    out[1],
    "\rmodel.safetensors [############--------]  60% 6.0 MB / 10.0 MB 4.0 MB/s 0:01 left",
  );
  assert.equal(out[4], "\n");
  assert.match(out[3], /100% 10\.0 MB \/ 10\.0 MB 4\.0 MB\/s 0:00 left/);

  const quiet: string[] = [];
  const off = new ProgressBar({ label: "x", enabled: false, write: (s) => quiet.push(s) });
  off.start();
  off.advance(10);
  off.finish();
  assert.deepEqual(quiet, []);

  assert.equal(formatBytes(999), "999 B");
  assert.equal(formatBytes(548_105_171), "548.1 MB");
  assert.equal(formatDuration(83), "1:23");
  assert.equal(formatDuration(3725), "1:02:05");
  assert.equal(formatDuration(NaN), "--:--");
});
