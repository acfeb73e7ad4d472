/**
 * The backward pass: from the gradient at `ln_final.hook_normalized` back to the embeddings, the
 * forward pass's stages in reverse (final norm, then each block's MLP and attention, then the
 * embeddings), visiting every hook point with the gradient of the metric with respect to that
 * activation (TransformerLens's `<name>_grad`).
 *
 * Memory: the forward pass records only each block's input residual stream (and the final one);
 * each block's activations are recomputed from it, just before that block's backward, by the
 * forward pass's own stages (`Pass.recomputeToMlp`: Q|K|V, the pattern, resid_mid and the MLP's
 * pre-activation; not the MLP's output product, which the backward does not read). So activation
 * memory is (n_layers + 1) residual streams plus one block's worth, and the cost is about two
 * thirds of a forward pass through the blocks.
 *
 * Forward hooks: what a forward hook changed is replayed during the recompute (the hook functions
 * are not called again), and the changed elements are constants to the backward pass: gradients
 * do not flow through them to earlier activations, as in PyTorch when a hook assigns values.
 * Unchanged elements pass their gradient on unchanged.
 *
 * Every family's block: LayerNorm or RMSNorm (the weight applied after hook_normalized, as in the
 * forward), rotary embeddings (the inverse rotation), grouped-query attention, plain or gated
 * MLPs with any of the forward's activations, sequential or parallel attention and MLP, and the
 * optional hook points (`hook_result`, `hook_mlp_in`, and the per-head inputs `hook_q_input` ...,
 * `hook_attn_in`, through ln1 head by head as the forward computes them).
 * @module
 */
import type { DeviceArray, Scope } from "../backend/backend.ts";
import { layerWindow, scoreScale } from "./config.ts";
import type { DeviceNorm } from "./device_weights.ts";
import {
  type ModelRuntime,
  normalizedAfterWeight,
  Pass,
  PER_HEAD_POINTS,
  repeatPerHead,
  rotateQK,
  usesLocalRotary,
} from "./forward.ts";
import { HOOK, type HookOptions, type HookPoint } from "./hook_table.ts";
import { type HookChange, type HookFn, HookNames, HookSession } from "./hooks.ts";
import type { Padding } from "./padding.ts";

/** What a backward pass starts from: a forward pass's record. */
export interface BackwardPlan {
  /** Number of sequences. */
  batch: number;
  /** Length of every sequence. */
  T: number;
  /** Where each sequence's real tokens are, in a padded batch. */
  padding?: Padding;
  /**
   * Each block's input residual stream as the block used it (after hooks), and the final
   * resid_post as entry nLayers: [batch * T, d_model] each (the forward's `record.residPre`).
   */
  residPre: readonly DeviceArray[];
  /** d metric / d `ln_final.hook_normalized`'s affine output [batch * T, d_model] (overwritten). */
  dFinal: DeviceArray;
  /** What forward hooks changed, by full hook name (the forward session's `changes`). */
  changes: ReadonlyMap<string, HookChange>;
  /** The optional hook points that were on in the forward pass. */
  hookOptions: Readonly<HookOptions>;
}

/**
 * Runs the backward pass. `grads` visits each hook point's gradient: caching it and running the
 * backward hooks, whose replacements flow on.
 */
export async function backward(
  m: ModelRuntime,
  plan: BackwardPlan,
  grads: HookSession,
): Promise<void> {
  const { cfg } = m;
  const names = new HookNames(cfg.nLayers);
  using scope = m.backend.scope();
  const replay = replaySession(m, names, plan);
  const { batch, T, padding } = plan;
  const pass = new Pass(m, { batch, T, padding, keepPattern: true }, replay, scope);
  const bwd = new BackwardPass(m, plan, grads, names, pass, scope);
  await bwd.finalNorm();
  for (let l = cfg.nLayers - 1; l >= 0; l--) await bwd.block(l);
  await bwd.embed();
  await grads.settled();
}

/** A session that writes back, during a recompute, what the forward hooks changed. */
function replaySession(m: ModelRuntime, names: HookNames, plan: BackwardPlan): HookSession {
  const hooks = new Map<string, HookFn[]>();
  for (const [name, { value }] of plan.changes) hooks.set(name, [() => value]);
  return new HookSession(m.backend, names, hooks, new Set(), { hookOptions: plan.hookOptions });
}

/** The gradient buffers of one backward pass. */
interface GradBuffers {
  /** The residual stream's gradient [rows, d_model]. */
  resid: DeviceArray;
  /** A norm's output gradient [rows, d_model]. */
  x: DeviceArray;
  /** attn_out / mlp_out / embedding / mlp_in gradient when a hook point reads or changes it. */
  branch: DeviceArray;
  /** Parallel blocks: resid_post's gradient, which both attention and the MLP read. */
  post?: DeviceArray;
  /** Normalization scales' gradient [rows] ([rows, head] with per-head inputs), when needed. */
  scale?: DeviceArray;
  /** The MLP hidden gradient [rows, d_mlp]. */
  mlp: DeviceArray;
  /** Gated MLPs: [gate | up]'s gradient [rows, 2 d_mlp]. */
  gateUp?: DeviceArray;
  /** z's gradient [rows, n_heads d_head]. */
  z: DeviceArray;
  /** Q|K|V's gradient [rows, qkvCols]. */
  qkv: DeviceArray;
  /** The pattern's gradient, then in place the scores' [batch, head, T, T]. */
  pattern: DeviceArray;
  /** Rotary models: each row's cosines and negated sines (the inverse rotation). */
  csInverse?: DeviceArray;
  /** The same for the local layers' own rotary table (Gemma 3). */
  csInverseLocal?: DeviceArray;
}

/** One backward pass's state, with each stage as a method (reverse forward order). */
class BackwardPass {
  readonly buf: GradBuffers;
  readonly #rows: number;
  readonly #qkvCols: number;

  constructor(
    private readonly m: ModelRuntime,
    private readonly plan: BackwardPlan,
    private readonly grads: HookSession,
    private readonly names: HookNames,
    private readonly pass: Pass,
    scope: Scope,
  ) {
    const { cfg } = m;
    const R = plan.batch * plan.T, d = cfg.dModel;
    this.#rows = R;
    this.#qkvCols = (cfg.nHeads + 2 * cfg.nKeyValueHeads) * cfg.dHead;
    const layers = Array.from({ length: cfg.nLayers }, (_, l) => l);
    const wantScale = !grads.silent && (grads.wants(HOOK.lnFinalScale, null) ||
      layers.some((l) =>
        [HOOK.ln1Scale, HOOK.ln2Scale, HOOK.ln1PostScale, HOOK.ln2PostScale].some((p) =>
          grads.wants(p, l)
        )
      ));
    this.buf = {
      resid: scope.alloc(R * d),
      x: scope.alloc(R * d),
      branch: scope.alloc(R * d),
      post: cfg.parallelAttnMlp ? scope.alloc(R * d) : undefined,
      scale: wantScale ? scope.alloc(R * cfg.nHeads) : undefined,
      mlp: scope.alloc(R * cfg.dMlp),
      gateUp: cfg.gatedMlp ? scope.alloc(R * 2 * cfg.dMlp) : undefined,
      z: scope.alloc(R * cfg.nHeads * cfg.dHead),
      qkv: scope.alloc(R * this.#qkvCols),
      pattern: scope.alloc(plan.batch * cfg.nHeads * plan.T * plan.T),
      csInverse: m.rotary ? scope.upload(m.rotary.inverseRows(pass.positions)) : undefined,
      csInverseLocal: m.rotaryLocal
        ? scope.upload(m.rotaryLocal.inverseRows(pass.positions))
        : undefined,
    };
  }

  /**
   * Visits hook point `p`'s gradient in `x` (`cols` of each row, `stride` apart), then stops the
   * gradient at the elements a forward hook changed.
   */
  async #visit(
    p: HookPoint,
    l: number | null,
    x: DeviceArray,
    cols: number,
    stride = cols,
    shape?: number[],
  ): Promise<void> {
    const { backend, cfg } = this.m;
    const { batch, T } = this.plan;
    const rows = p === HOOK.attnScores || p === HOOK.pattern ? batch * cfg.nHeads * T : this.#rows;
    const layout = { rows, cols, stride };
    if (this.grads.wants(p, l)) {
      await this.grads.visit(p, l, x, shape ?? p.shape(cfg, batch, T, T), layout);
    }
    const change = this.#change(p, l);
    if (change) {
      const g = await backend.readRows(x, rows, cols, stride);
      for (let i = 0; i < g.length; i++) if (change.mask[i]) g[i] = 0;
      backend.writeRows(x, g, rows, cols, stride);
    }
  }

  #change(p: HookPoint, l: number | null): HookChange | undefined {
    return this.plan.changes.size ? this.plan.changes.get(this.names.of(p, l)) : undefined;
  }

  /** Whether hook point `p` of layer `l` is read by the backward session or was changed. */
  #touched(p: HookPoint, l: number | null): boolean {
    return this.grads.wants(p, l) || this.#change(p, l) !== undefined;
  }

  /**
   * The gradient of a branch read from `src` (attn_out and mlp_out from the residual stream's
   * gradient, an embedding): `src` itself, or a copy when the hook point reads or changes it, so
   * that a backward hook there (or a forward patch) affects only that branch.
   */
  async #branch(
    p: HookPoint,
    l: number | null,
    src: DeviceArray = this.buf.resid,
  ): Promise<DeviceArray> {
    const { backend, cfg } = this.m;
    if (!this.#touched(p, l)) return src;
    const n = this.#rows * cfg.dModel;
    backend.copy(src.at(0, n), this.buf.branch);
    await this.#visit(p, l, this.buf.branch, cfg.dModel);
    return this.buf.branch;
  }

  /**
   * A norm's backward: `g` is the gradient at its affine output, `x` its input. Applies the
   * norm's weight, visits hook_normalized and hook_scale, and adds dL/dx into `dx` (or sets it,
   * `accumulate` false). With `heads` (per-head inputs), each row holds `heads` normalized rows
   * and the hook points have a head axis.
   */
  async #norm(
    hooks: { scale: HookPoint; normalized: HookPoint },
    l: number | null,
    w: DeviceNorm | null,
    x: DeviceArray,
    g: DeviceArray,
    dx: DeviceArray,
    accumulate: boolean,
    heads?: number,
  ): Promise<void> {
    const { backend, cfg } = this.m;
    const { batch, T } = this.plan;
    const n = heads ?? 1, rows = this.#rows * n, d = cfg.dModel;
    const shape = (last: number) => heads === undefined ? undefined : [batch, T, n, last];
    // d/d(x / scale) is g w; hook_normalized sees it before or after by the norm's kind.
    const after = normalizedAfterWeight(cfg);
    if (w && !after) backend.affineRows(g, g, rows, d, w.w);
    await this.#visit(hooks.normalized, l, g, n * d, n * d, shape(d));
    if (w && after) backend.affineRows(g, g, rows, d, w.w);
    const opts = {
      center: cfg.normalizationType === "LN" || cfg.normalizationType === "LNPre",
      accumulate,
    };
    const xs = x.at(0, rows * d), gs = g.at(0, rows * d), dxs = dx.at(0, rows * d);
    if (!this.grads.wants(hooks.scale, l)) {
      backend.normBackward(xs, gs, dxs, rows, d, cfg.eps, opts);
      return;
    }
    // The scale's gradient first, visited (a hook may replace it), then dx from it.
    const scale = this.buf.scale!;
    backend.normBackward(xs, gs, null, rows, d, cfg.eps, { ...opts, scaleGrad: scale });
    await this.#visit(hooks.scale, l, scale, n, n, shape(1));
    backend.normBackward(xs, gs, dxs, rows, d, cfg.eps, {
      ...opts,
      scaleGrad: scale,
      scaleGiven: true,
    });
  }

  /**
   * Gemma's norm of a branch's output in reverse: `g` the gradient at its output (hook_attn_out's
   * or hook_mlp_out's), `x` its input as recomputed. Returns the gradient at `x` (in `buf.x`).
   */
  async #postNorm(
    hooks: { scale: HookPoint; normalized: HookPoint },
    l: number,
    w: DeviceNorm,
    x: DeviceArray,
    g: DeviceArray,
  ): Promise<DeviceArray> {
    const n = this.#rows * this.m.cfg.dModel;
    // The norm's backward scales its gradient in place: never the residual stream's own.
    if (g !== this.buf.branch) this.m.backend.copy(g.at(0, n), this.buf.branch);
    await this.#norm(hooks, l, w, x, this.buf.branch, this.buf.x, false);
    return this.buf.x;
  }

  /** ln_final: the metric's gradient at its output -> the final residual stream's gradient. */
  async finalNorm(): Promise<void> {
    const { cfg, weights } = this.m;
    const x = this.plan.residPre[cfg.nLayers];
    const hooks = { scale: HOOK.lnFinalScale, normalized: HOOK.lnFinalNormalized };
    await this.#norm(hooks, null, weights.lnFinal, x, this.plan.dFinal, this.buf.resid, false);
  }

  /** Block `l`: its activations recomputed from its input, then resid_post -> resid_pre. */
  async block(l: number): Promise<void> {
    const { backend, cfg } = this.m;
    const { buf, pass } = this;
    const n = this.#rows * cfg.dModel;
    backend.copy(this.plan.residPre[l].at(0, n), pass.buf.resid);
    const mlpInput = await pass.recomputeToMlp(l);
    await this.#visit(HOOK.residPost, l, buf.resid, cfg.dModel);
    if (buf.post) {
      // Parallel: resid_post = resid_pre + attn_out + mlp_out, both branches reading resid_pre.
      backend.copy(buf.resid.at(0, n), buf.post);
      await this.#mlp(l, buf.post, mlpInput);
      await this.#attention(l, buf.post);
    } else {
      await this.#mlp(l, buf.resid, mlpInput);
      await this.#visit(HOOK.residMid, l, buf.resid, cfg.dModel);
      await this.#attention(l, buf.resid);
    }
    await this.#visit(HOOK.residPre, l, buf.resid, cfg.dModel);
  }

  /**
   * The MLP of block `l` in reverse: mlp_out's gradient (read from `dPost`) through the output
   * product, the activation, the input product and ln2, added into the residual stream's
   * gradient. `input` holds what ln2 read in the recompute.
   */
  async #mlp(l: number, dPost: DeviceArray, input: DeviceArray): Promise<void> {
    const { backend, cfg } = this.m;
    const { buf } = this;
    const rows = this.#rows, dMlp = cfg.dMlp;
    const blk = this.m.weights.blocks[l];
    let dOut = await this.#branch(HOOK.mlpOut, l, dPost);
    if (blk.ln2Post) {
      const hooks = { scale: HOOK.ln2PostScale, normalized: HOOK.ln2PostNormalized };
      dOut = await this.#postNorm(hooks, l, blk.ln2Post, await this.pass.mlpRawOut(l), dOut);
    }
    backend.matmulTransposed(dOut, blk.W_out, buf.mlp, rows);
    await this.#visit(HOOK.mlpPost, l, buf.mlp, dMlp);
    let dIn = buf.mlp;
    if (buf.gateUp) {
      const gateUp = this.pass.buf.gateUp!;
      backend.gatedActivationBackward(cfg.actFn, gateUp, buf.mlp, buf.gateUp, rows, dMlp);
      await this.#visit(HOOK.mlpPre, l, buf.gateUp, dMlp, 2 * dMlp);
      await this.#visit(HOOK.mlpPreLinear, l, buf.gateUp.at(dMlp), dMlp, 2 * dMlp);
      dIn = buf.gateUp;
    } else {
      const n = rows * dMlp;
      backend.activationBackward(cfg.actFn, this.pass.buf.mlp.at(0, n), buf.mlp.at(0, n), buf.mlp);
      await this.#visit(HOOK.mlpPre, l, buf.mlp, dMlp);
    }
    backend.matmulTransposed(dIn, blk.W_in, buf.x, rows);
    const hooks = { scale: HOOK.ln2Scale, normalized: HOOK.ln2Normalized };
    if (!this.#touched(HOOK.mlpIn, l)) {
      await this.#norm(hooks, l, blk.ln2, input, buf.x, buf.resid, true);
      return;
    }
    // hook_mlp_in: its own gradient, visited, then added to the residual stream's.
    await this.#norm(hooks, l, blk.ln2, input, buf.x, buf.branch, false);
    await this.#visit(HOOK.mlpIn, l, buf.branch, cfg.dModel);
    const n = rows * cfg.dModel;
    backend.add(buf.resid.at(0, n), buf.branch.at(0, n), buf.resid);
  }

  /**
   * The attention of block `l` in reverse: attn_out's gradient (read from `dPost`) through the
   * output product (per head with hook_result), the attention core, rotary, Q|K|V and ln1, added
   * into the residual stream's gradient.
   */
  async #attention(l: number, dPost: DeviceArray): Promise<void> {
    const { backend, cfg } = this.m;
    const { buf } = this;
    const rows = this.#rows, W = this.#qkvCols;
    const qCols = cfg.nHeads * cfg.dHead, kvCols = cfg.nKeyValueHeads * cfg.dHead;
    const blk = this.m.weights.blocks[l];
    let dOut = await this.#branch(HOOK.attnOut, l, dPost);
    if (blk.ln1Post) {
      const hooks = { scale: HOOK.ln1PostScale, normalized: HOOK.ln1PostNormalized };
      dOut = await this.#postNorm(hooks, l, blk.ln1Post, this.pass.buf.attnRaw!, dOut);
    }
    if (this.#touched(HOOK.result, l)) await this.#result(l, dOut);
    else backend.matmulTransposed(dOut, blk.W_O, buf.z, rows);
    await this.#visit(HOOK.z, l, buf.z, qCols);
    await this.#core(l);
    const csInverse = usesLocalRotary(this.m, l) ? buf.csInverseLocal : buf.csInverse;
    if (csInverse) {
      await this.#visit(HOOK.rotK, l, buf.qkv.at(qCols), kvCols, W);
      await this.#visit(HOOK.rotQ, l, buf.qkv, qCols, W);
      rotateQK(this.m, buf.qkv, csInverse, rows);
    }
    if (blk.qkNorm) {
      // Gemma 3's q_norm / k_norm, from the recompute's Q|K before them.
      const { nHeads, nKeyValueHeads, dHead } = cfg;
      backend.headRmsNormBackward(this.pass.buf.qkvRaw!, buf.qkv, blk.qkNorm, {
        rows,
        stride: W,
        gradStride: W,
        nHeads: nHeads + nKeyValueHeads,
        dHead,
      }, cfg.eps);
    }
    await this.#visit(HOOK.v, l, buf.qkv.at(qCols + kvCols), kvCols, W);
    await this.#visit(HOOK.k, l, buf.qkv.at(qCols), kvCols, W);
    await this.#visit(HOOK.q, l, buf.qkv, qCols, W);
    if (this.#perHeadInputs(l)) {
      await this.#perHeadInputsBackward(l);
      return;
    }
    backend.matmulTransposed(buf.qkv, blk.W_QKV, buf.x, rows);
    const hooks = { scale: HOOK.ln1Scale, normalized: HOOK.ln1Normalized };
    await this.#norm(hooks, l, blk.ln1, this.plan.residPre[l], buf.x, buf.resid, true);
  }

  /**
   * Whether layer `l`'s Q|K|V gradients go back through per-head inputs: as in the forward, only
   * when a hook point that shows them is read or was changed (else the fused product's backward
   * computes the same values).
   */
  #perHeadInputs(l: number): boolean {
    const o = this.plan.hookOptions;
    if (!o.useSplitQkvInput && !o.useAttnIn) return false;
    return PER_HEAD_POINTS.some((p) => this.#touched(p, l));
  }

  /**
   * Q|K|V's gradient back through per-head inputs, the forward's `#perHeadQkv` in reverse: head
   * h's product, ln1 on each head's copy of its input (as the forward's hooks left it), then
   * hook_q_input / hook_k_input / hook_v_input (or one hook_attn_in for all three), summed over
   * heads into the residual stream's gradient.
   */
  async #perHeadInputsBackward(l: number): Promise<void> {
    const { backend, cfg } = this.m;
    const o = this.plan.hookOptions;
    const { nHeads, nKeyValueHeads: nKv, dHead, dModel: d } = cfg;
    const rows = this.#rows, W = this.#qkvCols, n = rows * d;
    const w = this.m.heads?.inputs;
    if (!w) throw new Error("per-head Q/K/V weights were not uploaded (set the option first)");
    const blk = this.m.weights.blocks[l];
    using scope = backend.scope();
    const resid = await backend.read(this.plan.residPre[l].at(0, n));
    // Each input as the forward's hooks left it: the residual stream repeated per head, or the
    // value a forward hook wrote.
    const input = (p: HookPoint, heads: number) => {
      const changed = this.#change(p, l);
      return scope.upload(changed ? changed.value.data : repeatPerHead(resid, rows, heads, d));
    };
    const kinds = [
      { point: HOOK.qInput, heads: nHeads, W: w.W_Q[l], col: 0 },
      { point: HOOK.kInput, heads: nKv, W: w.W_K[l], col: nHeads * dHead },
      { point: HOOK.vInput, heads: nKv, W: w.W_V[l], col: (nHeads + nKv) * dHead },
    ];
    const dAttnIn = o.useAttnIn ? scope.upload(new Float32Array(rows * nHeads * d)) : undefined;
    const hooks = { scale: HOOK.ln1Scale, normalized: HOOK.ln1Normalized };
    for (const k of kinds.reverse()) {
      const heads = k.heads;
      const dx = scope.alloc(rows * heads * d);
      for (let h = 0; h < heads; h++) {
        backend.matmulTransposed(this.buf.qkv.at(k.col + h * dHead), k.W[h], dx.at(h * d), rows, {
          lda: W,
          ldc: heads * d,
        });
      }
      const x = o.useSplitQkvInput ? input(k.point, heads) : input(HOOK.attnIn, nHeads);
      if (dAttnIn) {
        await this.#norm(hooks, l, blk.ln1, x, dx, dAttnIn, true, heads);
        continue;
      }
      const dInput = scope.alloc(rows * heads * d);
      await this.#norm(hooks, l, blk.ln1, x, dx, dInput, false, heads);
      await this.#visit(k.point, l, dInput, heads * d, heads * d);
      this.#addHeads(dInput, heads);
    }
    if (dAttnIn) {
      await this.#visit(HOOK.attnIn, l, dAttnIn, nHeads * d, nHeads * d);
      this.#addHeads(dAttnIn, nHeads);
    }
  }

  /** Adds the sum over heads of `x` [rows, heads, d_model] into the residual stream's gradient. */
  #addHeads(x: DeviceArray, heads: number): void {
    const { backend, cfg } = this.m;
    const n = this.#rows * cfg.dModel;
    backend.sumHeads(x, this.buf.branch, this.#rows, heads, cfg.dModel);
    backend.add(this.buf.resid.at(0, n), this.buf.branch.at(0, n), this.buf.resid);
  }

  /**
   * hook_result's gradient (each head's output before the sum: attn_out's gradient repeated per
   * head), visited, then z's gradient head by head through W_O[head].
   */
  async #result(l: number, dOut: DeviceArray): Promise<void> {
    const { backend, cfg } = this.m;
    const { nHeads, dHead, dModel: d } = cfg;
    const rows = this.#rows;
    const W_O = this.m.heads?.W_O?.[l];
    if (!W_O) throw new Error("per-head W_O was not uploaded (set useAttnResult first)");
    using scope = backend.scope();
    const g = await backend.read(dOut.at(0, rows * d));
    const result = scope.upload(repeatPerHead(g, rows, nHeads, d));
    await this.#visit(HOOK.result, l, result, nHeads * d);
    for (let h = 0; h < nHeads; h++) {
      backend.matmulTransposed(result.at(h * d), W_O[h], this.buf.z.at(h * dHead), rows, {
        lda: nHeads * d,
        ldc: nHeads * dHead,
      });
    }
  }

  /** The attention core of layer `l`: z's gradient -> Q|K|V's, through pattern and scores. */
  async #core(l: number): Promise<void> {
    const { backend, cfg } = this.m;
    const { batch, T } = this.plan;
    const { buf } = this;
    const { nHeads, dHead, nKeyValueHeads } = cfg;
    const W = this.#qkvCols, D = nHeads * dHead, kv = nKeyValueHeads * dHead;
    const perSeq = nHeads * T * T;
    const qkv = this.pass.buf.qkv, pattern = this.pass.buf.pattern!;
    // A pattern a forward hook changed was used whole (every key); the softmax's own output is
    // what its backward needs.
    const patternChanged = this.#change(HOOK.pattern, l) !== undefined;
    const softmax = patternChanged ? this.pass.buf.softmax! : pattern;
    const seq = (b: number) => ({
      q: qkv.at(b * T * W),
      k: qkv.at(b * T * W + D),
      v: qkv.at(b * T * W + D + kv),
      stride: W,
      dz: buf.z.at(b * T * D),
      dzStride: D,
      dq: buf.qkv.at(b * T * W),
      dk: buf.qkv.at(b * T * W + D),
      dv: buf.qkv.at(b * T * W + D + kv),
      dStride: W,
      T,
      nHeads,
      dHead,
      scale: scoreScale(cfg),
      nKeyValueHeads,
      window: layerWindow(cfg, l),
      softcap: cfg.attnScoresSoftCap ?? 0,
    });
    // Keys from 0 in every sequence, padded or not: the forward's softmax gave masked and pad keys
    // weight 0, so nothing flows through them, and hook_pattern's gradient there is dz . v, as
    // autograd gives TransformerLens (a hooked pattern may also have used them).
    const at = (x: DeviceArray, b: number) => x.at(b * perSeq, perSeq);
    // The pattern's gradient over whole rows when a hook point reads it (TransformerLens's
    // hook_pattern gradient has entries above the diagonal too), else only where it flows on.
    const fullRows = this.grads.wants(HOOK.pattern, l);
    for (let b = 0; b < batch; b++) {
      backend.attentionGradPattern(seq(b), at(pattern, b), at(buf.pattern, b), {
        causal: !patternChanged,
        fullRows,
      });
    }
    await this.#visit(HOOK.pattern, l, buf.pattern, T);
    for (let b = 0; b < batch; b++) {
      backend.softmaxBackwardRows(
        at(softmax, b),
        at(buf.pattern, b),
        at(buf.pattern, b),
        nHeads,
        T,
      );
    }
    await this.#visit(HOOK.attnScores, l, buf.pattern, T);
    for (let b = 0; b < batch; b++) backend.attentionGradQK(seq(b), at(buf.pattern, b));
  }

  /** The embeddings: hook_pos_embed's and hook_embed's gradients (nothing flows further). */
  async embed(): Promise<void> {
    if (this.m.params.W_pos) await this.#branch(HOOK.posEmbed, null);
    await this.#branch(HOOK.embed, null);
  }
}
