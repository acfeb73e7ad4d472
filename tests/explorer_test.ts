/**
 * The explorer (`examples/explorer/`): its command line, its URL state, its prompt parsing, and
 * the page itself, built and served as `deno task explore` serves it (cross-origin isolated) and
 * driven in headless Chromium with puppeteer-core (`tests/browser.ts`): typing a prompt updates
 * the views, and the numbers the page shows (read from the DOM's `data-*` attributes) equal what
 * the library computes here for the same prompt. A screenshot is saved in
 * `out/test-artifacts/explorer-<model>.png` however the test ends. Without a Chromium the page
 * tests are skipped with a message, unless CI is set (then they fail).
 */
import assert from "node:assert/strict";
import {
  detectHead,
  generateRepeatedTokens,
  getActPatchAttnHeadOutAllPos,
  getActPatchResidPre,
  HookedTransformer,
  InputError,
  logitDiffMetric,
  viz,
} from "../mod.ts";
import { parseState, stateToSearch } from "../examples/explorer/protocol.ts";
import { parseExploreArgs, startExplorer } from "../examples/explorer/serve.ts";
import { correlation } from "../analysis/attribution.ts";
import { HEAD_KINDS, promptIds, TOP_K } from "../examples/explorer/views.ts";
import {
  ARTIFACTS,
  checkTopK,
  close,
  gridValues,
  screenshotOnFailure,
  softmaxRow,
} from "./explorer_page.ts";
import { launchChromium, skipWithoutChromium, watchPage } from "./browser.ts";
import { REPO_ROOT, startStaticServer } from "./static_server.ts";
import { ensureBuilt } from "../examples/browser/build.ts";
import { EXPLORER } from "../examples/explorer/build.ts";

/** How long the page may take to load a model or compute a prompt's views (2 busy cores). */
const WAIT_MS = 90_000;
/**
 * Float32 tolerance between the page (kernels on several threads, in Chromium) and this process
 * (one thread): the kernels split work across threads without reordering any sum, so the values
 * are usually bit-identical; 1e-5 absolute on probabilities and attention weights (values in
 * [0, 1], float32 epsilon 1.2e-7 times the few hundred terms of a d_model sum) and 1e-4 relative
 * on logit attributions leaves room for a SIMD variant's different rounding.
 */
const PROB_TOL = 1e-5;
const ATTR_TOL = 1e-4;

Deno.test("explorer: the command line takes --port and --model, nothing else", () => {
  assert.deepEqual(parseExploreArgs([]), { port: 8000, model: "kjv-small" });
  assert.deepEqual(parseExploreArgs(["--model=induction-toy", "--port=0"]), {
    port: 0,
    model: "induction-toy",
  });
  assert.deepEqual(
    parseExploreArgs(["--model=https://example.org/m/"]).model,
    "https://example.org/m/",
  );
  assert.equal(
    parseExploreArgs(["--sae=tests/fixtures/sae/standard"]).sae,
    "tests/fixtures/sae/standard",
  );
  assert.equal(parseExploreArgs(["--device=webgpu"]).device, "webgpu");
  assert.equal(parseExploreArgs([]).device, undefined, "no --device: the page's default");
  assert.throws(() => parseExploreArgs(["--device=cuda"]), /--device=wasm\|webgpu\|auto/);
  assert.throws(() => parseExploreArgs(["--port=70000"]), /--port=N/);
  assert.throws(() => parseExploreArgs(["--verbose"]), /unknown argument "--verbose"/);
});

Deno.test("explorer: the URL holds the state, and reads back the same", () => {
  const state = {
    model: "induction-toy",
    prompt: "2047 5 9 & 5",
    corrupted: "a=b",
    answer: " Moses",
    wrong: "",
    view: "lens" as const,
    head: "L1H2",
    sae: "/saes/standard/",
    device: "webgpu" as const,
  };
  assert.deepEqual(parseState(stateToSearch(state)), state);
  assert.match(stateToSearch(state), /&device=webgpu$/);
  assert.ok(!stateToSearch({ ...state, device: "wasm" }).includes("device"), "wasm is the default");
  const defaults = parseState("?view=nonsense");
  assert.equal(defaults.view, "tokens", "an unknown view falls back to the first");
  assert.equal(defaults.model, "kjv-small");
  assert.equal(defaults.device, "wasm", "the default device");
  assert.equal(parseState("?device=cuda").device, "wasm", "an unknown device falls back to wasm");
});

Deno.test("explorer: an id-only model's prompt is token ids, and a bad one says what to type", async () => {
  const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
  try {
    assert.deepEqual(promptIds(model, " 2047, 5  9 "), [2047, 5, 9]);
    assert.throws(() => promptIds(model, "And God"), InputError);
    assert.throws(() => promptIds(model, "5 999999"), /token ids in \[0, /);
    assert.throws(() => promptIds(model, " "), /no tokens/);
    assert.throws(() => promptIds(model, Array(65).fill("5").join(" ")), /at most 64/);
  } finally {
    model.dispose();
  }
});

Deno.test({
  name:
    "explorer page (kjv-small): isolated, threads, typing updates the views, the library's numbers",
  ignore: skipWithoutChromium("the explorer's page test"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const prompt = "And the LORD spake unto";
    const corrupted = "And the people spake unto";
    const answer = " Moses", wrong = " Aaron";

    // What the page should show, computed here with the library's public API.
    const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
    const ids = model.toTokens(prompt)[0];
    const T = ids.length;
    assert.equal(model.toTokens(corrupted)[0].length, T, "the test's prompts have as many tokens");
    const { logits, cache } = await model.runWithCache([ids]);
    const lens = await viz.logitLensGrid(model, ids);
    const a = model.toSingleToken(answer), w = model.toSingleToken(wrong);
    const dla = cache.logitAttrs(cache.stackHeadResults({ layer: -1, posSlice: -1 }), [a], {
      posSlice: -1,
      incorrectTokens: [w],
    });
    const metric = logitDiffMetric([a], [w]);
    const base = metric.value(logits) as number;
    const { cache: corruptedCache } = await model.runWithCache(model.toTokens(corrupted));
    const patched = await getActPatchResidPre(model, [ids], corruptedCache, metric);
    const patchedHeads = await getActPatchAttnHeadOutAllPos(model, [ids], corruptedCache, metric);
    const { nLayers, nHeads } = model.cfg;

    const { url, server } = await startExplorer({ port: 0, model: "kjv-small" });
    await using browser = await launchChromium();
    const page = await browser.newPage();
    const seen = watchPage(page);
    let passed = false;
    try {
      await page.setViewport({ width: 1280, height: 800 });
      page.setDefaultTimeout(WAIT_MS);
      const start = `${url}&corrupted=${encodeURIComponent(corrupted)}` +
        `&answer=${encodeURIComponent(answer)}&wrong=${encodeURIComponent(wrong)}&view=attention`;
      await page.goto(start);
      const done = (p: string) =>
        `document.body.dataset.prompt === ${JSON.stringify(p)} && ` +
        `document.body.dataset.complete === "true" || globalThis.__explorer.error !== undefined`;
      // The default prompt is computed first.
      await page.waitForFunction(
        `document.body.dataset.computed !== undefined || ` +
          `globalThis.__explorer.error !== undefined`,
        { timeout: WAIT_MS },
      );
      assert.equal(await page.evaluate("globalThis.__explorer.error"), undefined, "no error");

      // Typing a prompt updates the views.
      await page.evaluate(`document.getElementById("prompt").select()`);
      // One input event with the whole text (as a paste or an IME commit): on a loaded machine
      // keystrokes typed one by one can be further apart than the page's debounce, and each
      // pause would start a computation for a prefix (superseded, but racing the assertions).
      await page.keyboard.sendCharacter(prompt);
      await page.waitForFunction(done(prompt), { timeout: WAIT_MS });
      assert.equal(await page.evaluate("globalThis.__explorer.error"), undefined, "no error");

      assert.equal(await page.evaluate("globalThis.crossOriginIsolated"), true, "isolated");
      const threads = Number(
        await page.evaluate(`document.getElementById("threads").dataset.threads`),
      );
      const cores = Number(await page.evaluate("navigator.hardwareConcurrency"));
      assert.ok(threads > 1, `more than one thread: ${threads}`);
      assert.equal(threads, Math.min(cores, 256), "one thread per core");
      assert.match(
        String(await page.evaluate(`document.getElementById("threads").textContent`)),
        /\d+ threads/,
      );

      // The URL holds the state.
      const state = parseState(new URL(page.url()).search);
      assert.deepEqual(state, {
        model: "kjv-small",
        prompt,
        corrupted,
        answer,
        wrong,
        view: "attention",
        head: "",
        sae: "",
        device: "wasm",
      });

      // Tokens and top-k: ids and probabilities of every position.
      for (const { shown, library, what } of await checkTopK(page, logits, T, TOP_K)) {
        close(shown, library, PROB_TOL, what);
      }

      // Attention: every head of every layer, and each head's full pattern.
      const heads = await page.evaluate(
        `document.querySelectorAll("#view-attention section[data-layer] details[data-head]").length`,
      );
      assert.equal(heads, nLayers * nHeads, "every head is drawn");
      for (const [l, h] of [[0, 0], [nLayers - 1, nHeads - 1]]) {
        const shown = await gridValues(
          page,
          `#view-attention section[data-layer="${l}"] details[data-head="${h}"]`,
        );
        const pattern = cache.get("pattern", l).data;
        const q = T - 1; // the last query's row: every key is visible
        for (let k = 0; k < T; k++) {
          close(shown[q][k], pattern[(h * T + q) * T + k], PROB_TOL, `L${l}H${h}[${q}][${k}]`);
        }
      }

      // Hovering a token shows what it attends to and what attends to it, for the chosen head.
      await page.select("#attend-head", "L1H2");
      assert.equal(parseState(new URL(page.url()).search).head, "L1H2", "the head is in the URL");
      const q = 2;
      await page.hover(`#attend .strip[data-strip="to"] span[data-pos="${q}"]`);
      const strip = (kind: string) =>
        page.evaluate(`[...document.querySelectorAll('#attend .strip[data-strip="${kind}"] span')]
          .map((s) => s.dataset.value === "" ? null : Number(s.dataset.value))`) as Promise<
          (number | null)[]
        >;
      const p12 = cache.get("pattern", 1).data,
        at = (qq: number, k: number) => p12[(2 * T + qq) * T + k];
      const to = await strip("to"), from = await strip("from");
      for (let k = 0; k < T; k++) {
        if (k <= q) close(to[k]!, at(q, k), PROB_TOL, `${q} attends to ${k}`);
        else assert.equal(to[k], null, `${k} is after ${q}: masked`);
        if (k >= q) close(from[k]!, at(k, q), PROB_TOL, `${k} attends to ${q}`);
        else assert.equal(from[k], null, `${k} is before ${q}: masked`);
      }

      // Head scores on the prompt, beside the patterns.
      for (const kind of HEAD_KINDS) {
        const want = await detectHead(model, ids, kind, { cache });
        const got = await gridValues(page, `#view-attention [data-kind="${kind}"]`);
        for (let l = 0; l < nLayers; l++) {
          for (let h = 0; h < nHeads; h++) {
            close(got[l][h], want.data[l * nHeads + h], PROB_TOL, `${kind} L${l}H${h}`);
          }
        }
      }

      // Logit lens: every cell's top token and probability.
      const lensCells = await page.evaluate(
        `[...document.querySelectorAll("#view-lens td.c[data-row]")]
        .map((c) => ({
          row: Number(c.dataset.row),
          col: Number(c.dataset.col),
          value: Number(c.dataset.value),
          id: Number(/\\(id (\\d+)\\)/.exec(c.dataset.tip ?? "")?.[1]),
        }))`,
      ) as { row: number; col: number; value: number; id: number }[];
      assert.equal(lensCells.length, lens.layers.length * T, "layer x position cells");
      for (const c of lensCells) {
        assert.equal(c.id, lens.topIds[c.row][c.col], `lens top id at ${c.row}, ${c.col}`);
        close(c.value, lens.topProbs[c.row][c.col], PROB_TOL, `lens p at ${c.row}, ${c.col}`);
      }

      // DLA by head: answer - wrong at the last position.
      const dlaShown = await gridValues(
        page,
        "#view-dla [data-view='patching-heatmap']:first-of-type",
      );
      for (let l = 0; l < nLayers; l++) {
        for (let h = 0; h < nHeads; h++) {
          const want = dla.data[l * nHeads + h];
          close(dlaShown[l][h], want, ATTR_TOL * Math.max(1, Math.abs(want)), `DLA L${l}H${h}`);
        }
      }

      // Activation patching resid_pre: the metric's change, layer x position, and attribution
      // patching's estimate beside it (its own numbers: checked for shape and finiteness).
      const patchShown = await gridValues(page, "#view-patching [data-kind='activation']");
      for (let l = 0; l < nLayers; l++) {
        for (let t = 0; t < T; t++) {
          const want = patched.data[l * T + t] - base;
          close(patchShown[l][t], want, ATTR_TOL * Math.max(1, Math.abs(want)), `patch ${l},${t}`);
        }
      }
      const headsShown = await gridValues(page, "#view-patching [data-kind='activation-heads']");
      for (let l = 0; l < nLayers; l++) {
        for (let h = 0; h < nHeads; h++) {
          const want = patchedHeads.data[l * nHeads + h] - base;
          close(headsShown[l][h], want, ATTR_TOL * Math.max(1, Math.abs(want)), `head ${l},${h}`);
        }
      }
      const estimate = await gridValues(page, "#view-patching [data-kind='attribution']");
      assert.equal(estimate.length, nLayers);
      assert.ok(estimate.flat().every(Number.isFinite), "attribution estimates are numbers");
      // The estimate is first-order (r = 0.75 measured on this prompt); above 0.5 still catches
      // a wrong sign, layer or position in it.
      const r = correlation(estimate.flat(), patchShown.flat());
      assert.ok(r > 0.5, `attribution patching tracks activation patching: r = ${r}`);

      // The tabs show one view at a time, and the chosen view goes in the URL.
      await page.click("nav button[data-view='lens']");
      assert.equal(await page.evaluate(`document.querySelector("#view-lens").hidden`), false);
      assert.equal(await page.evaluate(`document.querySelector("#view-attention").hidden`), true);
      assert.equal(parseState(new URL(page.url()).search).view, "lens");

      // A phone-sized viewport: the page does not scroll sideways (wide views scroll in their
      // panel); screenshots of both sizes are kept.
      await Deno.mkdir(ARTIFACTS, { recursive: true });
      await Deno.writeFile(new URL("explorer-1280x800.png", ARTIFACTS), await page.screenshot());
      await page.setViewport({ width: 390, height: 844 });
      await Deno.writeFile(new URL("explorer-phone.png", ARTIFACTS), await page.screenshot());
      const overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth",
      );
      assert.ok(Number(overflow) <= 0, `no sideways scroll on a phone (${overflow} px too wide)`);

      assert.deepEqual(seen.errors, [], "no console errors, exceptions or failed requests");
      console.log(
        `explorer: ${threads} threads; attribution vs activation patching r = ${
          r.toFixed(3)
        }; last compute ${await page.evaluate(
          "globalThis.__explorer.result.computeMs",
        )} ms; longest main-thread task ${await page.evaluate(
          "globalThis.__explorer.longestTaskMs",
        )} ms (0: none over 50 ms)`,
      );
      passed = true;
    } finally {
      if (!passed) await screenshotOnFailure(page, "kjv-small", seen.errors);
      await server.close();
      model.dispose();
    }
  },
});

Deno.test({
  name:
    "explorer page (induction-toy): token ids, the random repeated segment, the library's numbers",
  ignore: skipWithoutChromium("the explorer's page test"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
    // The page's first prompt (seed 0) and the one its button gives next (seed 1): [BOS] + 10
    // random ids, repeated once.
    const first = Array.from(generateRepeatedTokens(model, 10, 1, { seed: 0 }).data);
    const second = Array.from(generateRepeatedTokens(model, 10, 1, { seed: 1 }).data);
    const { url, server } = await startExplorer({ port: 0, model: "induction-toy" });
    await using browser = await launchChromium();
    const page = await browser.newPage();
    const seen = watchPage(page);
    let passed = false;
    try {
      await page.setViewport({ width: 1280, height: 800 });
      page.setDefaultTimeout(WAIT_MS);
      await page.goto(url);
      const shown = (ids: number[]) =>
        `document.body.dataset.prompt === ${JSON.stringify(ids.join(" "))} || ` +
        `globalThis.__explorer.error !== undefined`;
      await page.waitForFunction(shown(first), { timeout: WAIT_MS });
      assert.equal(await page.evaluate("globalThis.__explorer.error"), undefined, "no error");
      assert.equal(await page.evaluate(`document.getElementById("random").hidden`), false);
      assert.match(
        String(await page.evaluate(`document.getElementById("prompt-note").textContent`)),
        /no text tokenizer: the prompt is token ids/,
        "the page says why the prompt is ids",
      );
      await page.click("#random");
      await page.waitForFunction(shown(second), { timeout: WAIT_MS });
      assert.equal(await page.evaluate("globalThis.__explorer.error"), undefined, "no error");

      // The lens and the top-k of the shown prompt are the library's.
      const lens = await viz.logitLensGrid(model, second);
      const lensCells = await gridValues(page, "#view-lens");
      lens.topProbs.forEach((row, s) =>
        row.forEach((p, t) => close(lensCells[s][t], p, PROB_TOL, `lens ${s}, ${t}`))
      );
      const logits = await model.run([second]);
      const T = second.length;
      const topIds = await page.evaluate(
        `[...document.querySelectorAll("#view-tokens table.topk tr")]
        .slice(1).map((r) => Number(r.querySelector("td[data-id]").dataset.id))`,
      ) as number[];
      for (let t = 0; t < T; t++) {
        const p = softmaxRow(logits, t);
        let best = 0;
        for (let i = 1; i < p.length; i++) if (p[i] > p[best]) best = i;
        assert.equal(topIds[t], best, `top id at ${t}`);
      }
      // Induction: in the repeat, the model's top guess is mostly the token that followed last
      // time (6 of 9 for this seed's segment of 10; the study's segments are 50 long).
      const hits = topIds.slice(11, T - 1).filter((id, i) => id === second[12 + i]).length;
      assert.ok(hits > (T - 12) / 2, `the repeat is predicted (${hits} of ${T - 12})`);

      // A bad id says what to type, without a console error.
      await page.evaluate(`document.getElementById("prompt").select()`);
      await page.keyboard.sendCharacter("1 2 banana"); // one input event, as above
      await page.waitForFunction(`globalThis.__explorer.error !== undefined`, { timeout: WAIT_MS });
      assert.match(
        String(await page.evaluate(`document.getElementById("error").textContent`)),
        /"banana" is not a token id/,
      );
      assert.deepEqual(seen.errors, [], "no console errors, exceptions or failed requests");
      passed = true;
    } finally {
      if (!passed) await screenshotOnFailure(page, "induction-toy", seen.errors);
      await server.close();
      model.dispose();
    }
  },
});

Deno.test({
  name: "explorer: --model=<folder> serves the folder at /models/<name>/ and the page opens it",
  ignore: skipWithoutChromium("the explorer's page test"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "explorer-model-" });
    const folder = `${dir}/my-kjv`;
    await Deno.mkdir(folder);
    for (const f of ["config.json", "model.safetensors", "tokenizer.json"]) {
      await Deno.copyFile(`${REPO_ROOT}/weights/kjv-small/${f}`, `${folder}/${f}`);
    }
    const { url, server } = await startExplorer({ port: 0, model: folder });
    await using browser = await launchChromium();
    const page = await browser.newPage();
    const seen = watchPage(page);
    let passed = false;
    try {
      assert.equal(parseState(new URL(url).search).model, "/models/my-kjv/");
      page.setDefaultTimeout(WAIT_MS);
      await page.goto(url);
      await page.waitForFunction(
        `document.body.dataset.computed !== undefined || globalThis.__explorer.error !== undefined`,
        { timeout: WAIT_MS },
      );
      assert.equal(await page.evaluate("globalThis.__explorer.error"), undefined, "no error");
      assert.ok(
        server.requests.some((r) =>
          r.path === "/models/my-kjv/model.safetensors" && r.status === 200
        ),
        "the weights came from the folder",
      );
      assert.ok(Number(await page.evaluate("globalThis.__explorer.result.tokens.length")) > 1);
      assert.deepEqual(seen.errors, [], "no console errors, exceptions or failed requests");
      passed = true;
    } finally {
      if (!passed) {
        const failed = JSON.stringify(server.requests.filter((r) => r.status !== 200));
        await screenshotOnFailure(page, "folder", seen.errors, `requests: ${failed}`);
      }
      await server.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "explorer: served without the isolation headers, one thread, and the page says so",
  ignore: skipWithoutChromium("the explorer's page test"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await ensureBuilt(EXPLORER);
    const server = await startStaticServer({ root: `${REPO_ROOT}/${EXPLORER.outDir}` });
    await using browser = await launchChromium();
    const page = await browser.newPage();
    const seen = watchPage(page);
    try {
      page.setDefaultTimeout(WAIT_MS);
      await page.goto(`${server.origin}/?model=induction-toy&prompt=2047+5+9+5`);
      await page.waitForFunction(
        `document.body.dataset.computed !== undefined || globalThis.__explorer.error !== undefined`,
        { timeout: WAIT_MS },
      );
      assert.equal(await page.evaluate("globalThis.__explorer.error"), undefined, "no error");
      assert.equal(await page.evaluate("globalThis.crossOriginIsolated"), false);
      assert.equal(
        await page.evaluate(`document.getElementById("threads").dataset.threads`),
        "1",
      );
      assert.match(
        String(await page.evaluate(`document.getElementById("threads").textContent`)),
        /not cross-origin isolated: one thread.*Cross-Origin-Opener-Policy: same-origin.*Cross-Origin-Embedder-Policy: require-corp/,
        "the page says which headers give it threads",
      );
      assert.deepEqual(seen.errors, [], "no console errors");
    } finally {
      await server.close();
    }
  },
});
