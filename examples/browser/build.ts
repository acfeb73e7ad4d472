/**
 * Builds the browser example into `out/browser/` (ignored by git; browsers do not run .ts), a
 * static folder that any host serves:
 *
 * ```text
 * out/browser/index.html                       the page (examples/browser/index.html)
 * out/browser/examples/browser/main.js         the page's module: draws, starts the model worker
 * out/browser/examples/browser/model_worker.js the model worker: the library, the model, the calls
 * out/browser/backend/wasm/worker.js           a kernel worker thread (started by the model worker)
 * out/browser/backend/wasm/kernels-*.wasm      the kernels
 * out/browser/weights/induction-toy/           the embedded model's files
 * out/browser/build.json                       what was built, from which inputs (sha256)
 * ```
 *
 * `deno task build:browser` (always rebuilds; prints the time), or {@linkcode ensureBuilt} from
 * code (rebuilds only when an input changed: what `tests/browser_example_test.ts` and
 * `serve.ts` call).
 *
 * Each entry is bundled by `deno bundle --platform browser`, then two steps follow:
 * - `import.meta.url`: in a bundle it is the bundle's URL, not the URL of the module it was
 *   written in. Each use is replaced by the original module's URL in the output folder, which
 *   mirrors the repository's layout (`new URL("../../backend/wasm/kernels.ts", import.meta.url)
 *   .href` in `examples/browser/main.js`), so `new URL("./kernels-simd.wasm", import.meta.url)`
 *   still finds the kernels. What such a `new URL("<literal>", import.meta.url)` names is built
 *   too: a `.ts` module (a worker's entry: the page's model worker, the kernels' worker) is
 *   bundled as one more entry, to the same path with `.js`, and the literal is changed to match;
 *   anything else (the `.wasm` files) is copied. A URL computed at run time (a template literal)
 *   is rewritten the same way but cannot be followed: what it may name is listed in the target's
 *   `assets` (the embedded model's folder) and copied.
 * - paths into the local npm cache (in the bundler's comments) become `npm/uplot@1.6.32/...`.
 * @module
 */

/** The repository root. */
export const ROOT: URL = new URL("../../", import.meta.url);
/** The page's module, relative to the root (the first entry; the others are found from it). */
export const ENTRY = "examples/browser/main.ts";
/** The page, relative to the root; copied to `index.html` in the output folder. */
export const PAGE = "examples/browser/index.html";
/** The output folder, relative to the root (`out/` is ignored by git). */
export const OUT_DIR = "out/browser";

/**
 * A page to build: its module, its HTML and where it goes. {@linkcode build} works for any page
 * laid out like this example (the HTML loads its module as `./<entry>.js`).
 */
export interface BuildTarget {
  /** The page's module, relative to the root (the first entry; the others are found from it). */
  entry: string;
  /** The page, relative to the root; copied to `index.html` in the output folder. */
  page: string;
  /** The output folder, relative to the root. */
  outDir: string;
  /**
   * Files or folders (ending with `/`) the page loads whose URL the code builds at run time (so
   * the build cannot find them): copied as well, relative to the root.
   */
  assets?: readonly string[];
}

/**
 * The browser example. Its model's folder is listed: the library may name embedded models'
 * folders with a computed URL (`` new URL(`../weights/${name}/`, import.meta.url) ``).
 */
export const BROWSER_EXAMPLE: BuildTarget = {
  entry: ENTRY,
  page: PAGE,
  outDir: OUT_DIR,
  assets: ["weights/induction-toy/"],
};
/** The build record in the output folder. */
export const MANIFEST = "build.json";

/** What a build made (`build.json`). */
export interface BuildManifest {
  /** sha256 (hex) of every input, see {@linkcode inputDigest}. */
  digest: string;
  /** The page copied to `index.html`, relative to the root. */
  page: string;
  /** The bundled entries (`.ts`, relative to the root); each is at the same path with `.js`. */
  entries: string[];
  /** The files and folders copied as they are (relative to the root, folders end with `/`). */
  assets: string[];
  /** Milliseconds the build took. */
  buildMs: number;
}

function rootPath(): string {
  return decodeURIComponent(ROOT.pathname).replace(/\/$/, "");
}

async function deno(args: string[]): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: rootPath(),
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const decoder = new TextDecoder();
  if (!out.success) {
    throw new Error(`deno ${args.join(" ")} failed:\n${decoder.decode(out.stderr)}`);
  }
  return decoder.decode(out.stdout);
}

async function sha256Hex(data: Uint8Array | string): Promise<string> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

interface InfoModule {
  specifier: string;
  local?: string;
  error?: string;
}

interface Info {
  modules: InfoModule[];
  npmPackages?: Record<string, unknown>;
}

/** `deno info` of one entry: its local modules (relative to the root) and npm packages. */
async function moduleGraph(entry: string): Promise<{ local: string[]; npm: string[] }> {
  const info = JSON.parse(await deno(["info", "--json", "--no-lock", entry])) as Info;
  const root = rootPath() + "/";
  const local: string[] = [];
  for (const m of info.modules) {
    if (m.error) throw new Error(`${entry}: ${m.error}`);
    if (m.local && m.specifier.startsWith("file:")) {
      if (!m.local.startsWith(root)) throw new Error(`module outside the repository: ${m.local}`);
      local.push(m.local.slice(root.length));
    }
  }
  return { local, npm: Object.keys(info.npmPackages ?? {}) };
}

/** The files under `path` (relative to the root; a folder ends with `/`), sorted. */
async function assetFiles(path: string): Promise<string[]> {
  if (!path.endsWith("/")) return [path];
  const files: string[] = [];
  for await (const e of Deno.readDir(new URL(path, ROOT))) {
    if (e.name.startsWith(".")) continue;
    if (e.isFile) files.push(path + e.name);
    else if (e.isDirectory) files.push(...await assetFiles(`${path}${e.name}/`));
  }
  return files.sort();
}

/**
 * The sha256 (hex) of a build's inputs: every local module reachable from the entries (path and
 * content), the npm packages (name@version), the copied files, the page and this script, sorted.
 */
export async function inputDigest(
  entries: readonly string[],
  assets: readonly string[],
  page: string = PAGE,
): Promise<string> {
  const lines = new Set<string>();
  const hashFile = async (kind: string, path: string) =>
    lines.add(`${kind} ${path} ${await sha256Hex(await Deno.readFile(new URL(path, ROOT)))}`);
  for (const entry of entries) {
    lines.add(`entry ${entry}`);
    const graph = await moduleGraph(entry);
    for (const path of graph.local) await hashFile("file", path);
    for (const pkg of graph.npm) lines.add(`npm ${pkg}`);
  }
  for (const asset of assets) {
    for (const path of await assetFiles(asset)) await hashFile("asset", path);
  }
  await hashFile("page", page);
  await hashFile("build", "examples/browser/build.ts");
  return await sha256Hex([...lines].sort().join("\n"));
}

const REGION = /^\/\/ (\S+)$/;
const NPM_CACHE_PATH = /[^\s"'`]*\/registry\.npmjs\.org\//g;
const URL_LITERAL = /new URL\(\s*(["'])([^"'\\]+)\1\s*,\s*import\.meta\.url\s*\)/g;

/** A bundle after {@linkcode rewriteImportMetaUrl}, with what its `new URL(...)`s name. */
export interface Rewritten {
  /** The rewritten code. */
  code: string;
  /** `.ts` modules loaded by URL (worker entries), relative to the root. */
  entries: string[];
  /** Other files or folders named by URL, relative to the root. */
  assets: string[];
}

/**
 * Rewrites each `import.meta.url` of the bundle of `entry` to the URL its module has in the
 * output folder (see the module doc), and collects what `new URL("<literal>", import.meta.url)`
 * names. The bundler marks where each module's code starts with a `// path` comment line (paths
 * relative to the root); a use outside a known local module is an error rather than a silently
 * wrong URL.
 *
 * @example
 * ```ts
 * import { rewriteImportMetaUrl } from "./build.ts";
 * const bundle = '// backend/wasm/pool.ts\nconst url = new URL("./worker.ts", import.meta.url);';
 * const out = rewriteImportMetaUrl(bundle, "examples/browser/model_worker.ts", new Set(["backend/wasm/pool.ts"]));
 * if (out.entries[0] !== "backend/wasm/worker.ts") throw new Error("found the worker"); // -> worker.js
 * if (!out.code.includes('new URL("./worker.js", new URL("../../backend/wasm/pool.ts", import.meta.url).href)')) {
 *   throw new Error("rewrote the URL");
 * }
 * ```
 */
export function rewriteImportMetaUrl(
  code: string,
  entry: string,
  localFiles: ReadonlySet<string>,
): Rewritten {
  const entryDir = entry.slice(0, entry.lastIndexOf("/") + 1);
  const up = "../".repeat(entryDir.split("/").length - 1);
  const entries: string[] = [];
  const assets: string[] = [];
  let region: string | undefined;
  const lines = code.split("\n").map((line, i) => {
    const marker = REGION.exec(line);
    if (marker) {
      region = marker[1];
      return line;
    }
    if (!line.includes("import.meta.url")) return line;
    // A comment the bundler kept (a JSDoc example naming a test fixture) loads nothing.
    if (/^\s*(\*|\/\/|\/\*)/.test(line)) return line;
    if (!region || !localFiles.has(region)) {
      throw new Error(
        `line ${i + 1} of the bundle of ${entry} uses import.meta.url outside a known local ` +
          `module (region ${region ?? "none"}): ${line.trim()}`,
      );
    }
    const from = region;
    const named = line.replace(URL_LITERAL, (all, quote: string, rel: string) => {
      // Resolved under a stand-in root folder, so a path that leaves it shows.
      const resolved = decodeURIComponent(new URL(rel, `file:///root/${from}`).pathname);
      const target = resolved.slice("/root/".length);
      if (!resolved.startsWith("/root/") || target === "") {
        throw new Error(`${from} names a file outside the repository: ${rel}`);
      }
      if (!target.endsWith(".ts")) {
        assets.push(target);
        return all;
      }
      entries.push(target);
      const js = rel.slice(0, -".ts".length) + ".js";
      return `new URL(${quote}${js}${quote}, import.meta.url)`;
    });
    const rel = region.startsWith(entryDir) ? `./${region.slice(entryDir.length)}` : up + region;
    return named.replaceAll(
      "import.meta.url",
      `new URL(${JSON.stringify(rel)}, import.meta.url).href`,
    );
  });
  return { code: lines.join("\n"), entries, assets };
}

/** Bundles one entry; returns the finished `.js` text and what it loads by URL. */
async function bundleEntry(entry: string): Promise<Rewritten> {
  const dir = await Deno.makeTempDir({ prefix: "browser-bundle-" });
  try {
    const out = `${dir}/bundle.js`;
    await deno([
      "bundle",
      "--quiet",
      "--check",
      "--no-lock",
      "--platform",
      "browser",
      "--format",
      "esm",
      "-o",
      out,
      entry,
    ]);
    const raw = await Deno.readTextFile(out);
    const local = new Set((await moduleGraph(entry)).local);
    const rewritten = rewriteImportMetaUrl(raw, entry, local);
    const code = rewritten.code.replace(NPM_CACHE_PATH, "npm/");
    const header = [
      "// deno-fmt-ignore-file",
      "// deno-lint-ignore-file",
      `// Generated by examples/browser/build.ts from ${entry}; do not edit.`,
    ].join("\n");
    return { ...rewritten, code: `${header}\n${code.endsWith("\n") ? code : code + "\n"}` };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function copyAsset(path: string, outRoot: URL): Promise<void> {
  for (const file of await assetFiles(path)) {
    const dest = new URL(file, outRoot);
    await Deno.mkdir(new URL("./", dest), { recursive: true });
    await Deno.copyFile(new URL(file, ROOT), dest);
  }
}

/**
 * Builds a page (default: the browser example) into its output folder, replacing what was there,
 * and returns its manifest. Bundles in a fresh sibling folder first, so a failed build leaves the
 * previous one in place.
 */
export async function build(target: BuildTarget = BROWSER_EXAMPLE): Promise<BuildManifest> {
  const { outDir } = target;
  const t0 = performance.now();
  const dest = new URL(outDir.replace(/\/?$/, "/"), ROOT);
  const staging = new URL(`${outDir.replace(/\/$/, "")}.${Deno.pid}.tmp/`, ROOT);
  await Deno.remove(staging, { recursive: true }).catch(() => {});
  await Deno.mkdir(staging, { recursive: true });
  try {
    const entries = [target.entry];
    const assets = new Set<string>(target.assets ?? []);
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i];
      const result = await bundleEntry(entry);
      for (const e of result.entries) if (!entries.includes(e)) entries.push(e);
      for (const a of result.assets) assets.add(a);
      const js = new URL(entry.slice(0, -".ts".length) + ".js", staging);
      await Deno.mkdir(new URL("./", js), { recursive: true });
      await Deno.writeTextFile(js, result.code);
    }
    const copied = [...assets].sort();
    for (const asset of copied) await copyAsset(asset, staging);
    await Deno.copyFile(new URL(target.page, ROOT), new URL("index.html", staging));
    const manifest: BuildManifest = {
      digest: await inputDigest(entries, copied, target.page),
      page: target.page,
      entries,
      assets: copied,
      buildMs: Math.round(performance.now() - t0),
    };
    await Deno.writeTextFile(
      new URL(MANIFEST, staging),
      JSON.stringify(manifest, null, 1) + "\n",
    );
    await Deno.remove(dest, { recursive: true }).catch(() => {});
    try {
      await Deno.rename(staging, dest);
    } catch (e) {
      // Another build finished in between: keep its folder when it is up to date.
      const other = await freshBuild(target);
      if (!other) throw e;
      await Deno.remove(staging, { recursive: true }).catch(() => {});
      return other;
    }
    return manifest;
  } catch (e) {
    await Deno.remove(staging, { recursive: true }).catch(() => {});
    throw e;
  }
}

/** The manifest of a page's build when it was built from today's inputs, else undefined. */
export async function freshBuild(
  target: BuildTarget = BROWSER_EXAMPLE,
): Promise<BuildManifest | undefined> {
  const { outDir } = target;
  let manifest: BuildManifest;
  try {
    const path = new URL(`${outDir.replace(/\/?$/, "/")}${MANIFEST}`, ROOT);
    manifest = JSON.parse(await Deno.readTextFile(path)) as BuildManifest;
  } catch {
    return undefined;
  }
  if (
    !Array.isArray(manifest.entries) || !Array.isArray(manifest.assets) ||
    manifest.entries[0] !== target.entry || manifest.page !== target.page
  ) {
    return undefined;
  }
  try {
    return manifest.digest === await inputDigest(manifest.entries, manifest.assets, target.page)
      ? manifest
      : undefined;
  } catch {
    return undefined; // an input is gone: rebuild
  }
}

/**
 * A page's build (default: the browser example), rebuilt first when it is missing or stale.
 *
 * @example
 * ```ts ignore
 * import { ensureBuilt, OUT_DIR } from "./build.ts";
 * const manifest = await ensureBuilt(); // about 10 s when it rebuilds, well under 1 s otherwise
 * console.log(`${OUT_DIR}/ holds ${manifest.entries.length} bundles`);
 * ```
 */
export async function ensureBuilt(
  target: BuildTarget = BROWSER_EXAMPLE,
): Promise<BuildManifest> {
  return await freshBuild(target) ?? await build(target);
}

if (import.meta.main) {
  const manifest = await build();
  console.log(
    `built ${OUT_DIR}/ in ${manifest.buildMs} ms: ${
      manifest.entries.map((e) => e.replace(/\.ts$/, ".js")).join(", ")
    }; copied ${manifest.assets.join(", ")}`,
  );
}
