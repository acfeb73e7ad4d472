/**
 * Importing the library by URL: a loopback static server serves the repository, and a fresh
 * `deno` process (own empty module cache, no config file) runs a script that imports `mod.ts` by
 * its http URL with network access to that host only (no read, write or env), loads the toy
 * model by URL and by its embedded name, computes head scores on a fixed seeded batch of repeated
 * tokens and prints them as JSON. They must equal the same computation done here, locally. The
 * same child loads the embedded text model `kjv-small` (weights and tokenizer fetched next to the
 * modules) and runs a text prompt: its tokens, its greedy continuation and its logits, which must
 * match the local run and the model's float64 reference.
 */
import assert from "node:assert/strict";
import { generateRepeatedTokens, headScores, HookedTransformer } from "../mod.ts";
import { startStaticServer } from "./static_server.ts";
import { fixturePath } from "./fixtures.ts";

const SEQ_LEN = 20;
const BATCH = 8;
const SEED = 1234;
/** kjv-small's reference prompts (tests/fixtures/kjv-small/reference.json). */
const KJV_REF = JSON.parse(Deno.readTextFileSync(fixturePath("kjv-small/reference.json")));
const KJV_PROMPT: string = KJV_REF.prompts[1];
const KJV_NEW_TOKENS = 8;

function childScript(origin: string): string {
  return `import { generateRepeatedTokens, headScores, HookedTransformer } from "${origin}/mod.ts";

const byUrl = await HookedTransformer.fromPretrained("${origin}/weights/induction-toy");
const tokens = generateRepeatedTokens(byUrl, ${SEQ_LEN}, ${BATCH}, { seed: ${SEED} });
const scores = await headScores(byUrl, tokens, ${SEQ_LEN});
const embedded = await HookedTransformer.fromPretrained("induction-toy");
const embeddedScores = await headScores(embedded, tokens, ${SEQ_LEN});
const kjv = await HookedTransformer.fromPretrained("kjv-small");
const prompt = ${JSON.stringify(KJV_PROMPT)};
const logits = await kjv.run(prompt);
const [, T, V] = logits.shape;
const text = {
  strTokens: kjv.toStrTokens(prompt),
  lastLogits: Array.from(logits.data.subarray((T - 1) * V)),
  generated: await kjv.generate(prompt, { maxNewTokens: ${KJV_NEW_TOKENS}, temperature: 0 }),
};
const state = (d) => Deno.permissions.querySync(d).state;
console.log(JSON.stringify({
  tokens: Array.from(tokens.data),
  scores,
  embeddedScores,
  text,
  permissions: {
    read: state({ name: "read" }),
    write: state({ name: "write" }),
    env: state({ name: "env" }),
    run: state({ name: "run" }),
    ffi: state({ name: "ffi" }),
    sys: state({ name: "sys" }),
  },
}));
`;
}

interface ChildResult {
  code: number;
  stdout: string;
  stderr: string;
}

async function runChild(dir: string, flags: string[]): Promise<ChildResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-config", "--no-lock", "--no-prompt", ...flags, "main.ts"],
    cwd: dir,
    env: { DENO_DIR: `${dir}/deno-dir`, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(120_000),
  }).output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

async function filesUnder(dir: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (d: string) => {
    for await (const e of Deno.readDir(d)) {
      if (e.isDirectory) await walk(`${d}/${e.name}`);
      else found.push(`${d}/${e.name}`);
    }
  };
  try {
    await walk(dir);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return found;
}

Deno.test({
  name: "mod.ts imported by http URL with only --allow-net/--allow-import of that host gives " +
    "the local head scores",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const server = await startStaticServer();
    const dir = await Deno.makeTempDir({ prefix: "url-import-" });
    try {
      await Deno.writeTextFile(`${dir}/main.ts`, childScript(server.origin));
      const host = `127.0.0.1:${server.port}`;

      // Deno 2 asks for import permission for remote modules from hosts outside its default
      // list (deno.land, jsr.io, esm.sh, cdn.jsdelivr.net, raw.githubusercontent.com, ...).
      const denied = await runChild(dir, [`--allow-net=${host}`]);
      assert.notEqual(denied.code, 0, "without --allow-import the remote import is refused");
      assert.match(denied.stderr, /--allow-import/, denied.stderr);

      const run = await runChild(dir, [`--allow-net=${host}`, `--allow-import=${host}`]);
      assert.equal(run.code, 0, `the child failed:\n${run.stderr}`);
      const remote = JSON.parse(run.stdout.trim().split("\n").at(-1)!);

      // Nothing but the network was granted, and nothing else was needed.
      for (const [name, state] of Object.entries(remote.permissions)) {
        assert.notEqual(state, "granted", `the child had ${name} permission`);
      }
      // Modules, kernels and weights all came from the server.
      const paths = new Set(server.requests.map((r) => r.path));
      for (
        const p of [
          "/mod.ts",
          "/backend/wasm/kernels.ts",
          "/weights/induction-toy/config.json",
          "/weights/induction-toy/model.safetensors",
          "/weights/kjv-small/config.json",
          "/weights/kjv-small/model.safetensors",
          "/weights/kjv-small/tokenizer.json",
        ]
      ) {
        assert.ok(paths.has(p), `the child fetched ${p} from the server`);
      }
      assert.ok(
        [...paths].some((p) => /^\/backend\/wasm\/kernels-(simd|relaxed)\.wasm$/.test(p)),
        "the child fetched the kernels' wasm from the server",
      );
      // A model folder given by URL is probed for optional tokenizer files (404 here).
      const optional = /^\/weights\/induction-toy\/(tokenizer\.json|vocab\.json|merges\.txt)$/;
      const failed = server.requests.filter((r) => r.status !== 200 && !optional.test(r.path));
      assert.deepEqual(failed, [], "every other request of the child succeeded");
      // The tokenizer's npm package is not part of the graph a URL importer downloads.
      const npmFiles = await filesUnder(`${dir}/deno-dir/npm`);
      assert.deepEqual(
        npmFiles.filter((f) => f.includes("js-tiktoken")),
        [],
        "no npm package was downloaded",
      );

      // The same computation, here.
      const model = await HookedTransformer.fromPretrained("induction-toy");
      const tokens = generateRepeatedTokens(model, SEQ_LEN, BATCH, { seed: SEED });
      const local = await headScores(model, tokens, SEQ_LEN);
      assert.deepEqual(remote.tokens, Array.from(tokens.data), "same seeded tokens");
      assert.deepEqual(remote.scores, JSON.parse(JSON.stringify(local)), "scores by URL");
      assert.deepEqual(remote.embeddedScores, remote.scores, "embedded name = URL of its folder");
      assert.ok(local.induction[1][2] > 0.5, "layer 1 head 2 is the toy's induction head");

      // The text model by URL: the same tokens, continuation and logits as here, and logits
      // within 1e-4 of the float64 reference (after centring: the run is processed, and
      // centerUnembed shifts each position's logits by a constant).
      const kjv = await HookedTransformer.fromPretrained("kjv-small");
      const localLogits = await kjv.run(KJV_PROMPT);
      const [, T, V] = localLogits.shape;
      assert.deepEqual(remote.text.strTokens, kjv.toStrTokens(KJV_PROMPT));
      assert.equal(remote.text.strTokens[0], "<|endoftext|>");
      assert.deepEqual(
        remote.text.lastLogits,
        Array.from(localLogits.data.subarray((T - 1) * V)),
        "logits by URL",
      );
      const generated = await kjv.generate(KJV_PROMPT, {
        maxNewTokens: KJV_NEW_TOKENS,
        temperature: 0,
      });
      assert.equal(remote.text.generated, generated);
      assert.ok(generated.length > KJV_PROMPT.length, "new text was generated");
      const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
      const want: number[] = KJV_REF.logits_last[1];
      const [mg, mw] = [mean(remote.text.lastLogits), mean(want)];
      const err = Math.max(
        ...want.map((w, i) => Math.abs(remote.text.lastLogits[i] - mg - (w - mw))),
      );
      assert.ok(err < 1e-4, `kjv-small by URL: max centred logit error ${err}`);
      kjv.dispose();
    } finally {
      await server.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
