/**
 * The `results.json` that `deno task experiments` writes: every number of the study's run, the
 * tokens, the settings, the model and where it came from, and how long each step took. The report
 * (`report.html`) is rendered from this object alone, so a saved `results.json` can be re-rendered
 * or compared across runs and models.
 * @module
 */

import type { ToolkitAnalysis } from "../toolkit_analysis.ts";
import type { SaeAnalysis } from "../sae_analysis.ts";

/** The `schema` field of every results file. */
export const RESULTS_SCHEMA = "transformer-lens-deno/experiments-results";

/** The version of the results layout; bumped when a field changes meaning or is removed. */
export const RESULTS_SCHEMA_VERSION = 1;

/** A head as `[layer, head]`, zero-based (`[5, 5]` is TransformerLens's head 5.5). */
export type HeadRef = [layer: number, head: number];

/** A head and its score. */
export interface RankedHead {
  /** Layer, zero-based. */
  layer: number;
  /** Head within the layer, zero-based. */
  head: number;
  /** The score it was ranked by. */
  score: number;
}

/** One K-composition pair and its top-1 accuracy. */
export interface CompositionPair {
  /** The earlier (previous-token) head. */
  prev: HeadRef;
  /** The later (induction) head. */
  induction: HeadRef;
  /** Fraction of vocabulary rows whose largest entry is on the diagonal. */
  top1: number;
}

/** An attention pattern [query][key] of one head for one sequence of the batch. */
export interface AttentionRecord {
  /** Layer of the head. */
  layer: number;
  /** Head index. */
  head: number;
  /** Which sequence of the batch. */
  batchIndex: number;
  /** Attention probabilities, [query][key] (rows sum to 1, zero above the diagonal). */
  pattern: number[][];
}

/** One patching sweep: loss differences [layer][column] and the patched position of each column. */
export interface PatchingRecord {
  /** `"study"` (position p takes the clean value at p - seqLen) or `"aligned"` (same token). */
  alignment: "study" | "aligned";
  /** The patched position of each column (token index in the sequence). */
  positions: number[];
  /** Patched loss minus clean loss, [layer][column], in nats. */
  scores: number[][];
}

/** Attribution patching's estimates of one patching sweep, beside the exact sweep. */
export interface AttributionRecord {
  /** Which sweep (see {@linkcode PatchingRecord}). */
  alignment: "study" | "aligned";
  /** The patched position of each column. */
  positions: number[];
  /** First-order estimates of the loss change, [layer][column], in nats. */
  estimates: number[][];
  /** Pearson's correlation of the estimates with the exact sweep's scores. */
  correlation: number;
}

/** How long one step took. */
export interface StepTiming {
  /** Machine name of the step, e.g. `"patching"`. */
  step: string;
  /** What people read, e.g. `"MLP patching (2 sweeps)"`. */
  label: string;
  /** Wall-clock seconds. */
  seconds: number;
}

/** The study's own GPT-2 small figures, shown beside ours. */
export interface StudyReference {
  /** Which model they are for. */
  model: string;
  /** Mean log-prob of the correct token, first half. */
  firstHalf: number;
  /** Mean log-prob of the correct token, second half. */
  secondHalf: number;
  /** Top-1 accuracy, first half. */
  accuracyFirst: number;
  /** Top-1 accuracy, second half. */
  accuracySecond: number;
  /** The study's induction head and its score. */
  inductionHead: RankedHead;
  /** The study's previous-token head (no score is quoted). */
  previousTokenHead: HeadRef;
  /** K-composition top-1 of the study's pair. */
  kComposition: CompositionPair;
}

/**
 * The study's GPT-2 small figures ("How to interpret GPT2-small"): log-probs -13.898 / -0.644,
 * accuracy 0.0 / 0.93, induction head 5.5 scoring 0.91, previous-token head 4.11, and the
 * K-composition 4.11 -> 5.5 with top-1 0.2283.
 */
export const STUDY_REFERENCE: StudyReference = {
  model: "gpt2-small",
  firstHalf: -13.898,
  secondHalf: -0.644,
  accuracyFirst: 0.0,
  accuracySecond: 0.93,
  inductionHead: { layer: 5, head: 5, score: 0.91 },
  previousTokenHead: [4, 11],
  kComposition: { prev: [4, 11], induction: [5, 5], top1: 0.2283 },
};

/** Everything a run of `deno task experiments` measured. */
export interface ExperimentResults {
  /** Always {@linkcode RESULTS_SCHEMA}. */
  schema: typeof RESULTS_SCHEMA;
  /** {@linkcode RESULTS_SCHEMA_VERSION} at the time of writing. */
  schemaVersion: number;
  /** The library that produced the file. */
  library: { name: string; version: string };
  /** When the run finished (ISO 8601). */
  createdAt: string;
  /** Runtime, e.g. `"deno 2.9.6 (linux x86_64)"`. */
  runtime: string;
  /** The model and where it came from. */
  model: {
    /** The name or path the model was loaded by. */
    name: string;
    /** Where its files came from (resolver's description, e.g. `"embedded induction-toy"`). */
    source: string;
    /** Why this model was used (a flag, or the default choice and its reason). */
    choice: string;
    /** Whether it is the study's model, GPT-2 small, so the reference figures apply. */
    isGpt2Small: boolean;
    /** Its shape. */
    config: {
      modelName: string;
      /** The model family ("GPT-2", "GPT-NeoX", "Llama", "Qwen2"; absent in older files). */
      family?: string;
      /** The HF architecture, e.g. `GPTNeoXForCausalLM` (absent in older files). */
      originalArchitecture?: string;
      nLayers: number;
      nHeads: number;
      dModel: number;
      dHead: number;
      dMlp: number;
      dVocab: number;
      nCtx: number;
      bosTokenId: number;
    };
  };
  /** The run's settings. */
  settings: {
    /** Length of the random segment; sequences are 1 + 2 seqLen tokens. */
    seqLen: number;
    /** Number of sequences. */
    batch: number;
    /** Seed of the token generator. */
    seed: number;
    /** The previous-token head the plots and circuit use. */
    prevHead: HeadRef;
    /** `"flag"` when given by `--prev-head`, `"best"` when it is the top-scoring head. */
    prevHeadFrom: "flag" | "best";
    /** The induction head the plots and circuit use. */
    inductionHead: HeadRef;
    /** `"flag"` when given by `--induction-head`, `"best"` when it is the top-scoring head. */
    inductionHeadFrom: "flag" | "best";
    /** How many top heads of each kind are paired for the K-composition table. */
    topPairs: number;
    /** The hook the patching sweeps replace. */
    patchingHook: string;
  };
  /** The repeated-token batch, [batch][1 + 2 seqLen]. */
  tokens: { shape: [number, number]; data: number[][] };
  /** Token strings of sequence 0, when the model has a tokenizer. */
  tokenStrings?: string[];
  /** Log-probs of the correct next token. */
  logProbs: {
    /** Mean over the first seqLen predictions. */
    firstHalf: number;
    /** Mean over the last seqLen predictions. */
    secondHalf: number;
    /** Top-1 accuracy over the first seqLen predictions. */
    accuracyFirst: number;
    /** Top-1 accuracy over the last seqLen predictions. */
    accuracySecond: number;
    /** Mean over the batch at each position t (the prediction of token t + 1), [2 seqLen]. */
    perPosition: number[];
    /** Every log-prob, [batch][2 seqLen]. */
    perToken: number[][];
  };
  /** Head scores [layer][head] and the best heads of each kind, best first. */
  headScores: {
    induction: number[][];
    previousToken: number[][];
    duplicateToken: number[][];
    topInduction: RankedHead[];
    topPreviousToken: RankedHead[];
    topDuplicateToken: RankedHead[];
  };
  /** Attention patterns of the chosen heads. */
  attention: { induction: AttentionRecord; previousToken: AttentionRecord };
  /** MLP patching sweeps (batch 1: the batch's first sequence), both alignments. */
  patching: {
    /** Hook name pattern, e.g. `"mlp_out"`. */
    hook: string;
    /** Loss of the clean run on the second half (nats), when known. */
    cleanLoss?: number;
    study: PatchingRecord;
    aligned: PatchingRecord;
  };
  /**
   * The same sweeps estimated by attribution patching (one forward and backward pass each), when
   * the run did it.
   */
  attribution?: {
    /** Hook name pattern, e.g. `"mlp_out"`. */
    hook: string;
    study: AttributionRecord;
    aligned: AttributionRecord;
    /** Wall-clock seconds of both attribution sweeps. */
    seconds: number;
    /** Wall-clock seconds of both exact sweeps. */
    exactSeconds: number;
  };
  /** Circuits read from the weights. */
  circuits: {
    /** Top-1 accuracy of a random matrix: 1 / d_vocab. */
    chance: number;
    /** The chosen previous-token head into the chosen induction head. */
    kComposition: CompositionPair;
    /** Top previous-token heads x top induction heads (earlier layer first), best first. */
    pairs: CompositionPair[];
    /** OV copying: top-1 of W_E W_V W_O W_U for the chosen induction head. */
    ovCopying: { layer: number; head: number; top1: number };
  };
  /**
   * The second worked analysis (direct logit attribution and a logit lens of the repeated
   * tokens, written with the public toolkit); absent in files written before it existed.
   */
  toolkit?: ToolkitAnalysis;
  /**
   * With `--sae`: the SAE's features on the repeated half and their attribution to the correct
   * token's logit; absent otherwise.
   */
  sae?: SaeAnalysis;
  /** Each step's wall-clock time, in order. */
  timings: StepTiming[];
  /** Wall-clock seconds of the whole run, loading included. */
  totalSeconds: number;
  /** The study's GPT-2 small figures. */
  reference: StudyReference;
}

/**
 * Checks that a parsed JSON value is a results file this version can read, and returns it typed.
 * Throws an `Error` naming the first missing or mistyped field.
 *
 * @example
 * ```ts ignore
 * import { parseResults } from "./schema.ts";
 * const results = parseResults(JSON.parse(await Deno.readTextFile("out/experiments/results.json")));
 * results.logProbs.secondHalf;
 * ```
 */
export function parseResults(value: unknown): ExperimentResults {
  const fail = (what: string): never => {
    throw new Error(`not a results file: ${what}`);
  };
  if (typeof value !== "object" || value === null) fail("not an object");
  const v = value as Record<string, unknown>;
  if (v.schema !== RESULTS_SCHEMA) fail(`schema is ${JSON.stringify(v.schema)}`);
  if (v.schemaVersion !== RESULTS_SCHEMA_VERSION) {
    fail(`schemaVersion ${v.schemaVersion}, this reader knows ${RESULTS_SCHEMA_VERSION}`);
  }
  const need = (path: string, type: "number" | "string" | "object" | "array") => {
    let cur: unknown = v;
    for (const key of path.split(".")) {
      cur = typeof cur === "object" && cur !== null
        ? (cur as Record<string, unknown>)[key]
        : undefined;
    }
    const actual: string = typeof cur;
    const ok = type === "array"
      ? Array.isArray(cur)
      : type === "object"
      ? typeof cur === "object" && cur !== null
      : actual === type;
    if (!ok) fail(`${path} should be ${type === "array" ? "an array" : `a ${type}`}`);
  };
  need("model.name", "string");
  need("model.config.nLayers", "number");
  need("model.config.nHeads", "number");
  need("settings.seqLen", "number");
  need("settings.batch", "number");
  need("tokens.data", "array");
  need("logProbs.perPosition", "array");
  need("logProbs.secondHalf", "number");
  need("headScores.induction", "array");
  need("headScores.previousToken", "array");
  need("attention.induction.pattern", "array");
  need("attention.previousToken.pattern", "array");
  need("patching.study.scores", "array");
  need("patching.aligned.scores", "array");
  need("circuits.kComposition.top1", "number");
  need("circuits.pairs", "array");
  need("timings", "array");
  return v as unknown as ExperimentResults;
}
