import assert from "node:assert/strict";
import { ConfigError, ModelNotFoundError } from "../core/errors.ts";
import { isModelCached, MODEL_ALIASES, resolveModel } from "../io/resolve.ts";
import { writeSafetensors } from "../io/safetensors.ts";
import { fixturePath } from "./fixtures.ts";
import { fromFileUrl } from "./path.ts";

const REPO_ROOT = fromFileUrl(new URL("../", import.meta.url));
const EMBEDDED_DIR = fromFileUrl(new URL("../weights/induction-toy/", import.meta.url));
const TINY = fixturePath("tiny-hf-f32");

/** Serves a folder read-only over http on 127.0.0.1; 404 for anything missing. */
function serveFolder(root: string) {
  const requests: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname);
    requests.push(path);
    if (path.includes("..")) return new Response("no", { status: 400 });
    try {
      const data = await Deno.readFile(`${root}${path}`);
      const type = path.endsWith(".ts") ? "application/typescript" : "application/octet-stream";
      return new Response(data, { headers: { "content-type": type } });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  return { base: `http://127.0.0.1:${server.addr.port}`, requests, close: () => server.shutdown() };
}

/** Runs a script in a fresh Deno with exactly `permissions`; returns stdout, stderr, code. */
async function runScript(script: string, permissions: string[], env: Record<string, string> = {}) {
  const cwd = await Deno.makeTempDir({ prefix: "resolve_test_cwd_" });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-config", "--no-lock", ...permissions, "-"],
    cwd,
    env,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(script));
  await writer.close();
  const res = await child.output();
  await Deno.remove(cwd, { recursive: true });
  const dec = new TextDecoder();
  return { code: res.code, stdout: dec.decode(res.stdout), stderr: dec.decode(res.stderr) };
}

async function withTempDir(body: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "resolve_test_" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("aliases: TransformerLens's GPT-2 and Pythia names map to their hub repositories", () => {
  const gpt2 = {
    "gpt2": "openai-community/gpt2",
    "gpt2-small": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
    "distilgpt2": "distilbert/distilgpt2",
  };
  for (const [alias, repo] of Object.entries(gpt2)) assert.equal(MODEL_ALIASES[alias], repo);
  assert.equal(MODEL_ALIASES["pythia-70m"], "EleutherAI/pythia-70m");
  assert.equal(MODEL_ALIASES["pythia-1b"], "EleutherAI/pythia-1b");
  assert.equal(MODEL_ALIASES["pythia-70m-deduped"], "EleutherAI/pythia-70m-deduped");
  assert.equal(MODEL_ALIASES["pythia-12b-deduped"], "EleutherAI/pythia-12b-deduped");
});

Deno.test("induction-toy: the embedded model, no tokenizer", async () => {
  const m = await resolveModel("induction-toy");
  assert.equal(m.name, "induction-toy");
  assert.equal(m.source, "embedded induction-toy");
  assert.equal(m.config.n_layer, 3);
  assert.equal(m.tokenizer, undefined);
  assert.deepEqual(m.weightBytes[0], await Deno.readFile(`${EMBEDDED_DIR}model.safetensors`));
  assert.ok(isModelCached("induction-toy"));
});

Deno.test("induction-toy needs no permission beyond reading its own two files", async () => {
  const script = `
    import { resolveModel } from ${
    JSON.stringify(new URL("../io/resolve.ts", import.meta.url).href)
  };
    const m = await resolveModel("induction-toy");
    console.log(m.source, m.weightBytes[0].length, m.config.vocab_size);
  `;
  const res = await runScript(script, [`--allow-read=${EMBEDDED_DIR}`]);
  assert.equal(res.code, 0, res.stderr);
  assert.equal(res.stdout.trim(), "embedded induction-toy 3563328 2048");
});

Deno.test("kjv-small: embedded with its tokenizer, reading nothing but its own folder", async () => {
  const dir = EMBEDDED_DIR.replace(/induction-toy\/$/, "kjv-small/");
  const script = `
    import { resolveModel } from ${
    JSON.stringify(new URL("../io/resolve.ts", import.meta.url).href)
  };
    const m = await resolveModel("kjv-small");
    console.log(m.source, m.weightBytes[0].length, JSON.stringify(m.tokenizer.encode(" unto")));
  `;
  const res = await runScript(script, [`--allow-read=${dir}`]);
  assert.equal(res.code, 0, res.stderr);
  const size = (await Deno.stat(`${dir}model.safetensors`)).size;
  // " unto" is id 317 in kjv-small's tokenizer.json (reference.json's ids for "said unto").
  assert.equal(res.stdout.trim(), `embedded kjv-small ${size} [317]`);
});

Deno.test("induction-toy works when the library is imported by http URL", async () => {
  const site = serveFolder(REPO_ROOT.replace(/\/$/, ""));
  const denoDir = await Deno.makeTempDir({ prefix: "resolve_test_deno_dir_" });
  try {
    const host = new URL(site.base).host;
    const script = `
      import { resolveModel } from "${site.base}/io/resolve.ts";
      const m = await resolveModel("induction-toy");
      console.log(m.source, m.weightBytes[0].length);
    `;
    // Network to that host only: no read, no env, no write.
    const res = await runScript(script, [`--allow-net=${host}`, `--allow-import=${host}`], {
      DENO_DIR: denoDir,
    });
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stdout.trim(), "embedded induction-toy 3563328");
    assert.ok(site.requests.includes("/weights/induction-toy/model.safetensors"));
  } finally {
    await site.close();
    await Deno.remove(denoDir, { recursive: true });
  }
});

Deno.test("a local folder: config, weights, and clear errors for what is missing", async () => {
  for (const path of [TINY, `${TINY}/`]) {
    const m = await resolveModel(path);
    assert.equal(m.name, path);
    assert.equal(m.source, TINY);
    assert.equal(m.config.vocab_size, 96);
    assert.deepEqual(m.weightBytes[0], await Deno.readFile(`${TINY}/model.safetensors`));
    assert.equal(m.tokenizer, undefined);
    assert.ok(isModelCached(path));
  }
  await assert.rejects(resolveModel("./no/such/folder"), (e: Error) => {
    assert.ok(e instanceof ModelNotFoundError);
    assert.match(e.message, /no config\.json in \.\/no\/such\/folder/);
    return true;
  });
  assert.ok(!isModelCached("./no/such/folder"));
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/config.json`, "{}");
    await assert.rejects(
      resolveModel(dir),
      /no weights in .*: looked for model\.safetensors, model\.safetensors\.index\.json, pytorch_model\.bin and pytorch_model\.bin\.index\.json/,
    );
    await Deno.writeTextFile(`${dir}/config.json`, "[1, 2");
    await Deno.writeFile(`${dir}/model.safetensors`, new Uint8Array(8));
    await assert.rejects(resolveModel(dir), ConfigError);
  });
});

Deno.test("a folder with GPT-2's config gets r50k_base; its own tokenizer files win", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(
      `${dir}/config.json`,
      JSON.stringify({ model_type: "gpt2", vocab_size: 50257 }),
    );
    await Deno.writeFile(`${dir}/model.safetensors`, writeSafetensors({}));
    const m = await resolveModel(dir);
    assert.deepEqual(m.tokenizer?.encode("Hello world"), [15496, 995]);

    const vocab = { "a": 0, "b": 1, "Ġ": 2, "ab": 3, "Ġab": 4 };
    await Deno.writeTextFile(`${dir}/vocab.json`, JSON.stringify(vocab));
    await Deno.writeTextFile(`${dir}/merges.txt`, "#version: 0.2\na b\nĠ ab\n");
    const own = await resolveModel(dir);
    assert.deepEqual(own.tokenizer?.encode("ab ab"), [3, 4]);

    await Deno.writeTextFile(
      `${dir}/config.json`,
      JSON.stringify({ model_type: "gpt2", vocab_size: 4 }),
    );
    await assert.rejects(
      resolveModel(dir),
      /tokenizer .* has 5 ids but the model's vocab_size is 4/,
    );
  });
});

Deno.test("an http(s) URL of a folder", async () => {
  const site = serveFolder(fixturePath(""));
  try {
    const url = `${site.base}/tiny-hf-f32/`;
    const m = await resolveModel(url);
    assert.equal(m.source, `${site.base}/tiny-hf-f32`);
    assert.deepEqual(m.weightBytes[0], await Deno.readFile(`${TINY}/model.safetensors`));
    assert.equal(m.config.n_layer, 2);
    assert.equal(m.tokenizer, undefined, "404 on tokenizer files is fine");
    assert.ok(site.requests.includes("/tiny-hf-f32/tokenizer.json"));
    assert.ok(!isModelCached(url));
    await assert.rejects(
      resolveModel(`${site.base}/nothing-here`),
      new RegExp(`${site.base}/nothing-here/config.json: not found`),
    );
  } finally {
    await site.close();
  }
});

Deno.test("names that are none of the above get one helpful error", async () => {
  await assert.rejects(resolveModel("gpt3"), (e: Error) => {
    assert.ok(e instanceof ModelNotFoundError);
    assert.match(e.message, /unknown model "gpt3"/);
    assert.match(e.message, /induction-toy/);
    assert.match(e.message, /gpt2-small/);
    assert.match(e.message, /pythia-70m \.\.\. pythia-12b/);
    return true;
  });
  assert.equal(isModelCached("gpt3"), false);
  await assert.rejects(
    resolveModel("bad--name/x", { offline: true, cacheDir: "/nonexistent" }),
    /invalid hub repository id/,
  );
});

Deno.test("a URL folder whose server stalls fails within the timeout, naming the URL", async () => {
  const weights = await Deno.readFile(`${TINY}/model.safetensors`);
  const config = await Deno.readFile(`${TINY}/config.json`);
  // config.json: headers and 1000 bytes of the weights, then silence; or no answer at all.
  let mode: "body" | "headers" = "body";
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const gone = new Promise((r) => req.signal.addEventListener("abort", r));
    const path = new URL(req.url).pathname;
    if (path.endsWith("/config.json")) {
      if (mode === "headers") await gone; // never answers; ends when the client gives up
      return new Response(config);
    }
    if (!path.endsWith("/model.safetensors")) return new Response("no", { status: 404 });
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(weights.slice(0, 1000));
      },
      async pull() {
        await gone; // stalled
      },
    });
    return new Response(body, { headers: { "content-length": String(weights.length) } });
  });
  const base = `http://127.0.0.1:${server.addr.port}/tiny`;
  try {
    const t0 = performance.now();
    await assert.rejects(resolveModel(base, { downloadTimeoutMs: 300 }), (e: Error) => {
      assert.ok(e instanceof ModelNotFoundError, String(e));
      assert.match(
        e.message,
        new RegExp(
          `download of ${base}/model.safetensors was interrupted after 1000 bytes: ` +
            `the server sent nothing for 0.3 s`,
        ),
      );
      return true;
    });
    const elapsed = performance.now() - t0;
    assert.ok(elapsed >= 300 && elapsed < 10_000, `gave up after ${elapsed} ms`);

    mode = "headers";
    await assert.rejects(
      resolveModel(base, { downloadTimeoutMs: 300 }),
      new RegExp(`could not fetch ${base}/config.json: the server sent nothing for 0.3 s`),
    );
    await assert.rejects(
      resolveModel(base, { downloadTimeoutMs: -5 }),
      /downloadTimeoutMs must be a positive number of milliseconds, got -5/,
    );
  } finally {
    await server.shutdown();
  }
});
