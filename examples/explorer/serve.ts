/**
 * `deno task explore`: builds the explorer when an input changed (`build.ts`, into
 * `out/explorer/`) and serves it on 127.0.0.1 with the cross-origin isolation headers, so that
 * its model worker computes on one thread per core; prints the page's URL.
 *
 * ```sh
 * deno task explore                          # http://127.0.0.1:8000/?model=kjv-small
 * deno task explore --port=9000 --model=induction-toy
 * deno task explore --model=path/to/folder   # served at /models/<folder's name>/
 * deno task explore --model=https://example.org/my-model/
 * deno task explore --model=path/to/model --sae=path/to/sae   # served at /saes/<name>/
 * deno task explore --device=webgpu          # the page opens on WebGPU (&device=webgpu)
 * ```
 * @module
 */
import { ensureBuilt } from "../browser/build.ts";
import { ISOLATION_HEADERS } from "../browser/config.ts";
import { REPO_ROOT, startStaticServer, type StaticServer } from "../../tests/static_server.ts";
import { EXPLORER } from "./build.ts";
import { DEFAULT_MODEL, DEVICES, type ExplorerDevice } from "./protocol.ts";

/** The command line of `deno task explore`. */
export interface ExploreArgs {
  /** The port (default 8000; 0 lets the system pick one). */
  port: number;
  /** The model the page opens with: an embedded or hub name, a local folder, or a URL. */
  model: string;
  /** An SAE the page opens with (`--sae=<folder|url>`): a SAELens folder or its URL. */
  sae?: string;
  /** Where the page's model computes (`--device=wasm|webgpu|auto`); absent: the page's default,
   * wasm (the page's device control changes it). */
  device?: ExplorerDevice;
}

/**
 * Parses `--port=N`, `--model=<name|folder|url>`, `--sae=<folder|url>` and
 * `--device=wasm|webgpu|auto`; throws on anything else.
 *
 * @example
 * ```ts
 * import { parseExploreArgs } from "./serve.ts";
 * const a = parseExploreArgs(["--port=9000", "--model=induction-toy"]);
 * if (a.port !== 9000 || a.model !== "induction-toy") throw new Error("parseExploreArgs");
 * if (parseExploreArgs([]).port !== 8000) throw new Error("the default port");
 * if (parseExploreArgs(["--device=webgpu"]).device !== "webgpu") throw new Error("--device");
 * ```
 */
export function parseExploreArgs(args: readonly string[]): ExploreArgs {
  const out: ExploreArgs = { port: 8000, model: DEFAULT_MODEL };
  for (const arg of args) {
    const port = /^--port=(\d{1,5})$/.exec(arg);
    const model = /^--model=(.+)$/.exec(arg);
    const sae = /^--sae=(.+)$/.exec(arg);
    const device = /^--device=(.*)$/.exec(arg);
    if (port && Number(port[1]) <= 65535) out.port = Number(port[1]);
    else if (model) out.model = model[1];
    else if (sae) out.sae = sae[1];
    else if (device && (DEVICES as readonly string[]).includes(device[1])) {
      out.device = device[1] as ExplorerDevice;
    } else {
      throw new Error(
        `unknown argument ${JSON.stringify(arg)}: the options are --port=N (0-65535), ` +
          `--model=<name|folder|url>, --sae=<folder|url> and --device=${DEVICES.join("|")}`,
      );
    }
  }
  return out;
}

/** A running explorer. */
export interface Explorer {
  /** The page's URL, with the model in its query. */
  url: string;
  /** The static server. */
  server: StaticServer;
}

/**
 * Builds the explorer if needed and serves it with {@link ISOLATION_HEADERS}. A `model` that is
 * a local folder (it exists on disk) is served at `/models/<its name>/` and the page opens it
 * from there, an `sae` folder at `/saes/<its name>/`; a name or URL is passed to the page as it is.
 */
export async function startExplorer(args: ExploreArgs): Promise<Explorer> {
  await ensureBuilt(EXPLORER);
  const mounts: Record<string, string> = {};
  const model = await mountFolder(args.model, "models", mounts);
  const sae = args.sae === undefined ? undefined : await mountFolder(args.sae, "saes", mounts);
  const server = await startStaticServer({
    root: `${REPO_ROOT}/${EXPLORER.outDir}`,
    port: args.port,
    headers: { ...ISOLATION_HEADERS },
    mounts,
  });
  const query = `?model=${encodeURIComponent(model)}` +
    (sae === undefined ? "" : `&sae=${encodeURIComponent(sae)}`) +
    (args.device === undefined || args.device === "wasm" ? "" : `&device=${args.device}`);
  return { url: `${server.origin}/${query}`, server };
}

/**
 * A local folder (it exists on disk) is served at `/<under>/<its name>/` (added to `mounts`) and
 * named by that path; a name or URL is returned as it is.
 */
async function mountFolder(
  where: string,
  under: string,
  mounts: Record<string, string>,
): Promise<string> {
  let isFolder = false;
  try {
    isFolder = !/^[a-z]+:\/\//i.test(where) && (await Deno.stat(where)).isDirectory;
  } catch {
    // not a local folder: a name or a URL
  }
  if (!isFolder) return where;
  const name = where.replace(/\/+$/, "").split("/").pop()!.replace(/[^\w.-]/g, "_");
  mounts[`${under}/${name}/`] = await Deno.realPath(where);
  return `/${under}/${name}/`;
}

if (import.meta.main) {
  let args: ExploreArgs;
  try {
    args = parseExploreArgs(Deno.args);
  } catch (e) {
    console.error((e as Error).message);
    Deno.exit(2);
  }
  const t0 = performance.now();
  const { url } = await startExplorer(args);
  console.log(`explorer ready in ${Math.round(performance.now() - t0)} ms: open ${url}`);
}
