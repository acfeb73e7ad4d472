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
   * Per layer, a clean run's fused Q|K|V rows [T, (n_heads + 2 n_key_value_heads) d_head]: the
   * keys and values of positions before qStart (required when any qStart is above 0).
   */
  prefixKv?: readonly DeviceArray[];
  /** The block the pass starts in (default 0). */
  startLayer?: number;
  /** Start before the MLP half of `startLayer` (its resid_mid) instead of before attention. */
  startMid?: boolean;
  /** Writes the starting residual stream into `resid` (rows as the plan stores them). */
  input?: (resid: DeviceArray, rowOffset: Int32Array) => void;
  /** Stop before this block (default nLayers): the result's `resid` is its resid_pre. */
  stopAtLayer?: number;
  /**
   * Copies of activations for later passes (resumed runs, the backward pass), by layer (full
   * plans only), each as the block used it: after any hook on it.
   */
  record?: {
    /** resid_pre of each layer; entry nLayers receives the final resid_post. */
    residPre?: DeviceArray[];
    /** resid_mid of each layer. */
    residMid?: DeviceArray[];
    /** Fused Q|K|V rows of each layer. */
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
  /**
   * Always compute the attention pattern into the pass's `pattern` buffer, and keep the softmax's
   * own output in `softmax` wherever a hook replaces the pattern (the backward pass reads both).
   */
  keepPattern?: boolean;
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
  /** Attention pattern [batch, head, T, T], when a hook point (or `keepPattern`) needs it. */
  pattern?: DeviceArray;
  /** The softmax's output before a hook replaced the pattern (`keepPattern` only). */
  softmax?: DeviceArray;
  /** Attention scores [batch, head, T, T], when a hook point needs them. */
  scores?: DeviceArray;
  /** [T, qkvCols] gathering one resumed sequence's Q|K|V (resumed plans only). */
  kv?: DeviceArray;
}

/**
 * One pass's state: the plan, its buffers, and each stage as a method. The backward pass
 * (`backward.ts`) runs single blocks of one to recompute their activations.
 * @internal
 */
export class Pass {
  readonly buf: Buffers;
  readonly rowOffset: Int32Array;
  readonly rows: number;
  readonly #qStart: Int32Array;
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
    this.#qkvCols = (cfg.nHeads + 2 * cfg.nKeyValueHeads) * cfg.dHead;
    const layers = Array.from({ length: cfg.nLayers }, (_, l) => l);
    this.#anyHook = (p) => !hooks.silent && layers.some((l) => hooks.wants(p, l));
    const wantScale = !hooks.silent &&
      [HOOK.ln1Scale, HOOK.ln2Scale, HOOK.lnFinalScale].some((p) =>
        p.inBlock ? this.#anyHook(p) : hooks.wants(p, null)
      );
    const wantScores = this.#anyHook(HOOK.attnScores);
    const wantPattern = wantScores || this.#anyHook(HOOK.pattern) || !!plan.keepPattern;
    const patternHooked = !!plan.keepPattern && layers.some((l) => hooks.hooked(HOOK.pattern, l));
    const R = this.rows, d = cfg.dModel, attn = batch * cfg.nHeads * T * T;
    this.buf = {
      resid: scope.alloc(R * d),
      x: scope.alloc(R * d),
      scale: wantScale ? scope.alloc(R) : undefined,
      qkv: scope.alloc(R * this.#qkvCols),
      z: scope.alloc(R * cfg.nHeads * cfg.dHead),
      out: scope.alloc(R * d),
      mlp: scope.alloc(R * cfg.dMlp),
      pattern: wantPattern ? scope.alloc(attn) : undefined,
      softmax: patternHooked ? scope.alloc(attn) : undefined,
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

  /** Copies the residual stream into `plan.record[what][l]` when asked. */
  record(what: "residPre" | "residMid", l: number): void {
    const to = this.plan.record?.[what]?.[l];
    if (to) this.m.backend.copy(this.buf.resid, to);
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
        const t = r % T;
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
    this.attentionHalf(l);
    this.mlpHalf(l);
  }

  /** Normalizes the residual stream into `x`, with the norm's two hook points. */
  norm(scaleHook: HookPoint, normalizedHook: HookPoint, l: number | null, w: DeviceNorm | null) {
    const { backend, cfg } = this.m;
    const { buf, rows } = this;
    const d = cfg.dModel;
    const wantScale = this.hooks.wants(scaleHook, l);
    backend.layerNorm(buf.resid.at(0, rows * d), buf.x, rows, d, cfg.eps, {
      gamma: w?.w,
      beta: w?.b,
      scale: wantScale ? buf.scale : undefined,
    });
    if (wantScale) this.#visit(scaleHook, l, buf.scale!, 1);
    this.#visit(normalizedHook, l, buf.x, d);
  }

  /** resid_pre -> resid_mid of block `l`: norm, attention, residual add. */
  attentionHalf(l: number): void {
    const { backend, cfg } = this.m;
    const { buf, rows } = this;
    const blk = this.m.weights.blocks[l];
    const d = cfg.dModel, qCols = cfg.nHeads * cfg.dHead, kvCols = cfg.nKeyValueHeads * cfg.dHead;
    const W = this.#qkvCols;
    this.#visit(HOOK.residPre, l, buf.resid, d);
    this.record("residPre", l);
    this.norm(HOOK.ln1Scale, HOOK.ln1Normalized, l, blk.ln1);
    backend.matmul(buf.x, blk.W_QKV, buf.qkv, rows, { bias: blk.b_QKV });
    this.#visit(HOOK.q, l, buf.qkv, qCols, W);
    this.#visit(HOOK.k, l, buf.qkv.at(qCols), kvCols, W);
    this.#visit(HOOK.v, l, buf.qkv.at(qCols + kvCols), kvCols, W);
    const qkvRecord = this.plan.record?.qkv?.[l];
    if (qkvRecord) backend.copy(buf.qkv.at(0, rows * W), qkvRecord);
    this.#attention(l);
    this.#visit(HOOK.z, l, buf.z, qCols);
    backend.matmul(buf.z, blk.W_O, buf.out, rows, { bias: blk.b_O });
    this.#visit(HOOK.attnOut, l, buf.out, d);
    this.#addToResid();
    this.#visit(HOOK.residMid, l, buf.resid, d);
    this.record("residMid", l);
  }

  /** resid_mid -> resid_post of block `l`: norm, MLP, residual add. */
  mlpHalf(l: number): void {
    this.mlpIn(l);
    this.mlpOut(l);
  }

  /** The MLP's input side: norm and the input product(s), up to hook_pre. */
  mlpIn(l: number): void {
    const { backend, cfg } = this.m;
    const blk = this.m.weights.blocks[l];
    this.norm(HOOK.ln2Scale, HOOK.ln2Normalized, l, blk.ln2);
    backend.matmul(this.buf.x, blk.W_in, this.buf.mlp, this.rows, { bias: blk.b_in });
    this.#visit(HOOK.mlpPre, l, this.buf.mlp, cfg.dMlp);
  }

  /** The rest of the MLP: activation, output product, residual add. */
  mlpOut(l: number): void {
    const { backend, cfg } = this.m;
    const { buf, rows } = this;
    const blk = this.m.weights.blocks[l];
    const d = cfg.dModel;
    const hidden = buf.mlp.at(0, rows * cfg.dMlp);
    backend.geluNew(hidden, hidden);
    this.#visit(HOOK.mlpPost, l, buf.mlp, cfg.dMlp);
    backend.matmul(buf.mlp, blk.W_out, buf.out, rows, { bias: blk.b_out });
    this.#visit(HOOK.mlpOut, l, buf.out, d);
    this.#addToResid();
    this.#visit(HOOK.residPost, l, buf.resid, d);
  }

  #addToResid() {
    const n = this.rows * this.m.cfg.dModel;
    const resid = this.buf.resid.at(0, n);
    this.m.backend.add(resid, this.buf.out.at(0, n), resid);
  }

  /** The attention core of layer `l`: z from the Q|K|V rows, with the score and pattern hooks. */
  #attention(l: number) {
    const { backend, cfg } = this.m;
    const { buf, plan } = this;
    const { nHeads, dHead, nKeyValueHeads } = cfg;
    if (nKeyValueHeads !== nHeads) {
      throw new InputError("grouped-query attention is not implemented by this forward pass yet");
    }
    const W = this.#qkvCols, d = nHeads * dHead, T = plan.T;
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
        v: rows.at(2 * d),
        stride: W,
        z: buf.z.at(this.rowOffset[b] * d),
        zStride: d,
        nQ,
        qStart,
        nHeads,
        dHead,
        scale,
      };
    };

    const wantScores = this.hooks.wants(HOOK.attnScores, l);
    const wantPattern = wantScores || this.hooks.wants(HOOK.pattern, l) || this.plan.keepPattern;
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
    if (buf.softmax && this.hooks.hooked(HOOK.pattern, l)) {
      backend.copy(pattern.at(0, plan.batch * perSeq), buf.softmax);
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
