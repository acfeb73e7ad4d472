/**
 * The README's least-privilege permission line for the embedded model in a local checkout
 * (`--allow-read=backend/wasm,weights/induction-toy`) runs the default worker threads and prints
 * nothing on stderr; with less (the worker module unreadable) the kernels fall back to one thread
 * and say so in one line, and results are the same bits.
 */
import assert from "node:assert/strict";
import { fromFileUrl } from "./path.ts";

const ROOT = fromFileUrl(new URL("../", import.meta.url));

const SCRIPT = `import { HookedTransformer } from ${
  JSON.stringify(new URL("../mod.ts", import.meta.url).href)
};
const model = await HookedTransformer.fromPretrained("induction-toy");
const logits = await model.run([[2047, 5, 9, 13, 5, 9, 13]]);
console.log(JSON.stringify({ threads: model.backend.threads, logits: Array.from(logits.data.subarray(-8)) }));
model.dispose();
`;

async function run(allowRead: string): Promise<{ code: number; out: string; err: string }> {
  const dir = await Deno.makeTempDir({ prefix: "permissions-" });
  try {
    await Deno.writeTextFile(`${dir}/main.ts`, SCRIPT);
    const res = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", `--allow-read=${allowRead}`, `${dir}/main.ts`],
      cwd: ROOT,
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    const d = new TextDecoder();
    return { code: res.code, out: d.decode(res.stdout), err: d.decode(res.stderr) };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("README's permissions: worker threads start and nothing is printed on stderr", async () => {
  const full = await run("backend/wasm,weights/induction-toy");
  assert.equal(full.code, 0, full.err);
  assert.equal(full.err, "", "nothing on stderr");
  const a = JSON.parse(full.out);
  const cores = navigator.hardwareConcurrency;
  assert.equal(a.threads, cores, `one thread per core (${cores})`);

  // Without read access to the worker module: one thread, one line saying so, the same logits.
  const less = await run(
    "backend/wasm/kernels-relaxed.wasm,backend/wasm/kernels-simd.wasm,weights/induction-toy",
  );
  assert.equal(less.code, 0, less.err);
  const b = JSON.parse(less.out);
  assert.equal(b.threads, 1);
  if (cores > 1) {
    const lines = less.err.trim().split("\n");
    assert.equal(lines.length, 1, less.err);
    assert.match(lines[0], /worker threads could not start, computing on 1 thread/);
    assert.match(lines[0], /worker\.ts/);
  }
  assert.deepEqual(b.logits, a.logits, "bit-identical logits for any thread count");
});
