/**
 * TransformerLens's hook point names, their shapes, and `getActName`.
 * @module
 */
import { HookError } from "../core/errors.ts";
import type { HookedTransformerConfig } from "./config.ts";

/** Hook points inside each block, in the order the forward pass reaches them. */
export const BLOCK_HOOKS = [
  "hook_resid_pre",
  "ln1.hook_scale",
  "ln1.hook_normalized",
  "attn.hook_q",
  "attn.hook_k",
  "attn.hook_v",
  "attn.hook_attn_scores",
  "attn.hook_pattern",
  "attn.hook_z",
  "hook_attn_out",
  "hook_resid_mid",
  "ln2.hook_scale",
  "ln2.hook_normalized",
  "mlp.hook_pre",
  "mlp.hook_post",
  "hook_mlp_out",
  "hook_resid_post",
] as const;

/**
 * Every hook point of a model, in forward order: `hook_embed`, `hook_pos_embed`, the
 * `blocks.{l}.*` points, then `ln_final.hook_scale` and `ln_final.hook_normalized`.
 *
 * @example
 * ```ts ignore
 * hookNames(model.cfg).length; // 2 + 17 * nLayers + 2
 * ```
 */
export function hookNames(cfg: Pick<HookedTransformerConfig, "nLayers">): string[] {
  const names = ["hook_embed", "hook_pos_embed"];
  for (let l = 0; l < cfg.nLayers; l++) for (const h of BLOCK_HOOKS) names.push(`blocks.${l}.${h}`);
  names.push("ln_final.hook_scale", "ln_final.hook_normalized");
  return names;
}

/** Where a hook point sits: its layer (null outside blocks) and its name inside the block. */
export interface HookLocation {
  layer: number | null;
  local: string;
}

/** Splits `blocks.3.attn.hook_z` into `{ layer: 3, local: "attn.hook_z" }`. */
export function locateHook(name: string): HookLocation {
  const m = /^blocks\.(\d+)\.(.+)$/.exec(name);
  return m ? { layer: Number(m[1]), local: m[2] } : { layer: null, local: name };
}

/**
 * The shape of a hook point's activation for a batch of `batch` sequences of `pos` tokens,
 * as TransformerLens gives it.
 */
export function hookShape(
  name: string,
  cfg: HookedTransformerConfig,
  batch: number,
  pos: number,
): number[] {
  const { local } = locateHook(name);
  switch (local) {
    case "attn.hook_q":
    case "attn.hook_k":
    case "attn.hook_v":
    case "attn.hook_z":
      return [batch, pos, cfg.nHeads, cfg.dHead];
    case "attn.hook_attn_scores":
    case "attn.hook_pattern":
      return [batch, cfg.nHeads, pos, pos];
    case "mlp.hook_pre":
    case "mlp.hook_post":
      return [batch, pos, cfg.dMlp];
    case "ln1.hook_scale":
    case "ln2.hook_scale":
    case "ln_final.hook_scale":
      return [batch, pos, 1];
    default:
      return [batch, pos, cfg.dModel];
  }
}

const BLOCK_SHORT: Record<string, string> = {
  resid_pre: "hook_resid_pre",
  resid_mid: "hook_resid_mid",
  resid_post: "hook_resid_post",
  attn_out: "hook_attn_out",
  mlp_out: "hook_mlp_out",
  q: "attn.hook_q",
  k: "attn.hook_k",
  v: "attn.hook_v",
  z: "attn.hook_z",
  pattern: "attn.hook_pattern",
  attn: "attn.hook_pattern",
  attn_scores: "attn.hook_attn_scores",
  attn_logits: "attn.hook_attn_scores",
  pre: "mlp.hook_pre",
  post: "mlp.hook_post",
};

/**
 * Builds a full hook name from a short one, as TransformerLens's `utils.get_act_name` does.
 * Full names pass through unchanged.
 *
 * @param name A short name (`"mlp_out"`, `"pattern"`, `"q"`, `"scale"`, `"embed"`, ...) or a full one.
 * @param layer The block index, for block hook points.
 * @param layerType For `scale` and `normalized`: `"ln1"`, `"ln2"` or `"ln_final"` (default
 *   `ln_final` without a layer).
 *
 * @example
 * ```ts
 * import { getActName } from "./hook_points.ts";
 * getActName("mlp_out", 3); // "blocks.3.hook_mlp_out"
 * getActName("pattern", 5); // "blocks.5.attn.hook_pattern"
 * getActName("scale", 0, "ln1"); // "blocks.0.ln1.hook_scale"
 * ```
 */
export function getActName(name: string, layer?: number, layerType?: string): string {
  if (name.includes("hook_")) return name;
  if (name === "embed" || name === "pos_embed") return `hook_${name}`;
  if (name === "scale" || name === "normalized") {
    const ln = layerType ?? (layer === undefined ? "ln_final" : undefined);
    if (ln === "ln_final") return `ln_final.hook_${name}`;
    if ((ln === "ln1" || ln === "ln2") && layer !== undefined) {
      return `blocks.${layer}.${ln}.hook_${name}`;
    }
    throw new HookError(
      `getActName("${name}") needs a layer and layerType "ln1" or "ln2", or layerType "ln_final"`,
    );
  }
  const local = BLOCK_SHORT[name];
  if (!local) {
    throw new HookError(
      `unknown activation name "${name}"; expected one of ${
        Object.keys(BLOCK_SHORT).join(", ")
      }, ` +
        `embed, pos_embed, scale, normalized, or a full hook name`,
    );
  }
  if (layer === undefined || !Number.isInteger(layer) || layer < 0) {
    throw new HookError(`getActName("${name}") needs a layer index (a non-negative integer)`);
  }
  return `blocks.${layer}.${local}`;
}

/**
 * Throws a {@link HookError} naming `name` (and the closest real name) unless the model has it.
 */
export function assertHookName(name: string, known: ReadonlySet<string>): void {
  if (known.has(name)) return;
  let best = "";
  let bestScore = Infinity;
  for (const k of known) {
    const s = editDistance(name, k);
    if (s < bestScore) [best, bestScore] = [k, s];
  }
  throw new HookError(
    `unknown hook name "${name}"` + (best ? `; did you mean "${best}"?` : "") +
      ` (getActName("mlp_out", 0) builds names; model.hookNames lists them all)`,
  );
}

function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0];
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j];
      prev[j] = Math.min(prev[j] + 1, prev[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length];
}
