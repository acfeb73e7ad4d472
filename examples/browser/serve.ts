/**
 * Builds the browser example when an input changed (`build.ts`'s `ensureBuilt`) and serves
 * `out/browser/` on 127.0.0.1 with the cross-origin isolation headers, so that the page's model
 * worker computes on one thread per core:
 *
 * ```sh
 * deno task serve:browser            # http://127.0.0.1:8000/
 * deno task serve:browser --port=9000
 * ```
 *
 * Any static host can serve the folder instead, with the headers of
 * {@linkcode ISOLATION_HEADERS} (see `examples/browser/README.md`).
 * @module
 */
import { ensureBuilt, OUT_DIR } from "./build.ts";
import { ISOLATION_HEADERS } from "./config.ts";
import { REPO_ROOT, startStaticServer } from "../../tests/static_server.ts";

/**
 * The port from `--port=N` (default 8000); throws on anything else.
 *
 * @example
 * ```ts
 * import { parsePort } from "./serve.ts";
 * if (parsePort([]) !== 8000 || parsePort(["--port=9000"]) !== 9000) throw new Error("parsePort");
 * ```
 */
export function parsePort(args: readonly string[]): number {
  let port = 8000;
  for (const arg of args) {
    const m = /^--port=(\d{1,5})$/.exec(arg);
    if (!m || Number(m[1]) > 65535) {
      throw new Error(`unknown argument ${JSON.stringify(arg)}: the only option is --port=N`);
    }
    port = Number(m[1]);
  }
  return port;
}

if (import.meta.main) {
  const port = parsePort(Deno.args);
  const t0 = performance.now();
  const manifest = await ensureBuilt();
  console.log(`${OUT_DIR}/ is up to date (${Math.round(performance.now() - t0)} ms)`);
  const server = await startStaticServer({
    root: `${REPO_ROOT}/${OUT_DIR}`,
    port,
    headers: { ...ISOLATION_HEADERS },
  });
  console.log(`serving ${OUT_DIR}/ (${manifest.entries.length} bundles) at ${server.origin}/`);
}
