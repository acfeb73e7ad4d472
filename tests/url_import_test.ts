/**
 * Importing the library by URL: a loopback static server serves the repository, and a fresh
 * `deno` process (own empty module cache, no config file) runs a script that imports `mod.ts` by
 * its http URL with network access to that host only (no read, write or env), loads the toy
 * model by URL and by its embedded name, computes head scores on a fixed seeded batch of repeated
 * tokens and prints them as JSON. They must equal the same computation done here, locally.
 */
import assert from "node:assert/strict";
import { generateRepeatedTokens, headScores, HookedTransformer } from "../mod.ts";
import { startStaticServer } from "./static_server.ts";

const SEQ_LEN = 20;
const BATCH = 8;
const SEED = 1234;

function childScript(origin: string): string {
  return `import { generateRepeatedTokens, headScores, HookedTransformer } from "${origin}/mod.ts";

const byUrl = await HookedTransformer.fromPretrained("${origin}/weights/induction-toy");
const tokens = generateRepeatedTokens(byUrl, ${SEQ_LEN}, ${BATCH}, { seed: ${SEED} });
const scores = await headScores(byUrl, tokens, ${SEQ_LEN});
const embedded = await HookedTransformer.fromPretrained("induction-toy");
const embeddedScores = await headScores(embedded, tokens, ${SEQ_LEN});
const state = (d) => Deno.permissions.querySync(d).state;
console.log(JSON.stringify({
  tokens: Array.from(tokens.data),
  scores,
  embeddedScores,
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
    } finally {
      await server.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
