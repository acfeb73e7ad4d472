/**
 * The forward pass: embed -> blocks (norm, attention, norm, MLP) -> final norm -> unembed, for
 * every caller. A {@linkcode ForwardPlan} says which rows to compute, where to start and stop and
 * what to do with the logits; a {@linkcode HookSession} says which hook points to cache or hook.
 * Buffers are sized from both, inside one backend scope released when the pass ends.
 *
 * One code path serves plain runs (every position of every sequence) and resumed runs (sequence b
 * computes only positions [qStart[b], T) from a given layer on, reading the clean keys and values
 * of earlier positions), which is what makes activation patching cheap.
 * @module
 */
import type { Backend, DeviceArray, Scope } from "../backend/backend.ts";
import { InputError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";
import type { HookedTransformerConfig } from "./config.ts";
import type { DeviceNorm, DeviceWeights } from "./device_weights.ts";
import { HOOK, type HookPoint } from "./hook_table.ts";
import type { HookSession, RowLayout } from "./hooks.ts";
import type { ModelParams } from "./params.ts";
import type { RotaryTable } from "./rotary.ts";
import type { TokenTensor } from "./tokens.ts";

/** Rows of logits computed per unembedding product, so memory holds one chunk only. */
export const LOGIT_CHUNK_ROWS = 64;

/** What a pass computes with: the backend, the config and the weights. */
export interface ModelRuntime {
  backend: Backend;
  cfg: HookedTransformerConfig;
  /** The weights on the backend. */
  weights: DeviceWeights;
  /** The weights in JavaScript (the embeddings are gathered from here). */
  params: ModelParams;
  /** Rotary cosines and sines by position (rotary models; null otherwise). */
  rotary: RotaryTable | null;
}

/**
 * What one pass computes. Sequence b covers positions [qStart[b], T); its rows are stored one
 * after another, so a full plan has batch x T rows.
 */
export interface ForwardPlan {
  /** Number of sequences. */
  batch: number;
  /** Length of every sequence. */
  T: number;
  /** Tokens to embed (starting at layer 0); absent when the pass starts from `input`. */
  tokens?: TokenTensor;
  /** First position each sequence computes (default 0: every position). */
  qStart?: ArrayLike<number>;
  /**
   * The absolute position of each of the plan's rows, for position embeddings (W_pos, rotary):
   * default qStart[b] + i for row i of sequence b. (Left padding shifts them.)
   */
  positions?: ArrayLike<number>;
  /**
   * Per layer, a clean run's fused Q|K|V rows [T, (n_heads + 2 n_key_value_heads) d_head]: the
   * keys and values of positions before qStart (required when any qStart is above 0).
   */
  prefixKv?: readonly DeviceArray[];
  /** The block the pass starts in (default 0). */
  startLayer?: number;
  /**
   * Start before the MLP half of `startLayer` (its resid_mid) instead of before attention (not
   * for parallel attention + MLP blocks, which have no resid_mid).
   */
  startMid?: boolean;
  /** Writes the starting residual stream into `resid` (rows as the plan stores them). */
  input?: (resid: DeviceArray, rowOffset: Int32Array) => void;
  /** Stop before this block (default nLayers): the result's `resid` is its resid_pre. */
  stopAtLayer?: number;
  /** Copies of activations for later resumed passes, by layer (full plans only). */
  record?: {
    /** resid_pre of each layer; entry nLayers receives the final resid_post. */
    residPre?: DeviceArray[];
    /**
     * resid_mid of each layer; in parallel blocks resid_pre + attn_out, the partial sum before
     * mlp_out is added (not a hook point there).
     */
    residMid?: DeviceArray[];
    /** mlp_out of each layer. */
    mlpOut?: DeviceArray[];
    /** Fused Q|K|V rows of each layer (keys after rotary embeddings). */
    qkv?: DeviceArray[];
  };
  /**
   * Unembedding: `each(firstRow, count, logits)` receives consecutive chunks of logits
   * [count, d_vocab] (valid only during the call) of the rows listed in `rows` (indices into the
   * plan's rows; default all). Absent: no unembedding.
   */
  unembed?: {
    rows?: Int32Array;
    each: (first: number, count: number, logits: DeviceArray) => void;
  };
}

/** What a pass returns. */
export interface ForwardResult {
  /** The residual stream entering `stopAtLayer` [batch, T, d_model], when the plan stops early. */
  resid?: Tensor;
}

/** Where each sequence's rows start, and the total, for a plan. */
export function planRows(plan: Pick<ForwardPlan, "batch" | "T" | "qStart">): {
  rowOffset: Int32Array;
  rows: number;
} {
  const rowOffset = new Int32Array(plan.batch);
  let rows = 0;
  for (let b = 0; b < plan.batch; b++) {
    rowOffset[b] = rows;
    rows += plan.T - (plan.qStart?.[b] ?? 0);
  }
  return { rowOffset, rows };
}

/** Row i of sequence b sits at position qStart[b] + i. */
function defaultPositions(qStart: Int32Array, T: number): Int32Array {
  let rows = 0;
  for (const q of qStart) rows += T - q;
  const out = new Int32Array(rows);
  let r = 0;
  for (const q of qStart) for (let t = q; t < T; t++) out[r++] = t;
  return out;
}

/**
 * Runs one pass. Reads top to bottom as the model computes: input, blocks, final norm, unembed.
 */
export function forward(m: ModelRuntime, plan: ForwardPlan, hooks: HookSession): ForwardResult {
  const { cfg } = m;
  const start = plan.startLayer ?? 0;
  const stop = plan.stopAtLayer ?? cfg.nLayers;
  using scope = m.backend.scope();
  const pass = new Pass(m, plan, hooks, scope);

  // 1. The residual stream entering the first block computed.
  if (plan.tokens) pass.embed(plan.tokens);
  else plan.input!(pass.buf.resid, pass.rowOffset);

  // 2. The blocks.
  for (let l = start; l < stop; l++) {
    if (l === start && plan.startMid) pass.mlpHalf(l);
    else pass.block(l);
  }
  if (stop < cfg.nLayers) return { resid: pass.readResid() };
  pass.record("residPre", cfg.nLayers);

  // 3. The final norm, and 4. the unembedding.
  pass.norm(HOOK.lnFinalScale, HOOK.lnFinalNormalized, null, m.weights.lnFinal);
  if (plan.unembed) pass.unembed(plan.unembed.rows, plan.unembed.each);
  return {};
}

/** The activation buffers of one pass, sized from its plan and session. */
interface Buffers {
  /** Residual stream [rows, d_model], updated in place. */
  resid: DeviceArray;
  /** Normalized residual [rows, d_model]. */
  x: DeviceArray;
  /** Normalization scale [rows], only when a hook or the cache reads one. */
  scale?: DeviceArray;
  /** Fused Q|K|V [rows, qkvCols]. */
  qkv: DeviceArray;
  /** Head outputs [rows, n_heads d_head]. */
  z: DeviceArray;
  /** attn_out / mlp_out [rows, d_model]. */
  out: DeviceArray;
  /** MLP hidden [rows, d_mlp]. */
  mlp: DeviceArray;
  /** Gated MLPs: [gate | up] pre-activations [rows, 2 d_mlp]. */
  gateUp?: DeviceArray;
  /** Parallel blocks: attn_out [rows, d_model], kept while the MLP runs. */
  attnOut?: DeviceArray;
  /** Rotary models: each row's cosines and sines [rows, rotaryDim]. */
  cs?: DeviceArray;
  /** Attention pattern [batch, head, T, T], when a hook point needs it. */
  pattern?: DeviceArray;
  /** Attention scores [batch, head, T, T], when a hook point needs them. */
  scores?: DeviceArray;
  /** [T, qkvCols] gathering one resumed sequence's Q|K|V (resumed plans only). */
  kv?: DeviceArray;
}

/** One pass's state: the plan, its buffers, and each stage as a method. */
class Pass {
  readonly buf: Buffers;
  readonly rowOffset: Int32Array;
  readonly rows: number;
  readonly #qStart: Int32Array;
  readonly #positions: ArrayLike<number>;
  readonly #qkvCols: number;
  readonly #anyHook: (p: HookPoint) => boolean;

  constructor(
    private readonly m: ModelRuntime,
    private readonly plan: ForwardPlan,
    private readonly hooks: HookSession,
    scope: Scope,
  ) {
    const { cfg } = m;
    const { batch, T } = plan;
    ({ rowOffset: this.rowOffset, rows: this.rows } = planRows(plan));
    this.#qStart = Int32Array.from({ length: batch }, (_, b) => plan.qStart?.[b] ?? 0);
    const resumed = this.#qStart.some((q) => q > 0);
    if (resumed && !plan.prefixKv) {
      throw new InputError("a resumed pass (qStart > 0) needs the clean keys and values");
    }
    if (resumed && !hooks.silent) {
      throw new InputError("hooks and caches run on full passes only, not on resumed ones");
    }
    if (plan.startMid && cfg.parallelAttnMlp) {
      throw new InputError(
        `${cfg.modelName} has parallel attention and MLP blocks: there is no resid_mid to start from`,
      );
    }
    this.#positions = plan.positions ?? defaultPositions(this.#qStart, T);
    if (this.#positions.length !== this.rows) {
      throw new InputError(
        `the plan gives ${this.#positions.length} positions for its ${this.rows} rows`,
      );
    }
    this.#qkvCols = (cfg.nHeads + 2 * cfg.nKeyValueHeads) * cfg.dHead;
    const layers = Array.from({ length: cfg.nLayers }, (_, l) => l);
    this.#anyHook = (p) => !hooks.silent && layers.some((l) => hooks.wants(p, l));
    const wantScale = !hooks.silent &&
      [HOOK.ln1Scale, HOOK.ln2Scale, HOOK.lnFinalScale].some((p) =>
        p.inBlock ? this.#anyHook(p) : hooks.wants(p, null)
      );
    const wantScores = this.#anyHook(HOOK.attnScores);
    const wantPattern = wantScores || this.#anyHook(HOOK.pattern);
    const R = this.rows, d = cfg.dModel, attn = batch * cfg.nHeads * T * T;
    this.buf = {
      resid: scope.alloc(R * d),
      x: scope.alloc(R * d),
      scale: wantScale ? scope.alloc(R) : undefined,
      qkv: scope.alloc(R * this.#qkvCols),
      z: scope.alloc(R * cfg.nHeads * cfg.dHead),
      out: scope.alloc(R * d),
      mlp: scope.alloc(R * cfg.dMlp),
      gateUp: cfg.gatedMlp ? scope.alloc(R * 2 * cfg.dMlp) : undefined,
      attnOut: cfg.parallelAttnMlp ? scope.alloc(R * d) : undefined,
      cs: m.rotary ? scope.upload(m.rotary.rows(this.#positions)) : undefined,
      pattern: wantPattern ? scope.alloc(attn) : undefined,
      scores: wantScores ? scope.alloc(attn) : undefined,
      kv: resumed ? scope.alloc(T * this.#qkvCols) : undefined,
    };
  }

  /** TransformerLens's shape of a hook point's activation in this pass. */
  #shape(p: HookPoint): number[] {
    return p.shape(this.m.cfg, this.plan.batch, this.plan.T);
  }

  /** Visits hook point `p` over `cols` columns of `x`'s rows (`stride` apart). */
  #visit(p: HookPoint, l: number | null, x: DeviceArray, cols: number, stride = cols): boolean {
    if (!this.hooks.wants(p, l)) return false;
    const layout: RowLayout = { rows: this.rows, cols, stride };
    return this.hooks.visit(p, l, x, this.#shape(p), layout);
  }

  /** Copies the residual stream (or `from`) into `plan.record[what][l]` when asked. */
  record(what: "residPre" | "residMid" | "mlpOut", l: number, from = this.buf.resid): void {
    const to = this.plan.record?.[what]?.[l];
    if (to) this.m.backend.copy(from.at(0, to.length), to);
  }

  /** resid = W_E[tokens] + W_pos[positions], with hook_embed and hook_pos_embed. */
  embed(tokens: TokenTensor): void {
    const { backend, cfg, params } = this.m;
    const d = cfg.dModel;
    const { batch, T } = this.plan;
    const rows = batch * T;
    const embed = new Float32Array(rows * d);
    const WE = params.W_E.data;
    for (let r = 0; r < rows; r++) {
      const id = tokens.data[r];
      embed.set(WE.subarray(id * d, id * d + d), r * d);
    }
    backend.write(this.buf.x, embed);
    this.#visit(HOOK.embed, null, this.buf.x, d);
    if (params.W_pos) {
      const pos = new Float32Array(rows * d);
      const WP = params.W_pos.data;
      for (let r = 0; r < rows; r++) {
        const t = this.#positions[r];
        pos.set(WP.subarray(t * d, t * d + d), r * d);
      }
      backend.write(this.buf.out, pos);
      this.#visit(HOOK.posEmbed, null, this.buf.out, d);
      backend.add(this.buf.x.at(0, rows * d), this.buf.out.at(0, rows * d), this.buf.resid);
    } else {
      backend.copy(this.buf.x.at(0, rows * d), this.buf.resid);
    }
  }

  /** Block `l`: resid_pre -> resid_post. */
  block(l: number): void {
    const { buf } = this;
    const d = this.m.cfg.dModel;
    this.#attentionOut(l);
    if (!this.m.cfg.parallelAttnMlp) {
      this.#addToResid(buf.out);
      this.record("residMid", l);
      this.#visit(HOOK.residMid, l, buf.resid, d);
      this.mlpHalf(l);
      return;
    }
    // Parallel: the MLP reads resid_pre too; resid_post = (resid_pre + attn_out) + mlp_out.
    this.#mlpOut(l);
    this.#addToResid(buf.attnOut!);
    this.record("residMid", l);
    this.#addToResid(buf.out);
    this.#visit(HOOK.residPost, l, buf.resid, d);
  }

  /**
   * Normalizes the residual stream into `x` (LayerNorm or RMSNorm by the config), with the norm's
   * two hook points; `hook_normalized` sees the values before the norm's weight and bias, as in
   * TransformerLens.
   */
  norm(scaleHook: HookPoint, normalizedHook: HookPoint, l: number | null, w: DeviceNorm | null) {
    const { backend, cfg } = this.m;
    const { buf, rows } = this;
    const d = cfg.dModel;
    const wantScale = this.hooks.wants(scaleHook, l);
    const opts = { scale: wantScale ? buf.scale : undefined };
    const resid = buf.resid.at(0, rows * d);
    const rms = cfg.normalizationType === "RMS" || cfg.normalizationType === "RMSPre";
    if (rms) backend.rmsNorm(resid, buf.x, rows, d, cfg.eps, opts);
    else backend.layerNorm(resid, buf.x, rows, d, cfg.eps, opts);
    if (wantScale) this.#visit(scaleHook, l, buf.scale!, 1);
    this.#visit(normalizedHook, l, buf.x, d);
    if (w) backend.affineRows(buf.x, buf.x, rows, d, w.w, w.b);
  }

  /**
   * resid_pre -> attn_out of block `l` (norm, attention, output projection), into `out`, or into
   * `attnOut` in parallel blocks.
   */
  #attentionOut(l: number) {
    const { backend, cfg } = this.m;
    const { buf, rows } = this;
    const blk = this.m.weights.blocks[l];
    const d = cfg.dModel, qCols = cfg.nHeads * cfg.dHead, kvCols = cfg.nKeyValueHeads * cfg.dHead;
    const W = this.#qkvCols;
    this.record("residPre", l);
    this.#visit(HOOK.residPre, l, buf.resid, d);
    this.norm(HOOK.ln1Scale, HOOK.ln1Normalized, l, blk.ln1);
    backend.matmul(buf.x, blk.W_QKV, buf.qkv, rows, { bias: blk.b_QKV });
    this.#visit(HOOK.q, l, buf.qkv, qCols, W);
    this.#visit(HOOK.k, l, buf.qkv.at(qCols), kvCols, W);
    this.#visit(HOOK.v, l, buf.qkv.at(qCols + kvCols), kvCols, W);
    if (buf.cs) {
      const { nHeads, nKeyValueHeads, dHead, rotaryDim } = cfg;
      backend.rotary(buf.qkv, buf.cs, {
        rows,
        stride: W,
        nHeads: nHeads + nKeyValueHeads,
        dHead,
        rotaryDim,
      });
      this.#visit(HOOK.rotQ, l, buf.qkv, qCols, W);
      this.#visit(HOOK.rotK, l, buf.qkv.at(qCols), kvCols, W);
    }
    const qkvRecord = this.plan.record?.qkv?.[l];
    if (qkvRecord) backend.copy(buf.qkv.at(0, rows * W), qkvRecord);
    this.#attention(l);
    this.#visit(HOOK.z, l, buf.z, qCols);
    const out = buf.attnOut ?? buf.out;
    backend.matmul(buf.z, blk.W_O, out, rows, { bias: blk.b_O });
    this.#visit(HOOK.attnOut, l, out, d);
  }

  /** resid_mid -> resid_post of block `l` (sequential blocks): norm, MLP, residual add. */
  mlpHalf(l: number): void {
    this.#mlpOut(l);
    this.#addToResid(this.buf.out);
    this.#visit(HOOK.residPost, l, this.buf.resid, this.m.cfg.dModel);
  }

  /** The MLP of block `l` on the residual stream, into `out` (mlp_out). */
  #mlpOut(l: number): void {
    const { backend, cfg } = this.m;
    const { buf, rows } = this;
    const blk = this.m.weights.blocks[l];
    const d = cfg.dModel, dMlp = cfg.dMlp;
    this.norm(HOOK.ln2Scale, HOOK.ln2Normalized, l, blk.ln2);
    if (buf.gateUp) {
      // One product for [gate | up], then act(gate) * up.
      backend.matmul(buf.x, blk.W_in, buf.gateUp, rows, { bias: blk.b_in });
      this.#visit(HOOK.mlpPre, l, buf.gateUp, dMlp, 2 * dMlp);
      this.#visit(HOOK.mlpPreLinear, l, buf.gateUp.at(dMlp), dMlp, 2 * dMlp);
      backend.gatedActivation(cfg.actFn, buf.gateUp, buf.mlp, rows, dMlp);
    } else {
      backend.matmul(buf.x, blk.W_in, buf.mlp, rows, { bias: blk.b_in });
      this.#visit(HOOK.mlpPre, l, buf.mlp, dMlp);
      const hidden = buf.mlp.at(0, rows * dMlp);
      backend.activation(cfg.actFn, hidden, hidden);
    }
    this.#visit(HOOK.mlpPost, l, buf.mlp, dMlp);
    backend.matmul(buf.mlp, blk.W_out, buf.out, rows, { bias: blk.b_out });
    this.record("mlpOut", l, buf.out);
    this.#visit(HOOK.mlpOut, l, buf.out, d);
  }

  #addToResid(x: DeviceArray) {
    const n = this.rows * this.m.cfg.dModel;
    const resid = this.buf.resid.at(0, n);
    this.m.backend.add(resid, x.at(0, n), resid);
  }

  /** The attention core of layer `l`: z from the Q|K|V rows, with the score and pattern hooks. */
  #attention(l: number) {
    const { backend, cfg } = this.m;
    const { buf, plan } = this;
    const { nHeads, dHead, nKeyValueHeads } = cfg;
    const W = this.#qkvCols, d = nHeads * dHead, kvCols = nKeyValueHeads * dHead, T = plan.T;
    const perSeq = nHeads * T * T;
    const scale = 1 / Math.sqrt(dHead);

    // Sequence b's Q|K|V rows: in place for full plans; gathered into `kv` for resumed ones.
    const seq = (b: number) => {
      const qStart = this.#qStart[b];
      const nQ = T - qStart;
      const own = buf.qkv.at(this.rowOffset[b] * W, nQ * W);
      let rows = own;
      if (qStart > 0) {
        rows = buf.kv!;
        backend.copy(plan.prefixKv![l].at(0, qStart * W), rows);
        backend.copy(own, rows.at(qStart * W));
      }
      return {
        q: rows.at(qStart * W),
        k: rows.at(d),
        v: rows.at(d + kvCols),
        stride: W,
        z: buf.z.at(this.rowOffset[b] * d),
        zStride: d,
        nQ,
        qStart,
        nHeads,
        dHead,
        scale,
        nKeyValueHeads,
      };
    };

    const wantScores = this.hooks.wants(HOOK.attnScores, l);
    const wantPattern = wantScores || this.hooks.wants(HOOK.pattern, l);
    if (!wantPattern) {
      for (let b = 0; b < plan.batch; b++) backend.attention(seq(b));
      return;
    }
    const pattern = buf.pattern!, layout = { rows: plan.batch * nHeads * T, cols: T, stride: T };
    const attnShape = this.#shape(HOOK.pattern);
    const patternOf = (b: number) => pattern.at(b * perSeq, perSeq);
    if (wantScores) {
      const scores = buf.scores!;
      for (let b = 0; b < plan.batch; b++) {
        backend.attentionScores(seq(b), scores.at(b * perSeq, perSeq));
      }
      this.hooks.visit(HOOK.attnScores, l, scores, attnShape, layout);
      for (let b = 0; b < plan.batch; b++) {
        backend.softmaxRows(scores.at(b * perSeq, perSeq), patternOf(b), nHeads, T, 0);
      }
    } else {
      for (let b = 0; b < plan.batch; b++) backend.attention(seq(b), patternOf(b));
    }
    const hooked = this.hooks.visit(HOOK.pattern, l, pattern, attnShape, layout);
    if (wantScores || hooked) {
      for (let b = 0; b < plan.batch; b++) backend.attentionApply(seq(b), patternOf(b));
    }
  }

  /** The residual stream [batch, T, d_model] (full plans). */
  readResid(): Tensor {
    const { batch, T } = this.plan;
    const d = this.m.cfg.dModel;
    return { data: this.m.backend.read(this.buf.resid.at(0, this.rows * d)), shape: [batch, T, d] };
  }

  /** logits = x W_U + b_U for the chosen rows of `x`, in chunks handed to `each`. */
  unembed(
    rows: Int32Array | undefined,
    each: (first: number, count: number, logits: DeviceArray) => void,
  ) {
    const { backend, cfg, weights } = this.m;
    const d = cfg.dModel, V = cfg.dVocab;
    const n = rows ? rows.length : this.rows;
    using scope = backend.scope();
    const chunk = scope.alloc(Math.min(LOGIT_CHUNK_ROWS, Math.max(n, 1)) * V);
    // Selected rows are gathered first, so each product reads consecutive rows.
    let x = this.buf.x;
    if (rows) {
      x = scope.alloc(n * d);
      rows.forEach((r, j) => backend.copy(this.buf.x.at(r * d, d), x.at(j * d, d)));
    }
    for (let r0 = 0; r0 < n; r0 += LOGIT_CHUNK_ROWS) {
      const m = Math.min(LOGIT_CHUNK_ROWS, n - r0);
      const logits = chunk.at(0, m * V);
      backend.matmul(x.at(r0 * d, m * d), weights.W_U, logits, m, { bias: weights.b_U });
      each(r0, m, logits);
    }
  }
}
