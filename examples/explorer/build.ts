/**
 * Builds the explorer into `out/explorer/` (ignored by git), a static folder any host serves with
 * the headers of `ISOLATION_HEADERS` (see `examples/explorer/README.md`), with the browser
 * example's machinery (`examples/browser/build.ts`: bundles of the page's module, its model worker
 * and the kernels' worker, the kernels and the embedded models' folders):
 *
 * ```sh
 * deno task build:explore
 * ```
 * @module
 */
import { build, type BuildTarget } from "../browser/build.ts";

/** The explorer's page, its module, its output folder and the embedded models it may open. */
export const EXPLORER: BuildTarget = {
  entry: "examples/explorer/main.ts",
  page: "examples/explorer/index.html",
  outDir: "out/explorer",
  assets: ["weights/induction-toy/", "weights/kjv-small/"],
};

if (import.meta.main) {
  const manifest = await build(EXPLORER);
  console.log(
    `built ${EXPLORER.outDir}/ in ${manifest.buildMs} ms: ${
      manifest.entries.map((e) => e.replace(/\.ts$/, ".js")).join(", ")
    }; copied ${manifest.assets.join(", ")}`,
  );
}
