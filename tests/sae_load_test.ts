/**
 * Loading SAEs: SAELens folders and Gemma Scope npz files from a path, a URL and a loopback hub
 * (a repository with several SAEs in subfolders and an npz, through the hub cache: a second load
 * offline comes from the cache), the release registry with the expected-average folding, older
 * configs' renamed keys, and the typed errors of what cannot load.
 */
import assert from "node:assert/strict";
import {
  ConfigError,
  HookedTransformer,
  LensError,
  ModelNotFoundError,
  parseSaeConfig,
  registerSaeRelease,
  SAE,
  WeightsError,
} from "../mod.ts";
import { WasmBackend } from "../backend/wasm/wasm_backend.ts";
import { fixturePath } from "./fixtures.ts";
import { startFakeHub } from "./hub_server.ts";

const backend = await WasmBackend.load({ threads: 1 });
const SAES = fixturePath("sae");
// deno-lint-ignore no-explicit-any
const G: any = JSON.parse(Deno.readTextFileSync(fixturePath("sae/sae-golden.json")));

function sameWeights(a: SAE, b: SAE) {
  assert.deepEqual(a.cfg.architecture, b.cfg.architecture);
  assert.deepEqual(a.W_enc.data, b.W_enc.data);
  assert.deepEqual(a.W_dec.data, b.W_dec.data);
  assert.deepEqual(a.b_dec.data, b.b_dec.data);
  assert.deepEqual(a.threshold?.data, b.threshold?.data);
}

/** The loopback hub's repository: three SAELens folders and a Gemma Scope npz. */
function repoFiles(): Record<string, Uint8Array> {
  const files: Record<string, Uint8Array> = {};
  for (const name of ["standard", "jumprelu", "topk-rescale", "norm-expected-average"]) {
    for (const f of ["cfg.json", "sae_weights.safetensors"]) {
      files[`${name}/${f}`] = Deno.readFileSync(`${SAES}/${name}/${f}`);
    }
  }
  files["layer_1/width_16k/average_l0_5/params.npz"] = Deno.readFileSync(
    `${SAES}/gemma-scope/params.npz`,
  );
  return files;
}

async function withHub(body: (endpoint: string, cacheDir: string) => Promise<void>) {
  const empty = await Deno.makeTempDir({ prefix: "sae_hub_repo_" });
  const cacheDir = await Deno.makeTempDir({ prefix: "sae_hub_cache_" });
  const hub = await startFakeHub({ repoId: "test/saes", dir: empty, extraFiles: repoFiles() });
  try {
    await body(hub.endpoint, cacheDir);
  } finally {
    await hub.close();
    await Deno.remove(cacheDir, { recursive: true });
    await Deno.remove(empty, { recursive: true });
  }
}

Deno.test("the hub: SAEs in subfolders and a Gemma Scope npz, then again from the cache", async () => {
  await withHub(async (endpoint, cacheDir) => {
    const hubOpts = { endpoint, cacheDir, backend, progress: false };
    for (const name of ["standard", "jumprelu", "topk-rescale"]) {
      const fromHub = await SAE.loadFromDisk({ repo: "test/saes", path: name }, hubOpts);
      sameWeights(fromHub, await SAE.loadFromDisk(`${SAES}/${name}`, { backend }));
      const cached = await SAE.loadFromDisk({ repo: "test/saes", path: name }, {
        ...hubOpts,
        offline: true,
      });
      sameWeights(cached, fromHub);
    }
    const path = "layer_1/width_16k/average_l0_5/params.npz";
    const npz = await SAE.loadFromDisk({ repo: "test/saes", path }, {
      ...hubOpts,
      hookName: "blocks.1.hook_resid_post",
    });
    assert.equal(npz.cfg.architecture, "jumprelu");
    assert.equal(npz.cfg.applyBDecToInput, false);
    sameWeights(
      npz,
      await SAE.loadFromDisk(`${SAES}/gemma-scope/params.npz`, {
        backend,
        hookName: "blocks.1.hook_resid_post",
      }),
    );
    // Not in the repository: a typed error naming the file.
    await assert.rejects(
      SAE.loadFromDisk({ repo: "test/saes", path: "missing" }, hubOpts),
      ModelNotFoundError,
    );
  });
});

Deno.test("SAE.fromPretrained: a registered release, the npz's hook point, the folding", async () => {
  await withHub(async (endpoint, cacheDir) => {
    const s = G.saes["norm-expected-average"].folded.norm_scaling_factor;
    registerSaeRelease("test-release", {
      repo: "test/saes",
      model: "tiny-hf-f32",
      path: (id) =>
        id === "gemma"
          ? "layer_1/width_16k/average_l0_5/params.npz"
          : id.includes("/")
          ? undefined
          : id,
      hookName: (id) => (id === "gemma" ? "blocks.1.hook_resid_post" : undefined),
      normScalingFactor: (id) => (id === "norm-expected-average" ? s : undefined),
      exampleIds: ["standard"],
    });
    const opts = { endpoint, cacheDir, backend, progress: false };
    const folded = await SAE.fromPretrained("test-release", "norm-expected-average", opts);
    assert.equal(folded.cfg.normalizeActivations, "none");
    const raw = await SAE.loadFromDisk(`${SAES}/norm-expected-average`, { backend });
    assert.equal(raw.cfg.normalizeActivations, "expected_average_only_in");
    assert.ok(
      Math.abs(folded.W_enc.data[5] - raw.W_enc.data[5] * s) <=
        1e-6 * Math.abs(raw.W_enc.data[5] * s),
    );
    assert.ok(
      Math.abs(folded.b_dec.data[3] - raw.b_dec.data[3] / s) <=
        1e-6 * Math.abs(raw.b_dec.data[3] / s),
    );
    const gemma = await SAE.fromPretrained("test-release", "gemma", opts);
    assert.equal(gemma.cfg.hookName, "blocks.1.hook_resid_post");
    await assert.rejects(
      SAE.fromPretrained("test-releas", "standard", opts),
      ModelNotFoundError,
      "did you mean",
    );
    await assert.rejects(
      SAE.fromPretrained("test-release", "a/b", opts),
      ModelNotFoundError,
      "no SAE",
    );
  });
});

Deno.test("a URL folder loads like the local one", async () => {
  await withHub(async (endpoint) => {
    const url = `${endpoint}/test/saes/resolve/main/jumprelu`;
    sameWeights(
      await SAE.loadFromDisk(url, { backend }),
      await SAE.loadFromDisk(`${SAES}/jumprelu`, { backend }),
    );
  });
});

Deno.test("the Gemma Scope npz with lower-case keys loads as the upper-case one", async () => {
  const opts = { backend, hookName: "blocks.1.hook_resid_post" };
  sameWeights(
    await SAE.loadFromDisk(`${SAES}/gemma-scope-lowercase-keys/params.npz`, opts),
    await SAE.loadFromDisk(`${SAES}/gemma-scope/params.npz`, opts),
  );
  await assert.rejects(
    SAE.loadFromDisk(`${SAES}/gemma-scope/params.npz`, { backend }),
    ConfigError,
    "hookName",
  );
});

Deno.test("older SAELens configs: keys renamed as SAELens renames them", () => {
  const old = parseSaeConfig({
    d_in: 768,
    d_sae: 24576,
    dtype: "torch.float32",
    model_name: "gpt2-small",
    hook_point: "blocks.8.hook_resid_pre",
    hook_point_layer: 8,
    hook_point_head_index: null,
    activation_fn_str: "relu",
    apply_b_dec_to_input: true,
    context_size: 128,
    prepend_bos: true,
  });
  assert.equal(old.hookName, "blocks.8.hook_resid_pre");
  assert.equal(old.architecture, "standard");
  assert.equal(old.normalizeActivations, "none");
  assert.equal(old.raw.hook_layer, 8);
  const topk = parseSaeConfig({
    d_in: 8,
    d_sae: 16,
    hook_name: "blocks.0.hook_mlp_out",
    activation_fn: "topk",
    activation_fn_kwargs: { k: 3 },
    normalize_activations: true,
  });
  assert.equal(topk.architecture, "topk");
  assert.equal(topk.k, 3);
  assert.equal(topk.normalizeActivations, "expected_average_only_in");
  // v6: metadata holds the hook point; sae_lens_version decides the form
  const v6 = parseSaeConfig(JSON.parse(Deno.readTextFileSync(`${SAES}/transcoder/cfg.json`)));
  assert.equal(v6.architecture, "transcoder");
  assert.equal(v6.hookNameOut, "blocks.1.hook_mlp_out");
});

Deno.test("configs and weights that cannot work are typed errors", async () => {
  const base = { d_in: 4, d_sae: 8, hook_name: "blocks.0.hook_resid_pre" };
  for (
    const bad of [
      null,
      [],
      { ...base, d_in: 0 },
      { ...base, d_sae: 1.5 },
      { ...base, architecture: "sparse" },
      { ...base, hook_name: undefined },
      { ...base, normalize_activations: "max" },
      { ...base, reshape_activations: "hook_z" },
      { ...base, architecture: "topk", k: 9 },
      { ...base, architecture: "transcoder" },
      { ...base, activation_fn: "tanh" },
      { ...base, metadata: 3 },
      { ...base, hook_head_index: 2 },
    ]
  ) {
    assert.throws(() => parseSaeConfig(bad), ConfigError, JSON.stringify(bad));
  }
  const t = (n: number, shape: number[]) => ({ data: new Float32Array(n), shape });
  await assert.rejects(
    SAE.fromTensors(base, {
      W_enc: t(32, [4, 8]),
      W_dec: t(32, [4, 8]),
      b_dec: t(4, [4]),
      b_enc: t(8, [8]),
    }, {
      backend,
    }),
    WeightsError,
    "W_dec",
  );
  await assert.rejects(
    SAE.fromTensors({ ...base, architecture: "jumprelu" }, {
      W_enc: t(32, [4, 8]),
      W_dec: t(32, [8, 4]),
      b_dec: t(4, [4]),
      b_enc: t(8, [8]),
    }, { backend }),
    WeightsError,
    "threshold",
  );
  await assert.rejects(SAE.loadFromDisk(`${SAES}/nowhere`, { backend }), ModelNotFoundError);
});

Deno.test("splicing refuses an SAE whose hook point the model lacks, and a width that differs", async () => {
  const dir = fixturePath("tiny-hf-f32");
  const model = await HookedTransformer.fromBytes(
    JSON.parse(await Deno.readTextFile(`${dir}/config.json`)),
    await Deno.readFile(`${dir}/model.safetensors`),
    { threads: 1, backend },
  );
  const t = (n: number, shape: number[]) => ({ data: new Float32Array(n).fill(0.1), shape });
  const w = (dIn: number) => ({
    W_enc: t(dIn * 8, [dIn, 8]),
    W_dec: t(8 * dIn, [8, dIn]),
    b_dec: t(dIn, [dIn]),
    b_enc: t(8, [8]),
  });
  const far = await SAE.fromTensors(
    { d_in: 32, d_sae: 8, hook_name: "blocks.7.hook_resid_pre" },
    w(32),
    {
      backend,
    },
  );
  assert.throws(() => model.addSae(far), LensError);
  const wide = await SAE.fromTensors(
    { d_in: 5, d_sae: 8, hook_name: "blocks.0.hook_resid_pre" },
    w(5),
    {
      backend,
    },
  );
  model.addSae(wide);
  await assert.rejects(model.run([[1, 2, 3]]), LensError);
  model.resetSaes();
  await model.run([[1, 2, 3]]); // works again
});
