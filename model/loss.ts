/**
 * TransformerLens's language-model loss (`lm_cross_entropy_loss`): the next-token cross-entropy,
 * computed on the backend chunk of logits by chunk (log-sum-exp and the target's logit are reduced
 * where the logits are), so asking for the loss alone never holds a `[batch, pos, d_vocab]` tensor
 * and unembeds only the positions that have a next token.
 * @module
 */
import type { Backend, DeviceArray } from "../backend/backend.ts";
import { InputError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";
import type { Padding } from "./padding.ts";

/**
 * log softmax(logits_i)[targets[i]] for each of the `count` rows of a chunk of logits
 * [count, dVocab] on the backend: the row's log-sum-exp and the target's logit are reduced there.
 *
 * @example
 * ```ts
 * import { WasmBackend } from "../backend/wasm/wasm_backend.ts";
 * import { targetLogProbs } from "./loss.ts";
 * const backend = await WasmBackend.load({ threads: 1 });
 * using scope = backend.scope();
 * const logits = scope.upload(new Float32Array([0, 0, 0, 0])); // 2 rows of 2 equal logits
 * await targetLogProbs(backend, logits, 2, 2, Int32Array.of(0, 1)); // [-0.693..., -0.693...]
 * ```
 */
export async function targetLogProbs(
  backend: Backend,
  logits: DeviceArray,
  count: number,
  dVocab: number,
  targets: Int32Array,
): Promise<Float64Array> {
  // Both reads are issued before either is awaited: one wait for the device, not two.
  const [lse, picked] = await Promise.all([
    backend.logSumExpRows(logits, count, dVocab),
    backend.takeAlongRows(logits, dVocab, targets),
  ]);
  return lse.map((l, i) => picked[i] - l);
}

/**
 * The predictions a next-token loss scores: plan rows b T + t with t >= `from` whose token t + 1
 * is real (with padding, both t and t + 1 inside the sequence's real tokens, TL's
 * `next_token_mask`), and the token each predicts.
 *
 * @example
 * ```ts
 * import { nextTokenRows } from "./loss.ts";
 * const { rows, targets } = nextTokenRows(Int32Array.of(5, 6, 7), 1, 3);
 * rows; // Int32Array [0, 1]
 * targets; // Int32Array [6, 7]
 * ```
 */
export function nextTokenRows(
  tokens: ArrayLike<number>,
  batch: number,
  T: number,
  padding?: Padding,
  from = 0,
): { rows: Int32Array; targets: Int32Array } {
  const rows: number[] = [], targets: number[] = [];
  for (let b = 0; b < batch; b++) {
    const first = Math.max(from, padding?.first[b] ?? 0), end = padding?.end[b] ?? T;
    const holes = padding?.holes;
    for (let t = first; t + 1 < end; t++) {
      // TL's next_token_mask: the mask at t and at t + 1 (a hole on either side drops it).
      if (holes && (holes[b * T + t] || holes[b * T + t + 1])) continue;
      rows.push(b * T + t);
      targets.push(tokens[b * T + t + 1]);
    }
  }
  return { rows: Int32Array.from(rows), targets: Int32Array.from(targets) };
}

/**
 * The loss of one batch, filled by the unembedding. Position t of sequence b predicts token
 * t + 1; with padding, only positions where both are real tokens count (TL's `next_token_mask`).
 *
 * @example
 * ```ts
 * import { NextTokenLoss } from "./loss.ts";
 * const loss = new NextTokenLoss(Int32Array.of(5, 6, 7), 1, 3);
 * loss.rows; // Int32Array [0, 1]: positions 0 and 1 predict tokens 6 and 7
 * ```
 */
export class NextTokenLoss {
  /** Plan rows (b T + t) whose next token is scored, in order. */
  readonly rows: Int32Array;
  /** The token each plan row predicts, -1 where none. */
  readonly #target: Int32Array;
  /** log p(next token) by plan row. */
  readonly #logProb: Float64Array;

  /**
   * @param tokens The batch's token ids [batch, T], row-major.
   * @param padding Where the real tokens are (default: everywhere).
   */
  constructor(
    tokens: Int32Array,
    private readonly batch: number,
    private readonly T: number,
    padding?: Padding,
  ) {
    if (T < 2) throw new InputError("the loss needs sequences of at least 2 tokens");
    const { rows, targets } = nextTokenRows(tokens, batch, T, padding);
    if (rows.length === 0) {
      throw new InputError("no position has a real next token: the loss is undefined");
    }
    this.#target = new Int32Array(batch * T).fill(-1);
    rows.forEach((r, i) => this.#target[r] = targets[i]);
    this.rows = rows;
    this.#logProb = new Float64Array(batch * T);
  }

  /**
   * An unembedding callback (`ForwardPlan.unembed.each`) for the plan rows `unembedded` (default:
   * exactly {@link rows}); rows without a next token are skipped.
   */
  reducer(
    backend: Backend,
    dVocab: number,
    unembedded: Int32Array = this.rows,
  ): (first: number, count: number, logits: DeviceArray) => Promise<void> {
    return async (first, count, logits) => {
      const rows = unembedded.subarray(first, first + count);
      const want = Int32Array.from(rows, (r) => Math.max(0, this.#target[r]));
      const lp = await targetLogProbs(backend, logits, count, dVocab, want);
      rows.forEach((r, i) => {
        if (this.#target[r] >= 0) this.#logProb[r] = lp[i];
      });
    };
  }

  /** The mean over scored positions of -log p(next token) (TL's default loss). */
  mean(): number {
    let sum = 0;
    for (const r of this.rows) sum -= this.#logProb[r];
    return sum / this.rows.length;
  }

  /** -log p(next token) as [batch, T - 1], 0 where the position is not scored (TL's per-token loss). */
  perToken(): Tensor {
    const { batch, T } = this;
    const data = new Float32Array(batch * (T - 1));
    for (const r of this.rows) {
      const b = Math.floor(r / T);
      data[b * (T - 1) + (r % T)] = -this.#logProb[r];
    }
    return { data, shape: [batch, T - 1] };
  }
}
