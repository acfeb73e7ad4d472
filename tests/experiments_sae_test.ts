/**
 * The report's SAE section (`deno task experiments --sae`): on the embedded induction-toy with an
 * SAE whose features are unembedding directions (a real SAELens folder, written here), the
 * section's numbers against independent computations: the features and their means, densities
 * and L0 from a float64 encoder on the clean cache; the clean and spliced losses (the spliced one
 * with a float64 reconstruction patched in by a hook); the attributions against central finite
 * differences of the metric. Then the command end to end with `--sae RELEASE ID` through a
 * loopback hub (SAELens's release layout), its flags, and the typed failures.
 */
import assert from "node:assert/strict";
import {
  generateRepeatedTokens,
  HookedTransformer,
  type HookFn,
  SAE,
  type Tensor,
} from "../mod.ts";
import { writeSafetensors } from "../io/safetensors.ts";
import { correctLogitMetric, saeAnalysis } from "../experiments/sae_analysis.ts";
import { parseCliArgs, UsageError } from "../experiments/run.ts";
import { parseResults } from "../experiments/report/schema.ts";
import { fixturePath } from "./fixtures.ts";
import { startFakeHub } from "./hub_server.ts";

const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
const S = 20, BATCH = 4;
const tokens = generateRepeatedTokens(model, S, BATCH, { seed: 0 });
const T = tokens.shape[1];
const rows = Array.from(
  { length: BATCH },
  (_, b) => Array.from(tokens.data.subarray(b * T, (b + 1) * T)),
);
const HOOK = "blocks.2.hook_resid_pre"; // reads block 1's output: the induction head's
const d = model.cfg.dModel, n = 64, V = model.cfg.dVocab;

/**
 * The test SAE: feature f reads and writes the unit unembedding direction of the f-th distinct
 * token of the batch ("the stream predicts token X"), ReLU, no biases.
 */
function toySae(): { cfg: Record<string, unknown>; weights: Record<string, Tensor> } {
  const ids = [...new Set(Array.from(tokens.data))]
    .filter((t) => t !== model.cfg.bosTokenId)
    .slice(0, n);
  const W_enc = new Float32Array(d * n), W_dec = new Float32Array(n * d);
  ids.forEach((tok, f) => {
    let s = 0;
    for (let i = 0; i < d; i++) s += model.W_U.data[i * V + tok] ** 2;
    for (let i = 0; i < d; i++) {
      const u = model.W_U.data[i * V + tok] / Math.sqrt(s);
      W_enc[i * n + f] = u;
      W_dec[f * d + i] = u;
    }
  });
  return {
    cfg: {
      d_in: d,
      d_sae: n,
      dtype: "float32",
      architecture: "standard",
      apply_b_dec_to_input: true,
      normalize_activations: "none",
      metadata: { sae_lens_version: "6.18.0", hook_name: HOOK, model_name: "induction-toy" },
    },
    weights: {
      W_enc: { data: W_enc, shape: [d, n] },
      W_dec: { data: W_dec, shape: [n, d] },
      b_enc: { data: new Float32Array(n), shape: [n] },
      b_dec: { data: new Float32Array(d), shape: [d] },
    },
  };
}

const toy = toySae();
const sae = await SAE.fromTensors(toy.cfg, toy.weights, { backend: model.backend });

/** The SAELens folder of the toy SAE. */
function saeFolder(): Record<string, Uint8Array> {
  return {
    "cfg.json": new TextEncoder().encode(JSON.stringify(toy.cfg)),
    "sae_weights.safetensors": writeSafetensors(toy.weights),
  };
}

/** Float64 features of the clean activation at HOOK: relu(x @ W_enc) (biases are zero). */
async function hostFeatures(): Promise<{ x: Float32Array; acts: Float64Array }> {
  const { cache } = await model.runWithCache(rows, { namesFilter: [HOOK] });
  const x = cache.get(HOOK).data;
  const acts = new Float64Array(BATCH * T * n);
  for (let r = 0; r < BATCH * T; r++) {
    for (let f = 0; f < n; f++) {
      let s = 0;
      for (let i = 0; i < d; i++) s += x[r * d + i] * sae.W_enc.data[i * n + f];
      acts[r * n + f] = Math.max(s, 0);
    }
  }
  return { x, acts };
}

function meanLoss(loss: Tensor): number {
  const P = loss.shape[1];
  let s = 0;
  for (let b = 0; b < BATCH; b++) for (let t = S; t < 2 * S; t++) s += loss.data[b * P + t];
  return s / (BATCH * S);
}

Deno.test("SAE section: features, densities, L0 and losses against independent computations", async () => {
  const res = await saeAnalysis(model, sae, tokens, S, {
    inductionLayer: 1,
    source: "toy",
    top: n,
  });
  assert.equal(res.hookName, HOOK);
  assert.equal(res.layer, 2);
  assert.deepEqual(res.positions, [S, 2 * S]);
  const { acts } = await hostFeatures();
  let maxAct = 0;
  for (const a of acts) maxAct = Math.max(maxAct, a);
  // float32 kernels against a float64 host encoder over 128 products: 1e-4 of the largest
  // activation (the fixtures' bound) is far above float32 rounding (~1e-6 relative)
  const tol = 1e-4 * maxAct;
  const mean = new Float64Array(n), first = new Float64Array(n), on = new Float64Array(n);
  let l0 = 0;
  for (let b = 0; b < BATCH; b++) {
    for (let t = 1; t < 2 * S; t++) {
      for (let f = 0; f < n; f++) {
        const a = acts[(b * T + t) * n + f];
        if (t >= S) {
          mean[f] += a / (BATCH * S);
          if (a > 0) {
            on[f] += 1 / (BATCH * S);
            l0 += 1 / (BATCH * S);
          }
        } else first[f] += a / (BATCH * (S - 1));
      }
    }
  }
  // the ranking: every active feature, by mean activation on the repeat
  const order = Array.from({ length: n }, (_, f) => f)
    .filter((f) => mean[f] > 0)
    .sort((a, b) => mean[b] - mean[a]);
  assert.equal(res.topActive.length, order.length);
  assert.deepEqual(res.topActive.slice(0, 5).map((r) => r.feature), order.slice(0, 5));
  for (const row of res.topActive) {
    const f = row.feature;
    assert.ok(Math.abs(row.meanRepeat - mean[f]) <= tol, `feature ${f} mean`);
    assert.ok(Math.abs(row.meanFirst - first[f]) <= tol, `feature ${f} first-half mean`);
    // a feature within float32 rounding of zero could count differently: allow one position
    assert.ok(Math.abs(row.densityRepeat - on[f]) <= 1 / (BATCH * S) + 1e-12, `density ${f}`);
  }
  assert.ok(Math.abs(res.l0.repeat - l0) <= 2 / (BATCH * S), `L0 ${res.l0.repeat} vs ${l0}`);

  // the clean loss is the model's own (the error term gives the activation back exactly)
  const clean = await model.run(rows, { returnType: "loss", lossPerToken: true });
  assert.equal(res.loss.clean, meanLoss(clean));
  // the spliced loss: a float64 reconstruction put in by a hook
  const recons: HookFn = (x) => {
    const out = new Float32Array(x.data.length);
    for (let r = 0; r < BATCH * T; r++) {
      for (let i = 0; i < d; i++) {
        let s = 0;
        for (let f = 0; f < n; f++) s += acts[r * n + f] * sae.W_dec.data[f * d + i];
        out[r * d + i] = s;
      }
    }
    return { data: out, shape: x.shape };
  };
  const spliced = await model.runWithHooks(rows, {
    fwdHooks: [[HOOK, recons]],
    returnType: "loss",
    lossPerToken: true,
  });
  // cross-entropy of float32 logits through two more blocks: 1e-4 nats
  assert.ok(
    Math.abs(res.loss.spliced - meanLoss(spliced)) <= 1e-4,
    `${res.loss.spliced} vs ${meanLoss(spliced)}`,
  );
  assert.ok(res.loss.spliced > res.loss.clean, "the reconstruction loses information");

  // the metric: the mean correct-token logit on the repeat
  const logits = await model.run(rows, { returnType: "logits" });
  assert.ok(
    Math.abs(res.metric - correctLogitMetric(rows, S, 2 * S).value(logits)) <= 1e-5,
  );
});

Deno.test("SAE section: attributions agree with central finite differences of the metric", async () => {
  const res = await saeAnalysis(model, sae, tokens, S, { inductionLayer: 1, source: "toy" });
  const { acts } = await hostFeatures();
  const metric = correctLogitMetric(rows, S, 2 * S);
  // scaling feature f by (1 + e) at every position adds e a_f W_dec[f] to the activation
  const shifted = async (f: number, e: number) => {
    const add: HookFn = (x) => {
      for (let r = 0; r < BATCH * T; r++) {
        const a = acts[r * n + f];
        if (a === 0) continue;
        for (let i = 0; i < d; i++) x.data[r * d + i] += e * a * sae.W_dec.data[f * d + i];
      }
    };
    const logits = await model.runWithHooks(rows, {
      fwdHooks: [[HOOK, add]],
      returnType: "logits",
    });
    return metric.value(logits);
  };
  const e = 0.05;
  for (const row of res.topAttribution.slice(0, 3)) {
    const fd = ((await shifted(row.feature, e)) - (await shifted(row.feature, -e))) / (2 * e);
    // central differences leave an O(e^2) term (observed below 1e-4 here) and float32 logits
    // (~1e-6 of ~10, over 2e): 5e-4 absolute and 1% relative
    assert.ok(
      Math.abs(fd - row.attribution) <= 5e-4 + 0.01 * Math.abs(row.attribution),
      `feature ${row.feature}: attribution ${row.attribution}, finite difference ${fd}`,
    );
  }
  for (const row of [...res.topActive, ...res.topAttribution]) {
    assert.ok(Number.isFinite(row.dla) && Number.isFinite(row.attribution));
  }
});

const RUN = new URL("../experiments/run.ts", import.meta.url).pathname;
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
    stderr: new TextDecoder().decode(out.stderr),
  };
}

Deno.test("experiments --sae RELEASE ID: a release from the hub adds the SAE section", async () => {
  const dir = await Deno.makeTempDir({ prefix: "experiments-sae-" });
  const extraFiles: Record<string, Uint8Array> = {};
  for (const [name, bytes] of Object.entries(saeFolder())) extraFiles[`${HOOK}/${name}`] = bytes;
  // SAELens's gpt2-small-res-jb layout (one folder per hook point) on a loopback hub
  const hub = await startFakeHub({
    repoId: "jbloom/GPT2-Small-SAEs-Reformatted",
    dir: await Deno.makeTempDir({ dir, prefix: "repo" }),
    extraFiles,
  });
  try {
    const env = { HF_ENDPOINT: hub.endpoint, HF_HUB_CACHE: `${dir}/cache` };
    const base = ["--model", "induction-toy", "--seq-len", `${S}`, "--batch", `${BATCH}`];
    const out = `${dir}/run`;
    const r = await runCli([...base, "--out", out, "--sae", "gpt2-small-res-jb", HOOK], env);
    assert.equal(r.code, 0, r.stderr);
    for (let i = 1; i <= 11; i++) assert.match(r.stderr, new RegExp(`\\[${i}/11\\]`));
    assert.match(r.stderr, /load SAE .*gpt2-small-res-jb \/ blocks\.2\.hook_resid_pre: standard/);
    const results = parseResults(JSON.parse(await Deno.readTextFile(`${out}/results.json`)));
    const s = results.sae!;
    assert.equal(s.source, `gpt2-small-res-jb / ${HOOK}`);
    assert.deepEqual([s.hookName, s.dSae, s.layer, s.inductionLayer], [HOOK, n, 2, 1]);
    // the same tokens and SAE as in this process: the same figures (the kernels give the same
    // bits on any number of threads)
    const here = await saeAnalysis(model, sae, tokens, S, { inductionLayer: 1, source: "" });
    assert.deepEqual(s.topActive.map((f) => f.feature), here.topActive.map((f) => f.feature));
    assert.ok(Math.abs(s.topActive[0].meanRepeat - here.topActive[0].meanRepeat) <= 1e-6);
    assert.ok(Math.abs(s.loss.spliced - here.loss.spliced) <= 1e-6);
    const html = await Deno.readTextFile(`${out}/report.html`);
    assert.match(html, /<section id="sae">/);
    assert.match(html, /Most active on the repeat/);
    assert.ok(html.includes(`<td class="num">${s.topActive[0].feature}</td>`));
    assert.ok(results.timings.some((t) => t.step === "sae"));
    assert.ok(results.timings.some((t) => t.step === "load-sae"));

    // an id the release does not have: one line, exit 1, before the study
    const bad = await runCli(
      [...base, "--out", `${dir}/bad`, "--sae", "gpt2-small-res-jb", "x"],
      env,
    );
    assert.equal(bad.code, 1, bad.stderr);
    assert.match(bad.stderr, /error: release gpt2-small-res-jb has no SAE "x"/);
    assert.ok(!bad.stderr.includes("[2/"), "fails before the study");
  } finally {
    await hub.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("experiments --sae PATH: an SAE of another model fails in one line", async () => {
  // the tiny GPT-2 fixture's SAE reads 32 values at blocks.1.hook_resid_pre; the toy has 128
  const r = await runCli([
    "--model",
    "induction-toy",
    "--out",
    await Deno.makeTempDir({ prefix: "experiments-sae-bad-" }),
    "--sae",
    fixturePath("sae/standard"),
  ]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(
    r.stderr,
    /error: the SAE at blocks\.1\.hook_resid_pre reads 32 values per position/,
  );
  assert.ok(!r.stderr.includes("    at "), "no stack trace");
});

Deno.test("experiments --sae: flag parsing", () => {
  assert.deepEqual(parseCliArgs(["--sae", "rel", "blocks.6.hook_resid_pre"]).sae, {
    name: "rel",
    id: "blocks.6.hook_resid_pre",
  });
  assert.deepEqual(parseCliArgs(["--sae=rel", "id", "--batch", "2"]).sae, {
    name: "rel",
    id: "id",
  });
  assert.deepEqual(parseCliArgs(["--sae", "./folder", "--batch", "2"]).sae, { name: "./folder" });
  assert.equal(parseCliArgs([]).sae, undefined);
  assert.throws(() => parseCliArgs(["--sae", "rel", "id", "extra"]), UsageError, '"extra"');
  assert.throws(() => parseCliArgs(["--sae"]), UsageError, "--sae needs a value");
  assert.throws(() => parseCliArgs(["--batch", "2", "id"]), UsageError, "unexpected argument");
  assert.throws(() => parseCliArgs(["--sae", "a", "b", "--sae", "c"]), UsageError, "twice");
});
