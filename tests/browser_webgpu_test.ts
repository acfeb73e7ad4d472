/**
 * The browser example on WebGPU (`?device=webgpu`): the page, built by `build.ts` and served from
 * `out/browser/` with the isolation headers, runs the model in its worker on headless Chromium's
 * WebGPU adapter and shows the same scores and pattern as on WebAssembly, within float32 rounding.
 *
 * Headless Chromium exposes an adapter only with `--enable-unsafe-webgpu` and without
 * `--disable-gpu` (`CHROMIUM_WEBGPU_FLAGS` in `tests/browser.ts`, which says what else was tried):
 * on a machine without a GPU that is SwiftShader's fallback adapter, a second WebGPU
 * implementation beside Deno's (wgpu on Mesa's llvmpipe). Without a Chromium the test is skipped
 * unless CI is set; where this Chromium offers no adapter the test says so and passes, except
 * under CI, where it fails. A screenshot goes to `out/test-artifacts/browser-example-webgpu.png`.
 */
import assert from "node:assert/strict";
import { attentionPattern, generateRepeatedTokens, headScores, HookedTransformer } from "../mod.ts";
import { ensureBuilt, OUT_DIR } from "../examples/browser/build.ts";
import {
  BATCH,
  deviceFromQuery,
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

/**
 * Scores and pattern entries are attention probabilities in [0, 1] (scores are their means). The
 * GPU sums the same terms in another order (tiled matrix products, a fused attention with an
 * online softmax), so each probability differs from wasm's by a few float32 roundings of values
 * at most 1 (the logits of GPT-2 small's shape differ by 2e-6 of the largest): 1e-5 absolute
 * is about 80 units in the last place at 1.0, and far below any difference between heads.
 */
const TOLERANCE = 1e-5;

function maxDiff(a: number[][], b: number[][]): number {
  assert.equal(a.length, b.length, "same number of rows");
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    assert.equal(a[i].length, b[i].length, `row ${i}: same length`);
    for (let j = 0; j < a[i].length; j++) m = Math.max(m, Math.abs(a[i][j] - b[i][j]));
  }
  return m;
}

Deno.test("browser example: ?device= picks the device, and names the two that work", () => {
  assert.equal(deviceFromQuery(""), "wasm");
  assert.equal(deviceFromQuery("?device=wasm"), "wasm");
  assert.equal(deviceFromQuery("?device=webgpu&x=1"), "webgpu");
  assert.throws(() => deviceFromQuery("?device=cuda"), /use \?device=wasm or \?device=webgpu/);
});

Deno.test({
  name: "browser example on WebGPU: the page's scores and pattern equal the wasm ones",
  ignore: skipWithoutChromium("the browser example's WebGPU test"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await ensureBuilt();
    // The reference: the library on WebAssembly, here (the wasm page shows exactly these, as
    // tests/browser_example_test.ts checks).
    const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
    const tokens = generateRepeatedTokens(model, SEQ_LEN, BATCH, { seed: SEED });
    const expected = await headScores(model, tokens, SEQ_LEN);
    const { pattern: expectedPattern } = await attentionPattern(model, tokens, LAYER, HEAD);
    model.dispose();

    await using browser = await launchChromium({ webgpu: true });
    const server = await startStaticServer({
      root: `${REPO_ROOT}/${OUT_DIR}`,
      headers: { ...ISOLATION_HEADERS },
    });
    try {
      const page = await browser.newPage();
      await page.setViewport({ width: 1280, height: 1100 });
      page.setDefaultTimeout(30_000);
      const seen = watchPage(page);
      await page.goto(`${server.origin}/index.html?device=webgpu`);

      // Is there an adapter at all? (Asked from the page, as the worker will.)
      const adapter = await page.evaluate(`(async () => {
        if (!navigator.gpu) return null;
        const a = await navigator.gpu.requestAdapter();
        return a ? { architecture: a.info.architecture, vendor: a.info.vendor,
          fallback: a.info.isFallbackAdapter ?? null } : null;
      })()`) as { architecture: string; vendor: string; fallback: boolean | null } | null;
      if (adapter === null) {
        const why =
          "headless Chromium offers no WebGPU adapter here, with --enable-unsafe-webgpu " +
          "and without --disable-gpu (see CHROMIUM_WEBGPU_FLAGS in tests/browser.ts)";
        if (Deno.env.get("CI")) assert.fail(why);
        console.warn(`SKIPPED the browser example's WebGPU test: ${why}`);
        return;
      }
      console.log(`Chromium's WebGPU adapter: ${JSON.stringify(adapter)}`);

      let state = "";
      try {
        await page.waitForFunction("globalThis.__error !== undefined || globalThis.__scores", {
          timeout: 180_000,
        });
        state = (await page.evaluate("globalThis.__error === undefined")) ? "done" : "error";
      } catch (e) {
        state = `timeout: ${(e as Error).message}`;
      }
      await Deno.mkdir(ARTIFACTS, { recursive: true });
      await Deno.writeFile(
        new URL("browser-example-webgpu.png", ARTIFACTS),
        await page.screenshot(),
      );
      const context = `\nproblems in the page: ${JSON.stringify(seen.errors, null, 1)}\n` +
        `error: ${await page.evaluate("globalThis.__error")}\n` +
        `screenshot: out/test-artifacts/browser-example-webgpu.png`;
      assert.equal(state, "done", `the page did not finish${context}`);
      assert.deepEqual(seen.errors, [], `the page logged errors${context}`);

      const computed = JSON.parse(
        String(await page.evaluate("JSON.stringify(globalThis.__scores)")),
      ) as PageScores;
      assert.equal(computed.device, "webgpu", "the model worker computed on WebGPU");
      assert.equal(computed.threads, 1, "one thread drives the GPU");
      assert.equal(
        await page.evaluate(`document.getElementById("threads").dataset.device`),
        "webgpu",
        "the page says where it computed",
      );
      assert.match(
        String(await page.evaluate(`document.getElementById("status").textContent`)),
        /on WebGPU/,
      );
      assert.equal(
        await page.evaluate(`document.getElementById("device-toggle").getAttribute("href")`),
        "?device=wasm",
        "the control leads back to WebAssembly",
      );
      assert.ok(
        !server.requests.some((r) => r.path === "/backend/wasm/worker.js"),
        "no WebAssembly kernel thread was started",
      );

      const diffs = {
        induction: maxDiff(computed.induction, expected.induction),
        previousToken: maxDiff(computed.previousToken, expected.previousToken),
        duplicateToken: maxDiff(computed.duplicateToken, expected.duplicateToken),
        pattern: maxDiff(computed.pattern, expectedPattern),
      };
      console.log(
        `WebGPU page against wasm, largest |difference|: ${JSON.stringify(diffs)}; worker: ` +
          `load ${computed.loadMs} ms, compute ${computed.computeMs} ms`,
      );
      for (const [what, d] of Object.entries(diffs)) {
        assert.ok(d <= TOLERANCE, `${what}: WebGPU differs from wasm by ${d} > ${TOLERANCE}`);
      }
      assert.ok(computed.induction[LAYER][HEAD] > 0.5, "the induction head is found on WebGPU");
    } finally {
      await server.close();
    }
  },
});
