/**
 * Builds the two kernel modules from `assembly/` with the AssemblyScript compiler
 * (targets in `asconfig.json`):
 *
 * - `backend/wasm/kernels-relaxed.wasm`: SIMD + threads + relaxed SIMD (f32x4.relaxed_madd)
 * - `backend/wasm/kernels-simd.wasm`: SIMD + threads only (mul + add), the fallback
 *
 * Run with `deno task build:wasm`. Each file is written to a temporary name and then renamed,
 * so a reader never sees a half-written module. The build is deterministic: the same sources
 * and compiler version give the same bytes (`tests/wasm_fresh_test.ts` checks the committed
 * files against a fresh build).
 * @module
 */
import asc from "assemblyscript/asc";

/** The asconfig targets and the file each one produces (in `backend/wasm/`). */
export const TARGETS = {
  relaxed: "kernels-relaxed.wasm",
  simd: "kernels-simd.wasm",
} as const;

/** Name of an asconfig target. */
export type TargetName = keyof typeof TARGETS;

const ROOT = new URL("../../", import.meta.url);

/** Compiles one target in memory and returns the module bytes. */
export async function compileTarget(target: TargetName): Promise<Uint8Array> {
  const root = decodeURIComponent(ROOT.pathname);
  let wasm: Uint8Array | undefined;
  const stdout = asc.createMemoryStream();
  const stderr = asc.createMemoryStream();
  const result = await asc.main([
    "--config",
    "asconfig.json",
    "--target",
    target,
    "--baseDir",
    root,
    "--outFile",
    "out.wasm",
    "--noColors",
  ], {
    stdout,
    stderr,
    writeFile(name: string, contents: Uint8Array | string) {
      if (name.endsWith("out.wasm") && typeof contents !== "string") wasm = contents;
    },
  });
  if (result.error || !wasm) {
    throw new Error(
      `AssemblyScript build of target "${target}" failed: ${
        result.error ?? "no output"
      }\n${stderr.toString()}`,
    );
  }
  return wasm;
}

/** Compiles every target and writes the modules into `outDir` (default: this folder). */
export async function buildWasm(
  outDir: URL = new URL("./", import.meta.url),
  opts: { quiet?: boolean } = {},
): Promise<void> {
  for (const [target, file] of Object.entries(TARGETS) as [TargetName, string][]) {
    const bytes = await compileTarget(target);
    const dest = new URL(file, outDir);
    const tmp = new URL(`${file}.${Deno.pid}.tmp`, outDir);
    await Deno.writeFile(tmp, bytes);
    await Deno.rename(tmp, dest);
    if (!opts.quiet) {
      console.log(`wrote ${decodeURIComponent(dest.pathname)} (${bytes.length} bytes)`);
    }
  }
}

if (import.meta.main) {
  await buildWasm();
}
