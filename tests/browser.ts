/**
 * Headless Chromium for the tests that open a page (`report_test.ts`, `browser_example_test.ts`),
 * driven by `puppeteer-core` with the system's Chromium (no browser download): find the binary,
 * launch it quiet on the network, and record what a page does wrong.
 *
 * Puppeteer gives the browser a fresh temporary profile, talks to it over a pipe (no debugging
 * port) and deletes the profile on close. Chosen over playwright-core, which launches as well but
 * reads `/proc/sys/fs/binfmt_misc/WSLInterop` when imported (a WSL check), which Deno allows only
 * with `--allow-all`: the test task's permissions would no longer be enough.
 *
 * @example
 * ```ts ignore
 * import { launchChromium, watchPage } from "./browser.ts";
 * const browser = await launchChromium();
 * try {
 *   const page = await browser.newPage();
 *   await page.setViewport({ width: 1280, height: 800 });
 *   const seen = watchPage(page);
 *   await page.goto("file:///tmp/report.html");
 *   await Deno.writeFile("shot.png", await page.screenshot({ fullPage: true }));
 *   if (seen.errors.length) throw new Error(seen.errors.join("\n"));
 * } finally {
 *   await browser.close();
 * }
 * ```
 * @module
 */
import puppeteer, { type Browser, type Page } from "puppeteer-core";

/** Where Chromium is usually installed; the first that exists is used. */
export const CHROMIUM_CANDIDATES: readonly string[] = [
  "/usr/bin/chromium",
  "/usr/bin/chromium-browser",
  "/usr/bin/google-chrome",
  "/usr/bin/google-chrome-stable",
  "/snap/bin/chromium",
  "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
  "/Applications/Chromium.app/Contents/MacOS/Chromium",
];

/** Headless, sandbox-free (containers), and quiet on the network (machines without one). */
export const CHROMIUM_FLAGS: readonly string[] = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/**
 * What WebGPU needs in headless Chromium (version 156 on Debian bookworm, checked 2026-12-07):
 * `--enable-unsafe-webgpu`, and no `--disable-gpu`. Then `navigator.gpu.requestAdapter()` gives
 * SwiftShader's fallback adapter (architecture "swiftshader", `isFallbackAdapter` true) on a
 * machine without a GPU; without the flag it gives null. Adding `--use-angle=swiftshader`,
 * `--use-webgpu-adapter=swiftshader`, `--enable-features=Vulkan` (with `--use-vulkan=native` or
 * `swiftshader`) or `--headless=new` changes nothing there; `--use-angle=vulkan` with
 * `--ignore-gpu-blocklist` gives null again.
 */
export const CHROMIUM_WEBGPU_FLAGS: readonly string[] = [
  ...CHROMIUM_FLAGS.filter((f) => f !== "--disable-gpu"),
  "--enable-unsafe-webgpu",
];

/**
 * The Chromium to use: `$CHROMIUM_PATH` (or `$CHROME_PATH`) when set, else the first of
 * {@linkcode CHROMIUM_CANDIDATES} that exists; undefined when none does.
 */
export function findChromium(): string | undefined {
  let fromEnv: string | undefined;
  try {
    fromEnv = Deno.env.get("CHROMIUM_PATH") ?? Deno.env.get("CHROME_PATH");
  } catch {
    // no --allow-env: ignore the variables
  }
  for (const path of fromEnv ? [fromEnv] : CHROMIUM_CANDIDATES) {
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // not there
    }
  }
  return undefined;
}

/**
 * Whether a browser test should be skipped: only when no Chromium is found and `$CI` is unset
 * (then it says so on the console). In CI a missing Chromium fails the test instead, in
 * {@linkcode launchChromium}.
 */
export function skipWithoutChromium(what: string): boolean {
  if (findChromium() !== undefined) return false;
  let ci = false;
  try {
    ci = !!Deno.env.get("CI");
  } catch {
    // no --allow-env: not CI
  }
  if (!ci) {
    console.warn(
      `SKIPPED ${what}: no Chromium found (install Debian's \`chromium\` package, or set ` +
        `CHROMIUM_PATH). With $CI set this test fails instead.`,
    );
  }
  return !ci;
}

/**
 * Starts {@linkcode findChromium}'s browser headless with {@linkcode CHROMIUM_FLAGS} (with
 * `{ webgpu: true }`, {@linkcode CHROMIUM_WEBGPU_FLAGS}); gives up after 30 s. Throws when there
 * is no Chromium.
 */
export async function launchChromium(opts: { webgpu?: boolean } = {}): Promise<Browser> {
  const executablePath = findChromium();
  if (executablePath === undefined) {
    throw new Error(
      "no Chromium found: install Debian's `chromium` package (apt-get install chromium) or set " +
        "CHROMIUM_PATH",
    );
  }
  return await puppeteer.launch({
    executablePath,
    args: [...(opts.webgpu ? CHROMIUM_WEBGPU_FLAGS : CHROMIUM_FLAGS)],
    pipe: true,
    timeout: 30_000,
  });
}

/** What a page did, recorded from the moment {@linkcode watchPage} was called. */
export interface PageRecord {
  /** Console errors and assertions (including the browser's "Failed to load resource"),
   * uncaught exceptions, and failed requests, as text. */
  errors: string[];
  /** The URL of every request the page made (documents, scripts, images, fetches). */
  requests: string[];
}

/** Records `page`'s errors and requests from now on. */
export function watchPage(page: Page): PageRecord {
  const record: PageRecord = { errors: [], requests: [] };
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "assert") record.errors.push(`console: ${m.text()}`);
  });
  // Dedicated workers' console errors and uncaught exceptions count too.
  page.on("workercreated", (worker) => {
    worker.on("console", (m) => {
      if (m.type() === "error" || m.type() === "assert") {
        record.errors.push(`worker ${worker.url()} console: ${m.text()}`);
      }
    });
    worker.on("error", (e) => {
      record.errors.push(`worker ${worker.url()} exception: ${e.stack ?? e.message}`);
    });
  });
  page.on("pageerror", (e) => {
    record.errors.push(`exception: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
  });
  page.on("request", (r) => record.requests.push(r.url()));
  page.on("requestfailed", (r) => {
    const why = r.failure()?.errorText;
    // A request the page itself cancelled (a navigation away, an aborted fetch) is no failure.
    if (why !== "net::ERR_ABORTED") record.errors.push(`network: ${r.url()} failed: ${why}`);
  });
  return record;
}
