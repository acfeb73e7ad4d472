/**
 * The embedded text model `kjv-small` against its received float64 reference
 * (`tests/fixtures/kjv-small/reference.json`, HF GPT-2 semantics from the stored float16 weights,
 * computed outside this project): its logits unprocessed and processed, its tokenizer's ids for
 * the reference prompts, decoding, and the greedy continuations its model card reports.
 */
import assert from "node:assert/strict";
import {
  add,
  argmax,
  getActPatchResidPre,
  HookedTransformer,
  index,
  matmul,
  type Tensor,
  testPrompt,
} from "../mod.ts";
import { resolveModel } from "../io/resolve.ts";
import { parseSafetensors } from "../io/safetensors.ts";
import { fixturePath } from "./fixtures.ts";
import { fromFileUrl } from "./path.ts";

interface KjvReference {
  prompts: string[];
  /** Token ids with BOS, one row a prompt. */
  ids: number[][];
  /** The 16 vocabulary ids of `logits_probe`. */
  ids_probe: number[];
  /** Last position's logits over the vocabulary, [5][4096]. */
  logits_last: number[][];
  /** Every position's logits at `ids_probe`, [5][T][16]. */
  logits_probe: number[][][];
  /** Last position's top 5 ids. */
  top5_last: number[][];
}

const REF: KjvReference = JSON.parse(
  Deno.readTextFileSync(fixturePath("kjv-small/reference.json")),
);
const WEIGHTS = fromFileUrl(new URL("../weights/kjv-small/", import.meta.url));

// float32 against float64 on a 4-layer model whose logits reach about 20: each matmul sums 384 or
// 1536 products, so float32 rounding of order 1e-7 relative per operation grows to a few 1e-6
// relative on the residual stream; measured max error 1.8e-5. 1e-4 is the tolerance and
// still 100x below a logit difference that would change a prediction in these prompts.
const TOL = 1e-4;

const UNPROCESSED = {
  foldLn: false,
  centerWritingWeights: false,
  centerUnembed: false,
  foldValueBiases: false,
  threads: 1,
} as const;

/** Max |(a - mean a) - (b - mean b)| (centred) or max |a - b|. */
function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>, centre: boolean): number {
  let ma = 0, mb = 0;
  if (centre) {
    for (let i = 0; i < a.length; i++) ma += a[i], mb += b[i];
    ma /= a.length, mb /= b.length;
  }
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - ma - (b[i] - mb)));
  return d;
}

async function checkLogits(model: HookedTransformer, centre: boolean): Promise<number> {
  let worst = 0;
  for (let p = 0; p < REF.prompts.length; p++) {
    const logits = await model.run([REF.ids[p]]);
    const [, T, V] = logits.shape;
    assert.equal(T, REF.ids[p].length);
    assert.equal(V, 4096);
    const row = (t: number) => logits.data.subarray(t * V, (t + 1) * V);
    worst = Math.max(worst, maxDiff(row(T - 1), REF.logits_last[p], centre));
    for (let t = 0; t < T; t++) {
      const got = REF.ids_probe.map((id) => row(t)[id]);
      const want = REF.logits_probe[p][t];
      // Processed logits are shifted by a constant per position: compare differences to probe 0.
      const shift = (v: number[]) => centre ? v.map((x) => x - v[0]) : v;
      worst = Math.max(worst, maxDiff(shift(got), shift(want), false));
    }
    const top5 = Array.from(row(T - 1).keys()).sort((a, b) => row(T - 1)[b] - row(T - 1)[a])
      .slice(0, 5);
    assert.deepEqual(top5, REF.top5_last[p], `top 5 of prompt ${p}`);
  }
  return worst;
}

Deno.test("kjv-small: stored float16 in weights/kjv-small, widened on load", async () => {
  const bytes = await Deno.readFile(`${WEIGHTS}/model.safetensors`);
  const source = parseSafetensors(bytes, "model.safetensors");
  const dtypes = new Set(source.names().map((n) => source.info(n).dtype));
  assert.deepEqual([...dtypes], ["F16"], "every tensor float16 (the package stays lean)");
  assert.ok(bytes.length < 18e6, `${bytes.length} bytes`);
  const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
  assert.ok(model.W_E.data instanceof Float32Array);
  assert.deepEqual(
    [model.cfg.nLayers, model.cfg.nHeads, model.cfg.dModel, model.cfg.dVocab, model.cfg.nCtx],
    [4, 6, 384, 4096, 256],
  );
  model.dispose();
});

Deno.test("kjv-small: unprocessed logits within 1e-4 of the float64 reference", async () => {
  const model = await HookedTransformer.fromPretrained("kjv-small", UNPROCESSED);
  const worst = await checkLogits(model, false);
  assert.ok(worst < TOL, `max |logit - reference| = ${worst}`);
  model.dispose();
});

Deno.test("kjv-small: processed (TL's defaults) logits minus their mean within 1e-4", async () => {
  // centerUnembed shifts each position's logits by a constant: compare them centred.
  const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
  const worst = await checkLogits(model, true);
  assert.ok(worst < TOL, `max centred |logit - reference| = ${worst}`);
  model.dispose();
});

Deno.test("kjv-small: its tokenizer gives the reference ids; decoding round-trips", async () => {
  const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
  assert.ok(model.tokenizer, "kjv-small has a text tokenizer");
  assert.equal(model.cfg.bosTokenId, 4095);
  // A batch is right-padded (TL's default) with the pad token, here BOS = EOS.
  const batch = model.toTokens(REF.prompts);
  const width = Math.max(...REF.ids.map((r) => r.length));
  assert.deepEqual(batch, REF.ids.map((r) => [...r, ...Array(width - r.length).fill(4095)]));
  for (let p = 0; p < REF.prompts.length; p++) {
    assert.deepEqual(model.toTokens(REF.prompts[p]), [REF.ids[p]], REF.prompts[p]);
    assert.equal(model.toString(REF.ids[p].slice(1)), REF.prompts[p]);
  }
  assert.deepEqual(model.toStrTokens(REF.prompts[0]).slice(0, 4), [
    "<|endoftext|>",
    "In",
    " the",
    " beginning",
  ]);
  // Byte-level BPE: any text, including bytes the Bible never used, decodes to itself.
  for (
    const text of [
      "And the LORD spake unto Moses, saying,",
      "  two  spaces\tand a tab\nnew line",
      "Übermäßig — naïve café, 東京, emoji 🙂 and \u{feff}BOM",
    ]
  ) {
    const ids = model.toTokens(text, { prependBos: false })[0];
    assert.ok(ids.every((i) => Number.isInteger(i) && i >= 0 && i < 4095), text);
    assert.equal(model.toString(ids), text);
  }
  model.dispose();
});

Deno.test("kjv-small: greedy continuations of its model card", async () => {
  const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
  const card = await Deno.readTextFile(`${WEIGHTS}/MODEL_CARD.md`);
  const cases: [string, string][] = [
    [
      "And God said",
      "And God said unto him, What is this that thou hast done? And he said, " +
      "I will do unto thee, and to do",
    ],
    [
      "And Jacob said unto Laban, Give me my wife. And Laban said unto Jacob",
      "And Jacob said unto Laban, Give me my wife. And Laban said unto Jacob, Behold, I have " +
      "found grace in my sight, and I will give thee a possession.",
    ],
  ];
  for (const [prompt, expected] of cases) {
    const tail = expected.slice(prompt.length);
    assert.ok(card.replace(/\s+/g, " ").includes(tail.trim()), "the card reports it");
    const n = model.toTokens(expected)[0].length - model.toTokens(prompt)[0].length;
    const out = await model.generate(prompt, { maxNewTokens: n, temperature: 0 });
    assert.equal(out, expected);
  }
  model.dispose();
});

Deno.test("kjv-small: resolves from its own folder with tokenizer and card beside it", async () => {
  const m = await resolveModel("kjv-small");
  assert.equal(m.source, "embedded kjv-small");
  assert.equal(m.tokenizer?.vocabSize, 4096);
  for (const f of ["config.json", "model.safetensors", "tokenizer.json", "MODEL_CARD.md"]) {
    assert.ok(Deno.statSync(`${WEIGHTS}/${f}`).isFile, f);
  }
});

Deno.test("kjv-small: the values the README's text example gives in its comments", async () => {
  // The README's block runs under `deno test --doc README.md`; this checks what its comments say.
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
  const strTokens = model.toStrTokens("In the beginning God created");
  assert.ok(readme.includes(`// ${JSON.stringify(strTokens).replaceAll(",", ", ")}`));
  const lines: string[] = [];
  const result = await testPrompt(model, "And Moses said unto", "Aaron", {
    print: (l) => lines.push(l),
  });
  const answer = result.positions[0].answers[0];
  assert.equal(answer.rank, 0);
  assert.equal((answer.prob * 100).toFixed(2), "36.70");
  assert.ok(lines.some((l) => l.includes("Rank: 0") && l.includes("Prob: 36.70%")), lines[2]);
  assert.ok(readme.includes("// prints: Rank 0, Prob 36.70%"));
  const generated = await model.generate("And God said", { maxNewTokens: 12, temperature: 0 });
  assert.ok(
    readme.includes(`temperature: 0 }); // ${JSON.stringify(generated)}`),
    String(generated),
  );

  const sentence = "And the LORD said unto Moses, Stretch out thine hand";
  const { cache } = await model.runWithCache(sentence);
  const [resid, labels] = cache.accumulatedResid({ applyLn: true, returnLabels: true });
  assert.deepEqual(resid.shape, [5, 1, 14, 384]);
  assert.deepEqual(labels, ["0_pre", "1_pre", "2_pre", "3_pre", "final_post"]);
  const lens = argmax(add(matmul(resid, model.W_U), model.b_U), -1);
  const topTokens = (layer: number) => model.toStrTokens([...index(lens, layer, 0).data]);
  assert.deepEqual(topTokens(3).slice(3, 8), [" said", " unto", " Moses", ",", " saying"]);
  assert.deepEqual(topTokens(4).slice(4, 8), [" unto", " Moses", ",", " Behold"]);
  // The lens's last layer is the model's own prediction: the argmax of its logits.
  const logits = await model.run(sentence);
  const V = logits.shape[2];
  for (let t = 0; t < 14; t++) {
    const row = logits.data.subarray(t * V, (t + 1) * V);
    assert.equal(index(lens, 4, 0, t).data[0], row.indexOf(Math.max(...row)));
  }
  model.dispose();
});

Deno.test("kjv-small: the figures of docs/transformerlens.md's opening example", async () => {
  const doc = await Deno.readTextFile(new URL("../docs/transformerlens.md", import.meta.url));
  for (
    const claim of ["// 1.34 clean, -2.04 corrupted", "// [10, 1]", "// [n_layers, pos]: [4, 11]"]
  ) {
    assert.ok(doc.includes(claim), claim);
  }
  const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
  const clean = model.toTokens("And Moses spake unto Aaron, and Aaron said unto");
  const corrupted = model.toTokens("And Pharaoh spake unto Aaron, and Aaron said unto");
  const [answer, wrong] = [model.toSingleToken(" Moses"), model.toSingleToken(" Pharaoh")];
  const logitDiff = (logits: Tensor) => {
    const last = (logits.shape[1] - 1) * logits.shape[2];
    return logits.data[last + answer] - logits.data[last + wrong];
  };
  const { logits, cache } = await model.runWithCache(clean);
  assert.equal(logitDiff(logits!).toFixed(2), "1.34");
  assert.equal(logitDiff(await model.run(corrupted)).toFixed(2), "-2.04");
  const [stack] = cache.decomposeResid({ posSlice: -1, returnLabels: true });
  const dla = cache.logitAttrs(stack, [answer], { incorrectTokens: [wrong], posSlice: -1 });
  assert.deepEqual(dla.shape, [10, 1]);
  const grid = await getActPatchResidPre(model, corrupted, cache, logitDiff);
  assert.deepEqual(grid.shape, [4, 11]);
  // Patching the clean resid_pre at the name's position (2, after BOS and "And") in layer 0
  // restores the clean run.
  assert.ok(Math.abs(grid.data[2] - logitDiff(logits!)) < 1e-4, `${grid.data[2]}`);
  model.dispose();
});
