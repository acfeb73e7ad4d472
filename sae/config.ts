/**
 * A sparse autoencoder's (or transcoder's) configuration, as SAELens's `cfg.json` gives it,
 * camelCased: the v6 form (`metadata` holding where the SAE reads), and the older flat form with
 * its keys renamed as SAELens renames them on load (`hook_point` -> `hook_name`,
 * `activation_fn_str` -> the architecture, ...).
 * @module
 */
import { ConfigError } from "../core/errors.ts";

/** The architectures SAELens computes at inference. */
export type SaeArchitecture =
  | "standard"
  | "jumprelu"
  | "topk"
  | "gated"
  | "transcoder"
  | "jumprelu_transcoder";

/** SAELens's `normalize_activations` settings. */
export type NormalizeActivations =
  | "none"
  | "expected_average_only_in"
  | "constant_norm_rescale"
  | "layer_norm";

/** SAELens's `reshape_activations` settings. */
export type ReshapeActivations = "none" | "hook_z";

/** The architectures, in SAELens's spelling. */
export const SAE_ARCHITECTURES: readonly SaeArchitecture[] = [
  "standard",
  "jumprelu",
  "topk",
  "gated",
  "transcoder",
  "jumprelu_transcoder",
];

const NORMALIZATIONS: readonly NormalizeActivations[] = [
  "none",
  "expected_average_only_in",
  "constant_norm_rescale",
  "layer_norm",
];

/** A sparse autoencoder's settings (SAELens's `cfg`, camelCased). */
export interface SaeConfig {
  /** How features are computed from the input. */
  architecture: SaeArchitecture;
  /** Width of the input (for `hook_z` SAEs: n_heads * d_head). */
  dIn: number;
  /** Number of features. */
  dSae: number;
  /** Width of the output: dIn, except for transcoders. */
  dOut: number;
  /** Subtract b_dec from the input before encoding (never for transcoders). */
  applyBDecToInput: boolean;
  /** Run-time normalisation of the input (and the output's inverse). */
  normalizeActivations: NormalizeActivations;
  /** `hook_z`: the SAE reads attention's z with its heads concatenated. */
  reshapeActivations: ReshapeActivations;
  /** The hook point the SAE reads (and, unless a transcoder, writes). */
  hookName: string;
  /** A transcoder's output hook point (else undefined). */
  hookNameOut?: string;
  /** SAELens's `hook_head_index` (null: all heads). */
  hookHeadIndex: number | null;
  /** Top-k SAEs: features kept per position. */
  k?: number;
  /** Top-k SAEs: select and scale activations by the decoder rows' norms. */
  rescaleActsByDecoderNorm?: boolean;
  /** The model the SAE was trained on, as SAELens names it. */
  modelName?: string;
  /** Whether the training text started with BOS. */
  prependBos?: boolean;
  /** The training context length. */
  contextSize?: number;
  /** The stored dtype (informational: this library computes in float32). */
  dtype: string;
  /** The config as it was read (snake_case keys, after SAELens's renames), for what is not above. */
  raw: Readonly<Record<string, unknown>>;
}

/** Renames SAELens applies to older (pre-v6, flat) configs on load. */
const OLD_KEY_RENAMES: Readonly<Record<string, string>> = {
  hook_point: "hook_name",
  hook_point_layer: "hook_layer",
  hook_point_head_index: "hook_head_index",
  activation_fn_str: "activation_fn",
};

/** Keys that v6 keeps in `metadata`. */
const METADATA_KEYS = [
  "model_name",
  "hook_name",
  "hook_head_index",
  "hook_name_out",
  "hook_head_index_out",
  "prepend_bos",
  "context_size",
  "model_class_name",
  "hook_layer",
];

/** Whether a version string's major part is at least 6. */
function isV6(version: unknown): boolean {
  if (typeof version !== "string") return false;
  const major = Number(version.split(".")[0]);
  return Number.isFinite(major) && major >= 6;
}

/**
 * Parses a SAELens `cfg.json` (already JSON-decoded). A config with `sae_lens_version` >= 6 (at
 * top level or in `metadata`) is read in the v6 form; any other is the older flat form, whose keys
 * are renamed as SAELens renames them (`hook_point` -> `hook_name`, `activation_fn_str` ->
 * `activation_fn`, `activation_fn: "topk"` with `activation_fn_kwargs.k` -> the topk
 * architecture, a missing `normalize_activations` -> `"none"`, `true` -> the expected-average
 * scaling). Throws a {@link ConfigError} naming the field for anything missing or malformed.
 *
 * @param json The decoded `cfg.json`.
 * @param fileName Used in messages.
 *
 * @example
 * ```ts
 * import { parseSaeConfig } from "./config.ts";
 * // An older (SAELens 2-5) config, as gpt2-small-res-jb's are stored
 * const cfg = parseSaeConfig({
 *   d_in: 768, d_sae: 24576, hook_point: "blocks.8.hook_resid_pre",
 *   activation_fn_str: "relu", apply_b_dec_to_input: true, dtype: "torch.float32",
 * });
 * cfg.architecture; // "standard"
 * cfg.hookName; // "blocks.8.hook_resid_pre"
 * ```
 */
export function parseSaeConfig(json: unknown, fileName = "cfg.json"): SaeConfig {
  const fail = (what: string): never => {
    throw new ConfigError(`${fileName}: ${what}`);
  };
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    fail("expected a JSON object (a SAELens cfg.json)");
  }
  const src = json as Record<string, unknown>;
  const meta = src.metadata;
  if (meta !== undefined && meta !== null && (typeof meta !== "object" || Array.isArray(meta))) {
    fail(`"metadata" must be an object, got ${JSON.stringify(meta)}`);
  }
  const metadata = (meta ?? {}) as Record<string, unknown>;
  const v6 = isV6(src.sae_lens_version) || isV6(metadata.sae_lens_version);
  // One flat record: v6 lifts metadata's keys; older configs get SAELens's renames.
  const raw: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(src)) {
    if (k === "metadata") continue;
    raw[v6 ? k : (OLD_KEY_RENAMES[k] ?? k)] = v;
  }
  if (v6 || meta) {
    for (const k of METADATA_KEYS) if (k in metadata && !(k in raw)) raw[k] = metadata[k];
  }
  if (!v6) {
    if (raw.architecture === undefined) {
      const act = raw.activation_fn;
      const kwargs = raw.activation_fn_kwargs as Record<string, unknown> | undefined;
      if (act === "topk") {
        raw.architecture = "topk";
        if (raw.k === undefined && kwargs && typeof kwargs === "object") raw.k = kwargs.k;
      } else if (act === undefined || act === "relu") raw.architecture = "standard";
      else {
        fail(
          `activation_fn ${JSON.stringify(act)} is not one SAELens loads (relu or topk); set ` +
            `"architecture" explicitly`,
        );
      }
    }
    // SAELens's defaulting: normalize_activations missing -> "none"; older booleans
    if (raw.normalize_activations === undefined || raw.normalize_activations === false) {
      raw.normalize_activations = "none";
    } else if (raw.normalize_activations === true) {
      raw.normalize_activations = "expected_average_only_in";
    }
  }

  const int = (key: string, min = 1): number => {
    const v = raw[key];
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > 2 ** 31 - 1) {
      fail(`"${key}" must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    }
    return v as number;
  };
  const bool = (key: string, dflt: boolean): boolean => {
    const v = raw[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== "boolean") fail(`"${key}" must be true or false, got ${JSON.stringify(v)}`);
    return v as boolean;
  };
  const str = (key: string, required: boolean): string | undefined => {
    const v = raw[key];
    if (v === undefined || v === null) {
      if (required) fail(`"${key}" is missing: the hook point the SAE reads`);
      return undefined;
    }
    if (typeof v !== "string" || v.length === 0 || v.length > 200) {
      fail(`"${key}" must be a non-empty string, got ${JSON.stringify(v)}`);
    }
    return v as string;
  };

  const architecture = (raw.architecture ?? "standard") as SaeArchitecture;
  if (!SAE_ARCHITECTURES.includes(architecture)) {
    fail(
      `architecture ${JSON.stringify(raw.architecture)} is not one of ${
        SAE_ARCHITECTURES.join(", ")
      }`,
    );
  }
  const transcoder = architecture === "transcoder" || architecture === "jumprelu_transcoder";
  const dIn = int("d_in");
  const dSae = int("d_sae");
  const dOut = transcoder && raw.d_out !== undefined ? int("d_out") : dIn;
  const norm = (raw.normalize_activations ?? "none") as NormalizeActivations;
  if (!NORMALIZATIONS.includes(norm)) {
    fail(
      `normalize_activations ${JSON.stringify(raw.normalize_activations)} is not one of ${
        NORMALIZATIONS.join(", ")
      }`,
    );
  }
  const reshape = raw.reshape_activations ?? "none";
  if (reshape !== "none" && reshape !== "hook_z") {
    fail(`reshape_activations ${JSON.stringify(reshape)} is not "none" or "hook_z"`);
  }
  const hookName = str("hook_name", true)!;
  const hookNameOut = transcoder ? str("hook_name_out", true) : undefined;
  if (reshape === "hook_z" && !hookName.endsWith("hook_z")) {
    fail(`reshape_activations "hook_z" needs a hook_z hook point, but hook_name is ${hookName}`);
  }
  const head = raw.hook_head_index;
  if (
    head !== undefined && head !== null && (typeof head !== "number" || !Number.isInteger(head))
  ) {
    fail(`"hook_head_index" must be null or an integer, got ${JSON.stringify(head)}`);
  }
  if (typeof head === "number") {
    fail(
      `hook_head_index ${head}: SAEs on a single head are not supported; use an SAE on all ` +
        `heads (reshape_activations "hook_z")`,
    );
  }
  const cfg: SaeConfig = {
    architecture,
    dIn,
    dSae,
    dOut,
    applyBDecToInput: transcoder ? false : bool("apply_b_dec_to_input", true),
    normalizeActivations: norm,
    reshapeActivations: reshape as ReshapeActivations,
    hookName,
    hookHeadIndex: null,
    dtype: typeof raw.dtype === "string" ? raw.dtype : "float32",
    raw,
  };
  if (hookNameOut !== undefined) cfg.hookNameOut = hookNameOut;
  if (architecture === "topk") {
    cfg.k = int("k");
    if (cfg.k > dSae) fail(`k = ${cfg.k} is more than d_sae = ${dSae}`);
    cfg.rescaleActsByDecoderNorm = bool("rescale_acts_by_decoder_norm", false);
  }
  if (typeof raw.model_name === "string") cfg.modelName = raw.model_name;
  if (typeof raw.prepend_bos === "boolean") cfg.prependBos = raw.prepend_bos;
  if (typeof raw.context_size === "number") cfg.contextSize = raw.context_size;
  return cfg;
}
