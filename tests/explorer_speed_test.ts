/**
 * The explorer's speed, measured (never asserted: speed goes in reports, not in pass/fail): on the
 * embedded kjv-small, a 20-token prompt (BOS included) with a corrupted prompt of as many tokens,
 * so that every view is computed (top-k, attention and head scores, logit lens, DLA, resid_pre
 * and head patching with attribution patching). The page is served as `deno task explore` serves
 * it (cross-origin isolated, one kernel thread per core) and driven in headless Chromium; for each
 * of a few typed prompts it reports the time from the last keystroke to the frame after every
 * view was placed (`__explorer.latency`: the 150 ms typing debounce, the worker's compute, the
 * transfer and layout; patching shows attribution patching's estimate at first), then to the
 * frame after activation patching's grids joined it, the worker's compute of each, and how
 * responsive the page stayed: the main
 * thread's longest task (Long Tasks API, which reports tasks over 50 ms) and the longest gap
 * between animation frames while the views were computed. The figures are printed and written to
 * `out/test-artifacts/explorer-speed.json`; the test fails only if the views are wrong in kind
 * (missing) or the page errs.
 *
 * With `EXPLORER_GPT2_SMALL=1` a second measurement runs on GPT-2 small's shape (a seeded
 * synthetic GPT-2: 12 layers, 12 heads, d_model 768, GPT-2's vocabulary; the same arithmetic as
 * the real weights, which are not here) served as a folder (a cached model: no download): a
 * 20-token prompt without and then with a corrupted prompt (patching every layer x position and
 * every head). It writes about 0.5 GB to a temporary folder and takes minutes on 2 cores, hence
 * opt-in; the figures go to `out/test-artifacts/explorer-speed-gpt2-small.json`.
 */
import assert from "node:assert/strict";
import { HookedTransformer } from "../mod.ts";
import { syntheticGpt2 } from "../weights/synthetic.ts";
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
      const runs: {
        typedToShownMs: number;
        computeMs: number;
        typedToCompleteMs: number;
        completeComputeMs: number;
        longestTaskMs: number;
      }[] = [];
      let frameGap = 0;
      for (let i = 0; i < RUNS; i++) {
        const prompt = PROMPTS[i % 2];
        await page.evaluate(`globalThis.__explorer.longestTaskMs = 0;
          globalThis.__explorer.longestFrameGapMs = 0; globalThis.__explorer.latency = undefined;
          document.getElementById("prompt").select()`);
        await page.keyboard.type(prompt);
        await page.waitForFunction(
          `globalThis.__explorer.latency?.typedToCompleteMs !== undefined &&
            document.body.dataset.prompt === ${JSON.stringify(prompt)} ||
            globalThis.__explorer.error !== undefined`,
        );
        assert.equal(await page.evaluate("globalThis.__explorer.error"), undefined, "no error");
        const views = await page.evaluate(`Object.keys(globalThis.__explorer.result.html)`);
        assert.deepEqual(views, ["tokens", "attention", "lens", "dla", "patching"], "every view");
        const latency = await page.evaluate("globalThis.__explorer.latency") as {
          typedToShownMs: number;
          computeMs: number;
          typedToCompleteMs: number;
          completeComputeMs: number;
        };
        runs.push({
          typedToShownMs: latency.typedToShownMs,
          computeMs: latency.computeMs,
          typedToCompleteMs: latency.typedToCompleteMs,
          completeComputeMs: latency.completeComputeMs,
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
        typedToCompleteMs: runs.map((r) => r.typedToCompleteMs),
        completeComputeMs: runs.map((r) => r.completeComputeMs),
        medianTypedToCompleteMs: median(runs.map((r) => r.typedToCompleteMs)),
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
          `with activation patching's grids ${report.typedToCompleteMs.join(", ")} ms (median ` +
          `${report.medianTypedToCompleteMs}), worker ${report.completeComputeMs.join(", ")} ms; ` +
          `main thread's longest task ${report.longestTaskMs} ms (0: none over 50 ms), longest ` +
          `frame gap ${report.longestFrameGapMs} ms`,
      );
      assert.deepEqual(seen.errors, [], "no console errors");
    } finally {
      await server.close();
    }
  },
});

Deno.test({
  name: "explorer speed (GPT-2 small's shape, 20 tokens): measured and reported",
  ignore: Deno.env.get("EXPLORER_GPT2_SMALL") !== "1" ||
    skipWithoutChromium("the explorer's speed measurement"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const prompt =
      "When Mary and John went to the store, John gave a drink to Mary. Then they walked";
    const corrupted =
      "When Mary and John went to the store, Mary gave a drink to John. Then they walked";
    const dir = await Deno.makeTempDir({ prefix: "explorer-gpt2-small-" });
    const folder = `${dir}/gpt2-small-shape`;
    await Deno.mkdir(folder);
    {
      const { config, weights } = syntheticGpt2({
        nLayers: 12,
        nHeads: 12,
        dModel: 768,
        dVocab: 50257,
        nCtx: 1024,
        seed: 0,
      });
      await Deno.writeTextFile(`${folder}/config.json`, JSON.stringify(config));
      await Deno.writeFile(`${folder}/model.safetensors`, weights);
    }
    const { url, server } = await startExplorer({ port: 0, model: folder });
    await using browser = await launchChromium();
    const page = await browser.newPage();
    try {
      page.setDefaultTimeout(600_000);
      await page.setViewport({ width: 1280, height: 800 });
      const t0 = Date.now();
      await page.goto(`${url}&prompt=x`);
      await page.waitForFunction(
        `document.body.dataset.computed !== undefined || globalThis.__explorer.error !== undefined`,
      );
      assert.equal(await page.evaluate("globalThis.__explorer.error"), undefined, "no error");
      const loadMs = Number(await page.evaluate("globalThis.__explorer.info.loadMs"));
      const firstMs = Date.now() - t0;
      const measure = async (field: string, text: string) => {
        await page.evaluate(`globalThis.__explorer.longestTaskMs = 0;
          globalThis.__explorer.latency = undefined;
          document.getElementById(${JSON.stringify(field)}).select()`);
        await page.keyboard.type(text);
        await page.waitForFunction(
          `globalThis.__explorer.latency?.typedToCompleteMs !== undefined ||
            globalThis.__explorer.error !== undefined`,
        );
        assert.equal(await page.evaluate("globalThis.__explorer.error"), undefined, "no error");
        const tokens = Number(await page.evaluate("globalThis.__explorer.result.tokens.length"));
        assert.equal(tokens, 20, "20 tokens");
        return {
          ...(await page.evaluate("globalThis.__explorer.latency") as object),
          longestTaskMs: Number(await page.evaluate("globalThis.__explorer.longestTaskMs ?? -1")),
          views: await page.evaluate("Object.keys(globalThis.__explorer.result.html)"),
        };
      };
      const withoutPatching = await measure("prompt", prompt);
      const withPatching = await measure("corrupted", corrupted);
      const report = {
        model: "synthetic GPT-2 small shape (12 x 12 x 768, 50257 ids)",
        threads: Number(await page.evaluate(`document.getElementById("threads").dataset.threads`)),
        loadMs,
        firstPageMs: firstMs,
        withoutPatching,
        withPatching,
      };
      await Deno.mkdir(ARTIFACTS, { recursive: true });
      await Deno.writeTextFile(
        new URL("explorer-speed-gpt2-small.json", ARTIFACTS),
        JSON.stringify(report, null, 1) + "\n",
      );
      console.log(`explorer speed, GPT-2 small's shape: ${JSON.stringify(report)}`);
    } finally {
      await server.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
