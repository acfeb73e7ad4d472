/**
 * Every hook point, declared once: its name inside its block, its shape as a function of the
 * config, whether hooks may change it, which option turns it on and which architectures have it.
 * Hook names, shapes, `getActName`, name validation with suggestions, and the forward pass's call
 * sites (`HOOK.q`, `HOOK.pattern`, ...) all derive from this table.
 *
 * To add a hook point: add an entry to {@linkcode HOOK} in forward order, and visit it from the
 * forward pass (`model/forward.ts`) with that constant.
 * @module
 */
import { HookError } from "../core/errors.ts";
import { closestName } from "../core/suggest.ts";
import type { HookedTransformerConfig } from "./config.ts";

/**
 * The options that add hook points, as TransformerLens's `use_attn_result` etc. They cost
 * nothing while off.
 */
export type HookOption = "useAttnResult" | "useSplitQkvInput" | "useAttnIn" | "useHookMlpIn";

/** The setter that turns each option on (named in error messages). */
export const HOOK_OPTION_SETTERS: Record<HookOption, string> = {
  useAttnResult: "setUseAttnResult(true)",
  useSplitQkvInput: "setUseSplitQkvInput(true)",
  useAttnIn: "setUseAttnIn(true)",
  useHookMlpIn: "setUseHookMlpIn(true)",
};

/** Which options are on; every one is off by default. */
export type HookOptions = Partial<Record<HookOption, boolean>>;
const ALL_OPTIONS_OFF: HookOptions = {};

/** One hook point's declaration. */
export interface HookPoint {
  /** Position in forward order within its block (or model), and index into name tables. */
  readonly index: number;
  /** The name inside its block (`attn.hook_q`), or the whole name outside blocks. */
  readonly local: string;
  /** Whether it sits inside every block (`blocks.{l}.` + local). */
  readonly inBlock: boolean;
  /**
   * TransformerLens's activation shape for `batch` sequences of `pos` computed positions attending
   * to `keys` positions (more than `pos` when earlier keys come from a key/value cache).
   */
  readonly shape: (
    cfg: HookedTransformerConfig,
    batch: number,
    pos: number,
    keys: number,
  ) => number[];
  /**
   * Why hooks may not change it, when they may not (the value was already used by the time the
   * hook runs); hooks may still read it.
   */
  readonly readOnly?: string;
  /** The option that adds it (absent: always there). */
  readonly option?: HookOption;
  /** Whether the architecture has it (absent: every architecture). */
  readonly present?: (cfg: HookedTransformerConfig) => boolean;
  /** Why an architecture without it has none, and what to read instead (with `present`). */
  readonly absentWhy?: string;
}

type Shape = HookPoint["shape"];
const resid: Shape = (c, b, p) => [b, p, c.dModel];
const scale: Shape = (_c, b, p) => [b, p, 1];
const heads: Shape = (c, b, p) => [b, p, c.nHeads, c.dHead];
const kvHeads: Shape = (c, b, p) => [b, p, c.nKeyValueHeads, c.dHead];
const perHead: Shape = (c, b, p) => [b, p, c.nHeads, c.dModel];
const perKvHead: Shape = (c, b, p) => [b, p, c.nKeyValueHeads, c.dModel];
const attention: Shape = (c, b, p, k) => [b, c.nHeads, p, k];
const mlp: Shape = (c, b, p) => [b, p, c.dMlp];

const SCALE_READ_ONLY = "the normalization has already divided by this scale when the hook " +
  "runs, so a changed scale would do nothing: patch the matching hook_normalized instead";

let order = 0;
function point(
  local: string,
  inBlock: boolean,
  shape: Shape,
  more: Partial<Pick<HookPoint, "readOnly" | "option" | "present" | "absentWhy">> = {},
): HookPoint {
  return { index: order++, local, inBlock, shape, ...more };
}
const rotary = (c: HookedTransformerConfig) => c.positionalEmbeddingType === "rotary";
const NO_ROTARY = "its positions are a learned embedding (hook_pos_embed), not rotary";
/** Gemma's norms on the attention and MLP outputs (TL's `ln1_post`, `ln2_post`). */
const postNorms = (c: HookedTransformerConfig) => !!c.useNormalizationBeforeAndAfter;

/** Every hook point, in the order the forward pass reaches them. */
export const HOOK = {
  embed: point("hook_embed", false, resid),
  posEmbed: point("hook_pos_embed", false, resid, {
    present: (c) => c.positionalEmbeddingType === "standard",
    absentWhy: "its positions are rotary (applied to q and k: hook_rot_q, hook_rot_k), not a " +
      "learned embedding added to the residual stream",
  }),
  residPre: point("hook_resid_pre", true, resid),
  attnIn: point("hook_attn_in", true, perHead, { option: "useAttnIn" }),
  qInput: point("hook_q_input", true, perHead, { option: "useSplitQkvInput" }),
  kInput: point("hook_k_input", true, perKvHead, { option: "useSplitQkvInput" }),
  vInput: point("hook_v_input", true, perKvHead, { option: "useSplitQkvInput" }),
  ln1Scale: point("ln1.hook_scale", true, scale, { readOnly: SCALE_READ_ONLY }),
  ln1Normalized: point("ln1.hook_normalized", true, resid),
  q: point("attn.hook_q", true, heads),
  k: point("attn.hook_k", true, kvHeads),
  v: point("attn.hook_v", true, kvHeads),
  rotQ: point("attn.hook_rot_q", true, heads, { present: rotary, absentWhy: NO_ROTARY }),
  rotK: point("attn.hook_rot_k", true, kvHeads, { present: rotary, absentWhy: NO_ROTARY }),
  attnScores: point("attn.hook_attn_scores", true, attention),
  pattern: point("attn.hook_pattern", true, attention),
  z: point("attn.hook_z", true, heads),
  result: point("attn.hook_result", true, perHead, { option: "useAttnResult" }),
  ln1PostScale: point("ln1_post.hook_scale", true, scale, {
    readOnly: SCALE_READ_ONLY,
    present: postNorms,
  }),
  ln1PostNormalized: point("ln1_post.hook_normalized", true, resid, { present: postNorms }),
  attnOut: point("hook_attn_out", true, resid),
  residMid: point("hook_resid_mid", true, resid, {
    present: (c) => !c.parallelAttnMlp,
    absentWhy: "attention and MLP read the same resid_pre in parallel blocks (GPT-NeoX, " +
      "Pythia), so nothing lies between them: resid_post = resid_pre + attn_out + mlp_out",
  }),
  mlpIn: point("hook_mlp_in", true, resid, { option: "useHookMlpIn" }),
  ln2Scale: point("ln2.hook_scale", true, scale, { readOnly: SCALE_READ_ONLY }),
  ln2Normalized: point("ln2.hook_normalized", true, resid),
  mlpPre: point("mlp.hook_pre", true, mlp),
  mlpPreLinear: point("mlp.hook_pre_linear", true, mlp, {
    present: (c) => c.gatedMlp,
    absentWhy: "its MLP is not gated (hook_pre_linear is the up projection of gated MLPs)",
  }),
  mlpPost: point("mlp.hook_post", true, mlp),
  ln2PostScale: point("ln2_post.hook_scale", true, scale, {
    readOnly: SCALE_READ_ONLY,
    present: postNorms,
  }),
  ln2PostNormalized: point("ln2_post.hook_normalized", true, resid, { present: postNorms }),
  mlpOut: point("hook_mlp_out", true, resid),
  residPost: point("hook_resid_post", true, resid),
  lnFinalScale: point("ln_final.hook_scale", false, scale, { readOnly: SCALE_READ_ONLY }),
  lnFinalNormalized: point("ln_final.hook_normalized", false, resid),
} as const;

/** Every declaration, in forward order. */
export const HOOK_POINTS: readonly HookPoint[] = Object.values(HOOK);

/** The full name of a hook point (`blocks.{layer}.{local}` inside blocks). */
export function hookName(point: HookPoint, layer: number | null): string {
  return point.inBlock ? `blocks.${layer}.${point.local}` : point.local;
}

/** Whether a model with this config (and these options) has the hook point. */
export function hasHookPoint(
  point: HookPoint,
  cfg: HookedTransformerConfig,
  options: HookOptions = {},
): boolean {
  return (point.present?.(cfg) ?? true) && (point.option === undefined || !!options[point.option]);
}

/**
 * Every hook point of a model, in forward order: `hook_embed`, `hook_pos_embed`, the
 * `blocks.{l}.*` points layer by layer, then `ln_final.hook_scale` and `ln_final.hook_normalized`.
 * Optional points appear only when their option is on.
 *
 * @example
 * ```ts
 * import { hookNames } from "./hook_table.ts";
 * import { gpt2Config } from "../families/gpt2.ts";
 * const cfg = gpt2Config({ n_layer: 2, n_head: 4, n_embd: 32, vocab_size: 96, n_positions: 32 });
 * hookNames(cfg).length; // 2 + 17 * 2 + 2
 * ```
 */
export function hookNames(cfg: HookedTransformerConfig, options: HookOptions = {}): string[] {
  const names: string[] = [];
  const has = (p: HookPoint) => hasHookPoint(p, cfg, options);
  for (const p of HOOK_POINTS) {
    if (!p.inBlock && p.index < HOOK.residPre.index && has(p)) {
      names.push(p.local);
    }
  }
  for (let l = 0; l < cfg.nLayers; l++) {
    for (const p of HOOK_POINTS) if (p.inBlock && has(p)) names.push(hookName(p, l));
  }
  for (const p of HOOK_POINTS) {
    if (!p.inBlock && p.index > HOOK.residPre.index && has(p)) {
      names.push(p.local);
    }
  }
  return names;
}

/** Where a full hook name points: its declaration and layer (null outside blocks). */
export interface HookLocation {
  point: HookPoint;
  layer: number | null;
}

const BY_LOCAL = new Map(HOOK_POINTS.map((p) => [p.local, p]));

/**
 * The declaration and layer of a full hook name, or undefined for a name no architecture has.
 *
 * @example
 * ```ts
 * import { HOOK, locateHook } from "./hook_table.ts";
 * locateHook("blocks.3.attn.hook_z")?.point === HOOK.z; // true, at layer 3
 * ```
 */
export function locateHook(name: string): HookLocation | undefined {
  const m = /^blocks\.(\d+)\.(.+)$/.exec(name);
  const point = BY_LOCAL.get(m ? m[2] : name);
  if (!point || point.inBlock !== !!m) return undefined;
  return { point, layer: m ? Number(m[1]) : null };
}

/**
 * TransformerLens's short names (`utils.get_act_name`) and the block-local names they stand for.
 * `scale` and `normalized` take a layer type instead (see {@linkcode getActName}).
 */
const SHORT_NAMES: Record<string, HookPoint> = {
  embed: HOOK.embed,
  pos_embed: HOOK.posEmbed,
  resid_pre: HOOK.residPre,
  resid_mid: HOOK.residMid,
  resid_post: HOOK.residPost,
  attn_in: HOOK.attnIn,
  q_input: HOOK.qInput,
  k_input: HOOK.kInput,
  v_input: HOOK.vInput,
  attn_out: HOOK.attnOut,
  mlp_in: HOOK.mlpIn,
  mlp_out: HOOK.mlpOut,
  q: HOOK.q,
  k: HOOK.k,
  v: HOOK.v,
  query: HOOK.q,
  key: HOOK.k,
  value: HOOK.v,
  rot_q: HOOK.rotQ,
  rot_k: HOOK.rotK,
  z: HOOK.z,
  result: HOOK.result,
  pattern: HOOK.pattern,
  attn: HOOK.pattern,
  attn_scores: HOOK.attnScores,
  attn_logits: HOOK.attnScores,
  pre: HOOK.mlpPre,
  mlp_pre: HOOK.mlpPre,
  pre_linear: HOOK.mlpPreLinear,
  post: HOOK.mlpPost,
  mlp_post: HOOK.mlpPost,
};

const NORM_POINTS: Record<string, Record<string, HookPoint>> = {
  scale: {
    ln1: HOOK.ln1Scale,
    ln2: HOOK.ln2Scale,
    ln_final: HOOK.lnFinalScale,
    ln1_post: HOOK.ln1PostScale,
    ln2_post: HOOK.ln2PostScale,
  },
  normalized: {
    ln1: HOOK.ln1Normalized,
    ln2: HOOK.ln2Normalized,
    ln_final: HOOK.lnFinalNormalized,
    ln1_post: HOOK.ln1PostNormalized,
    ln2_post: HOOK.ln2PostNormalized,
  },
};

/**
 * Builds a full hook name from a short one, as TransformerLens's `utils.get_act_name` does. Full
 * names pass through unchanged. A negative layer counts from the end when `nLayers` is given (as
 * `cache.get` and the model do).
 *
 * @param name A short name (`"mlp_out"`, `"pattern"`, `"q"`, `"scale"`, `"embed"`, ...), TL's compact
 *   form with the layer (and layer type) inside (`"k6"`, `"scale4ln1"`), or a full name.
 * @param layer The block index, for block hook points.
 * @param layerType For `scale` and `normalized`: `"ln1"`, `"ln2"` or `"ln_final"` (default
 *   `ln_final` without a layer); for other names TransformerLens's suffixes `"attn"`, `"mlp"` are
 *   accepted and ignored.
 * @param nLayers The model's layer count, to resolve negative layers.
 *
 * @example
 * ```ts
 * import { getActName } from "./hook_table.ts";
 * getActName("mlp_out", 3); // "blocks.3.hook_mlp_out"
 * getActName("pattern", 5); // "blocks.5.attn.hook_pattern"
 * getActName("scale", 0, "ln1"); // "blocks.0.ln1.hook_scale"
 * getActName("resid_pre", -1, undefined, 12); // "blocks.11.hook_resid_pre"
 * getActName("scale4ln1"); // "blocks.4.ln1.hook_scale"
 * getActName("normalized", 2, "ln1_post"); // "blocks.2.ln1_post.hook_normalized" (Gemma)
 * ```
 */
export function getActName(
  name: string,
  layer?: number,
  layerType?: string,
  nLayers?: number,
): string {
  if (typeof name !== "string") {
    throw new HookError(`an activation name must be a string, got ${JSON.stringify(name)}`);
  }
  if (name.includes("hook_")) return name;
  // TL's compact form: a word, the layer, then the layer type ("k6", "scale4ln1").
  const compact = layer === undefined ? /^([a-z]+)(\d+)([a-z_0-9]*)$/.exec(name) : null;
  if (compact) {
    return getActName(compact[1], Number(compact[2]), compact[3] || layerType, nLayers);
  }
  let point: HookPoint | undefined;
  const norm = NORM_POINTS[name];
  if (norm) {
    const ln = layerType ?? (layer === undefined ? "ln_final" : undefined);
    point = ln === undefined ? undefined : norm[ln];
    if (!point || (point.inBlock && layer === undefined)) {
      throw new HookError(
        `getActName("${name}") needs a layer and layerType "ln1", "ln2", "ln1_post" or ` +
          `"ln2_post", or layerType "ln_final"`,
      );
    }
  } else {
    point = SHORT_NAMES[name];
    if (!point) {
      throw new HookError(
        `unknown activation name "${name}"; expected one of ` +
          `${[...Object.keys(SHORT_NAMES), "scale", "normalized"].join(", ")}, or a full hook name`,
      );
    }
  }
  if (!point.inBlock) return point.local;
  if (layer === undefined || !Number.isInteger(layer)) {
    throw new HookError(`getActName("${name}") needs a layer index (an integer)`);
  }
  let l = layer;
  if (l < 0) {
    if (nLayers === undefined) {
      throw new HookError(
        `getActName("${name}", ${layer}): a negative layer needs the model's layer count ` +
          `(use model.getActName or cache.get, which know it)`,
      );
    }
    l += nLayers;
    if (l < 0) throw new HookError(`layer ${layer} is outside [-${nLayers}, ${nLayers})`);
  }
  return hookName(point, l);
}

/**
 * Why a full hook name is not among a model's hook points, when a reason other than a misspelling
 * applies: its layer is out of range, the architecture has no such point (with why), or an option
 * adds it. Undefined for a name no architecture has (then suggest the closest name).
 *
 * @example
 * ```ts
 * import { missingHookReason } from "./hook_table.ts";
 * import { gpt2Config } from "../families/gpt2.ts";
 * const cfg = gpt2Config({ n_layer: 3, n_head: 4, n_embd: 32, vocab_size: 96, n_positions: 32 });
 * missingHookReason("blocks.7.attn.hook_pattern", cfg);
 * // "layer 7 is out of range: the model has 3 layers (0 to 2, or -3 to -1 from the end)"
 * ```
 */
export function missingHookReason(
  name: string,
  cfg: HookedTransformerConfig,
  options: HookOptions = {},
): string | undefined {
  const loc = locateHook(name);
  if (!loc) return undefined;
  const L = cfg.nLayers;
  if (loc.layer !== null && loc.layer >= L) {
    return `layer ${loc.layer} is out of range: the model has ${L} layer${L === 1 ? "" : "s"} ` +
      `(0 to ${L - 1}, or -${L} to -1 from the end)`;
  }
  if (loc.point.present && !loc.point.present(cfg)) {
    return `"${name}" does not exist in this architecture (${cfg.modelName}): ` +
      (loc.point.absentWhy ?? "the model has no such point");
  }
  if (loc.point.option && !options[loc.point.option]) {
    return `hook point "${name}" is off: enable it with ${
      HOOK_OPTION_SETTERS[loc.point.option]
    } (then run again)`;
  }
  return undefined;
}

/**
 * Throws a {@link HookError} unless the model has `name`: naming the option that adds it when it
 * is off, else the closest real name.
 */
export function assertHookName(
  name: string,
  known: ReadonlySet<string>,
  cfg?: HookedTransformerConfig,
): void {
  if (known.has(name)) return;
  // The model's hook names already include the points its options switched on.
  const reason = cfg && missingHookReason(name, cfg, ALL_OPTIONS_OFF);
  if (reason) throw new HookError(reason);
  const best = closestName(name, known);
  throw new HookError(
    `unknown hook name "${name}"` + (best ? `; did you mean "${best}"?` : "") +
      ` (getActName("mlp_out", 0) builds names; model.hookNames lists them all)`,
  );
}
