/**
 * The explorer's speed, measured (never asserted: speed goes in reports, not in pass/fail): on the
 * embedded kjv-small, a 20-token prompt (BOS included) with a corrupted prompt of as many tokens,
 * so that every view is computed (top-k, attention and head scores, logit lens, DLA, resid_pre
 * and head patching with attribution patching). The page is served as `deno task explore` serves
 * it (cross-origin isolated, one kernel thread per core) and driven in headless Chromium; for each
 * of a few typed prompts it reports the time from the last keystroke to the frame after every
 * view was placed (`__explorer.latency`: the 150 ms typing debounce, the worker's compute, the
 * transfer and layout), the worker's compute alone, and how responsive the page stayed: the main
 * thread's longest task (Long Tasks API, which reports tasks over 50 ms) and the longest gap
 * between animation frames while the views were computed. The figures are printed and written to
 * `out/test-artifacts/explorer-speed.json`; the test fails only if the views are wrong in kind
 * (missing) or the page errs.
 */
import assert from "node:assert/strict";
import { HookedTransformer } from "../mod.ts";
import { startExplorer } from "../examples/explorer/serve.ts";
import { launchChromium, skipWithoutChromium, watchPage } from "./browser.ts";

const ARTIFACTS = new URL("../out/test-artifacts/", import.meta.url);
const WAIT_MS = 120_000;
/**
 * Two prompts of 20 kjv-small tokens each (BOS included), typed in turn, and the corrupted prompt
 * (as many tokens, different from both at the answer's position: every patching run is needed).
 */
const PROMPTS = [
  "And the LORD spake unto Moses, saying, Speak unto the children of Israel, that they",
  "And the LORD said unto Moses, saying, Speak unto the children of Israel, that they",
];
const CORRUPTED =
  "And the LORD spake unto Aaron, saying, Speak unto the children of Israel, that they";
/** Typed prompts measured (the first load's compute is not one of them). */
const RUNS = 4;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

Deno.test({
  name: "explorer speed (kjv-small, 20 tokens, every view): measured and reported",
  ignore: skipWithoutChromium("the explorer's speed measurement"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
    for (const p of [...PROMPTS, CORRUPTED]) {
      assert.equal(model.toTokens(p)[0].length, 20, `20 tokens: ${p}`);
    }
    model.dispose();
    const { url, server } = await startExplorer({ port: 0, model: "kjv-small" });
    await using browser = await launchChromium();
    const page = await browser.newPage();
    const seen = watchPage(page);
    try {
      await page.setViewport({ width: 1280, height: 800 });
      page.setDefaultTimeout(WAIT_MS);
      await page.goto(
        `${url}&prompt=${encodeURIComponent(PROMPTS[1])}&corrupted=${
          encodeURIComponent(CORRUPTED)
        }&wrong=${encodeURIComponent(" Aaron")}&answer=${encodeURIComponent(" Moses")}`,
      );
      await page.waitForFunction(
        `document.body.dataset.computed !== undefined || globalThis.__explorer.error !== undefined`,
      );
      assert.equal(await page.evaluate("globalThis.__explorer.error"), undefined, "no error");
      const runs: { typedToShownMs: number; computeMs: number; longestTaskMs: number }[] = [];
      let frameGap = 0;
      for (let i = 0; i < RUNS; i++) {
        const prompt = PROMPTS[i % 2];
        await page.evaluate(`globalThis.__explorer.longestTaskMs = 0;
          globalThis.__explorer.longestFrameGapMs = 0; globalThis.__explorer.latency = undefined;
          document.getElementById("prompt").select()`);
        await page.keyboard.type(prompt);
        await page.waitForFunction(
          `globalThis.__explorer.latency !== undefined &&
            document.body.dataset.prompt === ${JSON.stringify(prompt)} ||
            globalThis.__explorer.error !== undefined`,
        );
        assert.equal(await page.evaluate("globalThis.__explorer.error"), undefined, "no error");
        const views = await page.evaluate(`Object.keys(globalThis.__explorer.result.html)`);
        assert.deepEqual(views, ["tokens", "attention", "lens", "dla", "patching"], "every view");
        const latency = await page.evaluate("globalThis.__explorer.latency") as {
          typedToShownMs: number;
          computeMs: number;
        };
        runs.push({
          typedToShownMs: latency.typedToShownMs,
          computeMs: latency.computeMs,
          longestTaskMs: Number(await page.evaluate("globalThis.__explorer.longestTaskMs ?? -1")),
        });
        frameGap = Math.max(
          frameGap,
          Number(await page.evaluate("globalThis.__explorer.longestFrameGapMs ?? 0")),
        );
      }
      const threads = Number(
        await page.evaluate(`document.getElementById("threads").dataset.threads`),
      );
      const report = {
        model: "kjv-small",
        tokens: 20,
        threads,
        cores: Number(await page.evaluate("navigator.hardwareConcurrency")),
        debounceMs: 150,
        typedToShownMs: runs.map((r) => r.typedToShownMs),
        computeMs: runs.map((r) => r.computeMs),
        medianTypedToShownMs: median(runs.map((r) => r.typedToShownMs)),
        longestTaskMs: Math.max(...runs.map((r) => r.longestTaskMs)),
        longestFrameGapMs: Math.round(frameGap),
      };
      await Deno.mkdir(ARTIFACTS, { recursive: true });
      await Deno.writeTextFile(
        new URL("explorer-speed.json", ARTIFACTS),
        JSON.stringify(report, null, 1) + "\n",
      );
      console.log(
        `explorer speed, kjv-small, 20 tokens, every view, ${threads} threads: typed -> shown ` +
          `${report.typedToShownMs.join(", ")} ms (median ${report.medianTypedToShownMs}, ` +
          `150 ms of it the typing debounce); worker compute ${report.computeMs.join(", ")} ms; ` +
          `main thread's longest task ${report.longestTaskMs} ms (0: none over 50 ms), longest ` +
          `frame gap ${report.longestFrameGapMs} ms`,
      );
      assert.deepEqual(seen.errors, [], "no console errors");
    } finally {
      await server.close();
    }
  },
});
