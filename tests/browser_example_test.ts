/**
 * The browser example (`examples/browser/`): built into `out/browser/` by `build.ts` (rebuilt here
 * when an input changed; nothing generated is committed), served by the loopback static server
 * from that folder alone with the cross-origin isolation headers, and opened in headless
 * Chromium: the model runs in a Web Worker on more than one thread, and the page draws its charts
 * and shows the same scores as the library computes here.
 *
 * Chromium is driven with puppeteer-core through `tests/browser.ts` (fresh profile, no network
 * features). Without a Chromium the page test is skipped with a message, unless CI is set (then it
 * fails). A screenshot is saved in `out/test-artifacts/browser-example.png` (also when it fails).
 */
import assert from "node:assert/strict";
import { attentionPattern, generateRepeatedTokens, headScores, HookedTransformer } from "../mod.ts";
import {
  type BuildManifest,
  ensureBuilt,
  ENTRY,
  freshBuild,
  inputDigest,
  MANIFEST,
  OUT_DIR,
  PAGE,
  rewriteImportMetaUrl,
} from "../examples/browser/build.ts";
import {
  BATCH,
  HEAD,
  ISOLATION_HEADERS,
  LAYER,
  type PageScores,
  SEED,
  SEQ_LEN,
} from "../examples/browser/config.ts";
import { launchChromium, skipWithoutChromium, watchPage } from "./browser.ts";
import { REPO_ROOT, startStaticServer } from "./static_server.ts";

const ARTIFACTS = new URL("../out/test-artifacts/", import.meta.url);

// ---- Tests ----

Deno.test("browser example build: import.meta.url and the URLs it names are rewritten", () => {
  const bundle = [
    "// examples/browser/main.ts",
    'const w = new Worker(new URL("./model_worker.ts", import.meta.url));',
    "// backend/wasm/kernels.ts",
    'const k = new URL("./kernels-simd.wasm", import.meta.url);',
    "// io/resolve.ts",
    'const base = new URL("../weights/induction-toy/", import.meta.url);',
    "const here = import.meta.url;",
    "const computed = new URL(`../weights/${name}/`, import.meta.url);",
  ].join("\n");
  const local = new Set(["examples/browser/main.ts", "backend/wasm/kernels.ts", "io/resolve.ts"]);
  const out = rewriteImportMetaUrl(bundle, "examples/browser/main.ts", local);
  assert.deepEqual(out.entries, ["examples/browser/model_worker.ts"]);
  assert.deepEqual(out.assets, ["backend/wasm/kernels-simd.wasm", "weights/induction-toy/"]);
  const lines = out.code.split("\n");
  assert.equal(
    lines[1],
    'const w = new Worker(new URL("./model_worker.js", new URL("./main.ts", import.meta.url).href));',
  );
  assert.equal(
    lines[3],
    'const k = new URL("./kernels-simd.wasm", new URL("../../backend/wasm/kernels.ts", ' +
      "import.meta.url).href);",
  );
  assert.equal(lines[6], 'const here = new URL("../../io/resolve.ts", import.meta.url).href;');
  // A computed URL: rewritten, not followed (the target lists what it may name).
  assert.equal(
    lines[7],
    'const computed = new URL(`../weights/${name}/`, new URL("../../io/resolve.ts", ' +
      "import.meta.url).href);",
  );
  // Outside a local module, or naming a file outside the repository: an error, not a wrong URL.
  assert.throws(
    () => rewriteImportMetaUrl("// npm/x/index.js\nimport.meta.url", "a/b.ts", local),
    /outside a known local module/,
  );
  assert.throws(
    () =>
      rewriteImportMetaUrl(
        '// io/resolve.ts\nnew URL("../../x.wasm", import.meta.url)',
        "a/b.ts",
        local,
      ),
    /outside the repository/,
  );
});

Deno.test("browser example build: a build is up to date only while its inputs are unchanged", async () => {
  // A fabricated build folder (no bundling): only its build.json matters to freshBuild.
  const outDir = `out/test-build-${Deno.pid}`;
  const target = { entry: ENTRY, page: PAGE, outDir };
  const entries = [ENTRY, "backend/wasm/worker.ts"];
  const assets = ["backend/wasm/kernels-simd.wasm"];
  const write = (m: BuildManifest) =>
    Deno.writeTextFile(`${REPO_ROOT}/${outDir}/${MANIFEST}`, JSON.stringify(m));
  await Deno.mkdir(`${REPO_ROOT}/${outDir}`, { recursive: true });
  try {
    assert.equal(await freshBuild({ ...target, outDir: `${outDir}/none` }), undefined, "no build");
    const digest = await inputDigest(entries, assets, PAGE);
    assert.match(digest, /^[0-9a-f]{64}$/);
    const manifest: BuildManifest = { digest, page: PAGE, entries, assets, buildMs: 1 };
    await write(manifest);
    assert.deepEqual(await freshBuild(target), manifest, "built from today's inputs");
    assert.notEqual(await inputDigest(entries, [], PAGE), digest, "the copied files count");
    assert.notEqual(await inputDigest([ENTRY], assets, PAGE), digest, "every entry counts");
    await write({ ...manifest, digest: "0".repeat(64) });
    assert.equal(await freshBuild(target), undefined, "an input changed since");
    await write({ ...manifest, page: "examples/other/index.html" });
    assert.equal(await freshBuild(target), undefined, "built from another page");
    await write({ ...manifest, entries: [...entries, "examples/browser/gone.ts"] });
    assert.equal(await freshBuild(target), undefined, "an input is gone");
    await Deno.writeTextFile(`${REPO_ROOT}/${outDir}/${MANIFEST}`, "{not json");
    assert.equal(await freshBuild(target), undefined, "an unreadable record");
  } finally {
    await Deno.remove(`${REPO_ROOT}/${outDir}`, { recursive: true });
  }
});

Deno.test({
  name: "browser example: in a worker on several threads, the page shows the library's scores",
  ignore: skipWithoutChromium("the browser example's page test"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    // The page is built from today's sources (a no-op when out/browser/ is up to date).
    const manifest = await ensureBuilt();
    assert.ok(
      manifest.entries.includes("backend/wasm/worker.ts"),
      `the kernels' worker is bundled: ${manifest.entries.join(", ")}`,
    );

    // What the page should show, computed here with the library.
    const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
    const tokens = generateRepeatedTokens(model, SEQ_LEN, BATCH, { seed: SEED });
    const expected = await headScores(model, tokens, SEQ_LEN);
    const { pattern: expectedPattern } = await attentionPattern(model, tokens, LAYER, HEAD);

    await using browser = await launchChromium(); // closed however the test ends
    // The built folder alone, as a static host serves it, with the isolation headers.
    const server = await startStaticServer({
      root: `${REPO_ROOT}/${OUT_DIR}`,
      headers: { ...ISOLATION_HEADERS },
    });
    try {
      const page = await browser.newPage();
      await page.setViewport({ width: 1280, height: 1100 });
      page.setDefaultTimeout(30_000);
      const seen = watchPage(page);
      await page.goto(`${server.origin}/index.html`);
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
      for (const path of ["/examples/browser/main.js", "/examples/browser/model_worker.js"]) {
        assert.ok(paths.has(path), `the page loaded ${path}`);
      }
      assert.ok(paths.has("/backend/wasm/worker.js"), "a kernel worker thread was started");
      assert.ok(
        [...paths].some((p) => /^\/backend\/wasm\/kernels-(simd|relaxed)\.wasm$/.test(p)),
        `the kernels were fetched from backend/wasm/ (requests: ${[...paths].join(", ")})`,
      );
      assert.ok(paths.has("/weights/induction-toy/model.safetensors"), "the weights were fetched");

      // Cross-origin isolated, so the model worker computed on more than one thread; and the
      // page's main thread never loaded the library (only the worker did).
      assert.equal(await evaluate("globalThis.crossOriginIsolated"), true, "crossOriginIsolated");
      const computed = JSON.parse(
        String(await evaluate("JSON.stringify(globalThis.__scores)")),
      ) as PageScores;
      assert.equal(computed.crossOriginIsolated, true, "the model worker is cross-origin isolated");
      const cores = Number(await evaluate("navigator.hardwareConcurrency"));
      assert.ok(computed.threads > 1, `more than one thread: ${computed.threads}`);
      assert.equal(computed.threads, Math.min(cores, 256), "one thread per core");
      const shownThreads = await evaluate(`document.getElementById("threads").dataset.threads`);
      assert.equal(shownThreads, String(computed.threads), "the page says how many threads");
      assert.match(
        String(await evaluate(`document.getElementById("threads").textContent`)),
        new RegExp(`on ${computed.threads} threads`),
      );
      // How long the main thread was busy at most (reported, not asserted: timings vary with
      // the machine's load; what keeps the page responsive is that it runs no model code).
      console.log(
        `longest main-thread task: ${await evaluate("globalThis.__longestTaskMs")} ms ` +
          `(0: none over 50 ms); worker: load ${computed.loadMs} ms, compute ` +
          `${computed.computeMs} ms on ${computed.threads} threads`,
      );
      // The measure works: a 120 ms task the test runs on the main thread is seen (>= 100, for
      // coarsened clocks).
      await evaluate(`new Promise((done) => setTimeout(() => {
        const t = performance.now();
        while (performance.now() - t < 120);
        setTimeout(done, 100);
      }, 0))`);
      await page.waitForFunction("globalThis.__longestTaskMs >= 100", { timeout: 10_000 });
      const pageModule = await Deno.readTextFile(
        `${REPO_ROOT}/${OUT_DIR}/examples/browser/main.js`,
      );
      assert.ok(
        !/^\/\/ (model|backend)\//m.test(pageModule),
        "the page's own module bundles no part of the model or the kernels",
      );

      // The scores the page computed are the library's (bit for bit: the kernels split work
      // across threads without changing the order of any sum), and the page shows them.
      assert.deepEqual(computed.induction, expected.induction, "induction scores");
      assert.deepEqual(computed.previousToken, expected.previousToken, "previous-token scores");
      assert.deepEqual(computed.duplicateToken, expected.duplicateToken, "duplicate-token scores");
      assert.deepEqual(computed.pattern, expectedPattern, `layer ${LAYER} head ${HEAD}'s pattern`);
      const shown = JSON.parse(
        String(await evaluate(`document.getElementById("scores").textContent`)),
      );
      assert.deepEqual(shown.induction, expected.induction, "<pre id=scores> shows the scores");
      assert.equal(shown.threads, computed.threads, "<pre id=scores> shows the threads");
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

Deno.test({
  name: "browser example: served without the isolation headers, one thread, and the page says why",
  ignore: skipWithoutChromium("the browser example's page test"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await ensureBuilt();
    await using browser = await launchChromium();
    const server = await startStaticServer({ root: `${REPO_ROOT}/${OUT_DIR}` });
    try {
      const page = await browser.newPage();
      page.setDefaultTimeout(30_000);
      const seen = watchPage(page);
      await page.goto(`${server.origin}/index.html`);
      let state = "done";
      try {
        await page.waitForFunction("globalThis.__error !== undefined || globalThis.__scores", {
          timeout: 60_000,
        });
      } catch (e) {
        state = `timeout: ${(e as Error).message}`;
      }
      await Deno.mkdir(ARTIFACTS, { recursive: true });
      await Deno.writeFile(
        new URL("browser-example-not-isolated.png", ARTIFACTS),
        await page.screenshot(),
      );
      const context = `\nproblems in the page: ${JSON.stringify(seen.errors, null, 1)}\n` +
        `error: ${await page.evaluate("globalThis.__error")}\n` +
        `screenshot: out/test-artifacts/browser-example-not-isolated.png`;
      assert.equal(state, "done", `the page did not finish${context}`);
      assert.equal(await page.evaluate("globalThis.__error"), undefined, `no error${context}`);
      assert.deepEqual(seen.errors, [], `the page logged errors${context}`);
      assert.equal(await page.evaluate("globalThis.crossOriginIsolated"), false);
      const threads = await page.evaluate(`document.getElementById("threads").dataset.threads`);
      assert.equal(threads, "1", "one thread without cross-origin isolation");
      assert.match(
        String(await page.evaluate(`document.getElementById("threads").textContent`)),
        /not cross-origin isolated.*Cross-Origin-Opener-Policy: same-origin.*Cross-Origin-Embedder-Policy: require-corp/s,
        "the page says which headers give it threads",
      );
      assert.ok(
        !server.requests.some((r) => r.path === "/backend/wasm/worker.js"),
        "no kernel worker thread was started",
      );
    } finally {
      await server.close();
    }
  },
});
