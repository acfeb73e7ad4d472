/**
 * The forward pass: embed -> blocks (norm, attention, norm, MLP) -> final norm -> unembed, for
 * every caller. A {@linkcode ForwardPlan} says which rows to compute, where to start and stop and
 * what to do with the logits; a {@linkcode HookSession} says which hook points to cache or hook.
 * Buffers are sized from both, inside one backend scope released when the pass ends.
 *
 * One code path serves plain runs (every position of every sequence) and resumed runs (sequence b
 * computes only positions [qStart[b], T) from a given layer on, reading the keys and values of
 * earlier positions from a clean run or from a key/value cache), which is what makes activation
 * patching and generation cheap. Padded batches mask the keys before each sequence's first real
 * token and count positions from it (TransformerLens's left-padding offsets).
 *
 * The optional hook points (`hook_result`, `hook_q_input`..., `hook_attn_in`, `hook_mlp_in`) take
 * their own path only in layers where a hook or the cache reads them, so a pass that does not ask
 * for them runs exactly the default kernels.
 * @module
 */
import type { Backend, DeviceArray, Scope } from "../backend/backend.ts";
import { InputError } from "../core/errors.ts";
import { numel, type Tensor } from "../core/tensor.ts";
import { type HookedTransformerConfig, layerWindow, scoreScale } from "./config.ts";
import type { DeviceNorm, DeviceWeights } from "./device_weights.ts";
import type { HeadWeights } from "./head_weights.ts";
import { HOOK, type HookPoint } from "./hook_table.ts";
import type { HookSession, RowLayout } from "./hooks.ts";
import { isMasked, type Padding, positionIds } from "./padding.ts";
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
  /** Per-head matrices, uploaded when an option that needs them is first turned on. */
  heads?: HeadWeights;
  /** Rotary cosines and sines by position (rotary models; null otherwise). */
  rotary: RotaryTable | null;
  /**
   * The local (sliding-window) layers' own rotary table when they have one (Gemma 3's
   * `rope_local_base_freq`); absent or null: every layer uses `rotary`.
   */
  rotaryLocal?: RotaryTable | null;
}

/**
 * Keys and values kept across passes, one sequence after another (generation): per layer
 * [batch, capacity, (n_heads + 2 n_key_value_heads) d_head] fused Q|K|V rows. A pass writes the
 * rows it computes at their positions and reads earlier positions from here.
 */
export interface KvCache {
  /** One array per layer. */
  qkv: readonly DeviceArray[];
  /** Positions each sequence has room for (at least the plan's T). */
  capacity: number;
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
  /**
   * Tokens to embed (starting at layer 0), one per computed row in row order (so [batch, T] for a
   * full plan); absent when the pass starts from `input`.
   */
  tokens?: TokenTensor;
  /**
   * Token embeddings given instead of `tokens` (TL's generate from `input_type="embeds"`): one
   * d_model row per computed row, in row order; hook_embed sees them and position embeddings are
   * added as for tokens.
   */
  embeds?: Float32Array;
  /** First position each sequence computes (default 0: every position). */
  qStart?: ArrayLike<number>;
  /**
   * The position of each of the plan's rows, for position embeddings (W_pos, rotary). Default:
   * qStart[b] + i for row i of sequence b, counted from the first real token when padded.
   */
  positions?: ArrayLike<number>;
  /**
   * Per layer, a clean run's fused Q|K|V rows [T, (n_heads + 2 n_key_value_heads) d_head]: the
   * keys and values of positions before qStart (required when any qStart is above 0).
   */
  prefixKv?: readonly DeviceArray[];
  /**
   * Which sequence of `prefixKv` each sequence reads its earlier keys and values from: rows
   * [prefixSeq[b] T, (prefixSeq[b] + 1) T) of each layer's array (default 0: one shared sequence).
   */
  prefixSeq?: ArrayLike<number>;
  /**
   * In-place edits of activations where the pass reaches their hook points (before any hook),
   * resumed passes included: how a patch changes a value inside a block.
   */
  edits?: readonly ActivationEdit[];
  /** The block the pass starts in (default 0). */
  startLayer?: number;
  /**
   * Start before the MLP half of `startLayer` (its resid_mid) instead of before attention (not
   * for parallel attention + MLP blocks, which have no resid_mid).
   */
  startMid?: boolean;
  /** Writes the starting residual stream into `resid` (rows as the plan stores them). */
  input?: (resid: DeviceArray, rowOffset: Int32Array) => void | Promise<void>;
  /**
   * Stop before this block: the result's `resid` is its resid_pre (with nLayers: the last
   * block's resid_post, before the final norm). Absent: run to the logits.
   */
  stopAtLayer?: number;
  /**
   * Padded sequences: sequence b's real tokens are positions [first[b], end[b]). Keys before
   * first[b] are masked and positions count from it; pads get no position embedding (TL).
   */
  padding?: Padding;
  /** Keys and values of earlier positions, per sequence; computed rows are added to it. */
  kvCache?: KvCache;
  /**
   * Copies of activations for later passes (resumed runs, the backward pass), by layer (full
   * plans only), each as the block used it: after any hook on it.
   */
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
    /**
     * With a final softcap, `raw` holds the same rows' logits before it (what the softcap's
     * backward reads); absent otherwise.
     */
    each: (
      first: number,
      count: number,
      logits: DeviceArray,
      raw?: DeviceArray,
    ) => void | Promise<void>;
  };
  /**
   * Always compute the attention pattern into the pass's `pattern` buffer, and keep the softmax's
   * own output in `softmax` wherever a hook replaces the pattern (the backward pass reads both).
   */
  keepPattern?: boolean;
}

/**
 * An edit of one hook point's activation in the backend's memory (see `ForwardPlan.edits`).
 * Supported at every hook point the pass visits as rows, and at `hook_pattern`.
 */
export interface ActivationEdit {
  /** The hook point. */
  point: HookPoint;
  /** Its layer (null outside blocks). */
  layer: number | null;
  /**
   * Edits `x` in place. Row-shaped points: `x` holds `at.rows` rows of `at.cols` floats,
   * `at.stride` apart; position t (t >= qStart[b]) of sequence b is row
   * `at.rowOffset[b] + t - at.qStart[b]`. `hook_pattern`: sequence b's
   * [n_heads, T - qStart[b], T] block starts at float `at.patternOffset[b]`.
   */
  apply(x: DeviceArray, at: EditLayout): void;
}

/** Where an edited activation's rows are (see {@linkcode ActivationEdit}). */
export interface EditLayout extends RowLayout {
  /** First row of each sequence. */
  rowOffset: Int32Array;
  /** First position each sequence computes. */
  qStart: Int32Array;
  /** Sequence length. */
  T: number;
  /** Where each sequence's attention pattern block starts in the pattern buffer. */
  patternOffset: Int32Array;
}

/** What a pass returns. */
export interface ForwardResult {
  /** The residual stream entering `stopAtLayer` [batch, T, d_model], when the plan stops early. */
  resid?: Tensor;
}

/**
 * Whether `hook_normalized` sees the norm's output after its weight (and bias): TransformerLens's
 * LayerNorm hooks `x / scale * w + b`, its RMSNorm hooks `x / scale` and multiplies by `w` after.
 * (With folded weights, LNPre and RMSPre, there is no weight and both agree.)
 */
export function normalizedAfterWeight(cfg: HookedTransformerConfig): boolean {
  return cfg.normalizationType === "LN" || cfg.normalizationType === "LNPre";
}

/**
 * The hook points that show per-head Q/K/V inputs (`useSplitQkvInput`, `useAttnIn`): a layer
 * computes Q, K and V head by head only when one of them is read or edited.
 * @internal
 */
export const PER_HEAD_POINTS: readonly HookPoint[] = [
  HOOK.attnIn,
  HOOK.qInput,
  HOOK.kInput,
  HOOK.vInput,
  HOOK.ln1Scale,
  HOOK.ln1Normalized,
];

/**
 * Rows [rows, d] repeated along a head axis: [rows, heads, d] (TransformerLens's per-head inputs
 * and hook_result's gradient).
 * @internal
 */
export function repeatPerHead(
  x: Float32Array,
  rows: number,
  heads: number,
  d: number,
): Float32Array {
  const out = new Float32Array(rows * heads * d);
  for (let r = 0; r < rows; r++) {
    const row = x.subarray(r * d, (r + 1) * d);
    for (let h = 0; h < heads; h++) out.set(row, (r * heads + h) * d);
  }
  return out;
}

/**
 * Whether layer `l` turns queries and keys by the local rotary table (Gemma 3's sliding layers).
 * @internal
 */
export function usesLocalRotary(m: ModelRuntime, l: number): boolean {
  return !!m.rotaryLocal && m.cfg.attnTypes?.[l] === "local";
}

/**
 * Gemma 3's q_norm / k_norm of `rows` fused Q|K|V rows in place (each query and key head).
 * @internal
 */
export function qkNorm(m: ModelRuntime, qkv: DeviceArray, l: number, rows: number): void {
  const { nHeads, nKeyValueHeads, dHead, eps } = m.cfg;
  const w = m.weights.blocks[l].qkNorm!;
  const stride = (nHeads + 2 * nKeyValueHeads) * dHead;
  m.backend.headRmsNorm(qkv, w, { rows, stride, nHeads: nHeads + nKeyValueHeads, dHead }, eps);
}

/**
 * Turns the query and key heads of `rows` fused Q|K|V rows in place by each row's angles in `cs`
 * (cosines, then sines: `RotaryTable.rows`, or `inverseRows` to turn back).
 * @internal
 */
export function rotateQK(m: ModelRuntime, qkv: DeviceArray, cs: DeviceArray, rows: number): void {
  const { nHeads, nKeyValueHeads, dHead, rotaryDim } = m.cfg;
  m.backend.rotary(qkv, cs, {
    rows,
    stride: (nHeads + 2 * nKeyValueHeads) * dHead,
    nHeads: nHeads + nKeyValueHeads,
    dHead,
    rotaryDim,
  });
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
export async function forward(
  m: ModelRuntime,
  plan: ForwardPlan,
  hooks: HookSession,
): Promise<ForwardResult> {
  const { cfg } = m;
  const start = plan.startLayer ?? 0;
  const stop = plan.stopAtLayer ?? cfg.nLayers;
  // Activations only the cache reads may stay in the backend, below this pass's scope.
  const nQ = plan.T - (plan.qStart?.[0] ?? 0);
  hooks.holdCached(cfg.nLayers, (p) => numel(p.shape(cfg, plan.batch, nQ, plan.T)));
  using scope = m.backend.scope();
  const pass = new Pass(m, plan, hooks, scope);

  // 1. The residual stream entering the first block computed.
  if (plan.tokens || plan.embeds) await pass.embed(plan.tokens, plan.embeds);
  else await plan.input!(pass.buf.resid, pass.rowOffset);

  // 2. The blocks.
  for (let l = start; l < stop; l++) {
    if (l === start && plan.startMid) await pass.resumeMid(l);
    else await pass.block(l);
  }
  if (plan.stopAtLayer !== undefined) {
    pass.checkEdits();
    const resid = await pass.readResid();
    await hooks.settled();
    return { resid };
  }
  pass.record("residPre", cfg.nLayers);

  // 3. The final norm, and 4. the unembedding.
  await pass.norm(HOOK.lnFinalScale, HOOK.lnFinalNormalized, null, m.weights.lnFinal);
  pass.checkEdits();
  if (plan.unembed) await pass.unembed(plan.unembed.rows, plan.unembed.each);
  await hooks.settled();
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
  /** attn_out / mlp_out [rows, d_model]; hook_mlp_in's copy of resid_mid in between. */
  out: DeviceArray;
  /** MLP hidden [rows, d_mlp]. */
  mlp: DeviceArray;
  /** Attention pattern [batch, head, query, key], when a hook point (or `keepPattern`) needs it. */
  pattern?: DeviceArray;
  /** The softmax's output before a hook replaced the pattern (`keepPattern` only). */
  softmax?: DeviceArray;
  /** Attention scores [batch, head, query, key], when a hook point needs them. */
  scores?: DeviceArray;
  /** [T, qkvCols] gathering one resumed sequence's Q|K|V from `prefixKv`. */
  kv?: DeviceArray;
  /** Gated MLPs: [gate | up] pre-activations [rows, 2 d_mlp]. */
  gateUp?: DeviceArray;
  /** Parallel blocks: attn_out [rows, d_model], kept while the MLP runs. */
  attnOut?: DeviceArray;
  /** Rotary models: each row's cosines and sines [rows, rotaryDim]. */
  cs?: DeviceArray;
  /** Local layers' own rotary table (Gemma 3): each row's cosines and sines. */
  csLocal?: DeviceArray;
  /** Q|K|V before Gemma 3's q/k norms [rows, qkvCols] (kept for the backward pass). */
  qkvRaw?: DeviceArray;
  /** The attention output before Gemma's ln1_post [rows, d_model] (for the backward pass). */
  attnRaw?: DeviceArray;
  /** The MLP output before Gemma's ln2_post [rows, d_model] (for the backward pass). */
  mlpRaw?: DeviceArray;
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
  /** TransformerLens's position id of each row (padding-aware; rotary reads these too). */
  readonly positions: Int32Array;
  readonly #qStart: Int32Array;
  /** Positions each sequence computes, when all compute the same number (hook shapes). */
  readonly #nQ: number;
  readonly #qkvCols: number;
  readonly #anyHook: (p: HookPoint) => boolean;
  /** Where each sequence's [n_heads, T - qStart[b], T] pattern block starts. */
  readonly #patternOffset: Int32Array;
  /** The plan's edits by hook point index and layer, and those applied so far. */
  readonly #edits = new Map<string, ActivationEdit[]>();
  readonly #applied = new Set<ActivationEdit>();

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
    if (resumed && !plan.prefixKv && !plan.kvCache) {
      throw new InputError("a resumed pass (qStart > 0) needs the earlier keys and values");
    }
    if (plan.kvCache && plan.kvCache.capacity < T) {
      throw new InputError(
        `the key/value cache holds ${plan.kvCache.capacity} positions, not ${T}`,
      );
    }
    const uniform = this.#qStart.every((q) => q === this.#qStart[0]);
    this.#nQ = uniform ? T - this.#qStart[0] : -1;
    if (!uniform && !hooks.silent) {
      throw new InputError(
        "hooks and caches need every sequence of a pass to compute the same positions",
      );
    }
    if (plan.startMid && cfg.parallelAttnMlp) {
      throw new InputError(
        `${cfg.modelName} has parallel attention and MLP blocks: there is no resid_mid to start from`,
      );
    }
    if (plan.tokens && plan.tokens.data.length !== this.rows) {
      throw new InputError(
        `the plan computes ${this.rows} rows but has ${plan.tokens.data.length} tokens`,
      );
    }
    this.positions = plan.positions
      ? Int32Array.from(plan.positions)
      : positionIds(batch, T, plan.qStart, plan.padding);
    if (this.positions.length !== this.rows) {
      throw new InputError(
        `the plan gives ${this.positions.length} positions for its ${this.rows} rows`,
      );
    }
    if (this.positions.some((p) => p < 0 || p >= cfg.nCtx)) {
      throw new InputError(`a position is outside the model's context [0, ${cfg.nCtx})`);
    }
    this.#qkvCols = (cfg.nHeads + 2 * cfg.nKeyValueHeads) * cfg.dHead;
    const layers = Array.from({ length: cfg.nLayers }, (_, l) => l);
    this.#anyHook = (p) => !hooks.silent && layers.some((l) => hooks.wants(p, l));
    const wantScale = !hooks.silent &&
      [HOOK.ln1Scale, HOOK.ln2Scale, HOOK.lnFinalScale, HOOK.ln1PostScale, HOOK.ln2PostScale]
        .some((p) => p.inBlock ? this.#anyHook(p) : hooks.wants(p, null));
    // Holes in the padding are masked in the scores, so their layers compute scores apart.
    const wantScores = this.#anyHook(HOOK.attnScores) || !!plan.padding?.holes;
    for (const e of plan.edits ?? []) {
      const key = editKey(e.point, e.layer);
      this.#edits.set(key, [...(this.#edits.get(key) ?? []), e]);
    }
    const editsPattern = plan.edits?.some((e) => e.point === HOOK.pattern) ?? false;
    const wantPattern = wantScores || editsPattern || this.#anyHook(HOOK.pattern) ||
      !!plan.keepPattern;
    const patternHooked = !!plan.keepPattern && layers.some((l) => hooks.hooked(HOOK.pattern, l));
    this.#patternOffset = new Int32Array(batch);
    let attn = 0;
    for (let b = 0; b < batch; b++) {
      this.#patternOffset[b] = attn;
      attn += cfg.nHeads * (T - this.#qStart[b]) * T;
    }
    const R = this.rows, d = cfg.dModel;
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
      kv: resumed && !plan.kvCache ? scope.alloc(T * this.#qkvCols) : undefined,
      gateUp: cfg.gatedMlp ? scope.alloc(R * 2 * cfg.dMlp) : undefined,
      attnOut: cfg.parallelAttnMlp ? scope.alloc(R * d) : undefined,
      cs: m.rotary ? scope.upload(m.rotary.rows(this.positions)) : undefined,
      csLocal: m.rotaryLocal ? scope.upload(m.rotaryLocal.rows(this.positions)) : undefined,
    };
    // The backward pass (keepPattern) reads what Gemma's extra norms read.
    if (plan.keepPattern && cfg.useQkNorm) this.buf.qkvRaw = scope.alloc(R * this.#qkvCols);
    if (plan.keepPattern && cfg.useNormalizationBeforeAndAfter) {
      this.buf.attnRaw = scope.alloc(R * d);
      this.buf.mlpRaw = scope.alloc(R * d);
    }
  }

  /** The rotary rows layer `l` turns by (its local table on Gemma 3's sliding layers). */
  csOf(l: number): DeviceArray | undefined {
    return usesLocalRotary(this.m, l) ? this.buf.csLocal : this.buf.cs;
  }

  /**
   * Gemma's norm of a branch's output (`x`, in place): RMSNorm, its hook points, its weight.
   * `raw` receives a copy of the input when given (the backward pass reads it).
   */
  async #postNorm(
    scaleHook: HookPoint,
    normalizedHook: HookPoint,
    l: number,
    w: DeviceNorm,
    x: DeviceArray,
    raw?: DeviceArray,
  ): Promise<void> {
    const { backend, cfg } = this.m;
    const { buf, rows } = this;
    const d = cfg.dModel, n = rows * d;
    if (raw) backend.copy(x.at(0, n), raw);
    const wantScale = this.hooks.wants(scaleHook, l);
    backend.rmsNorm(x.at(0, n), x, rows, d, cfg.eps, { scale: wantScale ? buf.scale : undefined });
    if (wantScale) await this.#visit(scaleHook, l, buf.scale!, 1);
    await this.#visit(normalizedHook, l, x, d);
    backend.affineRows(x, x, rows, d, w.w);
  }

  /** TransformerLens's shape of a hook point's activation in this pass. */
  #shape(p: HookPoint): number[] {
    return p.shape(this.m.cfg, this.plan.batch, this.#nQ, this.plan.T);
  }

  /** Applies the plan's edits of hook point `p` at layer `l`; returns whether there were any. */
  #edit(p: HookPoint, l: number | null, x: DeviceArray, cols: number, stride: number): boolean {
    const edits = this.#edits.size ? this.#edits.get(editKey(p, l)) : undefined;
    if (!edits) return false;
    const at: EditLayout = {
      rows: this.rows,
      cols,
      stride,
      rowOffset: this.rowOffset,
      qStart: this.#qStart,
      T: this.plan.T,
      patternOffset: this.#patternOffset,
    };
    for (const e of edits) {
      e.apply(x, at);
      this.#applied.add(e);
    }
    return true;
  }

  /** Throws unless every edit of the plan was applied (its hook point was reached). */
  checkEdits(): void {
    for (const e of this.plan.edits ?? []) {
      if (!this.#applied.has(e)) {
        const where = e.layer === null ? "" : ` of layer ${e.layer}`;
        throw new InputError(
          `this pass never reaches ${e.point.local}${where}, so it cannot be edited there`,
        );
      }
    }
  }

  /** Visits hook point `p` over `cols` columns of `x`'s rows (`stride` apart). */
  async #visit(
    p: HookPoint,
    l: number | null,
    x: DeviceArray,
    cols: number,
    stride = cols,
  ): Promise<boolean> {
    this.#edit(p, l, x, cols, stride);
    if (!this.hooks.wants(p, l)) return false;
    const layout: RowLayout = { rows: this.rows, cols, stride };
    return await this.hooks.visit(p, l, x, this.#shape(p), layout);
  }

  /** Copies the residual stream (or `from`) into `plan.record[what][l]` when asked. */
  record(what: "residPre" | "residMid" | "mlpOut", l: number, from = this.buf.resid): void {
    const to = this.plan.record?.[what]?.[l];
    if (to) this.m.backend.copy(from.at(0, to.length), to);
  }

  /**
   * resid = W_E[tokens] + W_pos[positions], with hook_embed and hook_pos_embed. Pads get no
   * position embedding (TransformerLens zeroes it).
   */
  async embed(tokens: TokenTensor | undefined, given?: Float32Array): Promise<void> {
    const { backend, cfg, params } = this.m;
    const d = cfg.dModel;
    const rows = this.rows;
    let embed = given;
    if (embed && embed.length !== rows * d) {
      throw new RangeError(`the plan computes ${rows} rows but has ${embed.length / d} embeddings`);
    }
    if (!embed) {
      embed = new Float32Array(rows * d);
      const WE = params.W_E.data;
      for (let r = 0; r < rows; r++) {
        const id = tokens!.data[r];
        embed.set(WE.subarray(id * d, id * d + d), r * d);
      }
    }
    backend.write(this.buf.x, embed);
    await this.#visit(HOOK.embed, null, this.buf.x, d);
    if (params.W_pos) {
      const pos = new Float32Array(rows * d);
      const WP = params.W_pos.data;
      const pad = this.#padRows();
      for (let r = 0; r < rows; r++) {
        if (pad?.[r]) continue;
        const t = this.positions[r];
        pos.set(WP.subarray(t * d, t * d + d), r * d);
      }
      backend.write(this.buf.out, pos);
      await this.#visit(HOOK.posEmbed, null, this.buf.out, d);
      backend.add(this.buf.x.at(0, rows * d), this.buf.out.at(0, rows * d), this.buf.resid);
    } else {
      backend.copy(this.buf.x.at(0, rows * d), this.buf.resid);
    }
  }

  /** 1 for each row that is a pad token, when the plan is padded. */
  #padRows(): Uint8Array | undefined {
    const { padding, T, batch } = this.plan;
    if (!padding) return undefined;
    const pad = new Uint8Array(this.rows);
    for (let b = 0; b < batch; b++) {
      for (let t = this.#qStart[b]; t < T; t++) {
        pad[this.rowOffset[b] + t - this.#qStart[b]] = +isMasked(padding, b, t, T);
      }
    }
    return pad;
  }

  /** Block `l`: resid_pre -> resid_post. */
  async block(l: number): Promise<void> {
    const { buf } = this;
    const d = this.m.cfg.dModel;
    await this.#attentionOut(l);
    if (!this.m.cfg.parallelAttnMlp) {
      this.#addToResid(buf.out);
      await this.#visit(HOOK.residMid, l, buf.resid, d);
      this.record("residMid", l);
      await this.mlpHalf(l);
      return;
    }
    // Parallel: the MLP reads resid_pre too; resid_post = (resid_pre + attn_out) + mlp_out.
    await this.#mlpOut(l);
    this.#addToResid(buf.attnOut!);
    this.record("residMid", l);
    this.#addToResid(buf.out);
    await this.#visit(HOOK.residPost, l, buf.resid, d);
  }

  /** (x - mean) / scale (LayerNorm) or x / scale (RMSNorm) of `rows` rows, by the config. */
  #normalize(src: DeviceArray, out: DeviceArray, rows: number, scale?: DeviceArray) {
    const { backend, cfg } = this.m;
    const d = cfg.dModel;
    const rms = cfg.normalizationType === "RMS" || cfg.normalizationType === "RMSPre";
    if (rms) backend.rmsNorm(src.at(0, rows * d), out, rows, d, cfg.eps, { scale });
    else backend.layerNorm(src.at(0, rows * d), out, rows, d, cfg.eps, { scale });
  }

  /**
   * Normalizes `src` (default the residual stream) into `x` (LayerNorm or RMSNorm by the config),
   * with the norm's two hook points and its weight (see {@linkcode normalizedAfterWeight}).
   */
  async norm(
    scaleHook: HookPoint,
    normalizedHook: HookPoint,
    l: number | null,
    w: DeviceNorm | null,
    src: DeviceArray = this.buf.resid,
  ): Promise<void> {
    const { buf, rows } = this;
    const d = this.m.cfg.dModel;
    const wantScale = this.hooks.wants(scaleHook, l);
    this.#normalize(src, buf.x, rows, wantScale ? buf.scale : undefined);
    if (wantScale) await this.#visit(scaleHook, l, buf.scale!, 1);
    const after = normalizedAfterWeight(this.m.cfg);
    if (w && after) this.m.backend.affineRows(buf.x, buf.x, rows, d, w.w, w.b);
    await this.#visit(normalizedHook, l, buf.x, d);
    if (w && !after) this.m.backend.affineRows(buf.x, buf.x, rows, d, w.w, w.b);
  }

  /**
   * resid_pre -> attn_out of block `l` (norm, attention, output projection), into `out`, or into
   * `attnOut` in parallel blocks.
   */
  async #attentionOut(l: number): Promise<void> {
    const { backend, cfg } = this.m;
    const { buf, rows } = this;
    const blk = this.m.weights.blocks[l];
    const d = cfg.dModel, qCols = cfg.nHeads * cfg.dHead, kvCols = cfg.nKeyValueHeads * cfg.dHead;
    const W = this.#qkvCols;
    await this.#visit(HOOK.residPre, l, buf.resid, d);
    this.record("residPre", l);
    if (this.#perHeadInputs(l)) {
      await this.#perHeadQkv(l);
    } else {
      await this.norm(HOOK.ln1Scale, HOOK.ln1Normalized, l, blk.ln1);
      backend.matmul(buf.x, blk.W_QKV, buf.qkv, rows, { bias: blk.b_QKV });
    }
    await this.#visit(HOOK.q, l, buf.qkv, qCols, W);
    await this.#visit(HOOK.k, l, buf.qkv.at(qCols), kvCols, W);
    await this.#visit(HOOK.v, l, buf.qkv.at(qCols + kvCols), kvCols, W);
    if (blk.qkNorm) {
      if (buf.qkvRaw) backend.copy(buf.qkv.at(0, rows * W), buf.qkvRaw);
      qkNorm(this.m, buf.qkv, l, rows);
    }
    const cs = this.csOf(l);
    if (cs) {
      rotateQK(this.m, buf.qkv, cs, rows);
      await this.#visit(HOOK.rotQ, l, buf.qkv, qCols, W);
      await this.#visit(HOOK.rotK, l, buf.qkv.at(qCols), kvCols, W);
    }
    const qkvRecord = this.plan.record?.qkv?.[l];
    if (qkvRecord) backend.copy(buf.qkv.at(0, rows * W), qkvRecord);
    await this.#attention(l);
    await this.#visit(HOOK.z, l, buf.z, qCols);
    const out = buf.attnOut ?? buf.out;
    if (this.hooks.wants(HOOK.result, l)) {
      await this.#attentionResult(l, out);
    } else {
      backend.matmul(buf.z, blk.W_O, out, rows, { bias: blk.b_O });
    }
    if (blk.ln1Post) {
      await this.#postNorm(
        HOOK.ln1PostScale,
        HOOK.ln1PostNormalized,
        l,
        blk.ln1Post,
        out,
        buf.attnRaw,
      );
    }
    await this.#visit(HOOK.attnOut, l, out, d);
  }

  /**
   * Whether layer `l` gives each head its own input (TL's `use_split_qkv_input` /
   * `use_attn_in`): only when one of the points that show it is read, since otherwise the fused
   * product computes the same values.
   */
  #perHeadInputs(l: number): boolean {
    const o = this.hooks.options;
    if (!o.useSplitQkvInput && !o.useAttnIn) return false;
    return PER_HEAD_POINTS.some((p) => this.hooks.wants(p, l));
  }

  /**
   * Q, K and V of layer `l` from per-head inputs, as TransformerLens computes them with
   * `use_split_qkv_input` (hook_q_input, hook_k_input, hook_v_input: the residual stream repeated
   * per head) or `use_attn_in` (one hook_attn_in for all three): ln1 is applied to each input
   * (its hook points fire once for q, k and v, with a head axis), then head h's product reads
   * head h's row.
   */
  async #perHeadQkv(l: number): Promise<void> {
    const { backend, cfg } = this.m;
    const { rows } = this;
    const o = this.hooks.options;
    const { nHeads, nKeyValueHeads: nKv, dHead, dModel: d } = cfg;
    const w = this.m.heads?.inputs;
    if (!w) throw new Error("per-head Q/K/V weights were not uploaded (set the option first)");
    const blk = this.m.weights.blocks[l];
    const { batch } = this.plan, nQ = this.#nQ;
    using scope = backend.scope();
    const resid = await backend.read(this.buf.resid.at(0, rows * d));
    const repeated = (n: number) => scope.upload(repeatPerHead(resid, rows, n, d));
    let attnIn: DeviceArray | undefined;
    if (o.useAttnIn) {
      if (nKv !== nHeads) {
        throw new InputError("useAttnIn is not supported with grouped-query attention");
      }
      attnIn = repeated(nHeads);
      await this.#visit(HOOK.attnIn, l, attnIn, nHeads * d);
    }
    const kinds = [
      { input: HOOK.qInput, heads: nHeads, W: w.W_Q[l], col: 0 },
      { input: HOOK.kInput, heads: nKv, W: w.W_K[l], col: nHeads * dHead },
      { input: HOOK.vInput, heads: nKv, W: w.W_V[l], col: (nHeads + nKv) * dHead },
    ];
    // All three inputs are hooked before ln1 runs on any of them, as in TL's block.
    const inputs: DeviceArray[] = [];
    for (const k of kinds) {
      if (!o.useSplitQkvInput) {
        inputs.push(attnIn!);
        continue;
      }
      const input = repeated(k.heads);
      await this.#visit(k.input, l, input, k.heads * d);
      inputs.push(input);
    }
    for (const [i, k] of kinds.entries()) {
      const n = k.heads, input = inputs[i];
      const x = scope.alloc(rows * n * d);
      const wantScale = this.hooks.wants(HOOK.ln1Scale, l);
      const scale = wantScale ? scope.alloc(rows * n) : undefined;
      this.#normalize(input, x, rows * n, scale);
      if (scale) {
        await this.hooks.visit(HOOK.ln1Scale, l, scale, [batch, nQ, n, 1], {
          rows,
          cols: n,
          stride: n,
        });
      }
      const after = normalizedAfterWeight(cfg);
      if (blk.ln1 && after) backend.affineRows(x, x, rows * n, d, blk.ln1.w, blk.ln1.b);
      if (this.hooks.wants(HOOK.ln1Normalized, l)) {
        await this.hooks.visit(HOOK.ln1Normalized, l, x, [batch, nQ, n, d], {
          rows,
          cols: n * d,
          stride: n * d,
        });
      }
      if (blk.ln1 && !after) backend.affineRows(x, x, rows * n, d, blk.ln1.w, blk.ln1.b);
      for (let h = 0; h < n; h++) {
        const col = k.col + h * dHead;
        backend.matmul(x.at(h * d), k.W[h], this.buf.qkv.at(col), rows, {
          lda: n * d,
          ldc: this.#qkvCols,
          bias: blk.b_QKV.at(col, dHead),
        });
      }
    }
  }

  /**
   * attn_out of layer `l` through hook_result (TransformerLens's `use_attn_result`): each head's
   * z W_O[head] [rows, head, d_model], hooked, then summed over heads plus b_O.
   */
  async #attentionResult(l: number, out: DeviceArray): Promise<void> {
    const { backend, cfg } = this.m;
    const { rows } = this;
    const { nHeads, dHead, dModel: d } = cfg;
    const W_O = this.m.heads?.W_O?.[l];
    if (!W_O) throw new Error("per-head W_O was not uploaded (set useAttnResult first)");
    using scope = backend.scope();
    const result = scope.alloc(rows * nHeads * d);
    for (let h = 0; h < nHeads; h++) {
      backend.matmul(this.buf.z.at(h * dHead), W_O[h], result.at(h * d), rows, {
        lda: nHeads * dHead,
        ldc: nHeads * d,
      });
    }
    await this.#visit(HOOK.result, l, result, nHeads * d);
    backend.sumHeads(result, out, rows, nHeads, d, this.m.weights.blocks[l].b_O);
  }

  /** Block `l` for a pass that starts at its resid_mid: that hook point, then the MLP half. */
  async resumeMid(l: number): Promise<void> {
    await this.#visit(HOOK.residMid, l, this.buf.resid, this.m.cfg.dModel);
    await this.mlpHalf(l);
  }

  /** resid_mid -> resid_post of block `l` (sequential blocks): norm, MLP, residual add. */
  async mlpHalf(l: number): Promise<void> {
    await this.#mlpOut(l);
    this.#addToResid(this.buf.out);
    await this.#visit(HOOK.residPost, l, this.buf.resid, this.m.cfg.dModel);
  }

  /**
   * Block `l`'s activations from its input in the residual stream up to the MLP's
   * pre-activation, for the backward pass; returns what the MLP's norm read (see `mlpIn`).
   */
  async recomputeToMlp(l: number): Promise<DeviceArray> {
    await this.#attentionOut(l);
    if (!this.m.cfg.parallelAttnMlp) {
      this.#addToResid(this.buf.out);
      await this.#visit(HOOK.residMid, l, this.buf.resid, this.m.cfg.dModel);
    }
    return await this.#mlpIn(l);
  }

  /** The MLP of block `l` on the residual stream, into `out` (mlp_out). */
  async #mlpOut(l: number): Promise<void> {
    await this.#mlpIn(l);
    const { backend, cfg } = this.m;
    const { buf, rows } = this;
    const blk = this.m.weights.blocks[l];
    const d = cfg.dModel, dMlp = cfg.dMlp;
    if (buf.gateUp) {
      backend.gatedActivation(cfg.actFn, buf.gateUp, buf.mlp, rows, dMlp);
    } else {
      const hidden = buf.mlp.at(0, rows * dMlp);
      backend.activation(cfg.actFn, hidden, hidden);
    }
    await this.#visit(HOOK.mlpPost, l, buf.mlp, dMlp);
    backend.matmul(buf.mlp, blk.W_out, buf.out, rows, { bias: blk.b_out });
    if (blk.ln2Post) {
      await this.#postNorm(HOOK.ln2PostScale, HOOK.ln2PostNormalized, l, blk.ln2Post, buf.out);
    }
    this.record("mlpOut", l, buf.out);
    await this.#visit(HOOK.mlpOut, l, buf.out, d);
  }

  /**
   * Gemma's MLP output before ln2_post, for the backward pass: the activation (replaying
   * hook_mlp_post), the output product, into `mlpRaw`. Call after `recomputeToMlp(l)`.
   */
  async mlpRawOut(l: number): Promise<DeviceArray> {
    const { backend, cfg } = this.m;
    const { buf, rows } = this;
    const blk = this.m.weights.blocks[l];
    if (!buf.gateUp || !buf.mlpRaw) throw new Error("mlpRawOut needs a gated MLP and keepPattern");
    using scope = backend.scope();
    // The activation goes to a scratch copy: the backward reads buf.mlp as its own gradient.
    const hidden = scope.alloc(rows * cfg.dMlp);
    backend.gatedActivation(cfg.actFn, buf.gateUp, hidden, rows, cfg.dMlp);
    await this.#visit(HOOK.mlpPost, l, hidden, cfg.dMlp);
    backend.matmul(hidden, blk.W_out, buf.mlpRaw, rows, { bias: blk.b_out });
    return buf.mlpRaw;
  }

  /**
   * The MLP's input side of block `l`: hook_mlp_in, the norm and the input product, up to the
   * pre-activation (`mlp`, or [gate | up] in `gateUp`). Returns the norm's input: the residual
   * stream, or hook_mlp_in's copy of it in `out`.
   */
  async #mlpIn(l: number): Promise<DeviceArray> {
    const { backend, cfg } = this.m;
    const { buf, rows } = this;
    const blk = this.m.weights.blocks[l];
    const d = cfg.dModel, dMlp = cfg.dMlp;
    // hook_mlp_in: a copy of the MLP's input that only the MLP reads (TL's `use_hook_mlp_in`).
    let mlpIn = buf.resid;
    if (this.hooks.wants(HOOK.mlpIn, l)) {
      mlpIn = buf.out;
      backend.copy(buf.resid.at(0, rows * d), mlpIn);
      await this.#visit(HOOK.mlpIn, l, mlpIn, d);
    }
    await this.norm(HOOK.ln2Scale, HOOK.ln2Normalized, l, blk.ln2, mlpIn);
    if (buf.gateUp) {
      // One product for [gate | up]; the activation computes act(gate) * up.
      backend.matmul(buf.x, blk.W_in, buf.gateUp, rows, { bias: blk.b_in });
      await this.#visit(HOOK.mlpPre, l, buf.gateUp, dMlp, 2 * dMlp);
      await this.#visit(HOOK.mlpPreLinear, l, buf.gateUp.at(dMlp), dMlp, 2 * dMlp);
    } else {
      backend.matmul(buf.x, blk.W_in, buf.mlp, rows, { bias: blk.b_in });
      await this.#visit(HOOK.mlpPre, l, buf.mlp, dMlp);
    }
    return mlpIn;
  }

  #addToResid(x: DeviceArray) {
    const n = this.rows * this.m.cfg.dModel;
    const resid = this.buf.resid.at(0, n);
    this.m.backend.add(resid, x.at(0, n), resid);
  }

  /**
   * The attention core of layer `l`: z from the Q|K|V rows, with the score and pattern hooks.
   * As TransformerLens: hook_attn_scores sees the masked scores (-inf where a query may not look)
   * and the pattern is the softmax of whatever it returns; a hooked pattern is used as it is.
   */
  async #attention(l: number): Promise<void> {
    const { backend, cfg } = this.m;
    const { buf, plan } = this;
    const { nHeads, dHead, nKeyValueHeads } = cfg;
    const W = this.#qkvCols, d = nHeads * dHead, kvCols = nKeyValueHeads * dHead, T = plan.T;
    const scale = scoreScale(cfg);
    const window = layerWindow(cfg, l), softcap = cfg.attnScoresSoftCap ?? 0;

    // Sequence b's Q|K|V rows from position 0: in place for full plans; else in the key/value
    // cache (where this pass's rows are added) or gathered with the clean prefix into `kv`.
    const seq = (b: number) => {
      const qStart = this.#qStart[b];
      const nQ = T - qStart;
      const own = buf.qkv.at(this.rowOffset[b] * W, nQ * W);
      let rows = own;
      if (plan.kvCache) {
        rows = plan.kvCache.qkv[l].at(b * plan.kvCache.capacity * W, T * W);
        backend.copy(own, rows.at(qStart * W));
      } else if (qStart > 0) {
        rows = buf.kv!;
        const from = (plan.prefixSeq?.[b] ?? 0) * T * W;
        backend.copy(plan.prefixKv![l].at(from, qStart * W), rows);
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
        kStart: plan.padding?.first[b] ?? 0,
        window,
        softcap,
      };
    };

    const holes = plan.padding?.holes;
    const scoresHooked = this.hooks.wants(HOOK.attnScores, l);
    const wantScores = scoresHooked || !!holes;
    const editPattern = this.#edits.has(editKey(HOOK.pattern, l));
    const wantPattern = wantScores || editPattern || this.hooks.wants(HOOK.pattern, l) ||
      this.plan.keepPattern;
    if (!wantPattern) {
      for (let b = 0; b < plan.batch; b++) backend.attention(seq(b));
      return;
    }
    const offset = this.#patternOffset;
    const pattern = buf.pattern!,
      layout = { rows: plan.batch * nHeads * this.#nQ, cols: T, stride: T };
    const attnShape = this.#shape(HOOK.pattern);
    const perSeq = (b: number) => nHeads * (T - this.#qStart[b]) * T;
    const patternOf = (b: number) => pattern.at(offset[b], perSeq(b));
    let hookedScores = false;
    if (wantScores) {
      const scores = buf.scores!;
      for (let b = 0; b < plan.batch; b++) {
        backend.attentionScores(seq(b), scores.at(offset[b], perSeq(b)));
      }
      if (holes) this.#maskHoles(scores, holes);
      hookedScores = scoresHooked &&
        await this.hooks.visit(HOOK.attnScores, l, scores, attnShape, layout);
      for (let b = 0; b < plan.batch; b++) {
        const q = this.#qStart[b];
        backend.softmaxRows(scores.at(offset[b], perSeq(b)), patternOf(b), nHeads, T - q, q, {
          kStart: plan.padding?.first[b] ?? 0,
          causal: !hookedScores,
          window,
        });
      }
    } else {
      for (let b = 0; b < plan.batch; b++) backend.attention(seq(b), patternOf(b));
    }
    if (buf.softmax && this.hooks.hooked(HOOK.pattern, l)) {
      backend.copy(pattern.at(0, offset[plan.batch - 1] + perSeq(plan.batch - 1)), buf.softmax);
    }
    const edited = this.#edit(HOOK.pattern, l, pattern, T, T);
    const hookedPattern = await this.hooks.visit(HOOK.pattern, l, pattern, attnShape, layout);
    if (wantScores || edited || hookedPattern) {
      const causal = !hookedScores && !hookedPattern && !edited;
      for (let b = 0; b < plan.batch; b++) {
        backend.attentionApply(seq(b), patternOf(b), { causal });
      }
    }
  }

  /**
   * -inf in every score whose key is a hole of the padding (TransformerLens masks each 0 of the
   * attention mask as a key): sequence b's block is [n_heads, T - qStart[b], T], so a key is a
   * column of n_heads (T - qStart[b]) rows, T apart. Writes only.
   */
  #maskHoles(scores: DeviceArray, holes: Uint8Array) {
    const { backend, cfg } = this.m;
    const T = this.plan.T;
    for (let b = 0; b < this.plan.batch; b++) {
      const rows = cfg.nHeads * (T - this.#qStart[b]);
      let minus: Float32Array | undefined;
      for (let k = 0; k < T; k++) {
        if (!holes[b * T + k]) continue;
        minus ??= new Float32Array(rows).fill(-Infinity);
        backend.writeRows(scores.at(this.#patternOffset[b] + k), minus, rows, 1, T);
      }
    }
  }

  /** The residual stream [batch, pos, d_model] (plans whose sequences compute alike). */
  async readResid(): Promise<Tensor> {
    const { batch } = this.plan;
    const d = this.m.cfg.dModel;
    const data = await this.m.backend.read(this.buf.resid.at(0, this.rows * d));
    return { data, shape: [batch, this.rows / batch, d] };
  }

  /** logits = x W_U + b_U for the chosen rows of `x`, in chunks handed to `each`. */
  async unembed(
    rows: Int32Array | undefined,
    each: (
      first: number,
      count: number,
      logits: DeviceArray,
      raw?: DeviceArray,
    ) => void | Promise<void>,
  ): Promise<void> {
    const { backend, cfg, weights } = this.m;
    const d = cfg.dModel, V = cfg.dVocab;
    const n = rows ? rows.length : this.rows;
    using scope = backend.scope();
    const chunk = scope.alloc(Math.min(LOGIT_CHUNK_ROWS, Math.max(n, 1)) * V);
    // A final softcap (Gemma 2): the product goes to `raw`, its capped values to `chunk`.
    const cap = cfg.outputLogitsSoftCap;
    const raw = cap ? scope.alloc(chunk.length) : undefined;
    // Selected rows are gathered first, so each product reads consecutive rows.
    let x = this.buf.x;
    if (rows) {
      x = scope.alloc(n * d);
      rows.forEach((r, j) => backend.copy(this.buf.x.at(r * d, d), x.at(j * d, d)));
    }
    for (let r0 = 0; r0 < n; r0 += LOGIT_CHUNK_ROWS) {
      const m = Math.min(LOGIT_CHUNK_ROWS, n - r0);
      const logits = chunk.at(0, m * V);
      if (raw && cap) {
        const r = raw.at(0, m * V);
        backend.matmul(x.at(r0 * d, m * d), weights.W_U, r, m, { bias: weights.b_U });
        backend.softcap(r, logits, cap);
        await each(r0, m, logits, r);
        continue;
      }
      backend.matmul(x.at(r0 * d, m * d), weights.W_U, logits, m, { bias: weights.b_U });
      await each(r0, m, logits);
    }
  }
}

/** The key of a hook point and layer in a pass's edit table. */
function editKey(p: HookPoint, l: number | null): string {
  return `${p.index}:${l}`;
}
