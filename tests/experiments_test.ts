/**
 * `deno task experiments` end to end, in a subprocess with the task's permissions: on the embedded
 * induction-toy (chosen by default because the Hugging Face cache is empty), the run finds what
 * its model card says, writes results.json and a self-contained report.html, and leaves no
 * temporary files. Bad flags exit with code 2 and a clear message; a GPT-2 that cannot be found
 * exits with 1 and one line, no stack trace.
 */
import assert from "node:assert/strict";
import { externalReferences } from "../experiments/report/render.ts";
import { parseResults } from "../experiments/report/schema.ts";
import { chooseHeads, compositionPairs, rankHeads } from "../experiments/study.ts";
import { parseCliArgs, resultsJson, UsageError, writeAtomically } from "../experiments/run.ts";

const RUN = new URL("../experiments/run.ts", import.meta.url).pathname;
// The permissions of deno.json's "experiments" task.
const PERMS = ["--allow-read", "--allow-write", "--allow-env", "--allow-net", "--allow-sys"];

async function runCli(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMS, RUN, ...args],
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

Deno.test("experiments: the toy run finds the model card's circuit and writes both files", async () => {
  const dir = await Deno.makeTempDir({ prefix: "experiments-test-" });
  const emptyCache = await Deno.makeTempDir({ prefix: "experiments-hf-" });
  try {
    const out = `${dir}/run`;
    const r = await runCli(["--seq-len", "50", "--batch", "4", "--seed", "0", "--out", out], {
      HF_HUB_CACHE: emptyCache,
      HF_HUB_OFFLINE: "1",
    });
    assert.equal(r.code, 0, r.stderr);
    // The default model, and one line saying why.
    const why = r.stderr.split("\n").filter((l) => l.startsWith("model:"));
    assert.equal(why.length, 1, r.stderr);
    assert.match(why[0], /^model: induction-toy — the embedded model, because/);
    assert.match(why[0], /GPT-2 small's files are not on this machine/);
    // Steps and their times: numbered 1..n of n, loading the model first (no "[9/8]"), and no bar
    // redraws off a terminal.
    const counters = [...r.stderr.matchAll(/^\[(\d+)\/(\d+)\] /gm)].map((m) => [+m[1], +m[2]]);
    assert.ok(counters.length >= 9, r.stderr);
    counters.forEach(([i, n], k) => assert.deepEqual([i, n], [k + 1, counters.length], r.stderr));
    assert.ok(!r.stderr.includes("\r"), "no carriage returns when stderr is not a terminal");

    const names = [...Deno.readDirSync(out)].map((e) => e.name).sort();
    assert.deepEqual(names, ["report.html", "results.json"], "no temporary files left");

    const results = parseResults(JSON.parse(await Deno.readTextFile(`${out}/results.json`)));
    const S = 50;
    assert.equal(results.model.name, "induction-toy");
    assert.equal(results.model.isGpt2Small, false);
    assert.deepEqual(results.tokens.shape, [4, 1 + 2 * S]);
    assert.deepEqual(results.settings.inductionHead, [1, 2]);
    assert.equal(results.settings.inductionHeadFrom, "best");
    // The model card: accuracy 0.0 then about 0.92; previous-token heads 0.2 and 0.3; induction 1.2.
    assert.equal(results.logProbs.accuracyFirst, 0);
    assert.ok(results.logProbs.accuracySecond > 0.9, `${results.logProbs.accuracySecond}`);
    assert.ok(results.logProbs.secondHalf > results.logProbs.firstHalf + 5);
    const topPrev = results.headScores.topPreviousToken.slice(0, 2).map((h) =>
      `${h.layer}.${h.head}`
    );
    assert.deepEqual(topPrev.sort(), ["0.2", "0.3"]);
    assert.ok(results.headScores.topPreviousToken[1].score > 0.9);
    const bestInd = results.headScores.topInduction[0];
    assert.deepEqual([bestInd.layer, bestInd.head], [1, 2]);
    assert.ok(bestInd.score > 0.7, `${bestInd.score}`);
    assert.equal(results.settings.prevHead[0], 0);
    // Shapes of everything the report draws.
    assert.equal(results.logProbs.perPosition.length, 2 * S);
    assert.equal(results.attention.induction.pattern.length, 1 + 2 * S);
    for (const a of ["study", "aligned"] as const) {
      assert.equal(results.patching[a].scores.length, 3);
      assert.equal(results.patching[a].scores[0].length, S);
      assert.ok(results.patching[a].scores.flat().every(Number.isFinite));
    }
    assert.deepEqual(results.patching.study.positions.slice(0, 2), [S, S + 1]);
    assert.deepEqual(results.patching.aligned.positions.slice(0, 2), [S + 1, S + 2]);
    // The circuit: the chosen pair far above chance, and in the table of pairs.
    const kc = results.circuits.kComposition;
    assert.ok(kc.top1 > 20 * results.circuits.chance, `${kc.top1}`);
    assert.ok(results.circuits.pairs.some((p) => p.top1 === kc.top1));
    assert.ok(results.circuits.pairs.every((p) => p.prev[0] < p.induction[0]));
    assert.ok(results.circuits.ovCopying.top1 > 0.5, `${results.circuits.ovCopying.top1}`);
    const steps = results.timings.map((t) => t.step);
    assert.deepEqual(steps, [
      "load",
      "tokens",
      "logprobs",
      "heads",
      "attention",
      "patching",
      "attribution",
      "circuits",
      "toolkit",
    ]);
    // The second analysis: the induction head writes the answer most; the attributions sum to the
    // logits; the logit lens of the last stream is the model's own prediction (the study's figures).
    const kit = results.toolkit!;
    assert.equal(kit.batch, 4);
    assert.equal(kit.dla.topHeads[0].label, "L1H2");
    assert.ok(kit.dla.sumCheck < 1e-3, `${kit.dla.sumCheck}`);
    assert.deepEqual(kit.logitLens.labels, ["0_pre", "1_pre", "2_pre", "final_post"]);
    const last = kit.logitLens.labels.length - 1;
    assert.ok(Math.abs(kit.logitLens.logProbSecond[last] - results.logProbs.secondHalf) < 1e-4);
    assert.ok(
      Math.abs(kit.logitLens.accuracySecond[last] - results.logProbs.accuracySecond) < 1e-9,
    );
    assert.ok(kit.logitLens.accuracySecond[0] < kit.logitLens.accuracySecond[last]);
    const attr = results.attribution!;
    for (const a of ["study", "aligned"] as const) {
      assert.equal(attr[a].estimates.length, 3);
      assert.equal(attr[a].estimates[0].length, S);
      assert.deepEqual(attr[a].positions, results.patching[a].positions);
      assert.ok(Math.abs(attr[a].correlation) <= 1, `${attr[a].correlation}`);
    }
    assert.ok(results.totalSeconds >= results.timings.reduce((a, t) => a + t.seconds, 0) - 1e-6);

    const html = await Deno.readTextFile(`${out}/report.html`);
    assert.deepEqual(externalReferences(html), [], "report.html references external URLs");
    assert.match(html, /induction-toy/);
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(emptyCache, { recursive: true });
  }
});

Deno.test("experiments: --model kjv-small runs the study on the embedded text model", async () => {
  const dir = await Deno.makeTempDir({ prefix: "experiments-kjv-" });
  try {
    const out = `${dir}/run`;
    const r = await runCli([
      "--model",
      "kjv-small",
      "--seq-len",
      "10",
      "--batch",
      "2",
      "--out",
      out,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^model: kjv-small — chosen with --model$/m);
    const results = parseResults(JSON.parse(await Deno.readTextFile(`${out}/results.json`)));
    assert.equal(results.model.name, "kjv-small");
    assert.equal(results.model.source, "embedded kjv-small");
    assert.deepEqual(results.tokens.shape, [2, 21]);
    // Its model card: no induction heads, so the repeat is not predicted (accuracy 0 and 0 on
    // the card's 30 x 50 batch; on 2 x 10 a lucky hit or two at most).
    assert.ok(results.logProbs.accuracySecond < 0.2, `${results.logProbs.accuracySecond}`);
    assert.ok(results.headScores.topInduction[0].score < 0.2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("experiments: bad flags exit with 2 and say what is wrong", async () => {
  const cases: [string[], RegExp][] = [
    [["--seq-len", "abc"], /--seq-len takes a whole number/],
    [["--batch", "0"], /--batch takes a whole number/],
    [["--bogus"], /unknown flag --bogus/],
    [["--prev-head", "4-11"], /--prev-head takes LAYER\.HEAD/],
    [["--out"], /--out needs a value/],
    [["stray"], /unexpected argument "stray"/],
    // Checked against the model once it is loaded.
    [["--model", "induction-toy", "--induction-head", "7.0"], /not a head of induction-toy/],
    [["--model", "induction-toy", "--seq-len", "200"], /too long for induction-toy.*at most 127/],
  ];
  for (const [args, message] of cases) {
    const r = await runCli(args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.match(r.stderr, /--help/);
  }
  const help = await runCli(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--induction-head L\.H/);
});

Deno.test("experiments: --model gpt2 without cache or network fails with one clear line", async () => {
  const emptyCache = await Deno.makeTempDir({ prefix: "experiments-hf-" });
  try {
    const r = await runCli(["--model", "gpt2", "--out", `${emptyCache}/out`], {
      HF_HUB_CACHE: emptyCache,
      HF_HUB_OFFLINE: "1",
    });
    assert.equal(r.code, 1, r.stderr);
    const errors = r.stderr.split("\n").filter((l) => l.startsWith("error:"));
    assert.equal(errors.length, 1, r.stderr);
    assert.match(errors[0], /gpt2/);
    assert.ok(!/\n\s+at /.test(r.stderr), `no stack trace:\n${r.stderr}`);
    assert.throws(() => Deno.statSync(`${emptyCache}/out/results.json`));
  } finally {
    await Deno.remove(emptyCache, { recursive: true });
  }
});

Deno.test("experiments: flag parsing, head choice and pairs", () => {
  const o = parseCliArgs(["--seq-len=20", "--batch", "4", "--prev-head", "0.3", "--seed", "-1"]);
  assert.equal(o.seqLen, 20);
  assert.equal(o.batch, 4);
  assert.equal(o.seed, -1);
  assert.deepEqual(o.prevHead, [0, 3]);
  assert.equal(o.out, "out/experiments");
  assert.throws(() => parseCliArgs(["--batch", "1", "--batch", "2"]), /--batch is given twice/);
  assert.equal(parseCliArgs(["--seed=-5"]).seed, -5);
  assert.equal(parseCliArgs(["-h"]).help, true);
  assert.equal(parseCliArgs(["--device", "webgpu"]).device, "webgpu");
  assert.equal(parseCliArgs([]).device, undefined);
  assert.throws(() => parseCliArgs(["--device=cuda"]), /--device takes wasm, webgpu or auto/);
  assert.throws(() => parseCliArgs(["--out", "--batch", "4"]), /--out needs a value/);
  assert.throws(() => parseCliArgs(["-x"]), /unknown flag -x/);
  assert.throws(() => parseCliArgs(["--help=yes"]), /--help takes no value/);
  assert.throws(() => parseCliArgs(["--", "x"]), UsageError);

  const ind = rankHeads([[0.1, 0.0], [0.2, 0.9], [0.5, 0.1]]);
  assert.deepEqual(ind.slice(0, 2), [
    { layer: 1, head: 1, score: 0.9 },
    { layer: 2, head: 0, score: 0.5 },
  ]);
  // The best previous-token head is in layer 2, after the induction head: take the best earlier one.
  const prev = rankHeads([[0.3, 0.6], [0.1, 0.0], [0.99, 0.0]]);
  assert.deepEqual(chooseHeads(ind, prev), { prev: [0, 1], induction: [1, 1] });
  assert.deepEqual(chooseHeads(ind, prev, { prevHead: [2, 0] }), {
    prev: [2, 0],
    induction: [1, 1],
  });
  const pairs = compositionPairs(ind, prev, { prev: [0, 1], induction: [1, 1] }, 2);
  assert.deepEqual(pairs, [
    [[0, 1], [1, 1]],
    [[0, 1], [2, 0]],
  ]);
});

Deno.test("experiments: outputs are written all or nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "experiments-atomic-" });
  try {
    await writeAtomically(dir, { "a.txt": "old a", "b.txt": "old b" });
    // The second file cannot be written (its name is a folder): nothing changes, nothing is left.
    await Deno.mkdir(`${dir}/sub`);
    await assert.rejects(writeAtomically(dir, { "a.txt": "new a", "sub/../sub": "x" }));
    assert.equal(await Deno.readTextFile(`${dir}/a.txt`), "old a");
    const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(names, ["a.txt", "b.txt", "sub"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  // Innermost numeric arrays stay on one line.
  const text = resultsJson({ a: [[1, 2], [3, -4.5e-7]] } as never);
  assert.match(text, /\[1, 2\]/);
  assert.match(text, /\[3, -4\.5e-7\]/);
  assert.deepEqual(JSON.parse(text), { a: [[1, 2], [3, -4.5e-7]] });
});
