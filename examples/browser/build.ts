/**
 * Builds `examples/browser/generated/app.js`, the browser example's bundle (browsers do not run .ts), from
 * `examples/browser/main.ts` with `deno bundle --platform browser`:
 *
 * `deno run --allow-read --allow-write --allow-run --allow-env examples/browser/build.ts`
 * (`--check` only tells whether the committed bundle is up to date).
 *
 * Two steps follow the bundler:
 * - `import.meta.url`: in a bundle it is the bundle's URL, not the URL of the module it was
 *   written in, so the library's `new URL("./kernels-simd.wasm", import.meta.url)` would look
 *   for the kernels next to `app.js`. Each use is replaced by the original module's URL computed
 *   from the bundle's (`new URL("../../backend/wasm/kernels.ts", import.meta.url).href`), so the wasm
 *   and the model's files are fetched where they are in the repository, served as static files.
 * - paths into the local npm cache (in the bundler's comments) become `npm/uplot@1.6.32/...`,
 *   so the bundle does not depend on where the cache is.
 *
 * The bundle's first lines record a sha256 of its inputs (every local module it is built from,
 * the npm packages and their versions, and this script), which `tests/browser_example_test.ts`
 * recomputes: the test fails when the committed bundle is stale. The digest does not depend on
 * the Deno version, so a newer bundler does not make an unchanged bundle stale.
 * @module
 */

/** The repository root. */
export const ROOT: URL = new URL("../../", import.meta.url);
/** The entry module, relative to the root. */
export const ENTRY = "examples/browser/main.ts";
/** The bundle, relative to the root. */
export const OUTPUT = "examples/browser/generated/app.js";

const HEADER_PREFIX = "// inputs sha256: ";

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
  kind?: string;
  local?: string;
  npmPackage?: string;
}

/**
 * The sha256 (hex) of the bundle's inputs: every local module reachable from the entry (path and
 * content), the npm packages (name@version) and this script, all sorted.
 */
export async function inputDigest(): Promise<string> {
  const info = JSON.parse(await deno(["info", "--json", "--no-lock", ENTRY])) as {
    modules: InfoModule[];
    npmPackages?: Record<string, unknown>;
  };
  const root = rootPath() + "/";
  const lines: string[] = [];
  for (const m of info.modules) {
    if (m.local && m.specifier.startsWith("file:")) {
      if (!m.local.startsWith(root)) throw new Error(`module outside the repository: ${m.local}`);
      lines.push(
        `file ${m.local.slice(root.length)} ${await sha256Hex(await Deno.readFile(m.local))}`,
      );
    }
  }
  for (const pkg of Object.keys(info.npmPackages ?? {})) lines.push(`npm ${pkg}`);
  const self = await Deno.readFile(new URL("./build.ts", import.meta.url));
  lines.push(`build ${await sha256Hex(self)}`);
  lines.sort();
  return await sha256Hex(lines.join("\n"));
}

/** The input digest a bundle's header records, or undefined when it has none. */
export function recordedDigest(bundle: string): string | undefined {
  const line = bundle.split("\n", 6).find((l) => l.startsWith(HEADER_PREFIX));
  return line?.slice(HEADER_PREFIX.length).trim();
}

const REGION = /^\/\/ (\S+)$/;
const NPM_CACHE_PATH = /[^\s"'`]*\/registry\.npmjs\.org\//g;

/**
 * Replaces each `import.meta.url` of the bundled code by the URL its module had in the
 * repository (see the module doc). The bundler marks where each module's code starts with a
 * `// path` comment line (paths relative to the root); a use outside a known local module is an
 * error rather than a silently wrong URL.
 */
export function rewriteImportMetaUrl(code: string, localFiles: ReadonlySet<string>): string {
  const outDir = OUTPUT.slice(0, OUTPUT.lastIndexOf("/") + 1);
  const up = "../".repeat(outDir.split("/").length - 1);
  let region: string | undefined;
  return code.split("\n").map((line, i) => {
    const marker = REGION.exec(line);
    if (marker) {
      region = marker[1];
      return line;
    }
    if (!line.includes("import.meta.url")) return line;
    if (!region || !localFiles.has(region)) {
      throw new Error(
        `line ${i + 1} of the bundle uses import.meta.url outside a known local module ` +
          `(region ${region ?? "none"}): ${line.trim()}`,
      );
    }
    const rel = region.startsWith(outDir) ? `./${region.slice(outDir.length)}` : up + region;
    return line.replaceAll(
      "import.meta.url",
      `new URL(${JSON.stringify(rel)}, import.meta.url).href`,
    );
  }).join("\n");
}

/** Bundles the entry and returns the finished `app.js` text (header, rewritten code). */
export async function bundle(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "browser-bundle-" });
  try {
    const out = `${dir}/app.js`;
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
      ENTRY,
    ]);
    const raw = await Deno.readTextFile(out);
    const info = JSON.parse(await deno(["info", "--json", "--no-lock", ENTRY])) as {
      modules: InfoModule[];
    };
    const root = rootPath() + "/";
    const local = new Set(
      info.modules.filter((m) => m.local?.startsWith(root)).map((m) => m.local!.slice(root.length)),
    );
    const code = rewriteImportMetaUrl(raw, local).replace(NPM_CACHE_PATH, "npm/");
    const header = [
      "// deno-fmt-ignore-file",
      "// deno-lint-ignore-file",
      `// ${OUTPUT}: generated by examples/browser/build.ts from ${ENTRY}; do not edit.`,
      `${HEADER_PREFIX}${await inputDigest()}`,
    ].join("\n");
    return `${header}\n${code.endsWith("\n") ? code : code + "\n"}`;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Whether the committed bundle was built from the current inputs (see {@link inputDigest}). */
export async function isFresh(): Promise<boolean> {
  let text: string;
  try {
    text = await Deno.readTextFile(new URL(OUTPUT, ROOT));
  } catch {
    return false;
  }
  return recordedDigest(text) === await inputDigest();
}

if (import.meta.main) {
  if (Deno.args.includes("--check")) {
    const fresh = await isFresh();
    console.log(fresh ? `${OUTPUT} is up to date` : `${OUTPUT} is stale: rebuild it`);
    Deno.exit(fresh ? 0 : 1);
  }
  const text = await bundle();
  const dest = new URL(OUTPUT, ROOT);
  const tmp = new URL(`${OUTPUT}.${Deno.pid}.tmp`, ROOT);
  await Deno.writeTextFile(tmp, text);
  await Deno.rename(tmp, dest);
  console.log(`wrote ${OUTPUT} (${text.length} bytes)`);
}
