/**
 * A newcomer's first `deno task experiments` downloads only what the study runs: `deno task`
 * installs every npm package that the root `deno.json` and `deno.lock` name before it runs a task,
 * so these may name the library's packages only. The tests' packages (Puppeteer, AssemblyScript,
 * the tokenizer packages) live in `tests/deno.json` and `tests/deno.lock`, the bench's peers
 * (TensorFlow.js, ONNX Runtime) in `bench/deno.json` and `bench/deno.lock`. `.ci/run` measures the
 * cache of a fresh clone's first study run.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);
// The library's own npm packages: js-tiktoken (GPT-2's tokenizer, tokenizer/r50k.ts) and uPlot
// (the report's and the browser example's charts, vendored by experiments/vendor_uplot.ts).
const LIBRARY = new Set(["js-tiktoken", "uplot"]);

async function json(path: string) {
  return JSON.parse(await Deno.readTextFile(new URL(path, ROOT)));
}

/** "npm:name@1.2.3" or "npm:/name@1.2.3/" -> "name". */
function packageName(specifier: string): string {
  const m = /^npm:\/?(@?[^@/]+(?:\/[^@/]+)?)@/.exec(specifier);
  assert.ok(m, `not an npm specifier: ${specifier}`);
  return m[1];
}

Deno.test("the root deno.json and deno.lock name only the library's npm packages", async () => {
  const move = "move it to tests/deno.json or bench/deno.json (deno task installs all of these)";
  const config = await json("deno.json");
  for (
    const [name, target] of Object.entries(config.imports ?? {}) as [
      string,
      string,
    ][]
  ) {
    if (!target.startsWith("npm:")) continue;
    assert.ok(
      LIBRARY.has(packageName(target)),
      `deno.json imports ${name}: ${move}`,
    );
  }
  const lock = await json("deno.lock");
  for (const specifier of Object.keys(lock.specifiers ?? {})) {
    if (!specifier.startsWith("npm:")) continue;
    assert.ok(
      LIBRARY.has(packageName(specifier)),
      `deno.lock pins ${specifier}: ${move}`,
    );
  }
});

Deno.test("the tests' and the bench's configs pin their packages in their own lock files", async () => {
  for (const dir of ["tests", "bench"]) {
    const config = await json(`${dir}/deno.json`);
    const lock = await json(`${dir}/deno.lock`);
    const pinned = new Set(Object.keys(lock.specifiers).map(packageName));
    for (const target of Object.values(config.imports) as string[]) {
      assert.ok(
        pinned.has(packageName(target)),
        `${dir}/deno.lock lacks ${target}`,
      );
    }
  }
});
