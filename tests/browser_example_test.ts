/**
 * The browser example (`examples/browser/`): its committed bundle is built from today's sources,
 * and the page, served by the loopback static server and opened in headless Chromium, runs the
 * toy model, draws its charts and shows the same scores as the library computes here.
 *
 * Chromium is driven with puppeteer-core through `tests/browser.ts` (fresh profile, no network
 * features). Without a Chromium the page test is skipped with a message, unless CI is set (then it
 * fails).
 * A screenshot is saved in `out/test-artifacts/browser-example.png`.
 */
import assert from "node:assert/strict";
import { attentionPattern, generateRepeatedTokens, headScores, HookedTransformer } from "../mod.ts";
import { inputDigest, OUTPUT, recordedDigest } from "../examples/browser/build.ts";
import { BATCH, HEAD, LAYER, type PageScores, SEED, SEQ_LEN } from "../examples/browser/config.ts";
import { launchChromium, skipWithoutChromium, watchPage } from "./browser.ts";
import { startStaticServer } from "./static_server.ts";

const ROOT = new URL("../", import.meta.url);
const ARTIFACTS = new URL("../out/test-artifacts/", import.meta.url);

// ---- Tests ----

Deno.test("browser example: the committed bundle is built from the current sources", async () => {
  let text: string;
  try {
    text = await Deno.readTextFile(new URL(OUTPUT, ROOT));
  } catch {
    assert.fail(
      `${OUTPUT} is missing: run deno run --allow-read --allow-write --allow-run --allow-env ` +
        `examples/browser/build.ts`,
    );
  }
  assert.equal(
    recordedDigest(text),
    await inputDigest(),
    `${OUTPUT} is stale (the library or the example changed since it was built): run ` +
      `deno run --allow-read --allow-write --allow-run --allow-env examples/browser/build.ts`,
  );
  assert.ok(!text.includes("registry.npmjs.org"), "the bundle names no local npm cache path");
  assert.ok(!/^\/\/ npm\/js-tiktoken/m.test(text), "the tokenizer package is not bundled");
});

Deno.test({
  name:
    "browser example: the page runs the toy model, draws its charts, shows the library's scores",
  ignore: skipWithoutChromium("the browser example's page test"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    // What the page should show, computed here with the library.
    const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
    const tokens = generateRepeatedTokens(model, SEQ_LEN, BATCH, { seed: SEED });
    const expected = await headScores(model, tokens, SEQ_LEN);
    const { pattern: expectedPattern } = await attentionPattern(model, tokens, LAYER, HEAD);

    await using browser = await launchChromium(); // closed however the test ends
    const server = await startStaticServer();
    try {
      const page = await browser.newPage();
      await page.setViewport({ width: 1280, height: 1100 });
      page.setDefaultTimeout(30_000);
      const seen = watchPage(page);
      await page.goto(`${server.origin}/examples/browser/index.html`);
      const evaluate = (expression: string) => page.evaluate(expression);
      let state = "";
      try {
        await page.waitForFunction("globalThis.__error !== undefined || globalThis.__scores", {
          timeout: 60_000,
        });
        state = (await evaluate("globalThis.__error === undefined")) ? "done" : "error";
      } catch (e) {
        state = `timeout: ${(e as Error).message}`;
      }

      // Screenshot whatever the page shows, before asserting anything.
      await Deno.mkdir(ARTIFACTS, { recursive: true });
      await Deno.writeFile(new URL("browser-example.png", ARTIFACTS), await page.screenshot());

      const failed = server.requests.filter((r) => r.status !== 200);
      const context = `\nproblems in the page: ${JSON.stringify(seen.errors, null, 1)}\n` +
        `failed requests: ${JSON.stringify(failed)}\n` +
        `screenshot: out/test-artifacts/browser-example.png`;
      if (state === "error") {
        assert.fail(`the page failed: ${await evaluate("globalThis.__error")}${context}`);
      }
      assert.equal(state, "done", `the page did not finish${context}`);
      assert.deepEqual(seen.errors, [], `the page logged errors${context}`);
      assert.deepEqual(failed, [], "every request the page made succeeded");
      const paths = new Set(server.requests.map((r) => r.path));
      assert.ok(paths.has("/examples/browser/generated/app.js"), "the page loaded the bundle");
      assert.ok(
        [...paths].some((p) => /^\/backend\/wasm\/kernels-(simd|relaxed)\.wasm$/.test(p)),
        `the kernels were fetched from backend/wasm/ (requests: ${[...paths].join(", ")})`,
      );
      assert.ok(paths.has("/weights/induction-toy/model.safetensors"), "the weights were fetched");

      // The scores the page computed are the library's, and the page shows them.
      const computed = JSON.parse(
        String(await evaluate("JSON.stringify(globalThis.__scores)")),
      ) as PageScores;
      assert.deepEqual(computed.induction, expected.induction, "induction scores");
      assert.deepEqual(computed.previousToken, expected.previousToken, "previous-token scores");
      assert.deepEqual(computed.duplicateToken, expected.duplicateToken, "duplicate-token scores");
      assert.deepEqual(computed.pattern, expectedPattern, `layer ${LAYER} head ${HEAD}'s pattern`);
      const shown = JSON.parse(
        String(await evaluate(`document.getElementById("scores").textContent`)),
      );
      assert.deepEqual(shown.induction, expected.induction, "<pre id=scores> shows the scores");
      assert.ok(
        expected.induction[LAYER][HEAD] > 0.5,
        `layer ${LAYER} head ${HEAD} is an induction head (${expected.induction[LAYER][HEAD]})`,
      );

      // The heatmap drew: a good part of the canvas inked, in many shades.
      const heat = await evaluate(`(() => {
        const c = document.getElementById("heatmap");
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let ink = 0; const colours = new Set();
        for (let i = 0; i < d.length; i += 4) {
          if (d[i] < 250 || d[i + 1] < 250 || d[i + 2] < 250) ink++;
          colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
        }
        return { width: c.width, height: c.height, ink, colours: colours.size };
      })()`) as { width: number; height: number; ink: number; colours: number };
      assert.ok(heat.width > 100 && heat.height > 100, `heatmap size ${JSON.stringify(heat)}`);
      assert.ok(
        heat.ink > (heat.width * heat.height) / 4,
        `heatmap has ink: ${JSON.stringify(heat)}`,
      );
      assert.ok(heat.colours > 20, `heatmap has many shades: ${JSON.stringify(heat)}`);

      // The two uPlot charts drew lines and bars on their canvases.
      const charts = await evaluate(`[...document.querySelectorAll(".uplot canvas")].map((c) => {
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let ink = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] > 0) ink++;
        return ink;
      })`) as number[];
      assert.equal(charts.length, 2, `two uPlot charts (${JSON.stringify(charts)})`);
      for (const ink of charts) {
        assert.ok(ink > 2000, `a uPlot chart drew: ${JSON.stringify(charts)}`);
      }
    } finally {
      await server.close();
    }
  },
});
