/**
 * The explorer on WebGPU (`?device=webgpu`, `deno task explore --device=webgpu`): the page, built
 * and served as `deno task explore` serves it, loads the model in its worker on headless
 * Chromium's WebGPU adapter, says so, and shows the same top-k probabilities, attention pattern
 * and logit lens as the library computes on WebAssembly here; its device control then moves the
 * page back to WebAssembly.
 *
 * The model is `induction-toy` (3 layers, d_model 128, 1.7 MB of weights): the smaller of the two
 * embedded models, so that SwiftShader (a CPU implementation of the GPU) loads and computes every
 * view of a 9-token prompt in seconds. Headless Chromium exposes an adapter only with
 * `--enable-unsafe-webgpu` and without `--disable-gpu` (`CHROMIUM_WEBGPU_FLAGS` in
 * `tests/browser.ts`). Without a Chromium the test is skipped unless CI is set; where this
 * Chromium offers no adapter the test says so and passes, except under CI, where it fails (as
 * `tests/browser_webgpu_test.ts` does). A screenshot goes to
 * `out/test-artifacts/explorer-webgpu.png` however the test ends.
 *
 * Beside the page, in Deno (on Deno's WebGPU adapter, skipped without one unless CI is set):
 * every view the worker computes (`computeViews`), the SAE view and both patching grids included,
 * shows the same numbers and the same token and feature ids on WebGPU as on WebAssembly.
 */
import assert from "node:assert/strict";
import { getActPatchResidPre, HookedTransformer, logitDiffMetric, SAE, viz } from "../mod.ts";
import { parseState, type ViewName, VIEWS } from "../examples/explorer/protocol.ts";
import { startExplorer } from "../examples/explorer/serve.ts";
import { computeViews, TOP_K } from "../examples/explorer/views.ts";
import { deviceTest, TEST_DEVICES } from "./backend_harness.ts";
import { ARTIFACTS, checkTopK, gridValues, screenshotOnFailure } from "./explorer_page.ts";
import { launchChromium, skipWithoutChromium, watchPage } from "./browser.ts";

/** How long the page may take to load the model or compute the views (2 busy cores). */
const WAIT_MS = 60_000;
/**
 * Probabilities (top-k, attention weights, the lens's top probability) are in [0, 1]. WebGPU
 * sums the same terms as wasm in another order (tiled matrix products, a fused attention with an
 * online softmax, a parallel softmax over the vocabulary), so each value differs by a few float32
 * roundings of numbers at most 1 in size (the backends' logits agree to 2e-6 of the largest at
 * GPT-2 small's shape, which has 6x this model's d_model and 4x its layers): 1e-5 absolute is
 * about 80 units in the last place at 1.0, and far below any difference the views show (they
 * print 3 to 4 digits).
 */
const TOLERANCE = 1e-5;
/**
 * Logit differences (the patching view's numbers, a few units in size) are sums over d_model
 * and the vocabulary's softmax in float32 computed in another order on each device: 1e-4
 * relative (at least 1e-4 absolute), as tests/explorer_test.ts allows between threads.
 */
const ATTR_TOL = 1e-4;
/** The prompt: [BOS] then a segment of 4 ids, repeated (an induction pattern to attend along). */
const PROMPT = [2047, 5, 9, 700, 31, 5, 9, 700, 31];
/** The corrupted prompt for patching: the repeat's segment differs from the first. */
const CORRUPTED = [2047, 5, 9, 700, 31, 6, 10, 701, 32];
/** The patching metric: logit of 5 (the induction answer after 31) - logit of 9. */
const ANSWER = 5, WRONG = 9;

/** The largest |page - library| over `pairs`, asserting that each is a number. */
function largest(pairs: [number, number][], what: string): number {
  let m = 0;
  for (const [page, lib] of pairs) {
    assert.ok(Number.isFinite(page), `${what}: the page shows ${page}`);
    m = Math.max(m, Math.abs(page - lib));
  }
  return m;
}

Deno.test({
  name: "explorer on WebGPU: the page says so; top-k, pattern, lens and patching equal wasm's",
  ignore: skipWithoutChromium("the explorer's WebGPU test"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    // The reference: the library on WebAssembly, here, for the same prompt.
    const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
    const T = PROMPT.length;
    const { logits, cache } = await model.runWithCache([PROMPT]);
    const lens = await viz.logitLensGrid(model, PROMPT);
    const { nLayers, nHeads } = model.cfg;
    const patterns = Array.from({ length: nLayers }, (_, l) => cache.get("pattern", l).data);
    const metric = logitDiffMetric([ANSWER], [WRONG]);
    const base = metric.value(logits) as number;
    const { cache: corruptedCache } = await model.runWithCache([CORRUPTED]);
    const patched = await getActPatchResidPre(model, [PROMPT], corruptedCache, metric);
    model.dispose();

    const { url, server } = await startExplorer({
      port: 0,
      model: "induction-toy",
      device: "webgpu",
    });
    assert.equal(parseState(new URL(url).search).device, "webgpu", "--device=webgpu is in the URL");
    await using browser = await launchChromium({ webgpu: true });
    const page = await browser.newPage();
    const seen = watchPage(page);
    let passed = false;
    try {
      await page.setViewport({ width: 1280, height: 800 });
      page.setDefaultTimeout(WAIT_MS);
      await page.goto(
        `${url}&prompt=${PROMPT.join("+")}&corrupted=${CORRUPTED.join("+")}` +
          `&answer=${ANSWER}&wrong=${WRONG}&view=attention`,
      );

      // Is there an adapter at all? (Asked from the page, as the worker will.)
      const adapter = await page.evaluate(`(async () => {
        if (!navigator.gpu) return null;
        const a = await navigator.gpu.requestAdapter();
        return a ? { architecture: a.info.architecture, vendor: a.info.vendor,
          fallback: a.info.isFallbackAdapter ?? null } : null;
      })()`) as { architecture: string; vendor: string; fallback: boolean | null } | null;
      if (adapter === null) {
        const why = "headless Chromium offers no WebGPU adapter here, with " +
          "--enable-unsafe-webgpu and without --disable-gpu (see CHROMIUM_WEBGPU_FLAGS in " +
          "tests/browser.ts)";
        if (Deno.env.get("CI")) assert.fail(why);
        console.warn(`SKIPPED the explorer's WebGPU test: ${why}`);
        passed = true;
        return;
      }
      console.log(`Chromium's WebGPU adapter: ${JSON.stringify(adapter)}`);

      const t0 = performance.now();
      await page.waitForFunction(
        `document.body.dataset.complete === "true" || globalThis.__explorer.error !== undefined`,
        { timeout: WAIT_MS },
      );
      const pageMs = Math.round(performance.now() - t0);
      assert.equal(await page.evaluate("globalThis.__explorer.error"), undefined, "no error");
      assert.equal(await page.evaluate("document.body.dataset.prompt"), PROMPT.join(" "));

      // The page says where it computed.
      assert.equal(await page.evaluate("globalThis.__explorer.info.device"), "webgpu");
      assert.equal(
        await page.evaluate(`document.getElementById("threads").dataset.device`),
        "webgpu",
      );
      assert.match(
        String(await page.evaluate(`document.getElementById("threads").textContent`)),
        /induction-toy: on WebGPU \(.+\)/,
      );
      assert.match(
        String(await page.evaluate(`document.getElementById("status").textContent`)),
        /every view in \d+ ms on WebGPU/,
      );
      assert.equal(await page.evaluate(`document.getElementById("device").value`), "webgpu");

      // Top-k: the ids in order and their probabilities, at every position.
      const topkPairs: [number, number][] = (await checkTopK(page, logits, T, TOP_K))
        .map(({ shown, library }) => [shown, library]);

      // A pattern row: the last query of the first and the last head (every key visible).
      const patternPairs: [number, number][] = [];
      for (const [l, h] of [[0, 0], [nLayers - 1, nHeads - 1]]) {
        const shown = await gridValues(
          page,
          `#view-attention section[data-layer="${l}"] details[data-head="${h}"]`,
        );
        const q = T - 1;
        assert.equal(shown[q]?.length, T, `L${l}H${h}: the last query's row has every key`);
        for (let k = 0; k < T; k++) {
          patternPairs.push([shown[q][k], patterns[l][(h * T + q) * T + k]]);
        }
      }

      // The logit lens: every cell's top token and its probability.
      const lensCells = await page.evaluate(
        `[...document.querySelectorAll("#view-lens td.c[data-row]")].map((c) => ({
          row: Number(c.dataset.row), col: Number(c.dataset.col), value: Number(c.dataset.value),
          id: Number(/\\(id (\\d+)\\)/.exec(c.dataset.tip ?? "")?.[1]) }))`,
      ) as { row: number; col: number; value: number; id: number }[];
      assert.equal(lensCells.length, lens.layers.length * T, "layer x position cells");
      for (const c of lensCells) {
        assert.equal(c.id, lens.topIds[c.row][c.col], `lens top id at ${c.row}, ${c.col}`);
      }
      // Activation patching of resid_pre (layer x position): the metric's change.
      const patchShown = await gridValues(page, "#view-patching [data-kind='activation']");
      assert.equal(patchShown.length, nLayers, "one row per layer");
      let patching = 0;
      for (let l = 0; l < nLayers; l++) {
        for (let t = 0; t < T; t++) {
          const want = patched.data[l * T + t] - base;
          const d = Math.abs(patchShown[l][t] - want);
          assert.ok(
            d <= ATTR_TOL * Math.max(1, Math.abs(want)),
            `patching ${l}, ${t}: page ${patchShown[l][t]}, wasm ${want}`,
          );
          patching = Math.max(patching, d);
        }
      }
      const diffs = {
        topk: largest(topkPairs, "top-k"),
        pattern: largest(patternPairs, "pattern"),
        lens: largest(
          lensCells.map((c) => [c.value, lens.topProbs[c.row][c.col]]),
          "lens",
        ),
      };
      console.log(
        `explorer on WebGPU against wasm, largest |difference|: ${JSON.stringify(diffs)}, ` +
          `patching (logit differences) ${patching}; ` +
          `load ${await page.evaluate("globalThis.__explorer.info.loadMs")} ms, every view ` +
          `${await page.evaluate("globalThis.__explorer.result.computeMs")} ms (worker); ` +
          `page ready ${pageMs} ms after the adapter check`,
      );
      for (const [what, d] of Object.entries(diffs)) {
        assert.ok(d <= TOLERANCE, `${what}: WebGPU differs from wasm by ${d} > ${TOLERANCE}`);
      }

      // The device control: WebAssembly reloads the model there and recomputes the prompt.
      await Deno.mkdir(ARTIFACTS, { recursive: true });
      await Deno.writeFile(new URL("explorer-webgpu.png", ARTIFACTS), await page.screenshot());
      const before = String(await page.evaluate("document.body.dataset.computed"));
      await page.select("#device", "wasm");
      await page.waitForFunction(
        `globalThis.__explorer.error !== undefined || (globalThis.__explorer.info?.device === ` +
          `"wasm" && document.body.dataset.complete === "true" && ` +
          `document.body.dataset.computed !== ${JSON.stringify(before)})`,
        { timeout: WAIT_MS },
      );
      assert.equal(await page.evaluate("globalThis.__explorer.error"), undefined, "no error");
      assert.equal(parseState(new URL(page.url()).search).device, "wasm", "the URL says wasm");
      assert.equal(
        await page.evaluate(`document.getElementById("threads").dataset.device`),
        "wasm",
      );
      assert.match(
        String(await page.evaluate(`document.getElementById("threads").textContent`)),
        /induction-toy: WebAssembly on \d+ threads?/,
      );
      console.log(
        `the same page on wasm: load ${await page.evaluate("globalThis.__explorer.info.loadMs")} ` +
          `ms, every view ${await page.evaluate("globalThis.__explorer.result.computeMs")} ms`,
      );
      const lensWasm = await gridValues(page, "#view-lens");
      lens.topProbs.forEach((row, s) =>
        row.forEach((p, t) =>
          assert.ok(Math.abs(lensWasm[s][t] - p) <= TOLERANCE, `wasm lens ${s}, ${t}`)
        )
      );

      assert.deepEqual(seen.errors, [], "no console errors, exceptions or failed requests");
      passed = true;
    } finally {
      if (!passed) await screenshotOnFailure(page, "webgpu", seen.errors);
      await server.close();
    }
  },
});

Deno.test({
  name: "explorer: device=webgpu without an adapter says what to do, and auto falls back to wasm",
  ignore: skipWithoutChromium("the explorer's WebGPU test"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const { url, server } = await startExplorer({
      port: 0,
      model: "induction-toy",
      device: "webgpu",
    });
    // Without CHROMIUM_WEBGPU_FLAGS (with --disable-gpu), Chromium offers no adapter.
    await using browser = await launchChromium();
    const page = await browser.newPage();
    const seen = watchPage(page);
    try {
      page.setDefaultTimeout(WAIT_MS);
      await page.goto(`${url}&prompt=2047+5+9+5`);
      const adapter = await page.evaluate(
        `navigator.gpu ? navigator.gpu.requestAdapter().then((a) => a !== null) : false`,
      );
      if (adapter !== false) {
        console.warn(
          "SKIPPED the explorer's no-adapter test: this Chromium offers a WebGPU adapter even " +
            "without CHROMIUM_WEBGPU_FLAGS",
        );
        return;
      }
      await page.waitForFunction(`globalThis.__explorer.error !== undefined`, { timeout: WAIT_MS });
      assert.match(
        String(await page.evaluate(`document.getElementById("error").textContent`)),
        /GpuUnavailableError: .*use device "wasm"/,
        "the typed error, and what to do",
      );
      assert.equal(await page.evaluate(`document.body.dataset.computed`), undefined);

      // auto: no hardware adapter here, so WebAssembly, and the page says why.
      await page.select("#device", "auto");
      await page.waitForFunction(
        `document.body.dataset.computed !== undefined && globalThis.__explorer.error === undefined`,
        { timeout: WAIT_MS },
      );
      assert.equal(parseState(new URL(page.url()).search).device, "auto");
      assert.equal(await page.evaluate("globalThis.__explorer.info.device"), "wasm");
      assert.match(
        String(await page.evaluate(`document.getElementById("threads").textContent`)),
        /WebAssembly on \d+ threads? \(auto: no hardware WebGPU adapter\)/,
      );
      assert.equal(await page.evaluate(`document.getElementById("error").textContent`), "");
      assert.deepEqual(seen.errors, [], "no console errors, exceptions or failed requests");
    } finally {
      await server.close();
    }
  },
});

/** The numbers of a view's HTML (`data-value`), and its token and feature ids, in order. */
function viewNumbers(html: string): { values: number[]; ids: string[] } {
  return {
    values: [...html.matchAll(/data-value="([^"]*)"/g)].map((m) => Number(m[1])),
    ids: [...html.matchAll(/data-(?:id|feature)="([^"]*)"/g)].map((m) => m[1]),
  };
}

Deno.test(
  deviceTest(
    TEST_DEVICES.find((d) => d.device === "webgpu")!,
    "explorer's views (SAE and patching included) computed on WebGPU in Deno equal wasm's",
    async () => {
      const fixtures = new URL("./fixtures/", import.meta.url).pathname;
      const golden = JSON.parse(await Deno.readTextFile(`${fixtures}sae/sae-golden.json`)) as {
        model: string;
        tokens: number[][];
      };
      const ids = golden.tokens[0];
      const state = parseState(
        `?prompt=${ids.join("+")}&corrupted=${ids.toReversed().join("+")}`,
      );
      const shown: Record<string, Partial<Record<ViewName, string>>> = {};
      for (const device of ["wasm", "webgpu"] as const) {
        const model = await HookedTransformer.fromPretrained(`${fixtures}${golden.model}`, {
          device,
          threads: 1,
        });
        try {
          assert.equal(model.cfg.device, device);
          const sae = await SAE.loadFromDisk(`${fixtures}sae/standard`, { backend: model.backend });
          const result = await computeViews(model, state, 1, sae);
          assert.deepEqual(result.notes, {}, `${device}: every view is computed`);
          shown[device] = result.html;
        } finally {
          model.dispose();
        }
      }
      const largest: Record<string, number> = {};
      for (const view of VIEWS) {
        const want = viewNumbers(shown.wasm[view] ?? ""),
          got = viewNumbers(shown.webgpu[view] ?? "");
        assert.ok(want.values.length > 0, `${view}: the view has numbers`);
        assert.deepEqual(got.ids, want.ids, `${view}: the same token and feature ids`);
        assert.equal(got.values.length, want.values.length, `${view}: as many numbers`);
        // Probabilities and log-probs: TOLERANCE; attributions, patching, SAE activations:
        // ATTR_TOL (both relative to values over 1).
        const tol = ["tokens", "attention", "lens"].includes(view) ? TOLERANCE : ATTR_TOL;
        largest[view] = 0;
        want.values.forEach((w, i) => {
          const d = Math.abs(got.values[i] - w);
          assert.ok(d <= tol * Math.max(1, Math.abs(w)), `${view}[${i}]: ${got.values[i]} vs ${w}`);
          largest[view] = Math.max(largest[view], d);
        });
      }
      console.log(
        `views on WebGPU (Deno) against wasm, largest |difference|: ${JSON.stringify(largest)}`,
      );
    },
  ),
);
