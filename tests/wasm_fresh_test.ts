/**
 * The committed kernel modules must be exactly what `assembly/` compiles to today: rebuilds both
 * targets into a temporary folder and compares bytes.
 */
import assert from "node:assert/strict";
import { buildWasm, TARGETS } from "../backend/wasm/build.ts";

Deno.test("committed backend/wasm/*.wasm are fresh builds of assembly/", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kernels-build-" });
  try {
    const outDir = new URL(`file://${dir}/`);
    await buildWasm(outDir, { quiet: true });
    for (const file of Object.values(TARGETS)) {
      const fresh = await Deno.readFile(new URL(file, outDir));
      let committed: Uint8Array;
      try {
        committed = await Deno.readFile(new URL(`../backend/wasm/${file}`, import.meta.url));
      } catch {
        assert.fail(`backend/wasm/${file} is missing: run deno task build:wasm`);
      }
      const same = fresh.length === committed.length && fresh.every((b, i) => b === committed[i]);
      assert.ok(
        same,
        `backend/wasm/${file} is stale against assembly/ (or asconfig.json): run deno task build:wasm`,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
