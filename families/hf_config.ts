/**
 * Reading Hugging Face checkpoints, shared by the family modules: typed `config.json` fields
 * (each wrong value a {@linkcode ConfigError} naming the field), the activation and rotary
 * settings in both the transformers v4 and v5 spellings, and checked tensor reads that turn HF's
 * [out, in] linear weights into TransformerLens's per-head layouts.
 * @module
 */
import { ConfigError, WeightsError } from "../core/errors.ts";
import { transpose2d } from "../core/tensor.ts";
import type { ActivationFunction, HookedTransformerConfig } from "../model/config.ts";
import { NO_ROTARY } from "../model/config.ts";
import type { TensorSource } from "../io/tensor_source.ts";

export type { TensorSource } from "../io/tensor_source.ts";

/** An HF `config.json` object, checked to be one. */
export type HfConfig = Record<string, unknown>;

/** Throws unless `hf` is a JSON object. */
export function assertHfConfig(hf: unknown): asserts hf is HfConfig {
  if (typeof hf !== "object" || hf === null || Array.isArray(hf)) {
    throw new ConfigError("config.json must be a JSON object");
  }
}

/** A positive integer field (`fallback` when absent or null; required without one). */
export function intField(hf: HfConfig, key: string, family: string, fallback?: number): number {
  const v = hf[key];
  if (v === undefined || v === null) {
    if (fallback !== undefined) return fallback;
    throw new ConfigError(`config.json has no "${key}": is this a ${family} config?`);
  }
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0 || v > 2 ** 31 - 1) {
    throw new ConfigError(
      `config.json field "${key}" must be a positive integer, got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

/** A finite number field in (min, max) (`fallback` when absent or null; required without one). */
export function numberField(
  hf: HfConfig,
  key: string,
  fallback: number | undefined,
  [min, max]: [number, number] = [0, Infinity],
): number {
  const v = hf[key] ?? fallback;
  if (v === undefined) throw new ConfigError(`config.json has no "${key}"`);
  if (typeof v !== "number" || !Number.isFinite(v) || !(v > min && v < max)) {
    throw new ConfigError(
      `config.json field "${key}" must be a number in (${min}, ${max}), got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

/** A boolean field (`fallback` when absent or null). */
export function boolField(hf: HfConfig, key: string, fallback: boolean): boolean {
  const v = hf[key] ?? fallback;
  if (typeof v !== "boolean") {
    throw new ConfigError(`config.json field "${key}" must be true or false, got ${v}`);
  }
  return v;
}

/** HF's activation names and the function each one is (gelu_new's tanh approximations alike). */
const ACTIVATIONS: Record<string, ActivationFunction> = {
  gelu: "gelu",
  gelu_new: "gelu_new",
  gelu_pytorch_tanh: "gelu_new",
  gelu_fast: "gelu_new",
  silu: "silu",
  swish: "silu",
  relu: "relu",
};

/** The MLP activation of `hidden_act`. */
export function activationField(hf: HfConfig, fallback: string): ActivationFunction {
  const v = hf.hidden_act ?? fallback;
  const act = typeof v === "string" ? ACTIVATIONS[v] : undefined;
  if (!act) {
    throw new ConfigError(
      `hidden_act ${JSON.stringify(v)} is not supported; supported: ` +
        Object.keys(ACTIVATIONS).join(", "),
    );
  }
  return act;
}

/**
 * The BOS and EOS ids: config.json's, else the HF config class's defaults (`defaults`), else the
 * EOS as BOS; the first EOS when config.json lists several, as Llama 3's do.
 */
export function tokenIds(
  hf: HfConfig,
  dVocab: number,
  defaults: { bos?: number; eos?: number } = {},
): { bosTokenId: number; eosTokenId: number | null } {
  const eosList = Array.isArray(hf.eos_token_id) ? hf.eos_token_id : [hf.eos_token_id];
  const eos = eosList[0] ?? defaults.eos ?? null;
  const bos = hf.bos_token_id ?? defaults.bos ?? eos;
  for (const [key, id] of [["bos_token_id", bos], ["eos_token_id", eos]] as const) {
    if (id === null && key === "eos_token_id") continue;
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id >= dVocab) {
      throw new ConfigError(
        id === null
          ? "config.json gives no bos_token_id (nor eos_token_id): the BOS token is unknown"
          : `${key} ${JSON.stringify(id)} is outside the vocabulary [0, ${dVocab})`,
      );
    }
  }
  return { bosTokenId: bos as number, eosTokenId: eos as number | null };
}

/** The rotary fields of a config whose heads turn their first `rotaryDim` dims. */
export type RotaryFields = Pick<HookedTransformerConfig, keyof typeof NO_ROTARY>;

/**
 * Rotary settings: the base (`rope_theta`, else `baseKey`, else transformers v5's
 * `rope_parameters.rope_theta`) and the frequency scaling (`rope_scaling`, or v5's
 * `rope_parameters`): none, "default", or "llama3" (TransformerLens's NTK-by-parts). Other
 * scalings (linear, dynamic, yarn, longrope) are a ConfigError rather than silently wrong
 * positions.
 */
export function rotaryFields(hf: HfConfig, rotaryDim: number, baseKey?: string): RotaryFields {
  const params = objectOrNull(hf, "rope_parameters");
  const [key, theta] = hf.rope_theta != null
    ? ["rope_theta", hf.rope_theta]
    : baseKey && hf[baseKey] != null
    ? [baseKey, hf[baseKey]]
    : ["rope_parameters.rope_theta", params?.rope_theta ?? 10000];
  const rotaryBase = numberField({ [key]: theta }, key, undefined, [1, Infinity]);
  const scaling = objectOrNull(hf, "rope_scaling") ?? params;
  const type = scaling?.rope_type ?? scaling?.type ?? "default";
  const fields: RotaryFields = { ...NO_ROTARY, rotaryDim, rotaryBase };
  if (type === "default") return fields;
  if (type !== "llama3") {
    throw new ConfigError(
      `rope_scaling of type ${JSON.stringify(type)} is not supported; supported: none, ` +
        `"default", "llama3"`,
    );
  }
  const s = scaling as HfConfig;
  return {
    ...fields,
    useNTKByPartsRope: true,
    NTKByPartsFactor: numberField(s, "factor", undefined),
    NTKByPartsLowFreqFactor: numberField(s, "low_freq_factor", undefined),
    NTKByPartsHighFreqFactor: numberField(s, "high_freq_factor", undefined),
    NTKOriginalCtxLen: intField(s, "original_max_position_embeddings", "Llama 3 rope_scaling"),
  };
}

function objectOrNull(hf: HfConfig, key: string): HfConfig | null {
  const v = hf[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== "object" || Array.isArray(v)) {
    throw new ConfigError(`config.json field "${key}" must be an object or null`);
  }
  return v as HfConfig;
}

/**
 * The most layers a config may declare before its weights are seen: far past any real model (the
 * deepest have a few hundred), low enough that a family's per-layer config arrays (Gemma's
 * attention types) cost nothing. `num_hidden_layers: 1e9` is then a ConfigError at once, where
 * it took 30 s and 1.4 GB to end in a RangeError; {@link checkSizesFitWeights} then checks the
 * layers against the tensors.
 *
 * @example
 * ```ts
 * import { MAX_CONFIG_LAYERS } from "./hf_config.ts";
 * MAX_CONFIG_LAYERS; // 65536
 * ```
 */
export const MAX_CONFIG_LAYERS = 65_536;

/**
 * Checks, before anything is allocated, that the config's sizes could be those of the weights: the
 * embedding and the block matrices a config implies (each layer's Q, K, V, O and MLP in and out)
 * must hold no more values than all of the checkpoint's tensors together, whose shapes are read
 * from its header, not its data. `n_layer: 1e9` with tiny weights, or `intermediate_size` 2^31-1,
 * is then a ConfigError naming the sizes, instead of a RangeError from a huge allocation; the
 * tensor-by-tensor shape checks that follow say which tensor disagrees.
 *
 * @example
 * ```ts
 * import { checkSizesFitWeights } from "./hf_config.ts";
 * import { gpt2Config } from "./gpt2.ts";
 * import { parseSafetensors } from "../io/safetensors.ts";
 * import { syntheticGpt2 } from "../weights/synthetic.ts";
 * const { config, weights } = syntheticGpt2({ nLayers: 1, nHeads: 2, dModel: 8, dVocab: 16, nCtx: 8, seed: 0 });
 * checkSizesFitWeights(gpt2Config(config), parseSafetensors(weights), "GPT-2"); // fits: no error
 * ```
 */
export function checkSizesFitWeights(
  cfg: HookedTransformerConfig,
  file: TensorSource,
  family: string,
): void {
  const { nLayers: L, nHeads: h, nKeyValueHeads: kv, dModel: d, dHead: dh, dMlp, dVocab } = cfg;
  // Float64 arithmetic: exact far past any real model, and never an overflow.
  const implied = dVocab * d + L * (d * dh * (h + 2 * kv) + h * dh * d + 2 * d * dMlp);
  let available = 0;
  for (const name of file.names()) available += file.info(name).shape.reduce((a, b) => a * b, 1);
  if (implied > available) {
    throw new ConfigError(
      `config.json describes a ${family} of ${L} layers, d_model ${d}, ${h} heads of ${dh}, ` +
        `d_mlp ${dMlp} and ${dVocab} tokens: at least ${implied} weights, but the checkpoint ` +
        `holds ${available} values in all: the config does not match the weights`,
    );
  }
}

/**
 * Checked reads of one checkpoint: every tensor must be present with the shape the config
 * implies (a missing one is a {@linkcode WeightsError}, a wrong shape a {@linkcode ConfigError}),
 * and no tensor may belong to a layer the config does not have.
 */
export class CheckpointReader {
  /**
   * @param file The checkpoint.
   * @param family The family's name, for messages ("GPT-NeoX", "Llama").
   * @param cfg The config the tensors must match.
   * @param layerKey Matches a layer tensor's name and captures its layer index.
   */
  constructor(
    readonly file: TensorSource,
    readonly family: string,
    readonly cfg: HookedTransformerConfig,
    layerKey: RegExp,
  ) {
    checkSizesFitWeights(cfg, file, family);
    for (const name of file.names()) {
      const m = layerKey.exec(name);
      if (m && Number(m[1]) >= cfg.nLayers) {
        throw new ConfigError(
          `weights have tensor "${name}" but config.json says ${cfg.nLayers} layers: the ` +
            `config does not match the weights`,
        );
      }
    }
  }

  /** Whether the checkpoint has this tensor. */
  has(name: string): boolean {
    return this.file.has(name);
  }

  /** The tensor's values, checked against `shape`. */
  read(name: string, shape: number[]): Float32Array {
    if (!this.file.has(name)) {
      throw new WeightsError(
        `weights have no tensor "${name}" (expected shape [${shape}] for a ${this.family} with ` +
          `${this.cfg.nLayers} layers): the file is not a complete ${this.family} checkpoint`,
      );
    }
    const info = this.file.info(name);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new ConfigError(
        `tensor "${name}" has shape [${info.shape}] but config.json implies [${shape}]: the ` +
          `config does not match the weights`,
      );
    }
    return this.file.tensor(name).data;
  }
}

/**
 * An HF linear weight [rows, d_in] whose rows `firstRow + h * rowStep ..< + dHead` are head h, as
 * TransformerLens's [heads, d_in, d_head], written into `out`.
 *
 * @example
 * ```ts
 * import { linearToHeads } from "./hf_config.ts";
 * // q_proj of 2 heads of width 1 over d_in 2: rows are heads, columns inputs.
 * const out = new Float32Array(4);
 * linearToHeads(new Float32Array([1, 2, 3, 4]), 2, 2, 1, out);
 * out; // Float32Array [1, 2, 3, 4]: W_Q[h, i, 0] = q_proj[h, i]
 * ```
 */
export function linearToHeads(
  w: Float32Array,
  dIn: number,
  heads: number,
  dHead: number,
  out: Float32Array,
  firstRow = 0,
  rowStep = dHead,
): void {
  for (let h = 0; h < heads; h++) {
    const r0 = firstRow + h * rowStep;
    out.set(transpose2d(w.subarray(r0 * dIn, (r0 + dHead) * dIn), dHead, dIn), h * dIn * dHead);
  }
}
