/**
 * Takes the explorer's screenshots that the docs show (`docs/images/explorer-*.png`): kjv-small
 * with a 20-token prompt and a corrupted one, at 1280x800 (the patching and attention views) and
 * on a phone-sized viewport (390x844, the top-k view), in headless Chromium as the tests drive it.
 *
 * ```sh
 * deno run --config tests/deno.json --allow-all tests/explorer_screenshots.ts
 * ```
 * @module
 */
import { startExplorer } from "../examples/explorer/serve.ts";
import { launchChromium } from "./browser.ts";

const OUT = new URL("../docs/images/", import.meta.url);
const PROMPT =
  "And the LORD spake unto Moses, saying, Speak unto the children of Israel, that they";
const CORRUPTED =
  "And the LORD spake unto Aaron, saying, Speak unto the children of Israel, that they";

/** The shots: file name, viewport, view. */
const SHOTS = [
  { file: "explorer-patching-1280x800.png", width: 1280, height: 800, view: "patching" },
  { file: "explorer-attention-1280x800.png", width: 1280, height: 800, view: "attention" },
  { file: "explorer-phone.png", width: 390, height: 844, view: "tokens" },
] as const;

if (import.meta.main) {
  const { url, server } = await startExplorer({ port: 0, model: "kjv-small" });
  await using browser = await launchChromium();
  const page = await browser.newPage();
  try {
    await Deno.mkdir(OUT, { recursive: true });
    for (const shot of SHOTS) {
      await page.setViewport({ width: shot.width, height: shot.height });
      await page.goto(
        `${url}&prompt=${encodeURIComponent(PROMPT)}&corrupted=${encodeURIComponent(CORRUPTED)}` +
          `&answer=${encodeURIComponent(" Moses")}&wrong=${encodeURIComponent(" Aaron")}` +
          `&view=${shot.view}`,
      );
      await page.waitForFunction(
        `document.body.dataset.computed !== undefined || globalThis.__explorer.error !== undefined`,
        { timeout: 120_000 },
      );
      const error = await page.evaluate("globalThis.__explorer.error");
      if (error !== undefined) throw new Error(`the page shows an error: ${error}`);
      // Scroll the view into sight below the controls.
      await page.evaluate(`document.querySelector("nav[role=tablist]").scrollIntoView()`);
      const file = new URL(shot.file, OUT);
      await Deno.writeFile(file, await page.screenshot());
      console.log(`${file.pathname}: ${(await Deno.stat(file)).size} bytes`);
    }
  } finally {
    await server.close();
  }
}
