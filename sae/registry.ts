/**
 * A small registry of SAELens's pretrained releases (its `pretrained_saes.yaml`, the common
 * ones): which hub repository holds a release, where each SAE id lives in it, and what the files
 * do not say (a Gemma Scope npz's hook point, an expected-average `norm_scaling_factor`). More
 * releases can be registered with {@linkcode registerSaeRelease}.
 * @module
 */
import { ModelNotFoundError } from "../core/errors.ts";
import { closestName } from "../core/suggest.ts";

/** Where one SAE of a release is, and what its files lack. */
export interface SaeReleaseEntry {
  /** Hub repository, `owner/name`. */
  repo: string;
  /** The model the SAEs read (SAELens's / TransformerLens's name). */
  model: string;
  /**
   * The folder (SAELens) or `params.npz` file (Gemma Scope) of SAE `id` inside the repo, or
   * undefined for an id the release does not have.
   */
  path(id: string): string | undefined;
  /** For files without a cfg (Gemma Scope): the hook point SAE `id` reads. */
  hookName?(id: string): string | undefined;
  /** SAELens's `norm_scaling_factor` of SAE `id`, folded in by `SAE.fromPretrained`. */
  normScalingFactor?(id: string): number | undefined;
  /** A few ids, for messages. */
  exampleIds: string[];
}

const layers = (n: number) => Array.from({ length: n }, (_, i) => i);

/** Gemma Scope: `layer_{L}/width_{W}/average_l0_{N}` -> that folder's params.npz. */
function gemmaScope(repo: string, model: string, nLayers: number, hook: string): SaeReleaseEntry {
  const re = /^layer_(\d+)\/width_\d+k\/average_l0_\d+$/;
  return {
    repo,
    model,
    path: (id) => {
      const m = re.exec(id);
      return m && Number(m[1]) < nLayers ? `${id}/params.npz` : undefined;
    },
    hookName: (id) => {
      const m = re.exec(id);
      return m ? `blocks.${m[1]}.${hook}` : undefined;
    },
    exampleIds: ["layer_12/width_16k/average_l0_82"],
  };
}

const RELEASES = new Map<string, SaeReleaseEntry>([
  ["gpt2-small-res-jb", {
    repo: "jbloom/GPT2-Small-SAEs-Reformatted",
    model: "gpt2-small",
    path: (id) => {
      const ids = [
        ...layers(12).map((l) => `blocks.${l}.hook_resid_pre`),
        "blocks.11.hook_resid_post",
      ];
      return ids.includes(id) ? id : undefined;
    },
    exampleIds: ["blocks.8.hook_resid_pre", "blocks.11.hook_resid_post"],
  }],
  [
    "gemma-scope-2b-pt-res",
    gemmaScope("google/gemma-scope-2b-pt-res", "gemma-2-2b", 26, "hook_resid_post"),
  ],
  [
    "gemma-scope-2b-pt-mlp",
    gemmaScope("google/gemma-scope-2b-pt-mlp", "gemma-2-2b", 26, "hook_mlp_out"),
  ],
  [
    "gemma-scope-2b-pt-att",
    gemmaScope("google/gemma-scope-2b-pt-att", "gemma-2-2b", 26, "attn.hook_z"),
  ],
  [
    "gemma-scope-9b-pt-res",
    gemmaScope("google/gemma-scope-9b-pt-res", "gemma-2-9b", 42, "hook_resid_post"),
  ],
]);

/**
 * Adds (or replaces) a release, e.g. a private repository laid out as SAELens's.
 *
 * @example
 * ```ts
 * import { registerSaeRelease, saeRelease } from "./registry.ts";
 * registerSaeRelease("my-saes", {
 *   repo: "me/my-saes",
 *   model: "gpt2-small",
 *   path: (id) => id,
 *   exampleIds: ["blocks.0.hook_resid_pre"],
 * });
 * saeRelease("my-saes").repo; // "me/my-saes"
 * ```
 */
export function registerSaeRelease(name: string, entry: SaeReleaseEntry): void {
  RELEASES.set(name, entry);
}

/** The release names known. */
export function saeReleases(): string[] {
  return [...RELEASES.keys()];
}

/**
 * A release by name; a {@link ModelNotFoundError} with the closest name otherwise.
 *
 * @example
 * ```ts
 * import { saeRelease } from "./registry.ts";
 * saeRelease("gpt2-small-res-jb").path("blocks.8.hook_resid_pre"); // "blocks.8.hook_resid_pre"
 * ```
 */
export function saeRelease(name: string): SaeReleaseEntry {
  const entry = RELEASES.get(name);
  if (entry) return entry;
  const best = closestName(name, RELEASES.keys());
  throw new ModelNotFoundError(
    `unknown SAE release "${name}"` + (best ? `; did you mean "${best}"?` : "") +
      ` (known: ${saeReleases().join(", ")}; registerSaeRelease adds one, or load a folder or ` +
      `{ repo, path } with SAE.loadFromDisk)`,
  );
}

/** Where SAE `id` of `release` is: its hub location and what its files lack. */
export function saeLocation(
  release: string,
  id: string,
): { repo: string; path: string; hookName?: string; normScalingFactor?: number } {
  const entry = saeRelease(release);
  const path = typeof id === "string" ? entry.path(id) : undefined;
  if (path === undefined) {
    throw new ModelNotFoundError(
      `release ${release} has no SAE "${id}" (e.g. ${entry.exampleIds.join(", ")})`,
    );
  }
  return {
    repo: entry.repo,
    path,
    hookName: entry.hookName?.(id),
    normScalingFactor: entry.normScalingFactor?.(id),
  };
}
