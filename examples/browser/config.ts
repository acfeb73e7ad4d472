/**
 * What the browser example computes and shows (shared by the page's module and its test, which
 * must not import the page's module: that one needs the DOM's types).
 * @module
 */

/** Length of the repeated segment (the study's). */
export const SEQ_LEN = 50;
/** Sequences in the batch (the study's). */
export const BATCH = 30;
/** Seed of the repeated tokens. */
export const SEED = 0;
/** The induction head drawn: layer. */
export const LAYER = 1;
/** The induction head drawn: head. */
export const HEAD = 2;

/** What the page exposes as `window.__scores` (and, without `pattern`, in `<pre id="scores">`). */
export interface PageScores {
  /** The model's name. */
  model: string;
  /** Length of the repeated segment. */
  seqLen: number;
  /** Sequences in the batch. */
  batch: number;
  /** Seed of the repeated tokens. */
  seed: number;
  /** `[nLayers][nHeads]`, as `headScores` returns them. */
  induction: number[][];
  /** `[nLayers][nHeads]`. */
  previousToken: number[][];
  /** `[nLayers][nHeads]`. */
  duplicateToken: number[][];
  /** The drawn head's pattern on the first sequence, `[q][k]`. */
  pattern: number[][];
  /** Milliseconds spent loading the model. */
  loadMs: number;
  /** Milliseconds spent computing the scores and the pattern. */
  computeMs: number;
}
