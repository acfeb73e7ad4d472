/**
 * Sparse autoencoders and transcoders with SAELens's semantics: `SAE.loadFromDisk`,
 * `SAE.fromPretrained`, `encode` / `decode` / `forward`, spliced into a model with
 * `model.addSae`, and the feature analyses (`sae/analysis.ts`).
 * @module
 */
import type { Backend } from "../backend/backend.ts";
import { WasmBackend } from "../backend/wasm/wasm_backend.ts";
import { InputError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";
import { parseSaeConfig, type SaeConfig } from "./config.ts";
import { type LoadSaeOptions, readSaeFiles, type SaeLocation } from "./load.ts";
import { saeLocation } from "./registry.ts";
import { SAEModule, type SaeWeights } from "./sae.ts";

/** Where an SAE computes: a backend (a model's, to share its memory), or threads for its own. */
export interface SaeBackendOptions {
  /** The backend to compute on (default: a new WebAssembly backend). */
  backend?: Backend;
  /** Threads of the new backend (default: the backend's default). */
  threads?: number;
}

/** Options of {@linkcode SAE.loadFromDisk} and {@linkcode SAE.fromPretrained}. */
export type SaeLoadOptions = LoadSaeOptions & SaeBackendOptions;

/**
 * A sparse autoencoder or transcoder (SAELens's `SAE`, camelCased). See {@linkcode SAEModule}
 * for the computation; this class adds loading.
 *
 * @example
 * ```ts
 * import { SAE } from "./mod.ts";
 * const dir = new URL("../tests/fixtures/sae/standard", import.meta.url).pathname;
 * const sae = await SAE.loadFromDisk(dir, { threads: 1 });
 * sae.cfg.hookName; // "blocks.1.hook_resid_pre"
 * sae.W_enc.shape; // [32, 64]
 * ```
 */
export class SAE extends SAEModule {
  /** SAELens's `log_feature_sparsity` [d_sae], when the files had `sparsity.safetensors`. */
  sparsity?: Tensor;

  /**
   * An SAE from a config (SAELens `cfg.json` content, or a parsed {@link SaeConfig}) and weights
   * under SAELens's names.
   */
  static async fromTensors(
    cfg: SaeConfig | Record<string, unknown>,
    weights: SaeWeights | Record<string, Tensor>,
    opts: SaeBackendOptions = {},
  ): Promise<SAE> {
    const parsed = isParsed(cfg) ? cfg : parseSaeConfig(cfg);
    const backend = opts.backend ?? await WasmBackend.load({ threads: opts.threads });
    return new SAE(parsed, weights as SaeWeights, backend);
  }

  /**
   * Loads an SAE (SAELens's `SAE.load_from_disk`): a SAELens folder (`cfg.json`,
   * `sae_weights.safetensors`), a Gemma Scope `params.npz` path (with `{ hookName }`), a URL of
   * either, or `{ repo, path }` on the hub (through the hub cache, as models). Nothing is folded:
   * an `expected_average_only_in` SAE is used as stored.
   *
   * @example
   * ```ts ignore
   * import { SAE } from "./mod.ts";
   * const sae = await SAE.loadFromDisk({ repo: "jbloom/GPT2-Small-SAEs-Reformatted", path: "blocks.8.hook_resid_pre" });
   * const scope = await SAE.loadFromDisk("params.npz", { hookName: "blocks.20.hook_resid_post" });
   * ```
   */
  static async loadFromDisk(where: SaeLocation, opts: SaeLoadOptions = {}): Promise<SAE> {
    const { backend, threads, ...load } = opts;
    const files = await readSaeFiles(where, load);
    const sae = await SAE.fromTensors(files.cfg, files.weights, { backend, threads });
    if (files.sparsity) sae.sparsity = files.sparsity;
    return sae;
  }

  /**
   * Loads SAE `saeId` of a SAELens release (`"gpt2-small-res-jb"`, `"gemma-scope-2b-pt-res"`,
   * ...; see `saeReleases()`), from the hub through its cache, and folds the release's
   * `norm_scaling_factor` as SAELens does (`expected_average_only_in` becomes `none`).
   *
   * @example
   * ```ts ignore
   * import { SAE } from "./mod.ts";
   * const sae = await SAE.fromPretrained("gpt2-small-res-jb", "blocks.8.hook_resid_pre");
   * sae.cfg.dSae; // 24576
   * ```
   */
  static async fromPretrained(
    release: string,
    saeId: string,
    opts: SaeLoadOptions = {},
  ): Promise<SAE> {
    const loc = saeLocation(release, saeId);
    const sae = await SAE.loadFromDisk(
      { repo: loc.repo, path: loc.path },
      { ...opts, hookName: opts.hookName ?? loc.hookName },
    );
    const s = loc.normScalingFactor;
    if (s !== undefined && sae.cfg.normalizeActivations === "expected_average_only_in") {
      return sae.foldActivationNormScalingFactor(s);
    }
    return sae;
  }

  /**
   * A new SAE with the expected-average scaling `s` folded into its weights (SAELens's
   * `fold_activation_norm_scaling_factor`): W_enc * s, W_dec / s, b_dec / s, and
   * `normalize_activations` "none". Same backend.
   *
   * @example
   * ```ts
   * import { SAE } from "./mod.ts";
   * const dir = new URL("../tests/fixtures/sae/norm-expected-average", import.meta.url).pathname;
   * const sae = await SAE.loadFromDisk(dir, { threads: 1 });
   * sae.foldActivationNormScalingFactor(0.5).cfg.normalizeActivations; // "none"
   * ```
   */
  foldActivationNormScalingFactor(s: number): SAE {
    if (typeof s !== "number" || !Number.isFinite(s) || s <= 0) {
      throw new InputError(`the norm scaling factor must be a positive number, got ${s}`);
    }
    const scale = (t: Tensor | undefined, f: (v: number) => number) =>
      t && { data: t.data.map(f), shape: [...t.shape] };
    const w: SaeWeights = {
      W_enc: scale(this.W_enc, (v) => v * s)!,
      W_dec: scale(this.W_dec, (v) => v / s)!,
      b_dec: scale(this.b_dec, (v) => v / s)!,
      b_enc: this.b_enc,
      threshold: this.threshold,
      b_gate: this.b_gate,
      b_mag: this.b_mag,
      r_mag: this.r_mag,
    };
    const cfg: SaeConfig = {
      ...this.cfg,
      normalizeActivations: "none",
      raw: { ...this.cfg.raw, normalize_activations: "none" },
    };
    const out = new SAE(cfg, w, this.backend);
    if (this.sparsity) out.sparsity = this.sparsity;
    return out;
  }
}

function isParsed(cfg: unknown): cfg is SaeConfig {
  return typeof cfg === "object" && cfg !== null && "dIn" in cfg && "raw" in cfg;
}

export { parseSaeConfig } from "./config.ts";
export type {
  NormalizeActivations,
  ReshapeActivations,
  SaeArchitecture,
  SaeConfig,
} from "./config.ts";
export type { LoadSaeOptions, SaeLocation } from "./load.ts";
export { registerSaeRelease, type SaeReleaseEntry, saeReleases } from "./registry.ts";
export {
  SAE_HOOK_POINTS,
  type SaeHookPoint,
  SAEModule,
  type SaeRun,
  type SaeRunOptions,
  type SaeWeights,
} from "./sae.ts";
export type { AddSaeOptions } from "./splice.ts";
