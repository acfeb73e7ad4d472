/**
 * Language-model utilities of TransformerLens's `utils`: next-token cross-entropy and accuracy of
 * logits, and `testPrompt`, which shows how a model ranks the answer to a prompt.
 * @module
 */
import { InputError } from "../core/errors.ts";
import { checkOptions } from "../core/options.ts";
import { checkTensor } from "../core/ops.ts";
import type { Tensor } from "../core/tensor.ts";
import type { HookedTransformer } from "../model/hooked_transformer.ts";
import { type Tokens, type TokenTensor, toTokenTensor } from "../model/tokens.ts";

/** Options of {@link lmCrossEntropyLoss}. */
export interface LmLossOptions {
  /** [batch, pos] of 0 and 1: positions whose token or next token is 0 are left out. */
  attentionMask?: readonly (readonly number[])[];
  /** Return the loss of every position [batch, pos - 1] instead of the mean (default false). */
  perToken?: boolean;
}

/** Logits [batch, pos, d_vocab] and tokens [batch, pos] that belong together, checked. */
function logitsAndTokens(
  logits: Tensor,
  tokens: Tokens,
  where: string,
): { ids: TokenTensor; V: number } {
  checkTensor(logits, `${where}: the logits`);
  if (logits.shape.length !== 3) {
    throw new InputError(`${where}: logits must be [batch, pos, d_vocab], got [${logits.shape}]`);
  }
  const [B, T, V] = logits.shape;
  const ids = toTokenTensor(tokens, { dVocab: V, nCtx: Infinity, modelName: "these logits" });
  if (ids.shape[0] !== B || ids.shape[1] !== T) {
    throw new InputError(`${where}: tokens [${ids.shape}] do not match logits [${logits.shape}]`);
  }
  if (T < 2) throw new InputError(`${where}: needs at least 2 positions to predict a next token`);
  return { ids, V };
}

/** log softmax(row)[target], in float64. */
function logProb(row: Float32Array, target: number): number {
  let m = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i] > m) m = row[i];
  let s = 0;
  for (let i = 0; i < row.length; i++) s += Math.exp(row[i] - m);
  return row[target] - m - Math.log(s);
}

/**
 * The next-token cross-entropy of logits [batch, pos, d_vocab] for `tokens` [batch, pos]
 * (TransformerLens's `lm_cross_entropy_loss`): the mean over batch and positions 0..pos-2 of
 * -log p(tokens[b, t + 1]); with `perToken`, those losses as [batch, pos - 1]. With an
 * `attentionMask`, pairs with a masked token are left out (0 in the per-token tensor).
 *
 * @example
 * ```ts
 * import { lmCrossEntropyLoss } from "./lm_utils.ts";
 * // Two equally likely tokens everywhere: the loss is log 2.
 * const logits = { data: new Float32Array(1 * 3 * 2), shape: [1, 3, 2] };
 * lmCrossEntropyLoss(logits, [[0, 1, 0]]); // 0.6931...
 * lmCrossEntropyLoss(logits, [[0, 1, 0]], { perToken: true }).shape; // [1, 2]
 * ```
 */
export function lmCrossEntropyLoss(
  logits: Tensor,
  tokens: Tokens,
  opts: LmLossOptions & { perToken: true },
): Tensor;
/** Without `perToken`: the mean loss. */
export function lmCrossEntropyLoss(
  logits: Tensor,
  tokens: Tokens,
  opts?: LmLossOptions & { perToken?: false },
): number;
export function lmCrossEntropyLoss(
  logits: Tensor,
  tokens: Tokens,
  opts: LmLossOptions = {},
): number | Tensor {
  checkOptions(opts, ["attentionMask", "perToken"], "lmCrossEntropyLoss");
  const { ids, V } = logitsAndTokens(logits, tokens, "lmCrossEntropyLoss");
  const [B, T] = ids.shape;
  const mask = opts.attentionMask;
  if (mask !== undefined) {
    if (
      !Array.isArray(mask) || mask.length !== B ||
      mask.some((r) => !Array.isArray(r) || r.length !== T)
    ) {
      throw new InputError(`lmCrossEntropyLoss: attentionMask must be [${B}, ${T}] of 0 and 1`);
    }
  }
  const out = new Float32Array(B * (T - 1));
  let total = 0, count = 0;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T - 1; t++) {
      const keep = mask ? (mask[b][t] ? 1 : 0) * (mask[b][t + 1] ? 1 : 0) : 1;
      if (!keep) continue;
      const loss = -logProb(
        logits.data.subarray((b * T + t) * V, (b * T + t + 1) * V),
        ids.data[b * T + t + 1],
      );
      out[b * (T - 1) + t] = loss;
      total += loss;
      count++;
    }
  }
  if (opts.perToken) return { data: out, shape: [B, T - 1] };
  return total / count;
}

/**
 * Top-1 next-token accuracy of logits [batch, pos, d_vocab] on `tokens` (TransformerLens's
 * `lm_accuracy`): the share of positions 0..pos-2 whose argmax is the next token (the first
 * maximum on ties); with `perToken`, 1 or 0 per position as [batch, pos - 1].
 *
 * @example
 * ```ts
 * import { lmAccuracy } from "./lm_utils.ts";
 * const logits = { data: Float32Array.of(0, 1, 1, 0, 0, 0), shape: [1, 3, 2] };
 * lmAccuracy(logits, [[0, 1, 1]]); // 0.5: position 0 predicts 1 (right), position 1 predicts 0
 * ```
 */
export function lmAccuracy(logits: Tensor, tokens: Tokens, opts: { perToken: true }): Tensor;
/** Without `perToken`: the share of correct predictions. */
export function lmAccuracy(logits: Tensor, tokens: Tokens, opts?: { perToken?: false }): number;
export function lmAccuracy(
  logits: Tensor,
  tokens: Tokens,
  opts: { perToken?: boolean } = {},
): number | Tensor {
  checkOptions(opts, ["perToken"], "lmAccuracy");
  const { ids, V } = logitsAndTokens(logits, tokens, "lmAccuracy");
  const [B, T] = ids.shape;
  const out = new Float32Array(B * (T - 1));
  let hits = 0;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T - 1; t++) {
      const row = logits.data.subarray((b * T + t) * V, (b * T + t + 1) * V);
      let best = 0;
      for (let i = 1; i < V; i++) if (row[i] > row[best]) best = i;
      const hit = best === ids.data[b * T + t + 1] ? 1 : 0;
      out[b * (T - 1) + t] = hit;
      hits += hit;
    }
  }
  return opts.perToken ? { data: out, shape: [B, T - 1] } : hits / out.length;
}

/** One token's standing in a next-token distribution (see {@link testPrompt}). */
export interface TokenRank {
  /** The token id. */
  token: number;
  /** Its text (its id in brackets when the model has no tokenizer). */
  text: string;
  /** Its rank, 0 = the most likely. */
  rank: number;
  /** Its logit. */
  logit: number;
  /** Its probability. */
  prob: number;
}

/** What {@link testPrompt} found at one answer position. */
export interface AnswerPosition {
  /** The answer token(s) at this position (one per answer when several answers are compared). */
  answers: TokenRank[];
  /** The `topK` most likely tokens for the first (or only) answer's sequence. */
  top: TokenRank[];
}

/** What {@link testPrompt} returns (and prints). */
export interface TestPromptResult {
  /** The prompt's tokens as text. */
  promptTokens: string[];
  /** Each answer's tokens as text. */
  answerTokens: string[][];
  /** One entry per answer position. */
  positions: AnswerPosition[];
}

/** Options of {@link testPrompt}. */
export interface TestPromptOptions {
  /** Prepend a space to text answers that lack one (default true). */
  prependSpaceToAnswer?: boolean;
  /** Print the tokens, the answer's rank, logit and probability and the top tokens (default true). */
  printDetails?: boolean;
  /** Prepend BOS to a text prompt (default: the model's default, true for GPT-2). */
  prependBos?: boolean;
  /** How many top tokens to list (default 10). */
  topK?: number;
  /** Where the printout goes (default `console.log`). */
  print?: (line: string) => void;
}

/**
 * How the model ranks the answer to a prompt, position by position (TransformerLens's
 * `utils.test_prompt`): the answer token's rank, logit and probability and the top tokens,
 * printed as TransformerLens prints them, and returned. Text needs the model's tokenizer; token
 * ids work with any model (a prompt `number[]` and an answer id or ids). Several text answers
 * (`string[]`) are compared at the first answer position.
 *
 * @example
 * ```ts
 * import { HookedTransformer, testPrompt } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const result = await testPrompt(model, [2047, 5, 9, 13, 5, 9], 13, { printDetails: false });
 * result.positions[0].answers[0].rank; // 0: the toy's induction heads complete the repeat
 * ```
 *
 * @example Text (a model with a tokenizer)
 * ```ts
 * import { HookedTransformer, testPrompt } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
 * await testPrompt(model, "And Moses said unto", "Aaron");
 * // Tokenized prompt: ["<|endoftext|>","And"," Moses"," said"," unto"]
 * // Tokenized answer: [" Aaron"]
 * // Performance on answer token:
 * // Rank: 0        Logit: 14.82 Prob: 36.70% Token: | Aaron|
 * // Top 0th token. Logit: 14.82 Prob: 36.70% Token: | Aaron|
 * // Top 1th token. Logit: 14.32 Prob: 22.10% Token: | them|
 * // ...
 * ```
 */
export async function testPrompt(
  model: HookedTransformer,
  prompt: string | number[],
  answer: string | string[] | number | number[],
  opts: TestPromptOptions = {},
): Promise<TestPromptResult> {
  checkOptions(
    opts,
    ["prependSpaceToAnswer", "printDetails", "prependBos", "topK", "print"],
    "testPrompt",
  );
  const print = opts.print ?? ((line: string) => console.log(line));
  const topK = opts.topK ?? 10;
  if (!Number.isInteger(topK) || topK < 0) {
    throw new InputError(`testPrompt: topK must be a whole number, got ${topK}`);
  }
  const text = (ids: number[]) =>
    model.tokenizer ? model.tokenizer.tokenStrings(ids) : ids.map((i) => `[${i}]`);
  const promptIds = typeof prompt === "string"
    ? model.toTokens(prompt, { prependBos: opts.prependBos ?? model.cfg.defaultPrependBos })[0]
    : prompt;
  let answerIds: number[][];
  if (typeof answer === "number") answerIds = [[answer]];
  else if (Array.isArray(answer) && answer.every((a) => typeof a === "number")) {
    answerIds = [answer as number[]];
  } else {
    const texts = (typeof answer === "string" ? [answer] : answer as string[]).map((a) =>
      (opts.prependSpaceToAnswer ?? true) && !a.startsWith(" ") ? ` ${a}` : a
    );
    answerIds = texts.map((a) => model.toTokens(a, { prependBos: false })[0]);
    if (answerIds.length > 1) answerIds = answerIds.map((ids) => ids.slice(0, 1));
  }
  if (answerIds.some((ids) => ids.length === 0)) {
    throw new InputError("testPrompt: an answer has no tokens");
  }
  const several = answerIds.length > 1;
  const answerLength = answerIds[0].length;
  const P = promptIds.length;
  const batch = answerIds.map((ids) => [...promptIds, ...ids]);
  const logits = await model.run(batch);
  const [, T, V] = logits.shape;
  const row = (b: number, t: number) => logits.data.subarray((b * T + t) * V, (b * T + t + 1) * V);
  const result: TestPromptResult = {
    promptTokens: text(promptIds),
    answerTokens: answerIds.map(text),
    positions: [],
  };
  if (opts.printDetails ?? true) {
    print(`Tokenized prompt: ${JSON.stringify(result.promptTokens)}`);
    print(
      `Tokenized answer${several ? "s" : ""}: ${
        JSON.stringify(several ? result.answerTokens : result.answerTokens[0])
      }`,
    );
  }
  for (let i = 0; i < answerLength; i++) {
    const ranked = (b: number, token: number) => rankOf(row(b, P + i - 1), token, text([token])[0]);
    const answers = answerIds.map((ids, b) => ranked(b, ids[i]));
    const first = row(0, P + i - 1);
    const order = Array.from({ length: V }, (_, j) => j).sort((x, y) =>
      first[y] - first[x] || x - y
    );
    const top = order.slice(0, topK).map((token) => ranked(0, token));
    result.positions.push({ answers, top });
    if (opts.printDetails ?? true) {
      print(`Performance on answer token${several ? "s" : ""}:`);
      for (const a of answers) {
        print(
          `Rank: ${String(a.rank).padEnd(8)} Logit: ${fmt(a.logit)} Prob: ${
            pct(a.prob)
          } Token: |${a.text}|`,
        );
      }
      top.forEach((t, k) =>
        print(`Top ${k}th token. Logit: ${fmt(t.logit)} Prob: ${pct(t.prob)} Token: |${t.text}|`)
      );
    }
  }
  const ranks = result.positions.map((p) => p.answers.map((a) => `('${a.text}', ${a.rank})`));
  print(
    `Ranks of the answer tokens: [${
      several ? ranks.map((r) => `[${r.join(", ")}]`).join(", ") : ranks.map((r) => r[0]).join(", ")
    }]`,
  );
  return result;
}

function rankOf(row: Float32Array, token: number, text: string): TokenRank {
  let m = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i] > m) m = row[i];
  let z = 0, rank = 0;
  const v = row[token];
  for (let i = 0; i < row.length; i++) {
    z += Math.exp(row[i] - m);
    if (row[i] > v || (row[i] === v && i < token)) rank++;
  }
  return { token, text, rank, logit: v, prob: Math.exp(v - m) / z };
}

const fmt = (x: number) => x.toFixed(2).padStart(5);
const pct = (p: number) => `${(100 * p).toFixed(2)}%`.padStart(6);
