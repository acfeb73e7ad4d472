/**
 * Views for notebooks and pages, the counterpart of CircuitsVis's Python API: each function
 * returns an {@link HtmlView}, which renders inline in `deno jupyter` and offers `.toHTML()` (a
 * standalone page) and `.save(path)`. Colours are colour-blind safe (Paul Tol's diverging BuRd
 * and its blue half), each view shows its scale, and every cell shows its number on hover and on
 * keyboard focus (Tab). Inside a Jupyter kernel, importing this module also makes Tensors and
 * ActivationCaches display as compact tables (see {@link enableNotebookDisplay}).
 *
 * @example
 * ```ts
 * import { HookedTransformer } from "../mod.ts";
 * import { attentionHeads, coloredTokens, logitLens } from "./mod.ts";
 *
 * const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
 * const text = "And God said, Let there be light: and there was light.";
 * const tokens = model.toStrTokens(text);
 * const { cache } = await model.runWithCache(text);
 * attentionHeads(cache.get("pattern", 0), tokens, { layer: 0 }); // a cell's value: shown inline
 * const lens = await logitLens(model, text);
 * const html = lens.toHTML(); // a standalone page; lens.save("lens.html") writes one
 * coloredTokens(tokens, tokens.map((t) => t.length));
 * ```
 * @module
 */
import { enableNotebookDisplay, inJupyter } from "./notebook.ts";

export { HtmlView, type MimeBundle } from "./html.ts";
export {
  attentionHeads,
  type AttentionHeadsOptions,
  attentionPattern,
  type AttentionPatternOptions,
} from "./attention.ts";
export {
  coloredTokens,
  type ColoredTokensOptions,
  topkTokens,
  type TopkTokensOptions,
} from "./tokens.ts";
export {
  logitLens,
  type LogitLensGrid,
  logitLensGrid,
  type LogitLensOptions,
} from "./logit_lens.ts";
export { patchingHeatmap, type PatchingLabels } from "./patching.ts";
export { saeFeatures, type SaeFeaturesOptions } from "./sae_features.ts";
export { cacheView, tensorView } from "./tensor_view.ts";
export { type ColorScale, DIVERGING, SEQUENTIAL } from "./palette.ts";
export {
  disableNotebookDisplay,
  enableNotebookDisplay,
  inJupyter,
  notebookDisplayEnabled,
} from "./notebook.ts";

if (inJupyter()) enableNotebookDisplay();
