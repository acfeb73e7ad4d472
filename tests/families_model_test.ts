/**
 * The families on the tiny fixture checkpoints beyond their logits: every hook point alone equals
 * the full cache, TransformerLens's shapes and names (rot_q/rot_k, grouped-query k/v,
 * pre_linear, no resid_mid in parallel blocks), rotary and RMSNorm hook values against float64
 * formulas, positions (rotary is relative: shifting every position changes nothing),
 * resumed-run patching against naive hooked runs, weight processing against TransformerLens's
 * definitions, the GQA accessors, and the config/weights errors.
 */
import assert from "node:assert/strict";
import { ConfigError, InputError, WeightsError } from "../core/errors.ts";
import { parseSafetensors } from "../io/safetensors.ts";
import { forward } from "../model/forward.ts";
import { getActName } from "../model/hook_table.ts";
import { type HookedTransformer, runtimeOf } from "../model/hooked_transformer.ts";
import { HookNames, HookSession } from "../model/hooks.ts";
import { patchedNextTokenLogProbs } from "../model/patching.ts";
import { HookedTransformer as HT } from "../model/hooked_transformer.ts";
import { familyOf } from "../families/registry.ts";
import { MODEL_ALIASES } from "../io/resolve.ts";
import { loadFamily, readFamily } from "./families_fixtures.ts";
import { fixturePath } from "./fixtures.ts";
import { bitsEqual } from "./assertions.ts";

const U = 2 ** -24;
const TOKENS = [[5, 17, 3, 88, 40, 40, 9, 61, 2], [70, 1, 33, 33, 12, 95, 0, 7, 50]];
const DIRS = ["tiny-neox", "tiny-neox-sequential", "tiny-llama", "tiny-qwen2"] as const;

const models = new Map<string, HookedTransformer>();
async function model(dir: string, processed = true): Promise<HookedTransformer> {
  const key = `${dir}:${processed}`;
  if (!models.has(key)) models.set(key, await loadFamily(dir, processed));
  return models.get(key)!;
}

function logSoftmaxAt(row: Float32Array, j: number): number {
  let m = -Infinity;
  for (const v of row) m = Math.max(m, v);
  let s = 0;
  for (const v of row) s += Math.exp(v - m);
  return row[j] - m - Math.log(s);
}

Deno.test("hook names and shapes are TransformerLens's for each family", async () => {
  const neox = await model("tiny-neox");
  const names = new Set(neox.hookNames);
  assert.ok(names.has("blocks.0.attn.hook_rot_q") && names.has("blocks.1.attn.hook_rot_k"));
  assert.ok(!names.has("blocks.0.hook_resid_mid"), "parallel blocks have no resid_mid");
  assert.ok(!names.has("hook_pos_embed"), "rotary models have no pos_embed");
  assert.ok(!names.has("blocks.0.mlp.hook_pre_linear"));
  assert.ok((await model("tiny-neox-sequential")).hookNames.includes("blocks.0.hook_resid_mid"));
  const llama = await model("tiny-llama");
  assert.ok(llama.hookNames.includes("blocks.1.mlp.hook_pre_linear"));
  const { cache } = await llama.runWithCache(TOKENS);
  assert.deepEqual(cache.get("q", 0).shape, [2, 9, 4, 8]);
  assert.deepEqual(cache.get("k", 0).shape, [2, 9, 2, 8], "k has the key/value heads");
  assert.deepEqual(cache.get("v", 1).shape, [2, 9, 2, 8]);
  assert.deepEqual(cache.get("rot_q", 1).shape, [2, 9, 4, 8]);
  assert.deepEqual(cache.get("rot_k", 1).shape, [2, 9, 2, 8]);
  assert.deepEqual(cache.get("pre_linear", 0).shape, [2, 9, 64]);
  assert.deepEqual(cache.get("pattern", 0).shape, [2, 4, 9, 9]);
  assert.deepEqual(cache.get("scale", 0, "ln1").shape, [2, 9, 1]);
});

for (const dir of DIRS) {
  Deno.test(`${dir}: every hook point cached alone equals the full cache, bit for bit`, async () => {
    for (const processed of [true, false]) {
      const m = await model(dir, processed);
      const { cache: full } = await m.runWithCache(TOKENS);
      assert.equal(full.size, m.hookNames.length);
      for (const name of m.hookNames) {
        const { cache } = await m.runWithCache(TOKENS, { namesFilter: [name], returnType: "none" });
        bitsEqual(
          cache.get(name).data,
          full.get(name).data,
          `${dir} ${name} (processed ${processed})`,
        );
      }
    }
  });

  Deno.test(`${dir}: rot_q/rot_k turn q/k by each position's angles (float64 formula)`, async () => {
    const m = await model(dir, false);
    const { cfg } = m;
    const { cache } = await m.runWithCache(TOKENS);
    const r = cfg.rotaryDim, h = r / 2, dh = cfg.dHead;
    for (
      const [name, rot, heads] of [["q", "rot_q", cfg.nHeads], [
        "k",
        "rot_k",
        cfg.nKeyValueHeads,
      ]] as const
    ) {
      for (let l = 0; l < cfg.nLayers; l++) {
        const x = cache.get(name, l).data, y = cache.get(rot, l).data;
        for (let b = 0; b < 2; b++) {
          for (let p = 0; p < 9; p++) {
            for (let hd = 0; hd < heads; hd++) {
              const base = ((b * 9 + p) * heads + hd) * dh;
              for (let j = 0; j < dh; j++) {
                let want = x[base + j];
                if (j < r) {
                  const i = j % h, angle = p * cfg.rotaryBase ** (-2 * i / r);
                  const [c, s] = [Math.cos(angle), Math.sin(angle)];
                  want = j < h
                    ? x[base + j] * c - x[base + j + h] * s
                    : x[base + j] * c + x[base + j - h] * s;
                }
                // cos/sin are float32-rounded (2^-24 each) before the one rounding of the result.
                const tol = 3 * U *
                  (Math.abs(x[base + j]) +
                    (j < r ? Math.abs(x[base + (j < h ? j + h : j - h)]) : 0));
                assert.ok(
                  Math.abs(y[base + j] - want) <= tol,
                  `${dir} ${rot} l${l} b${b} p${p} h${hd} d${j}`,
                );
              }
            }
          }
        }
      }
    }
    assert.ok(cfg.rotaryDim === (dir === "tiny-neox" ? 2 : 8), "rotary_pct 0.25 of 8 dims is 2");
  });

  Deno.test(`${dir}: shifting every position leaves rotary attention unchanged`, async () => {
    const m = await model(dir);
    const rt = runtimeOf(m);
    const run = async (shift: number) => {
      const [batch, T] = [2, 9];
      const out = new Float32Array(batch * T * m.cfg.dVocab);
      await forward(rt, {
        batch,
        T,
        tokens: { data: Int32Array.from(TOKENS.flat()), shape: [batch, T] },
        positions: Int32Array.from({ length: batch * T }, (_, r) => (r % T) + shift),
        unembed: {
          each: async (r0, _n, logits) => out.set(await rt.backend.read(logits), r0 * m.cfg.dVocab),
        },
      }, new HookSession(rt.backend, new HookNames(m.cfg.nLayers)));
      return out;
    };
    const base = await run(0), shifted = await run(13);
    bitsEqual(base, (await m.run(TOKENS)).data, "explicit default positions");
    let diff = 0, spread = 0;
    for (let i = 0; i < base.length; i++) {
      diff = Math.max(diff, Math.abs(base[i] - shifted[i]));
      spread = Math.max(spread, Math.abs(base[i]));
    }
    // Only rounding differs (q.k depends on the relative position): float32 noise, not 1e-2.
    assert.ok(diff < 1e-5 * Math.max(1, spread), `shifted logits moved by ${diff}`);
    await assert.rejects(() => run(m.cfg.nCtx), InputError);
  });

  Deno.test(`${dir}: resumed-run patching equals naive hooked runs`, async () => {
    const m = await model(dir);
    const d = m.cfg.dModel, V = m.cfg.dVocab;
    const toks = TOKENS[0], T = toks.length, from = 3;
    const { cache } = await m.runWithCache([toks]);
    const points = m.cfg.parallelAttnMlp
      ? ["resid_pre", "attn_out", "mlp_out"] as const
      : ["resid_pre", "resid_mid", "attn_out", "mlp_out"] as const;
    for (const point of points) {
      for (const layer of [0, m.cfg.nLayers - 1]) {
        const name = getActName(point, layer);
        const other = cache.get(name).data;
        // Patch position p with the activation of position p - 2, scaled.
        const patches = [3, 5, 8].map((p) => ({
          position: p,
          value: other.slice((p - 2) * d, (p - 1) * d).map((v) => 1.5 * v),
        }));
        const fast = await patchedNextTokenLogProbs(m, [toks], [{ layer, point, patches }], {
          from,
        });
        for (let i = 0; i < patches.length; i++) {
          const p = patches[i];
          const logits = (await m.runWithHooks([toks], {
            fwdHooks: [[name, (a) => void a.data.set(p.value, p.position * d)]],
          }))!.data;
          for (let t = from; t < T - 1; t++) {
            const naive = logSoftmaxAt(logits.subarray(t * V, (t + 1) * V), toks[t + 1]);
            const err = Math.abs(naive - fast.patched[0][i][t]);
            assert.ok(err < 1e-5, `${dir} ${name} p=${p.position} t=${t}: ${err}`);
          }
        }
      }
    }
    if (m.cfg.parallelAttnMlp) {
      await assert.rejects(
        () =>
          patchedNextTokenLogProbs(m, [toks], [{
            layer: 0,
            point: "resid_mid",
            patches: [{ position: 1, value: new Float32Array(d) }],
          }]),
        (e: Error) => e instanceof InputError && /no resid_mid/.test(e.message),
      );
    }
  });
}

Deno.test("RMSNorm hooks: scale = sqrt(mean(x^2) + eps), normalized = x / scale", async () => {
  const m = await model("tiny-qwen2", false);
  const { cache } = await m.runWithCache(TOKENS);
  const d = m.cfg.dModel;
  const x = cache.get("resid_pre", 1).data;
  const scale = cache.get("scale", 1, "ln1").data, norm = cache.get("normalized", 1, "ln1").data;
  for (let r = 0; r < scale.length; r++) {
    let ss = 0;
    for (let j = 0; j < d; j++) ss += x[r * d + j] ** 2;
    const s = Math.sqrt(ss / d + m.cfg.eps);
    assert.ok(Math.abs(scale[r] - s) <= 2 * U * s);
    for (let j = 0; j < d; j++) {
      const want = x[r * d + j] / s;
      assert.ok(Math.abs(norm[r * d + j] - want) <= 2 * U * Math.abs(want) + 1e-45);
    }
  }
});

Deno.test("gated MLP hooks: pre = x W_gate, pre_linear = x W_in, post = silu(pre) * pre_linear", async () => {
  const m = await model("tiny-llama", false);
  const { cache } = await m.runWithCache(TOKENS);
  const pre = cache.get("pre", 0).data, lin = cache.get("pre_linear", 0).data;
  const post = cache.get("post", 0).data;
  for (let i = 0; i < post.length; i++) {
    const want = pre[i] / (1 + Math.exp(-pre[i])) * lin[i];
    assert.ok(Math.abs(post[i] - want) <= 2 * U * Math.abs(want) + 1e-45, `post ${i}`);
  }
  // x W_gate (unprocessed, no bias): ln2's output after its weight times W_gate.
  const x = cache.get("normalized", 0, "ln2").data;
  const file = parseSafetensors(
    await Deno.readFile(`${fixturePath("tiny-llama")}/model.safetensors`),
  );
  const w = file.tensor("model.layers.0.post_attention_layernorm.weight").data;
  const gate = file.tensor("model.layers.0.mlp.gate_proj.weight").data; // [d_mlp, d_model]
  const d = m.cfg.dModel, dMlp = m.cfg.dMlp;
  for (let r = 0; r < 3; r++) {
    for (let k = 0; k < dMlp; k++) {
      let s = 0, abs = 0;
      for (let j = 0; j < d; j++) {
        const t = Math.fround(x[r * d + j] * w[j]) * gate[k * d + j];
        s += t;
        abs += Math.abs(t);
      }
      assert.ok(Math.abs(pre[r * dMlp + k] - s) <= (d + 4) * U * abs, `pre[${r}, ${k}]`);
    }
  }
});

Deno.test("hooks on rot_k and pre_linear patch the run", async () => {
  const m = await model("tiny-llama");
  const clean = (await m.run(TOKENS)).data;
  for (const name of ["blocks.0.attn.hook_rot_k", "blocks.1.mlp.hook_pre_linear"]) {
    const hooked = (await m.runWithHooks(TOKENS, {
      fwdHooks: [[name, (a) => void a.data.fill(0)]],
    }))!;
    assert.notDeepEqual(hooked.data, clean, name);
  }
});

Deno.test("grouped-query accessors: W_K/W_V/b_K/b_V repeat key/value heads as TransformerLens", async () => {
  const m = await model("tiny-qwen2", false);
  const { nLayers: L, nHeads, nKeyValueHeads: nKv, dModel: d, dHead } = m.cfg;
  assert.deepEqual(m.W_K.shape, [L, nHeads, d, dHead]);
  assert.deepEqual(m._W_K.shape, [L, nKv, d, dHead]);
  assert.deepEqual(m.b_V.shape, [L, nHeads, dHead]);
  assert.equal(m.W_K, m.W_K, "built once");
  const group = nHeads / nKv;
  for (
    const [rep, own, size] of [[m.W_K, m._W_K, d * dHead], [m.W_V, m._W_V, d * dHead], [
      m.b_K,
      m._b_K,
      dHead,
    ], [m.b_V, m._b_V, dHead]] as const
  ) {
    for (let l = 0; l < L; l++) {
      for (let h = 0; h < nHeads; h++) {
        const kv = Math.floor(h / group);
        bitsEqual(
          rep.data.subarray((l * nHeads + h) * size, (l * nHeads + h + 1) * size),
          own.data.subarray((l * nKv + kv) * size, (l * nKv + kv + 1) * size),
          `layer ${l} head ${h}`,
        );
      }
    }
  }
  // b_K holds Qwen2's k_proj bias, head by head.
  const file = parseSafetensors(
    await Deno.readFile(`${fixturePath("tiny-qwen2")}/model.safetensors`),
  );
  bitsEqual(
    m._b_K.data.subarray(0, nKv * dHead),
    file.tensor("model.layers.0.self_attn.k_proj.bias").data,
    "b_K",
  );
  const neox = await model("tiny-neox");
  assert.equal(neox.W_K, neox._W_K, "no grouping: the model's own array");
  assert.throws(
    () => neox.W_pos,
    (e: Error) => e instanceof InputError && /rotary/.test(e.message),
  );
  assert.throws(
    () => neox.W_gate,
    (e: Error) => e instanceof InputError && /not gated/.test(e.message),
  );
  assert.deepEqual((await model("tiny-llama")).W_gate.shape, [L, d, 64]);
});

Deno.test("processing as TransformerLens: RMS folds only weights, LN centres writing weights", async () => {
  // Llama (RMS): processed W_Q = ln1.w[i] * W_Q, W_E untouched, W_U centred over the vocabulary.
  const raw = await model("tiny-llama", false), pro = await model("tiny-llama", true);
  assert.equal(pro.cfg.normalizationType, "RMSPre");
  const file = parseSafetensors(
    await Deno.readFile(`${fixturePath("tiny-llama")}/model.safetensors`),
  );
  const w = file.tensor("model.layers.0.input_layernorm.weight").data;
  const { dModel: d, dHead, nHeads, dVocab } = raw.cfg;
  for (let i = 0; i < nHeads * d * dHead; i++) {
    const row = Math.floor(i / dHead) % d;
    assert.equal(pro.W_Q.data[i], Math.fround(raw.W_Q.data[i] * w[row]));
  }
  bitsEqual(pro.W_E.data, raw.W_E.data, "W_E is not centred in an RMSNorm model");
  for (let r = 0; r < d; r++) {
    let s = 0;
    for (let j = 0; j < dVocab; j++) s += pro.W_U.data[r * dVocab + j];
    assert.ok(Math.abs(s / dVocab) < 1e-7, "W_U centred");
  }
  // GPT-NeoX (LN): W_E and W_O are centred over d_model; ln1 folded (LNPre).
  const neox = await model("tiny-neox", true);
  assert.equal(neox.cfg.normalizationType, "LNPre");
  for (const t of [neox.W_E, neox.W_O, neox.W_out]) {
    for (let r = 0; r < t.data.length; r += d) {
      let s = 0;
      for (let j = 0; j < d; j++) s += t.data[r + j];
      assert.ok(Math.abs(s / d) < 1e-7);
    }
  }
  bitsEqual(neox.b_V.data, new Float32Array(neox.b_V.data.length), "value biases folded");
});

Deno.test("config and weight mismatches are typed errors naming the problem", async () => {
  const { config: cfg, bytes } = await readFamily("tiny-llama");
  const load = (c: Record<string, unknown>, b = bytes) => HT.fromBytes(c, b, { threads: 1 });
  await assert.rejects(
    () => load({ ...cfg, rope_scaling: { type: "yarn", factor: 4 } }),
    ConfigError,
  );
  await assert.rejects(() => load({ ...cfg, num_key_value_heads: 3 }), ConfigError);
  await assert.rejects(() => load({ ...cfg, hidden_act: "gelu_10" }), ConfigError);
  await assert.rejects(() => load({ ...cfg, num_hidden_layers: 1 }), /layers/);
  await assert.rejects(
    () => load({ ...cfg, tie_word_embeddings: false, head_dim: 16 }),
    ConfigError,
  );
  // A tied Llama without lm_head loads; an untied one without it is incomplete.
  const { config: qwen, bytes: qwenBytes } = await readFamily("tiny-qwen2");
  await assert.rejects(
    () => load({ ...qwen, tie_word_embeddings: false }, qwenBytes),
    WeightsError,
  );
  await assert.rejects(() => load({ ...qwen, use_sliding_window: true }, qwenBytes), ConfigError);
  const { config: neox, bytes: neoxBytes } = await readFamily("tiny-neox");
  await assert.rejects(
    () => load({ ...neox, rotary_pct: 0.5 }, neoxBytes),
    (e: Error) => e instanceof ConfigError && /inv_freq/.test(e.message),
  );
  await assert.rejects(
    () => load({ ...neox, model_type: "gpt_j" }, neoxBytes),
    /model_type "gpt_j"/,
  );
  assert.equal(familyOf(neox).name, "GPT-NeoX");
  // Llama 3 scaling: low frequencies slowed by the factor, high ones kept.
  const scaled = await load({
    ...cfg,
    rope_scaling: {
      rope_type: "llama3",
      factor: 8,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 16,
    },
  });
  assert.equal(scaled.cfg.useNTKByPartsRope, true);
  assert.equal(scaled.cfg.NTKByPartsFactor, 8);
  scaled.dispose();
});

Deno.test("TransformerLens's names of the families resolve to their hub repositories", () => {
  assert.equal(MODEL_ALIASES["pythia-70m"], "EleutherAI/pythia-70m");
  assert.equal(MODEL_ALIASES["pythia-1b"], "EleutherAI/pythia-1b");
  assert.equal(MODEL_ALIASES["pythia-70m-deduped"], "EleutherAI/pythia-70m-deduped");
  assert.equal(MODEL_ALIASES["qwen2.5-0.5b"], "Qwen/Qwen2.5-0.5B");
  for (const id of ["Qwen/Qwen2.5-0.5B", "HuggingFaceTB/SmolLM2-135M", "meta-llama/Llama-3.2-1B"]) {
    assert.equal(MODEL_ALIASES[id], id);
  }
});

Deno.test("deno task experiments runs the study on a Llama folder and names the family", async () => {
  const out = await Deno.makeTempDir();
  try {
    const run = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../experiments/run.ts", import.meta.url).pathname,
        "--model",
        fixturePath("tiny-llama"),
        "--seq-len",
        "6",
        "--batch",
        "2",
        "--out",
        out,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(run.stderr);
    assert.equal(run.code, 0, stderr);
    assert.match(stderr, /Llama, 2 layers x 4 heads/);
    const results = JSON.parse(await Deno.readTextFile(`${out}/results.json`));
    assert.equal(results.model.config.family, "Llama");
    assert.equal(results.model.config.originalArchitecture, "LlamaForCausalLM");
    assert.match(
      await Deno.readTextFile(`${out}/report.html`),
      /<span class="family">Llama<\/span>/,
    );
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test({
  name: "close the models",
  fn() {
    for (const m of models.values()) m.dispose();
  },
});
