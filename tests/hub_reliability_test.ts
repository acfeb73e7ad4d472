/**
 * The hub cache under adversity, against the loopback fake hub (`hub_server.ts`): two processes
 * downloading into an empty cache at once, servers that stall, lock holders that die or hang,
 * unsafe ETags and a CDN that redirects in a loop. Subprocesses run with the README's cache-only
 * permissions; every wait is bounded.
 */
import assert from "node:assert/strict";
import { InputError, IntegrityError, ModelNotFoundError } from "../core/errors.ts";
import { hubSettings, repoFolderName } from "../io/hub.ts";
import { resolveModel } from "../io/resolve.ts";
import { type FakeHub, type FakeHubOptions, startFakeHub } from "./hub_server.ts";
import { fileTree } from "./path.ts";
import { readTinyGolden } from "./fixtures.ts";
import { REPO_ROOT } from "./static_server.ts";

async function withHub(
  opts: FakeHubOptions,
  body: (hub: FakeHub, tmp: string) => Promise<void>,
): Promise<void> {
  const hub = await startFakeHub(opts);
  const tmp = await Deno.makeTempDir({ prefix: "hub_reliability_" });
  try {
    await body(hub, tmp);
  } finally {
    await hub.close();
    await Deno.remove(tmp, { recursive: true });
  }
}

function cdnGets(hub: FakeHub): string[] {
  return hub.requests
    .filter((r) => r.server === "cdn" && r.method === "GET")
    .map((r) => r.range ?? "whole");
}

/** A `deno run` of a script file with the README's cache-only permissions for a hub name. */
function spawnLoader(
  script: string,
  cacheDir: string,
  env: Record<string, string> = {},
  moreFlags: string[] = [],
) {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-config",
      "--no-lock",
      "--no-prompt",
      `--allow-read=${cacheDir},${REPO_ROOT}/backend/wasm`,
      `--allow-write=${cacheDir}`,
      "--allow-net=127.0.0.1",
      ...moreFlags,
      script,
    ],
    env: { NO_COLOR: "1", ...env },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Waits for a child with a deadline; kills it (and fails) past the deadline. */
async function outputWithin(child: Deno.ChildProcess, ms: number) {
  const timer = setTimeout(() => child.kill("SIGKILL"), ms);
  try {
    const out = await child.output();
    const dec = new TextDecoder();
    return {
      code: out.code,
      signal: out.signal,
      stdout: dec.decode(out.stdout),
      stderr: dec.decode(out.stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("two processes load into an empty cache at once: one download, identical logits", async () => {
  // Slow enough (8 chunks of 16 KB, 20 ms apart) that the second process waits on the lock.
  await withHub({ slow: { chunk: 16_384, delayMs: 20 } }, async (hub, tmp) => {
    const cacheDir = `${tmp}/cache`;
    await Deno.mkdir(cacheDir);
    const golden = readTinyGolden();
    const script = `${tmp}/load.ts`;
    await Deno.writeTextFile(
      script,
      `import { HookedTransformer } from ${
        JSON.stringify(new URL("../model/hooked_transformer.ts", import.meta.url).href)
      };
      await Deno.stdin.read(new Uint8Array(1)); // start together
      const model = await HookedTransformer.fromPretrained(${JSON.stringify(hub.repoId)}, {
        endpoint: ${JSON.stringify(hub.endpoint)}, cacheDir: ${JSON.stringify(cacheDir)},
        threads: 1, foldLn: false, centerWritingWeights: false, centerUnembed: false,
        foldValueBiases: false,
      });
      const logits = await model.run(${JSON.stringify(golden.tokens)});
      console.log(JSON.stringify(Array.from(logits.data)));`,
    );
    const children = [spawnLoader(script, cacheDir), spawnLoader(script, cacheDir)];
    // Both have imported the library once they read stdin; release them together.
    for (const child of children) {
      const w = child.stdin.getWriter();
      await w.write(new Uint8Array([10]));
      await w.close();
    }
    const [a, b] = await Promise.all(children.map((c) => outputWithin(c, 60_000)));
    assert.equal(a.code, 0, a.stderr);
    assert.equal(b.code, 0, b.stderr);
    assert.equal(a.stderr + b.stderr, "", "nothing on stderr");
    assert.deepEqual(cdnGets(hub), ["whole"], "one download between them");
    const la = JSON.parse(a.stdout) as number[];
    assert.deepEqual(JSON.parse(b.stdout), la, "identical logits");
    // HF's float64 logits for these tokens; 1e-4 as in model_golden_test (errors are ~1e-6).
    const expected = (golden.f32 as { logits: number[][][] }).logits.flat(2);
    assert.equal(la.length, expected.length);
    const err = Math.max(...la.map((x, i) => Math.abs(x - expected[i])));
    assert.ok(err < 1e-4, `max |logit - HF| = ${err}`);
    // Cache-only permissions: no symlinks, so the snapshot holds the file itself.
    const dir = `${cacheDir}/${repoFolderName(hub.repoId)}`;
    const pointer = `${dir}/snapshots/${hub.commit}/model.safetensors`;
    assert.ok(Deno.lstatSync(pointer).isFile);
    assert.deepEqual(Deno.readFileSync(pointer), hub.files["model.safetensors"]);
    assert.ok(!fileTree(dir).some((f) => f.endsWith(".incomplete") || f.endsWith(".tmp")));
  });
});

/** `p`, or a rejection after `ms`: an in-process load that hangs fails the test instead. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle in ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `check` every 20 ms until it holds; fails after `ms`. */
async function waitFor(what: string, ms: number, check: () => boolean): Promise<void> {
  const t0 = performance.now();
  while (!check()) {
    if (performance.now() - t0 > ms) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

function sizeOf(path: string): number {
  try {
    return Deno.statSync(path).size;
  } catch {
    return -1;
  }
}

/** A script that loads `hub.repoId` into `cacheDir` once stdin says go, and prints its size. */
async function loaderScript(tmp: string, hub: FakeHub, cacheDir: string): Promise<string> {
  const script = `${tmp}/resolve.ts`;
  await Deno.writeTextFile(
    script,
    `import { resolveModel } from ${
      JSON.stringify(new URL("../io/resolve.ts", import.meta.url).href)
    };
    await Deno.stdin.read(new Uint8Array(1));
    const m = await resolveModel(${JSON.stringify(hub.repoId)}, {
      endpoint: ${JSON.stringify(hub.endpoint)}, cacheDir: ${JSON.stringify(cacheDir)} });
    console.log(m.weightBytes[0].length);`,
  );
  return script;
}

async function go(child: Deno.ChildProcess): Promise<void> {
  const w = child.stdin.getWriter();
  await w.write(new Uint8Array([10]));
  await w.close();
}

Deno.test("a stalled download fails within its timeout, and the next process in line resumes", async () => {
  // The CDN sends 40000 bytes, then nothing, twice: the first loader's attempt and its resumed
  // retry both stall, so it gives up; the next one resumes from byte 40000 and succeeds.
  const stall = { file: "model.safetensors", at: 40_000, times: 2 };
  await withHub({ stall, slow: { chunk: 8192, delayMs: 0 } }, async (hub, tmp) => {
    const cacheDir = `${tmp}/cache`;
    await Deno.mkdir(cacheDir);
    const partial = `${cacheDir}/${repoFolderName(hub.repoId)}/blobs/` +
      `${hub.sha256["model.safetensors"]}.incomplete`;
    // The second process, with the timeout from the environment, waits for its go.
    const second = spawnLoader(await loaderScript(tmp, hub, cacheDir), cacheDir, {
      HF_HUB_DOWNLOAD_TIMEOUT: "0.5",
    }, ["--allow-env=HF_HUB_DOWNLOAD_TIMEOUT"]);
    const t0 = performance.now();
    const opts = { endpoint: hub.endpoint, cacheDir, downloadTimeoutMs: 500 };
    const first = within(resolveModel(hub.repoId, opts), 20_000, "the first load");
    const firstSettled = first.then(() => performance.now(), () => performance.now());
    await waitFor("the first download to start", 10_000, () => sizeOf(partial) > 0);
    await go(second); // it asks for the file and queues on the lock the first one holds
    const heads = () =>
      hub.requests.filter((r) => r.method === "HEAD" && r.path.endsWith(".safetensors"));
    await assert.rejects(first, (e: Error) => {
      assert.ok(e instanceof ModelNotFoundError, String(e));
      const url = `${hub.endpoint}/${hub.repoId}/resolve/${hub.commit}/model.safetensors`;
      assert.ok(e.message.includes(url), e.message);
      assert.match(e.message, /sent nothing for 0\.5 s/);
      assert.match(e.message, /40000 of 120872 bytes are kept in .*\.incomplete/);
      return true;
    });
    assert.equal(heads().length, 2, "the second process was queued before the first gave up");
    const elapsed = (await firstSettled) - t0;
    assert.ok(elapsed >= 1000, `two stalls of 0.5 s each, not ${elapsed} ms`);
    assert.ok(elapsed < 10_000, `gave up in ${elapsed} ms: a stall must not hang the load`);
    const out = await outputWithin(second, 30_000);
    assert.equal(out.code, 0, out.stderr);
    assert.equal(out.stdout.trim(), "120872");
    assert.deepEqual(cdnGets(hub), ["whole", "bytes=40000-", "bytes=40000-"]);
    const again = await resolveModel(hub.repoId, { endpoint: hub.endpoint, cacheDir });
    assert.deepEqual(again.weightBytes[0], hub.files["model.safetensors"]);
  });
});

Deno.test("a lock holder that hangs is reported, one that dies releases the lock at once", async () => {
  await withHub({ slow: { chunk: 4096, delayMs: 30 } }, async (hub, tmp) => {
    const cacheDir = `${tmp}/cache`;
    await Deno.mkdir(cacheDir);
    const dir = `${cacheDir}/${repoFolderName(hub.repoId)}`;
    const partial = `${dir}/blobs/${hub.sha256["model.safetensors"]}.incomplete`;
    const holder = spawnLoader(await loaderScript(tmp, hub, cacheDir), cacheDir);
    try {
      await go(holder);
      await waitFor("the holder's download to start", 30_000, () => sizeOf(partial) > 0);
      holder.kill("SIGSTOP"); // alive, holding the lock, and silent
      const opts = { endpoint: hub.endpoint, cacheDir, downloadTimeoutMs: 250 };
      const t0 = performance.now();
      await assert.rejects(
        within(resolveModel(hub.repoId, opts), 20_000, "the load"),
        (e: Error) => {
          assert.ok(e instanceof ModelNotFoundError, String(e));
          assert.ok(e.message.includes(`(pid ${holder.pid}) holds the lock`), e.message);
          assert.ok(e.message.includes(`.locks/${repoFolderName(hub.repoId)}/`), e.message);
          assert.match(e.message, /looks stuck\. Stop it/);
          return true;
        },
      );
      const waited = performance.now() - t0;
      assert.ok(waited >= 500 && waited < 10_000, `stale after 2 x 250 ms, gave up in ${waited}`);
    } finally {
      holder.kill("SIGKILL");
      await outputWithin(holder, 10_000);
    }
    // The holder is dead: its lock went with it, and its bytes are resumed.
    const kept = sizeOf(partial);
    assert.ok(kept > 0 && kept < hub.files["model.safetensors"].length);
    const files = await resolveModel(hub.repoId, { endpoint: hub.endpoint, cacheDir });
    assert.deepEqual(files.weightBytes[0], hub.files["model.safetensors"]);
    assert.deepEqual(cdnGets(hub), ["whole", `bytes=${kept}-`]);
  });
});

Deno.test("an ETag of . or .. is an IntegrityError, and nothing is left behind", async () => {
  for (const [file, value] of [["model.safetensors", ".."], ["config.json", "."]]) {
    await withHub({ etag: { file, value } }, async (hub, cacheDir) => {
      await assert.rejects(
        resolveModel(hub.repoId, { endpoint: hub.endpoint, cacheDir }),
        (e: Error) => {
          assert.ok(e instanceof IntegrityError, String(e));
          assert.ok(e.message.includes(`announced the ETag "${value}"`), e.message);
          assert.ok(e.message.includes(`/resolve/`) && e.message.includes(file), e.message);
          return true;
        },
      );
      const left = fileTree(cacheDir);
      assert.ok(!left.some((f) => f.includes("incomplete")), left.join("\n"));
      assert.ok(!left.some((f) => /(^|\/)\.+\.lock$/.test(f)), left.join("\n"));
      assert.ok(!left.some((f) => f.includes(`snapshots/${hub.commit}/${file}`)));
      assert.equal(cdnGets(hub).length, 0, "nothing downloaded");
    });
  }
});

Deno.test("a CDN redirect loop fails clearly, without claiming bytes were kept", async () => {
  await withHub({ cdnRedirectLoop: true }, async (hub, cacheDir) => {
    await assert.rejects(
      resolveModel(hub.repoId, { endpoint: hub.endpoint, cacheDir }),
      (e: Error) => {
        assert.ok(e instanceof ModelNotFoundError, String(e));
        assert.match(e.message, /redirect/i);
        assert.match(e.message, /no byte was received, so nothing was kept$/);
        assert.ok(!e.message.includes(".incomplete"), e.message);
        return true;
      },
    );
    assert.ok(!fileTree(cacheDir).some((f) => f.includes("incomplete")));
  });
});

Deno.test("download timeouts: the option and HF_HUB_DOWNLOAD_TIMEOUT are checked", () => {
  assert.equal(hubSettings({ cacheDir: "/c" }).downloadTimeoutMs, 10_000);
  assert.equal(hubSettings({ cacheDir: "/c", downloadTimeoutMs: 1500 }).downloadTimeoutMs, 1500);
  for (const bad of [0, -1, NaN, Infinity, "10"]) {
    assert.throws(
      () => hubSettings({ cacheDir: "/c", downloadTimeoutMs: bad as number }),
      (e: Error) =>
        e instanceof InputError && /downloadTimeoutMs must be a positive/.test(e.message),
    );
  }
  const saved = Deno.env.get("HF_HUB_DOWNLOAD_TIMEOUT");
  try {
    Deno.env.set("HF_HUB_DOWNLOAD_TIMEOUT", "2.5");
    assert.equal(hubSettings({ cacheDir: "/c" }).downloadTimeoutMs, 2500);
    Deno.env.set("HF_HUB_DOWNLOAD_TIMEOUT", "soon");
    assert.throws(
      () => hubSettings({ cacheDir: "/c" }),
      /HF_HUB_DOWNLOAD_TIMEOUT must be .* "soon"/,
    );
  } finally {
    saved === undefined
      ? Deno.env.delete("HF_HUB_DOWNLOAD_TIMEOUT")
      : Deno.env.set("HF_HUB_DOWNLOAD_TIMEOUT", saved);
  }
});
