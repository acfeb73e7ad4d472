/**
 * The notebook views (`viz/`): the numbers each view puts in its HTML (`data-value`, `data-id`,
 * cell text) against what the library computes and against received references
 * (`tests/fixtures/kjv-small/reference.json`, the induction-toy model card); the Jupyter display
 * hook for Tensors and caches; typed errors for bad input; and, in headless Chromium, a saved
 * page whose DOM holds the same numbers and whose cells are reachable with the keyboard.
 */
import assert from "node:assert/strict";
import {
  generateRepeatedTokens,
  getActPatchResidPre,
  guardTensor,
  headScores,
  HookedTransformer,
  index,
  InputError,
  logitDiffMetric,
  type Tensor,
  viz,
} from "../mod.ts";
import { fixturePath } from "./fixtures.ts";
import { launchChromium, skipWithoutChromium, watchPage } from "./browser.ts";
import { elements, gridCells } from "./view_html.ts";

const REF: { prompts: string[]; ids: number[][]; logits_last: number[][]; top5_last: number[][] } =
  JSON.parse(Deno.readTextFileSync(fixturePath("kjv-small/reference.json")));

/** log-softmax of one row in float64. */
function logSoftmax(row: ArrayLike<number>): number[] {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) max = Math.max(max, row[i]);
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i] - max);
  const logZ = max + Math.log(sum);
  return Array.from(row, (x) => x - logZ);
}

const kjv = () => HookedTransformer.fromPretrained("kjv-small", { threads: 1 });

// ---------------------------------------------------------------------------------------------

Deno.test("topkTokens: the DOM's ids are the reference's top 5, its probabilities the reference's", async () => {
  const model = await kjv();
  for (let p = 0; p < REF.prompts.length; p++) {
    const text = REF.prompts[p];
    const logits = await model.run(text);
    const [, T, V] = logits.shape;
    const view = viz.topkTokens(model.toStrTokens(text), logits, {
      decode: (ids) => model.toStrTokens(ids),
      ids: REF.ids[p],
    });
    assert.equal(view.kind, "topk-tokens");
    const cells = elements(view.html).filter((e) => e.tag === "td" && e.attrs["data-id"]);
    assert.equal(cells.length, 5 * T);
    // The last position's top 5 ids, in order, are the float64 reference's.
    const last = cells.slice(5 * (T - 1));
    assert.deepEqual(last.map((c) => Number(c.attrs["data-id"])), REF.top5_last[p]);
    // Their probabilities are the reference's softmax: processed logits differ from the
    // reference's by a constant per position, which softmax removes; logits agree to 1e-4
    // (tests/kjv_small_test.ts), so probabilities (<= 1, derivative <= 1/4... summed over the
    // row at most 2 x 1e-4 relative) agree to 2e-4.
    const refLp = logSoftmax(REF.logits_last[p]);
    for (const c of last) {
      const want = Math.exp(refLp[Number(c.attrs["data-id"])]);
      const got = Number(c.attrs["data-value"]);
      assert.ok(Math.abs(got - want) < 2e-4 * Math.max(want, 1e-3), `${got} vs ${want}`);
      assert.ok(c.text.endsWith(`${(got * 100).toFixed(1)}%`), c.text);
    }
    // Every position: the probability of each shown id is softmax(logits) of the library's run,
    // computed here in float64 as the view does (so equal to rounding: 1e-12).
    for (let t = 0; t < T; t++) {
      const lp = logSoftmax(logits.data.subarray(t * V, (t + 1) * V));
      const ranked = cells.slice(5 * t, 5 * t + 5).map((c) => Number(c.attrs["data-id"]));
      const sorted = Array.from(lp.keys()).sort((a, b) => lp[b] - lp[a] || a - b).slice(0, 5);
      assert.deepEqual(ranked, sorted, `position ${t}`);
      for (const c of cells.slice(5 * t, 5 * t + 5)) {
        const want = Math.exp(lp[Number(c.attrs["data-id"])]);
        assert.ok(Math.abs(Number(c.attrs["data-value"]) - want) < 1e-12);
      }
    }
    // The next token's log-prob column.
    const next = elements(view.html).filter((e) =>
      e.tag === "td" && e.attrs["data-value"] && !e.attrs["data-id"]
    );
    assert.equal(next.length, T - 1);
    next.forEach((c, t) => {
      const lp = logSoftmax(logits.data.subarray(t * V, (t + 1) * V))[REF.ids[p][t + 1]];
      assert.ok(Math.abs(Number(c.attrs["data-value"]) - lp) < 1e-9, `${c.attrs["data-value"]}`);
    });
  }
  model.dispose();
});

Deno.test("attentionHeads and attentionPattern: every cell is the cache's weight; the future is masked", async () => {
  const model = await kjv();
  const text = "And God said, Let there be light: and there was light.";
  const tokens = model.toStrTokens(text);
  const T = tokens.length;
  const { cache } = await model.runWithCache(text);
  const pattern = cache.get("pattern", 1); // [1, H, T, T]
  const H = model.cfg.nHeads;
  const view = viz.attentionHeads(pattern, tokens, { layer: 1 });
  assert.equal(view.text, `attention heads L1H0 ... L1H${H - 1}, ${T} tokens`);
  const parts = view.html.split('<details data-head="').slice(1);
  assert.equal(parts.length, H);
  parts.forEach((part, h) => {
    assert.ok(part.startsWith(`${h}"`));
    const cells = gridCells(part);
    assert.equal(cells.size, (T * (T + 1)) / 2, "one cell per unmasked (query, key)");
    for (let q = 0; q < T; q++) {
      for (let k = 0; k < T; k++) {
        const cell = cells.get(`${q},${k}`);
        if (k > q) {
          assert.equal(cell, undefined);
          continue;
        }
        // data-value is the float32 weight printed exactly (JavaScript's shortest round trip).
        assert.equal(Number(cell!.attrs["data-value"]), pattern.data[(h * T + q) * T + k]);
        assert.ok(cell!.attrs["data-tip"].includes(`query ${tokens[q].replaceAll("\n", "↵")}`));
      }
    }
    assert.equal((part.match(/class="c m"/g) ?? []).length, (T * (T - 1)) / 2);
  });
  // One head alone: the same numbers.
  const one = viz.attentionPattern(index(pattern, 0, 3), tokens, { title: "L1H3" });
  const cells = gridCells(one.html);
  for (const [key, cell] of cells) {
    const [q, k] = key.split(",").map(Number);
    assert.equal(Number(cell.attrs["data-value"]), pattern.data[(3 * T + q) * T + k]);
  }
  assert.ok(one.html.includes('data-scale="sequential" data-min="0" data-max="1"'));
  model.dispose();
});

Deno.test("attentionPattern on induction-toy: the DOM's induction stripe is the model card's induction head", async () => {
  const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
  const seqLen = 20;
  const tokens = generateRepeatedTokens(model, seqLen, 1, { seed: 3 });
  const labels = Array.from(tokens.data, String);
  const { cache } = await model.runWithCache(tokens);
  const view = viz.attentionPattern(index(cache.get("pattern", 1), 0, 2), labels);
  const cells = gridCells(view.html);
  // The induction stripe: the diagonal at offset 1 - seqLen, query q on key q - seqLen + 1,
  // q = seqLen - 1 .. 2 seqLen (docs/semantics.md): seqLen + 2 cells.
  let stripe = 0;
  for (let q = seqLen - 1; q < 2 * seqLen + 1; q++) {
    stripe += Number(cells.get(`${q},${q - seqLen + 1}`)!.attrs["data-value"]);
  }
  stripe /= seqLen + 2;
  const scores = await headScores(model, tokens, seqLen);
  assert.ok(Math.abs(stripe - scores.induction[1][2]) < 1e-6, `${stripe} vs ${scores.induction}`);
  // The model card: layer 1 head 2 is the induction head (about 0.87 over 30 sequences; one
  // sequence varies), and no other head comes close (the next, layer 2 head 1, about 0.27).
  assert.ok(stripe > 0.6, `L1H2's stripe in the DOM: ${stripe}`);
  const others = scores.induction.flatMap((row, l) => row.filter((_, h) => l !== 1 || h !== 2));
  assert.ok(Math.max(...others) < 0.5, `${scores.induction}`);
  model.dispose();
});

Deno.test("logitLens: the cells' tokens are an independent lens's; the last stream is the model's prediction", async () => {
  const model = await kjv();
  const sentence = "And the LORD said unto Moses, Stretch out thine hand";
  const view = await viz.logitLens(model, sentence);
  assert.equal(view.text, "logit lens, 5 streams x 14 positions");
  const cells = gridCells(view.html);
  const row = (s: number) => Array.from({ length: 14 }, (_, t) => cells.get(`${s},${t}`)!);
  // What README.md's logit lens (accumulatedResid + applyLn + W_U, checked in kjv_small_test)
  // gives for these streams.
  assert.deepEqual(row(3).slice(3, 8).map((c) => c.text), [
    " said",
    " unto",
    " Moses",
    ",",
    " saying",
  ]);
  assert.deepEqual(row(4).slice(4, 8).map((c) => c.text), [" unto", " Moses", ",", " Behold"]);
  // The final stream is the model's own prediction: the top token of run()'s logits and its
  // softmax probability (float32 logits through two code paths: 1e-5).
  const logits = await model.run(sentence);
  const V = logits.shape[2];
  const grid = await viz.logitLensGrid(model, sentence);
  row(4).forEach((c, t) => {
    const lp = logSoftmax(logits.data.subarray(t * V, (t + 1) * V));
    const top = lp.indexOf(Math.max(...lp));
    assert.equal(grid.topIds[4][t], top);
    assert.equal(c.text, model.toStrTokens([top])[0].replaceAll("\n", "↵"));
    assert.ok(Math.abs(Number(c.attrs["data-value"]) - Math.exp(lp[top])) < 1e-5);
    assert.equal(Number(c.attrs["data-value"]), grid.topProbs[4][t]);
  });
  assert.deepEqual(grid.layers, ["0_pre", "1_pre", "2_pre", "3_pre", "final_post"]);
  // Ids work for an id-only model (labels in brackets).
  const toy = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
  const toyView = await viz.logitLens(toy, [2047, 5, 9, 13, 5, 9]);
  assert.ok(toyView.html.includes(">[13]<"), "id-only tokens as [id]");
  await assert.rejects(() => viz.logitLens(toy, "text"), InputError);
  await assert.rejects(() => viz.logitLens(toy, []), InputError);
  toy.dispose();
  model.dispose();
});

Deno.test("patchingHeatmap: the DOM holds getActPatchResidPre's grid on a symmetric diverging scale", async () => {
  const model = await kjv();
  const cleanText = "And Moses spake unto Aaron, and Aaron said unto";
  const clean = model.toTokens(cleanText);
  const corrupted = model.toTokens("And Pharaoh spake unto Aaron, and Aaron said unto");
  const metric = logitDiffMetric([model.toSingleToken(" Moses")], [
    model.toSingleToken(" Pharaoh"),
  ]);
  const { logits, cache } = await model.runWithCache(clean);
  const grid = await getActPatchResidPre(model, corrupted, cache, metric);
  const tokens = model.toStrTokens(cleanText);
  const view = viz.patchingHeatmap(grid, { cols: tokens, value: "logit difference" });
  const cells = gridCells(view.html);
  const [L, T] = grid.shape;
  assert.equal(cells.size, L * T);
  for (let l = 0; l < L; l++) {
    for (let t = 0; t < T; t++) {
      assert.equal(Number(cells.get(`${l},${t}`)!.attrs["data-value"]), grid.data[l * T + t]);
    }
  }
  // Patching layer 0's clean stream at the name (position 2) restores the clean logit
  // difference, 1.34 (docs/transformerlens.md, checked in kjv_small_test).
  assert.ok(Math.abs(Number(cells.get("0,2")!.attrs["data-value"]) - metric.value(logits!)) < 1e-4);
  const max = Math.max(...Array.from(grid.data, Math.abs));
  const scale = elements(view.html).find((e) => e.attrs["data-scale"])!;
  assert.equal(scale.attrs["data-scale"], "diverging");
  assert.equal(Number(scale.attrs["data-max"]), max);
  assert.equal(Number(scale.attrs["data-min"]), -max);
  // Default labels, rows given as arrays.
  const small = viz.patchingHeatmap([[0.5, -1], [0, 2]]);
  assert.ok(small.html.includes('<th scope="row">L1</th>'));
  model.dispose();
});

Deno.test("coloredTokens: values in the DOM, tokens escaped, diverging only for signed values", () => {
  const tokens = ["<|endoftext|>", ' "a" & b', "\n"];
  const view = viz.coloredTokens(tokens, [0.25, -1.5, 3]);
  const spans = elements(view.html).filter((e) => e.attrs["data-pos"] !== undefined);
  assert.deepEqual(spans.map((s) => Number(s.attrs["data-value"])), [0.25, -1.5, 3]);
  assert.deepEqual(spans.map((s) => s.text), ["<|endoftext|>", ' "a" & b', "↵"]);
  assert.ok(!view.html.includes("<|endoftext|>"), "escaped");
  assert.ok(spans.every((s) => s.attrs.tabindex === "0"), "keyboard reachable");
  assert.ok(view.html.includes('data-scale="diverging"'));
  const positive = viz.coloredTokens(["a", "b"], { data: new Float32Array([0.5, 2]), shape: [2] });
  assert.ok(positive.html.includes('data-scale="sequential" data-min="0" data-max="2"'));
});

Deno.test("tensorView: shape, summary and the values it shows, with ellipses past 8", () => {
  const t: Tensor = { data: new Float32Array(2 * 10 * 12).map((_, i) => i), shape: [2, 10, 12] };
  const view = viz.tensorView(t);
  assert.equal(view.text, "Tensor float32 [2, 10, 12]: min 0, max 239, mean 119.5");
  const shown = elements(view.html).filter((e) => e.attrs["data-value"] !== undefined).map((e) =>
    Number(e.attrs["data-value"])
  );
  const want: number[] = [];
  for (const s of [0, 1]) {
    for (const r of [0, 1, 2, 7, 8, 9]) {
      for (const c of [0, 1, 2, 9, 10, 11]) want.push(s * 120 + r * 12 + c);
    }
  }
  assert.deepEqual(shown, want);
  assert.ok(view.html.includes("[1, :, :]") && view.html.includes("…"));
  const many = viz.tensorView({ data: new Float32Array(5 * 4), shape: [5, 2, 2] });
  assert.ok(many.html.includes("… 2 more slices …"));
  assert.equal(
    viz.tensorView({ data: new Float32Array([7]), shape: [] }).text.slice(0, 17),
    "Tensor float32 []",
  );
  assert.ok(viz.tensorView({ data: new Float32Array(0), shape: [0, 3] }).html.includes("empty"));
  const nan = viz.tensorView({ data: new Float32Array([1, NaN]), shape: [2] });
  assert.equal(nan.text, "Tensor float32 [2]: min 1, max 1, mean 1, 1 non-finite");
});

Deno.test("notebook display: Tensors and caches answer Symbol.for('Jupyter.display'), nothing else does", async () => {
  const DISPLAY = Symbol.for("Jupyter.display");
  // A tensor as the library hands them out (runs, caches and the tensor functions share its
  // prototype); a literal keeps its ordinary display.
  const t: Tensor = guardTensor({ data: new Float32Array([1, 2, 3]), shape: [3] });
  assert.equal(viz.notebookDisplayEnabled(), false, "off outside a Jupyter kernel");
  assert.equal((t as never)[DISPLAY], undefined);
  const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
  const { cache } = await model.runWithCache([[2047, 5, 9, 5, 9]]);
  try {
    assert.equal(viz.enableNotebookDisplay(), true);
    assert.equal(viz.enableNotebookDisplay(), true, "idempotent");
    type Shown = Record<symbol, () => viz.MimeBundle>;
    const bundle = (t as unknown as Shown)[DISPLAY]();
    assert.equal(bundle["text/plain"], "Tensor float32 [3]: min 1, max 3, mean 2");
    assert.ok(bundle["text/html"].includes('data-view="tensor"'));
    assert.ok(bundle["text/html"].includes('data-value="2"'));
    const c = (cache as unknown as Shown)[DISPLAY]();
    assert.equal(c["text/plain"], "ActivationCache: 55 activations, 0.16 MB");
    assert.ok(c["text/html"].includes("blocks.1.attn.hook_pattern</td><td>[1, 4, 5, 5]"));
    // Other objects, arrays and look-alikes keep their ordinary display.
    const literal = { data: new Float32Array([1, 2]), shape: [2] };
    for (const o of [{ a: 1 }, [1, 2], literal, new Map()]) {
      assert.equal((o as unknown as Shown)[DISPLAY], undefined);
    }
    // No global object changed; the model's own outputs display.
    assert.equal(Object.getOwnPropertyDescriptor(Object.prototype, DISPLAY), undefined);
    const logits = await model.run([[2047, 5, 9]]);
    assert.ok(
      (logits as unknown as Shown)[DISPLAY]()["text/plain"].startsWith("Tensor float32 [1, 3,"),
    );
    // Nothing enumerable changed.
    assert.deepEqual(Object.keys(t), ["data", "shape"]);
    assert.equal(JSON.stringify({ a: 1 }), '{"a":1}');
    // A view carries its own display method.
    const v = viz.coloredTokens(["a"], [1]);
    assert.equal((v as unknown as Shown)[DISPLAY]()["text/plain"], "1 tokens coloured by value");
  } finally {
    viz.disableNotebookDisplay();
    model.dispose();
  }
  assert.equal(viz.notebookDisplayEnabled(), false);
  assert.equal((t as never)[DISPLAY], undefined);
});

Deno.test("views reject bad input with InputErrors that say what to pass", async () => {
  const t = (shape: number[]): Tensor => ({
    data: new Float32Array(shape.reduce((a, b) => a * b, 1)),
    shape,
  });
  const cases: [() => unknown, RegExp][] = [
    [() => viz.attentionPattern(t([3, 4]), ["a", "b", "c"]), /as many keys as queries/],
    [() => viz.attentionPattern(t([2, 2]), ["a"]), /tokens has 1 labels for 2 entries/],
    [() => viz.attentionPattern(t([2, 2, 2]), ["a", "b"]), /2-D tensor/],
    [() => viz.attentionHeads(t([2, 2]), ["a", "b"]), /\[head, query, key\]/],
    [() => viz.attentionHeads(t([1, 2, 2, 2]), ["a", "b"], { batch: 1 }), /batch 1 is outside/],
    [() => viz.coloredTokens(["a", "b"], [1]), /2 tokens but 1 values/],
    [() => viz.coloredTokens(["a"], ["x" as never]), /must hold numbers/],
    [() => viz.coloredTokens([1 as never], [1]), /array of strings/],
    [() => viz.topkTokens(["a"], t([1, 3]), { k: 0 }), /k must be a whole number in \[1, 3\]/],
    [() => viz.topkTokens(["a"], t([2, 2, 3])), /one sequence/],
    [() => viz.topkTokens(["a", "b"], t([1, 3])), /2 tokens but logits for 1 positions/],
    [() => viz.patchingHeatmap([[1, 2], [3]]), /row 1 has 1 values, row 0 has 2/],
    [() => viz.patchingHeatmap([]), /non-empty array of rows/],
    [() => viz.patchingHeatmap([[1]], { cols: ["a", "b"] }), /cols has 2 labels for 1/],
    [() => viz.tensorView({ data: [1, 2], shape: [2] } as never), /Float32Array/],
  ];
  for (const [f, message] of cases) {
    assert.throws(f, (e) => e instanceof InputError && message.test(e.message));
  }
  await assert.rejects(() => viz.coloredTokens(["a"], [1]).save(""), InputError);
});

Deno.test({
  name: "a saved view in Chromium: the DOM holds the numbers, cells take keyboard focus, no errors",
  ignore: skipWithoutChromium("the saved view's browser test"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const model = await kjv();
    const sentence = "And the LORD said unto Moses";
    const lens = await viz.logitLens(model, sentence);
    const grid = await viz.logitLensGrid(model, sentence);
    const dir = await Deno.makeTempDir();
    const path = `${dir}/lens.html`;
    await lens.save(path);
    const page0 = await Deno.readTextFile(path);
    assert.ok(page0.startsWith("<!doctype html>") && !page0.includes("<script"));
    await using browser = await launchChromium();
    try {
      const page = await browser.newPage();
      const seen = watchPage(page);
      await page.goto(`file://${path}`);
      const read = (await page.evaluate(`[...document.querySelectorAll("td[data-row]")].map((td) =>
        [Number(td.dataset.row), Number(td.dataset.col), Number(td.dataset.value), td.textContent])`)) as [
        number,
        number,
        number,
        string,
      ][];
      assert.equal(read.length, grid.layers.length * grid.tokens.length);
      for (const [s, t, p, text] of read) {
        assert.equal(p, grid.topProbs[s][t]);
        assert.equal(text, grid.topTokens[s][t].replaceAll("\n", "↵"));
      }
      // Tab reaches the first cell; its tooltip (data-tip) names its number.
      await page.keyboard.press("Tab");
      const focused = (await page.evaluate(
        "[document.activeElement.dataset.row, document.activeElement.dataset.tip]",
      )) as [string, string];
      assert.equal(focused[0], "0");
      assert.ok(focused[1].includes("top token's probability"), focused[1]);
      assert.deepEqual(seen.errors, []);
    } finally {
      model.dispose();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
