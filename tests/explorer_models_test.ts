/**
 * The explorer (`examples/explorer/`) on models other than the embedded ones, in headless
 * Chromium (puppeteer-core, `tests/browser.ts`), each number read from the page checked against
 * the library in Deno for the same prompt:
 *
 * - a text model with GPT-2's tokenizer: a seeded synthetic GPT-2 with GPT-2's vocabulary (50257
 *   ids, so the library gives it r50k_base) written to a folder and opened with `--model=<folder>`;
 *   the page's tokens, top-k, one attention pattern row and the logit-lens cells equal the
 *   library's;
 * - a SAELens SAE given with `--sae=<folder>` (the tiny GPT-2 fixture and its `standard` SAE):
 *   each token's number of active features and the strongest ones equal SAELens's float64
 *   reference (`tests/fixtures/sae/sae-golden.json`) and `sae.encode` here;
 * - the model picker's download: a model folder served on another loopback origin and given as a
 *   URL is fetched by the page's worker into Cache Storage with a progress bar, and the next
 *   visit loads it from there without asking the server.
 *
 * A failing test saves a screenshot in `out/test-artifacts/explorer-<what>.png`. Without a
 * Chromium the tests are skipped with a message, unless CI is set (then they fail).
 */
import assert from "node:assert/strict";
import { HookedTransformer, SAE, viz } from "../mod.ts";
import { syntheticGpt2 } from "../weights/synthetic.ts";
import { parseState } from "../examples/explorer/protocol.ts";
import { startExplorer } from "../examples/explorer/serve.ts";
import { SAE_TOP_K, TOP_K } from "../examples/explorer/views.ts";
import { MODEL_CACHE } from "../examples/explorer/cached_fetch.ts";
import { checkTopK, close, gridValues, screenshotOnFailure, softmaxRow } from "./explorer_page.ts";
import { launchChromium, skipWithoutChromium, watchPage } from "./browser.ts";
import { REPO_ROOT, startStaticServer } from "./static_server.ts";
import type { Page } from "puppeteer-core";

/** How long the page may take to load a model or compute a prompt's views (2 busy cores). */
const WAIT_MS = 120_000;
/**
 * Float32 tolerance between the page (kernels on several threads, in Chromium) and this process
 * (one thread), as in `explorer_test.ts`: probabilities and attention weights lie in [0, 1] and
 * the kernels split work across threads without reordering a sum, so 1e-5 absolute leaves room
 * for a SIMD variant's rounding over a d_model sum of a few hundred terms.
 */
const PROB_TOL = 1e-5;

/** GPT-2's vocabulary and a small seeded body: fast on 2 cores, 13 MB of weights. */
const GPT2_SHAPE = { nLayers: 2, nHeads: 4, dModel: 64, dVocab: 50257, nCtx: 64, seed: 22 };

/** Writes a synthetic GPT-2 with GPT-2's vocabulary to `dir` (config.json, model.safetensors). */
async function writeSyntheticGpt2(dir: string): Promise<void> {
  const { config, weights } = syntheticGpt2(GPT2_SHAPE);
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
  await Deno.writeFile(`${dir}/model.safetensors`, weights);
}

/** Waits until the page shows the views of `prompt` (or an error), and asserts no error. */
async function waitForPrompt(page: Page, prompt: string): Promise<void> {
  await page.waitForFunction(
    `document.body.dataset.prompt === ${JSON.stringify(prompt)} && ` +
      `globalThis.__explorer.result !== undefined || globalThis.__explorer.error !== undefined`,
    { timeout: WAIT_MS },
  );
  assert.equal(await page.evaluate("globalThis.__explorer.error"), undefined, "no error");
}

/**
 * A folder model without tokenizer files makes the library ask for `tokenizer.json` and
 * `vocab.json` (a 404 each, as it should: they are optional), which Chromium logs as console
 * errors; every other error counts.
 */
function realErrors(errors: string[]): string[] {
  return errors.filter((e) => !/status of 404/.test(e));
}

Deno.test({
  name: "explorer page (synthetic GPT-2, --model=<folder>): GPT-2's tokenizer, top-k, a " +
    "pattern row, the logit lens equal the library's",
  ignore: skipWithoutChromium("the explorer's page test"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "explorer-gpt2-" });
    const folder = `${dir}/synthetic-gpt2`;
    await writeSyntheticGpt2(folder);
    const prompt = "The cat sat on the mat, and the dog sat on the log.";
    const model = await HookedTransformer.fromPretrained(folder, { threads: 1 });
    const { url, server } = await startExplorer({ port: 0, model: folder });
    await using browser = await launchChromium();
    const page = await browser.newPage();
    const seen = watchPage(page);
    let passed = false;
    try {
      assert.equal(model.cfg.dVocab, 50257);
      assert.ok(model.tokenizer, "the library gives GPT-2's vocabulary GPT-2's tokenizer");
      const ids = model.toTokens(prompt)[0];
      const T = ids.length;
      assert.equal(ids[0], 50256, "<|endoftext|> as BOS");
      const { logits, cache } = await model.runWithCache([ids]);
      const lens = await viz.logitLensGrid(model, ids);

      assert.equal(parseState(new URL(url).search).model, "/models/synthetic-gpt2/");
      await page.setViewport({ width: 1280, height: 800 });
      page.setDefaultTimeout(WAIT_MS);
      await page.goto(`${url}&prompt=${encodeURIComponent(prompt)}`);
      await waitForPrompt(page, prompt);

      // The page tokenized the text as GPT-2 does.
      assert.deepEqual(await page.evaluate("globalThis.__explorer.result.ids"), ids, "token ids");
      assert.deepEqual(
        await page.evaluate("globalThis.__explorer.result.tokens"),
        model.toStrTokens(ids),
        "token strings",
      );
      assert.equal(await page.evaluate("globalThis.__explorer.info.hasTokenizer"), true);

      // Top-k ids and probabilities at every position.
      for (const { shown, library, what } of await checkTopK(page, logits, T, TOP_K)) {
        close(shown, library, PROB_TOL, what);
      }

      // One pattern row: the last query of L1H3.
      const shown = await gridValues(
        page,
        `#view-attention section[data-layer="1"] details[data-head="3"]`,
      );
      const pattern = cache.get("pattern", 1).data;
      for (let k = 0; k < T; k++) {
        close(shown[T - 1][k], pattern[(3 * T + T - 1) * T + k], PROB_TOL, `L1H3[${T - 1}][${k}]`);
      }

      // The logit lens: every cell's top token (id and text) and probability.
      const cells = await page.evaluate(
        `[...document.querySelectorAll("#view-lens td.c[data-row]")].map((c) => ({
          row: Number(c.dataset.row), col: Number(c.dataset.col), value: Number(c.dataset.value),
          id: Number(/\\(id (\\d+)\\)/.exec(c.dataset.tip ?? "")?.[1]), tip: c.dataset.tip ?? "",
        }))`,
      ) as { row: number; col: number; value: number; id: number; tip: string }[];
      assert.equal(cells.length, lens.layers.length * T, "layer x position cells");
      for (const c of cells) {
        assert.equal(c.id, lens.topIds[c.row][c.col], `lens top id at ${c.row}, ${c.col}`);
        close(c.value, lens.topProbs[c.row][c.col], PROB_TOL, `lens p at ${c.row}, ${c.col}`);
      }
      const sample = cells[cells.length - 1];
      assert.ok(
        sample.tip.includes(JSON.stringify(lens.topTokens[sample.row][sample.col]).slice(1, -1)),
        `the lens cell names its token: ${sample.tip}`,
      );
      assert.deepEqual(realErrors(seen.errors), [], "no console errors besides optional 404s");
      passed = true;
    } finally {
      if (!passed) await screenshotOnFailure(page, "gpt2", seen.errors);
      await server.close();
      model.dispose();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** `tests/fixtures/sae/sae-golden.json`, as far as this test reads it. */
interface SaeGolden {
  model: string;
  tokens: number[][];
  saes: Record<string, { hook_name: string; feature_acts: number[][][]; l0: number[][] }>;
}

Deno.test({
  name: "explorer page (tiny GPT-2, --sae=<folder>): each token's active SAE features equal " +
    "SAELens's reference and the library's",
  ignore: skipWithoutChromium("the explorer's page test"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const fixtures = new URL("./fixtures/", import.meta.url).pathname;
    const golden = JSON.parse(
      await Deno.readTextFile(`${fixtures}sae/sae-golden.json`),
    ) as SaeGolden;
    const ref = golden.saes.standard;
    const ids = golden.tokens[0];
    const T = ids.length;
    const modelDir = `${fixtures}${golden.model}`, saeDir = `${fixtures}sae/standard`;
    const model = await HookedTransformer.fromPretrained(modelDir, { threads: 1 });
    const sae = await SAE.loadFromDisk(saeDir, { backend: model.backend });
    const { cache } = await model.runWithCache([ids]);
    const acts = await sae.encode(cache.get(ref.hook_name));
    const F = sae.cfg.dSae;
    const refTol = 1e-4 * Math.max(...ref.feature_acts.flat(2).map(Math.abs));
    const { url, server } = await startExplorer({ port: 0, model: modelDir, sae: saeDir });
    await using browser = await launchChromium();
    const page = await browser.newPage();
    const seen = watchPage(page);
    let passed = false;
    try {
      assert.equal(parseState(new URL(url).search).sae, "/saes/standard/");
      page.setDefaultTimeout(WAIT_MS);
      const prompt = ids.join(" ");
      await page.goto(`${url}&prompt=${encodeURIComponent(prompt)}&view=sae`);
      await waitForPrompt(page, prompt);
      assert.equal(await page.evaluate(`document.querySelector("#view-sae").hidden`), false);
      assert.equal(
        await page.evaluate(`document.querySelector("#view-sae [data-hook]").dataset.hook`),
        ref.hook_name,
      );
      const rows = await page.evaluate(`[...document.querySelectorAll("#view-sae tr[data-pos]")]
        .map((r) => ({
          l0: Number(r.querySelector("[data-active]").dataset.active),
          top: [...r.querySelectorAll("td[data-id]")]
            .map((c) => [Number(c.dataset.id), Number(c.dataset.value)]),
        }))`) as { l0: number; top: [number, number][] }[];
      assert.equal(rows.length, T, "one row per token");
      for (let t = 0; t < T; t++) {
        const want = ref.feature_acts[0][t];
        const order = [...want.keys()].filter((f) => want[f] > 0)
          .sort((a, b) => want[b] - want[a]).slice(0, SAE_TOP_K);
        assert.equal(rows[t].l0, ref.l0[0][t], `L0 at ${t}`);
        assert.deepEqual(rows[t].top.map(([f]) => f), order, `strongest features at ${t}`);
        for (const [f, v] of rows[t].top) {
          // SAELens's float64 reference: 1e-4 of the array's largest value (fixtures README).
          close(v, want[f], refTol, `feature ${f} at ${t} vs SAELens`);
          // This library in Deno, one thread: float32 both, 1e-5 relative to the activation.
          const lib = acts.data[t * F + f];
          close(v, lib, 1e-5 * Math.max(1, Math.abs(lib)), `feature ${f} at ${t} vs the library`);
        }
      }
      // A missing SAE (typed in the SAE field) is an error that says what is missing.
      await page.evaluate(`document.getElementById("sae").select()`);
      await page.keyboard.sendCharacter("/saes/missing/"); // one input event: no prefix runs
      await page.waitForFunction(`globalThis.__explorer.error !== undefined`);
      assert.match(String(await page.evaluate("globalThis.__explorer.error")), /cfg\.json/);
      assert.deepEqual(
        realErrors(seen.errors).filter((e) => !/saes\/missing\/cfg\.json/.test(e)),
        [],
        "no console errors besides 404s of optional files and of the missing SAE",
      );
      passed = true;
    } finally {
      if (!passed) await screenshotOnFailure(page, "sae", seen.errors);
      await server.close();
      model.dispose();
    }
  },
});

Deno.test({
  name: "explorer page: a model given as a URL downloads into Cache Storage with a progress " +
    "bar, and loads from there the next time",
  ignore: skipWithoutChromium("the explorer's page test"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    // The model's folder on another origin (another loopback port), as a hub or CDN serves it:
    // CORS and CORP headers, which a cross-origin isolated page needs to read it.
    const dir = await Deno.makeTempDir({ prefix: "explorer-url-" });
    await Deno.mkdir(`${dir}/remote-kjv`);
    for (const f of ["config.json", "model.safetensors", "tokenizer.json"]) {
      await Deno.copyFile(`${REPO_ROOT}/weights/kjv-small/${f}`, `${dir}/remote-kjv/${f}`);
    }
    const weightsSize = (await Deno.stat(`${dir}/remote-kjv/model.safetensors`)).size;
    const remote = await startStaticServer({
      root: dir,
      headers: {
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
      },
    });
    const modelUrl = `${remote.origin}/remote-kjv/`;
    const prompt = "And God said";
    const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
    const { url, server } = await startExplorer({ port: 0, model: modelUrl });
    await using browser = await launchChromium();
    const page = await browser.newPage();
    const seen = watchPage(page);
    let passed = false;
    try {
      page.setDefaultTimeout(WAIT_MS);
      assert.equal(parseState(new URL(url).search).model, modelUrl, "the URL is the page's model");
      await page.goto(`${url}&prompt=${encodeURIComponent(prompt)}`);
      await waitForPrompt(page, prompt);
      // The picker lists the embedded models and the one given at start.
      assert.deepEqual(
        await page.evaluate(`[...document.querySelectorAll("#models option")].map((o) => o.value)`),
        ["kjv-small", "induction-toy", modelUrl],
      );
      const weightsUrl = `${modelUrl}model.safetensors`;
      const weightRequests = () =>
        remote.requests.filter((r) => r.path === "/remote-kjv/model.safetensors").length;
      assert.equal(weightRequests(), 1, "the weights were downloaded once");

      // The download's last report: every byte, from the network; the bar and its text.
      const reports = await page.evaluate("globalThis.__explorer.downloads") as Record<
        string,
        { loaded: number; total?: number; cached: boolean; done: boolean }
      >;
      assert.deepEqual(reports[weightsUrl], {
        url: weightsUrl,
        loaded: weightsSize,
        total: weightsSize,
        cached: false,
        done: true,
      });
      assert.equal(await page.evaluate(`document.getElementById("download").hidden`), false);
      assert.match(
        String(await page.evaluate(`document.getElementById("download-text").textContent`)),
        /3 files \(17\.7 MB\): 3 downloaded and kept in the browser's cache/,
      );
      // Cache Storage holds the weights.
      const cachedSize = await page.evaluate(`caches.open("${MODEL_CACHE}")
        .then((c) => c.match(${JSON.stringify(weightsUrl)}))
        .then((r) => r ? r.arrayBuffer().then((b) => b.byteLength) : -1)`);
      assert.equal(cachedSize, weightsSize, "the weights are in Cache Storage");
      // It is kjv-small: the page's top next token at the last position is the library's.
      const logits = await model.run(prompt);
      const T = logits.shape[1], p = softmaxRow(logits, T - 1);
      let best = 0;
      for (let i = 1; i < p.length; i++) if (p[i] > p[best]) best = i;
      const shownTop = await page.evaluate(
        `Number([...document.querySelectorAll("#view-tokens table.topk tr")].at(-1)
          .querySelector("td[data-id]").dataset.id)`,
      );
      assert.equal(shownTop, best, "top next token at the last position");

      // The next visit loads from Cache Storage: no request for the weights reaches the server.
      await page.reload();
      await waitForPrompt(page, prompt);
      assert.equal(weightRequests(), 1, "the weights came from Cache Storage");
      const again = await page.evaluate("globalThis.__explorer.downloads") as Record<
        string,
        { cached: boolean }
      >;
      assert.equal(again[weightsUrl]?.cached, true);
      assert.match(
        String(await page.evaluate(`document.getElementById("download-text").textContent`)),
        /all from the browser's cache/,
      );

      // "Forget downloaded models" empties the cache.
      await page.click("#forget");
      await page.waitForFunction(
        `document.getElementById("download-text").textContent.startsWith("Forgot")`,
      );
      assert.equal(
        await page.evaluate(`caches.has("${MODEL_CACHE}")`),
        false,
        "the cache is gone",
      );
      assert.deepEqual(seen.errors, [], "no console errors, exceptions or failed requests");
      passed = true;
    } finally {
      if (!passed) await screenshotOnFailure(page, "url-model", seen.errors);
      await server.close();
      await remote.close();
      model.dispose();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
