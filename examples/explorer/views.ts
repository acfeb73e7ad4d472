/**
 * What the explorer shows for a state, computed with the library's public API (the model worker
 * runs it; a Deno program may too): each view is the HTML of a `viz` function, the same code a
 * notebook displays, so the page only places it.
 *
 * - `tokens`: each position's top-5 next tokens with probabilities and the log-prob of the token
 *   that comes next (`viz.topkTokens` on `model.run`'s logits);
 * - `attention`: every head's previous-token, duplicate-token and induction score on the prompt
 *   (`detectHead`, layer x head), then every head of every layer as small multiples
 *   (`viz.attentionHeads` on the cached `hook_pattern`s), one block per layer;
 * - `lens`: the logit lens, layer x position (`viz.logitLens`);
 * - `dla`: direct logit attribution of the answer token (against the wrong one) at the last
 *   position, by head (`cache.stackHeadResults` -> `cache.logitAttrs`, a layer x head grid) and by
 *   component (`cache.decomposeResid` -> `cache.logitAttrs`);
 * - `patching`: the corrupted prompt's `resid_pre` patched into the clean run at each layer and
 *   position (`getActPatchResidPre`'s numbers with the clean tokens and the corrupted cache, from
 *   `genericActivationPatch` on the indices where the two runs differ), as the change
 *   of the metric, beside attribution patching's estimate of the same change from one clean
 *   forward-and-backward pass and one corrupted pass ((corrupted - clean) . d metric / d resid).
 *   Then the same for each head's output over every position (`getActPatchAttnHeadOutAllPos`,
 *   layer x head) beside its estimate from `hook_z`. Activation patching takes one patched run
 *   per cell, the estimates none: with `onPartial` every view comes first with the estimates and
 *   activation patching's grids follow.
 *   The metric is the logit difference answer - wrong at the last position
 *   (`logitDiffMetric`), or the answer's log-prob (`logProbMetric`) without a wrong token.
 * - `sae`: given an SAE, its active features per token: `sae.encode` of the cached activation at
 *   its hook point (`viz.saeFeatures`: how many fire, and the strongest with their activations).
 * @module
 */
import {
  type ActivationCache,
  detectHead,
  genericActivationPatch,
  type HookedTransformer,
  InputError,
  layerHeadVectorPatchSetter,
  layerPosPatchSetter,
  logitDiffMetric,
  logProbMetric,
  type PatchingMetric,
  type SAEModule,
  type Tensor,
  viz,
} from "../../mod.ts";
import type { ExplorerResult, ExplorerState, ViewName } from "./protocol.ts";

/** Next tokens shown per position in the `tokens` view. */
export const TOP_K = 5;
/** Longest prompt the explorer computes, in tokens (patching runs n_layers x tokens passes). */
export const MAX_TOKENS = 64;
/** Features shown per token in the `sae` view. */
export const SAE_TOP_K = 8;

/**
 * The activation an SAE reads, as [1, pos, d_in]: the cached hook point's tensor, with the heads
 * of a `hook_z` SAE ([1, pos, head, d_head]) flattened. An SAE of another width is an
 * `InputError` that names both.
 */
export function saeInput(model: HookedTransformer, sae: SAEModule, act: Tensor): Tensor {
  const [B, T] = act.shape;
  const width = act.data.length / (B * T);
  if (width !== sae.cfg.dIn) {
    throw new InputError(
      `the SAE reads ${sae.cfg.hookName} with d_in ${sae.cfg.dIn}, but ${model.cfg.modelName} ` +
        `has ${width} there: give an SAE trained on this model`,
    );
  }
  return act.shape.length === 3 ? act : { data: act.data, shape: [B, T, width] };
}

/** The head kinds scored beside the attention patterns (`detectHead`). */
export const HEAD_KINDS = [
  "previous_token_head",
  "duplicate_token_head",
  "induction_head",
] as const;

/**
 * The token ids of a prompt: the tokenizer's (with BOS) for a text model; for an id-only model
 * the whole numbers the text lists (separated by spaces or commas), each below d_vocab.
 *
 * @example
 * ```ts
 * import { HookedTransformer } from "../../mod.ts";
 * import { promptIds } from "./views.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * promptIds(model, "2047, 5 9"); // [2047, 5, 9]
 * ```
 */
export function promptIds(model: HookedTransformer, prompt: string): number[] {
  let ids: number[];
  if (model.tokenizer) {
    ids = model.toTokens(prompt)[0];
  } else {
    const parts = prompt.split(/[\s,]+/).filter((p) => p !== "");
    ids = parts.map((p) => {
      if (!/^\d+$/.test(p) || Number(p) >= model.cfg.dVocab) {
        throw new InputError(
          `${JSON.stringify(p)} is not a token id: ${model.cfg.modelName} has no text ` +
            `tokenizer, so the prompt is token ids in [0, ${model.cfg.dVocab}) separated by ` +
            `spaces or commas`,
        );
      }
      return Number(p);
    });
  }
  if (ids.length === 0) throw new InputError("the prompt has no tokens: type one");
  if (ids.length > MAX_TOKENS) {
    throw new InputError(
      `the prompt has ${ids.length} tokens; the explorer computes at most ${MAX_TOKENS}`,
    );
  }
  return ids;
}

/** One token id from the answer or wrong field: text of one token, or an id. */
function oneToken(model: HookedTransformer, text: string, what: string): number {
  if (/^\d+$/.test(text.trim()) && (!model.tokenizer || Number(text) < model.cfg.dVocab)) {
    const id = Number(text.trim());
    if (id >= model.cfg.dVocab) {
      throw new InputError(`${what} ${id} is not below d_vocab ${model.cfg.dVocab}`);
    }
    return id;
  }
  if (!model.tokenizer) {
    throw new InputError(`${what} must be a token id: ${model.cfg.modelName} has no tokenizer`);
  }
  return model.toSingleToken(text);
}

/** Token ids as text: the tokenizer's pieces, or `[id]` for an id-only model. */
function decoder(model: HookedTransformer): (ids: number[]) => string[] {
  return (ids) => model.tokenizer ? model.toStrTokens(ids) : ids.map((i) => `[${i}]`);
}

function argmaxLast(logits: Tensor): number {
  const [, T, V] = logits.shape;
  const row = logits.data.subarray((T - 1) * V, T * V);
  let best = 0;
  for (let i = 1; i < V; i++) if (row[i] > row[best]) best = i;
  return best;
}

/** Rows of a [rows * cols] array. */
function rowsOf(data: ArrayLike<number>, rows: number, cols: number): number[][] {
  return Array.from(
    { length: rows },
    (_, r) => Array.from({ length: cols }, (_, c) => data[r * cols + c]),
  );
}

/**
 * Activation patching of the corrupted run's `resid_pre` (each layer and position) or `z` (each
 * layer and head, every position) into the clean run, as the change of `metric` from `base` (its
 * clean value): `getActPatchResidPre` / `getActPatchAttnHeadOutAllPos`'s numbers, computed with
 * `genericActivationPatch` on the indices where the corrupted activation differs from the clean
 * one. Elsewhere the patched run is the clean run and the change is exactly 0, so those runs are
 * skipped (positions before the first corrupted token cost nothing). Both metrics read the last
 * position only, so the patched runs unembed only it (`logitPositions`).
 */
async function patchWhereDifferent(
  model: HookedTransformer,
  ids: number[],
  clean: ActivationCache,
  corrupted: ActivationCache,
  metric: PatchingMetric,
  { what, base }: { what: "resid_pre" | "z"; base: number },
): Promise<number[][]> {
  const { nLayers, nHeads, dHead, dModel } = model.cfg;
  const T = ids.length;
  const cols = what === "resid_pre" ? T : nHeads;
  const grid = Array.from({ length: nLayers }, () => new Array<number>(cols).fill(0));
  const indices: number[][] = [];
  for (let l = 0; l < nLayers; l++) {
    const c = clean.get(what, l).data, x = corrupted.get(what, l).data;
    for (let j = 0; j < cols; j++) {
      let differs = false;
      if (what === "resid_pre") {
        for (let i = j * dModel; i < (j + 1) * dModel && !differs; i++) differs = c[i] !== x[i];
      } else {
        for (let t = 0; t < T && !differs; t++) {
          const at = (t * nHeads + j) * dHead;
          for (let i = at; i < at + dHead && !differs; i++) differs = c[i] !== x[i];
        }
      }
      if (differs) indices.push([l, j]);
    }
  }
  if (indices.length === 0) return grid;
  const values = await genericActivationPatch(model, [ids], corrupted, metric, {
    patchSetter: what === "resid_pre" ? layerPosPatchSetter : layerHeadVectorPatchSetter,
    activationName: what,
    indices,
    logitPositions: [-1],
  });
  indices.forEach(([l, j], i) => grid[l][j] = values.data[i] - base);
  return grid;
}

/** Options of {@link computeViews}. */
export interface ComputeOptions {
  /**
   * Called once every view but activation patching is ready (its attribution estimates are: one
   * clean forward and backward pass and one corrupted pass), with a `partial` result whose
   * patching view says that activation patching is being computed; return false to stop there
   * (a newer request came). Without it the result comes complete, in one piece.
   */
  onPartial?: (partial: ExplorerResult) => boolean;
}

/**
 * Every view of `state` on `model` (see the module doc); a view that cannot be computed for the
 * state (patching without a corrupted prompt of the same length) gets a note instead. A bad
 * prompt or token throws an `InputError` saying what to type.
 *
 * @example
 * ```ts ignore
 * import { HookedTransformer } from "../../mod.ts";
 * import { computeViews } from "./views.ts";
 * import { parseState } from "./protocol.ts";
 * const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
 * const result = await computeViews(model, parseState("?prompt=And%20God%20said"), 1);
 * result.tokens; // ["<|endoftext|>", "And", " God", " said"]
 * ```
 */
export async function computeViews(
  model: HookedTransformer,
  state: ExplorerState,
  id: number,
  sae?: SAEModule,
  opts: ComputeOptions = {},
): Promise<ExplorerResult> {
  const t0 = performance.now();
  const ids = promptIds(model, state.prompt);
  const decode = decoder(model);
  const tokens = decode(ids);
  const html: Partial<Record<ViewName, string>> = {};
  const notes: Partial<Record<ViewName, string>> = {};
  const { nLayers, nHeads } = model.cfg;

  const { logits, cache } = await model.runWithCache([ids]);
  html.tokens = viz.topkTokens(tokens, logits, { k: TOP_K, decode, ids }).html;

  const headNames = Array.from({ length: nHeads }, (_, h) => `H${h}`);
  const scores: string[] = [];
  for (const kind of HEAD_KINDS) {
    const score = await detectHead(model, ids, kind, { cache });
    scores.push(
      `<div data-kind="${kind}">` + viz.patchingHeatmap(rowsOf(score.data, nLayers, nHeads), {
        cols: headNames,
        axes: ["layer", "head"],
        value: `${kind.replaceAll("_", " ")} score`,
        title: `${kind.replaceAll("_", " ")} score (detectHead)`,
      }).html + `</div>`,
    );
  }
  html.attention = `<div class="pair" data-scores>${scores.join("")}</div>` + Array.from(
    { length: nLayers },
    (_, l) =>
      `<section data-layer="${l}">` +
      viz.attentionHeads(cache.get("pattern", l), tokens, { layer: l, title: `layer ${l}` }).html +
      `</section>`,
  ).join("");

  html.lens = (await viz.logitLens(model, ids)).html;

  if (sae) {
    const acts = await sae.encode(saeInput(model, sae, cache.get(sae.cfg.hookName)));
    html.sae = `<div data-hook="${sae.cfg.hookName}" data-d-sae="${sae.cfg.dSae}">` +
      viz.saeFeatures(tokens, acts, { k: SAE_TOP_K, label: `SAE at ${sae.cfg.hookName}` }).html +
      `</div>`;
  } else {
    notes.sae = "Give an SAE (a SAELens folder's URL in the SAE field, or --sae=<folder> when " +
      "starting deno task explore) to see its active features per token.";
  }

  const answer = state.answer.trim() === ""
    ? argmaxLast(logits)
    : oneToken(model, state.answer, "the answer token");
  const wrong = state.wrong.trim() === ""
    ? undefined
    : oneToken(model, state.wrong, "the wrong token");
  const [answerText] = decode([answer]);
  const vs = wrong === undefined ? "" : ` - ${JSON.stringify(decode([wrong])[0])}`;
  const what = `logit ${JSON.stringify(answerText)}${vs}`;
  const attrOpts = wrong === undefined
    ? { posSlice: -1 }
    : { posSlice: -1, incorrectTokens: [wrong] };
  const heads = cache.stackHeadResults({ layer: -1, posSlice: -1 });
  const headAttrs = cache.logitAttrs(heads, [answer], attrOpts); // [L * H, 1]
  const [parts, labels] = cache.decomposeResid({ posSlice: -1, returnLabels: true });
  const partAttrs = cache.logitAttrs(parts, [answer], attrOpts); // [components, 1]
  html.dla = `<div data-answer="${answer}" data-wrong="${wrong ?? ""}">` +
    viz.patchingHeatmap(rowsOf(headAttrs.data, nLayers, nHeads), {
      cols: Array.from({ length: nHeads }, (_, h) => `H${h}`),
      axes: ["layer", "head"],
      value: `DLA of ${what}`,
      title: `Direct logit attribution by head, last position (${what})`,
    }).html +
    viz.patchingHeatmap([Array.from(partAttrs.data)], {
      rows: ["DLA"],
      cols: labels,
      axes: ["", "component"],
      value: `DLA of ${what}`,
      title: `By component`,
    }).html + `</div>`;

  if (state.corrupted.trim() === "") {
    notes.patching = "Type a corrupted prompt (with as many tokens as the prompt) to patch.";
  } else {
    const corruptedIds = promptIds(model, state.corrupted);
    if (corruptedIds.length !== ids.length) {
      notes.patching = `The corrupted prompt has ${corruptedIds.length} tokens, the prompt ` +
        `${ids.length}: patching needs as many.`;
    } else {
      const metric = wrong === undefined
        ? logProbMetric([answer])
        : logitDiffMetric([answer], [wrong]);
      const mname = wrong === undefined ? `log-prob of ${JSON.stringify(answerText)}` : what;
      const residPre = (n: string) => n.endsWith("hook_resid_pre") || n.endsWith("attn.hook_z");
      const clean = await model.runWithCache([ids], {
        namesFilter: residPre,
        inclBwdCache: true,
        metric,
      });
      const base = metric.value(clean.logits) as number;
      const { cache: corrupted } = await model.runWithCache([corruptedIds], {
        namesFilter: residPre,
      });
      const T = ids.length, d = model.cfg.dModel;
      const estimate = Array.from({ length: nLayers }, (_, l) => {
        const c = clean.cache.get("resid_pre", l).data;
        const g = clean.cache.get(`blocks.${l}.hook_resid_pre_grad`).data;
        const x = corrupted.get("resid_pre", l).data;
        return Array.from({ length: T }, (_, t) => {
          let s = 0;
          for (let i = t * d; i < (t + 1) * d; i++) s += (x[i] - c[i]) * g[i];
          return s;
        });
      });
      const dHead = model.cfg.dHead;
      const headEstimate = Array.from({ length: nLayers }, (_, l) => {
        // hook_z is [batch, pos, head, d_head]: sum over positions and d_head.
        const c = clean.cache.get("z", l).data;
        const g = clean.cache.get(`blocks.${l}.attn.hook_z_grad`).data;
        const x = corrupted.get("z", l).data;
        return Array.from({ length: nHeads }, (_, h) => {
          let s = 0;
          for (let t = 0; t < T; t++) {
            const at = (t * nHeads + h) * dHead;
            for (let i = at; i < at + dHead; i++) s += (x[i] - c[i]) * g[i];
          }
          return s;
        });
      });
      const cols = tokens;
      const pending = (what: string) =>
        `<div class="title">${what}</div><p class="note" data-pending>Computing: one patched ` +
        `run per cell; attribution patching's estimate is beside it.</p>`;
      const patchingHtml = (effect?: number[][], headEffect?: number[][]) =>
        `<div class="pair"><div data-kind="activation">` +
        (effect
          ? viz.patchingHeatmap(effect, {
            cols,
            value: `change of ${mname}`,
            title: `Activation patching: corrupted resid_pre into the clean run`,
          }).html
          : pending("Activation patching: corrupted resid_pre into the clean run")) +
        `</div><div data-kind="attribution">` +
        viz.patchingHeatmap(estimate, {
          cols,
          value: `estimated change of ${mname}`,
          title: `Attribution patching (one clean forward and backward, one corrupted pass)`,
        }).html + `</div></div><div class="pair"><div data-kind="activation-heads">` +
        (headEffect
          ? viz.patchingHeatmap(headEffect, {
            cols: headNames,
            axes: ["layer", "head"],
            value: `change of ${mname}`,
            title: `Activation patching: each head's corrupted output (every position)`,
          }).html
          : pending("Activation patching: each head's corrupted output (every position)")) +
        `</div><div data-kind="attribution-heads">` +
        viz.patchingHeatmap(headEstimate, {
          cols: headNames,
          axes: ["layer", "head"],
          value: `estimated change of ${mname}`,
          title: `Attribution patching of each head's output (from hook_z)`,
        }).html + `</div></div>`;
      if (opts.onPartial) {
        html.patching = patchingHtml();
        const partial: ExplorerResult = {
          id,
          tokens,
          ids,
          html: { ...html },
          notes: { ...notes },
          computeMs: Math.round(performance.now() - t0),
          partial: true,
        };
        if (!opts.onPartial(partial)) return partial;
      }
      // Patching the corrupted activation into the clean run; the effect is the metric's change.
      const effect = await patchWhereDifferent(model, ids, clean.cache, corrupted, metric, {
        what: "resid_pre",
        base,
      }); // [L][T]
      const headEffect = await patchWhereDifferent(model, ids, clean.cache, corrupted, metric, {
        what: "z",
        base,
      }); // [L][H]
      html.patching = patchingHtml(effect, headEffect);
    }
  }
  return {
    id,
    tokens,
    ids,
    html,
    notes,
    computeMs: Math.round(performance.now() - t0),
    partial: false,
  };
}
