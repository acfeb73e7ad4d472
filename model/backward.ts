/**
 * The backward pass: from the gradient at `ln_final.hook_normalized` back to the embeddings, the
 * forward pass's stages in reverse (final norm, then each block's MLP half and attention half,
 * then the embeddings), visiting every hook point with the gradient of the metric with respect to
 * that activation (TransformerLens's `<name>_grad`).
 *
 * Memory: the forward pass records only each block's input residual stream (and the final one);
 * each block's activations are recomputed from it, just before that block's backward, by the
 * forward pass's own stages (`Pass.attentionHalf` and `Pass.mlpIn`: Q|K|V, the pattern, resid_mid
 * and the MLP's pre-activation; not the MLP's output product, which the backward does not read).
 * So activation memory is (n_layers + 1) residual streams plus one block's worth, and the cost is
 * about two thirds of a forward pass through the blocks.
 *
 * Forward hooks: what a forward hook changed is replayed during the recompute (the hook functions
 * are not called again), and the changed elements are constants to the backward pass: gradients
 * do not flow through them to earlier activations, as in PyTorch when a hook assigns values.
 * Unchanged elements pass their gradient on unchanged.
 *
 * To add an architecture's backward: its norm (`#norm`: RMSNorm is the kernel's `center: false`),
 * its activation (`#activation`), gated MLPs (`mlpHalf`: the gate's product beside W_in's),
 * rotary (between the attention step and Q|K|V's visits in `attentionHalf`) and parallel blocks
 * (`block`: both halves read the same input) each change one method here.
 * @module
 */
import type { DeviceArray, Scope } from "../backend/backend.ts";
import { InputError } from "../core/errors.ts";
import type { DeviceNorm } from "./device_weights.ts";
import { type ModelRuntime, Pass } from "./forward.ts";
import { HOOK, type HookPoint } from "./hook_table.ts";
import { type HookChange, type HookFn, HookNames, HookSession } from "./hooks.ts";

/** What a backward pass starts from: a forward pass's record. */
export interface BackwardPlan {
  /** Number of sequences. */
  batch: number;
  /** Length of every sequence. */
  T: number;
  /**
   * Each block's input residual stream as the block used it (after hooks), and the final
   * resid_post as entry nLayers: [batch * T, d_model] each (the forward's `record.residPre`).
   */
  residPre: readonly DeviceArray[];
  /** d metric / d `ln_final.hook_normalized` [batch * T, d_model] (overwritten). */
  dFinal: DeviceArray;
  /** What forward hooks changed, by full hook name (the forward session's `changes`). */
  changes: ReadonlyMap<string, HookChange>;
}

/**
 * Runs the backward pass. `grads` visits each hook point's gradient: caching it and running the
 * backward hooks, whose replacements flow on.
 */
export function backward(m: ModelRuntime, plan: BackwardPlan, grads: HookSession): void {
  const { cfg } = m;
  if (cfg.actFn !== "gelu_new" || cfg.gatedMlp || cfg.parallelAttnMlp) {
    throw new InputError(
      `gradients are implemented for GPT-2's blocks (gelu_new MLP, sequential attention and ` +
        `MLP), not yet for ${cfg.modelName}'s`,
    );
  }
  using scope = m.backend.scope();
  const names = new HookNames(cfg.nLayers);
  const replay = replaySession(m, names, plan.changes);
  const pass = new Pass(m, { batch: plan.batch, T: plan.T, keepPattern: true }, replay, scope);
  const bwd = new BackwardPass(m, plan, grads, names, pass, scope);
  bwd.finalNorm();
  for (let l = cfg.nLayers - 1; l >= 0; l--) bwd.block(l);
  bwd.embed();
}

/** A session that writes back, during a recompute, what the forward hooks changed. */
function replaySession(
  m: ModelRuntime,
  names: HookNames,
  changes: ReadonlyMap<string, HookChange>,
): HookSession {
  const hooks = new Map<string, HookFn[]>();
  for (const [name, { value }] of changes) hooks.set(name, [() => value]);
  return new HookSession(m.backend, names, hooks);
}

/** The gradient buffers of one backward pass. */
interface GradBuffers {
  /** The residual stream's gradient [rows, d_model]. */
  resid: DeviceArray;
  /** A norm's output gradient [rows, d_model]. */
  x: DeviceArray;
  /** attn_out / mlp_out / embedding gradient when a hook point reads or changes it alone. */
  branch: DeviceArray;
  /** Normalization scales' gradient [rows], when a hook point needs it. */
  scale?: DeviceArray;
  /** The MLP hidden gradient [rows, d_mlp]. */
  mlp: DeviceArray;
  /** z's gradient [rows, n_heads d_head]. */
  z: DeviceArray;
  /** Q|K|V's gradient [rows, qkvCols]. */
  qkv: DeviceArray;
  /** The pattern's gradient, then in place the scores' [batch, head, T, T]. */
  pattern: DeviceArray;
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
      layers.some((l) => grads.wants(HOOK.ln1Scale, l) || grads.wants(HOOK.ln2Scale, l)));
    this.buf = {
      resid: scope.alloc(R * d),
      x: scope.alloc(R * d),
      branch: scope.alloc(R * d),
      scale: wantScale ? scope.alloc(R) : undefined,
      mlp: scope.alloc(R * cfg.dMlp),
      z: scope.alloc(R * cfg.nHeads * cfg.dHead),
      qkv: scope.alloc(R * this.#qkvCols),
      pattern: scope.alloc(plan.batch * cfg.nHeads * plan.T * plan.T),
    };
  }

  /**
   * Visits hook point `p`'s gradient in `x` (`cols` of each row, `stride` apart), then stops the
   * gradient at the elements a forward hook changed.
   */
  #visit(p: HookPoint, l: number | null, x: DeviceArray, cols: number, stride = cols): void {
    const { backend, cfg } = this.m;
    const rows = p === HOOK.attnScores || p === HOOK.pattern
      ? this.plan.batch * cfg.nHeads * this.plan.T
      : this.#rows;
    const layout = { rows, cols, stride };
    if (this.grads.wants(p, l)) {
      this.grads.visit(p, l, x, p.shape(cfg, this.plan.batch, this.plan.T), layout);
    }
    const change = this.#change(p, l);
    if (change) {
      const g = backend.readRows(x, rows, cols, stride);
      for (let i = 0; i < g.length; i++) if (change.mask[i]) g[i] = 0;
      backend.writeRows(x, g, rows, cols, stride);
    }
  }

  #change(p: HookPoint, l: number | null): HookChange | undefined {
    return this.plan.changes.size ? this.plan.changes.get(this.names.of(p, l)) : undefined;
  }

  /**
   * The gradient of a branch that adds into the residual stream (attn_out, mlp_out, an
   * embedding): the residual stream's own, or a copy when the hook point reads or changes it, so
   * that a backward hook there (or a forward patch) affects only that branch.
   */
  #branch(p: HookPoint, l: number | null): DeviceArray {
    const { backend, cfg } = this.m;
    if (!this.grads.wants(p, l) && !this.#change(p, l)) return this.buf.resid;
    const n = this.#rows * cfg.dModel;
    backend.copy(this.buf.resid.at(0, n), this.buf.branch);
    this.#visit(p, l, this.buf.branch, cfg.dModel);
    return this.buf.branch;
  }

  /**
   * A norm's backward: `g` is the gradient at its output (already visited), `x` its input. Adds
   * dL/dx into the residual stream's gradient (or sets it, `accumulate` false), visiting the
   * scale's gradient on the way.
   */
  #norm(
    scaleHook: HookPoint,
    l: number | null,
    w: DeviceNorm | null,
    x: DeviceArray,
    g: DeviceArray,
    accumulate: boolean,
  ): void {
    const { backend, cfg } = this.m;
    const rows = this.#rows, d = cfg.dModel;
    const opts = {
      gamma: w?.w,
      center: cfg.normalizationType === "LN" || cfg.normalizationType === "LNPre",
      accumulate,
    };
    const xs = x.at(0, rows * d), gs = g.at(0, rows * d), dx = this.buf.resid.at(0, rows * d);
    if (!this.grads.wants(scaleHook, l)) {
      backend.normBackward(xs, gs, dx, rows, d, cfg.eps, opts);
      return;
    }
    // The scale's gradient first, visited (a hook may replace it), then dx from it.
    const scale = this.buf.scale!;
    backend.normBackward(xs, gs, null, rows, d, cfg.eps, { ...opts, scaleGrad: scale });
    this.#visit(scaleHook, l, scale, 1);
    backend.normBackward(xs, gs, dx, rows, d, cfg.eps, {
      ...opts,
      scaleGrad: scale,
      scaleGiven: true,
    });
  }

  /** ln_final: the metric's gradient at its output -> the final residual stream's gradient. */
  finalNorm(): void {
    const { cfg, weights } = this.m;
    this.#visit(HOOK.lnFinalNormalized, null, this.plan.dFinal, cfg.dModel);
    const x = this.plan.residPre[cfg.nLayers];
    this.#norm(HOOK.lnFinalScale, null, weights.lnFinal, x, this.plan.dFinal, false);
  }

  /** Block `l`: its activations recomputed from its input, then resid_post -> resid_pre. */
  block(l: number): void {
    const { backend, cfg } = this.m;
    const pass = this.pass;
    backend.copy(this.plan.residPre[l].at(0, this.#rows * cfg.dModel), pass.buf.resid);
    pass.attentionHalf(l);
    pass.mlpIn(l);
    this.mlpHalf(l);
    this.attentionHalf(l);
  }

  /** resid_post -> resid_mid: the MLP's output, activation, input and norm in reverse. */
  mlpHalf(l: number): void {
    const { backend, cfg } = this.m;
    const { buf } = this;
    const rows = this.#rows, d = cfg.dModel;
    const blk = this.m.weights.blocks[l];
    this.#visit(HOOK.residPost, l, buf.resid, d);
    const dOut = this.#branch(HOOK.mlpOut, l);
    backend.matmulTransposed(dOut, blk.W_out, buf.mlp, rows);
    this.#visit(HOOK.mlpPost, l, buf.mlp, cfg.dMlp);
    this.#activation();
    this.#visit(HOOK.mlpPre, l, buf.mlp, cfg.dMlp);
    backend.matmulTransposed(buf.mlp, blk.W_in, buf.x, rows);
    this.#visit(HOOK.ln2Normalized, l, buf.x, d);
    // ln2's input is resid_mid, which the recompute left in the pass's residual stream.
    this.#norm(HOOK.ln2Scale, l, blk.ln2, this.pass.buf.resid, buf.x, true);
  }

  /** hook_post's gradient -> hook_pre's, in place (the pass holds the recomputed pre). */
  #activation(): void {
    const n = this.#rows * this.m.cfg.dMlp;
    const dHidden = this.buf.mlp.at(0, n);
    this.m.backend.geluNewBackward(this.pass.buf.mlp.at(0, n), dHidden, dHidden);
  }

  /** resid_mid -> resid_pre: attention's output, core, Q|K|V and norm in reverse. */
  attentionHalf(l: number): void {
    const { backend, cfg } = this.m;
    const { buf } = this;
    const rows = this.#rows, d = cfg.dModel, W = this.#qkvCols;
    const qCols = cfg.nHeads * cfg.dHead, kvCols = cfg.nKeyValueHeads * cfg.dHead;
    const blk = this.m.weights.blocks[l];
    this.#visit(HOOK.residMid, l, buf.resid, d);
    const dOut = this.#branch(HOOK.attnOut, l);
    backend.matmulTransposed(dOut, blk.W_O, buf.z, rows);
    this.#visit(HOOK.z, l, buf.z, qCols);
    this.#attention(l);
    this.#visit(HOOK.v, l, buf.qkv.at(qCols + kvCols), kvCols, W);
    this.#visit(HOOK.k, l, buf.qkv.at(qCols), kvCols, W);
    this.#visit(HOOK.q, l, buf.qkv, qCols, W);
    backend.matmulTransposed(buf.qkv, blk.W_QKV, buf.x, rows);
    this.#visit(HOOK.ln1Normalized, l, buf.x, d);
    this.#norm(HOOK.ln1Scale, l, blk.ln1, this.plan.residPre[l], buf.x, true);
    this.#visit(HOOK.residPre, l, buf.resid, d);
  }

  /** The attention core of layer `l`: z's gradient -> Q|K|V's, through pattern and scores. */
  #attention(l: number): void {
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
      scale: 1 / Math.sqrt(dHead),
      nKeyValueHeads,
    });
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
    this.#visit(HOOK.pattern, l, buf.pattern, T);
    for (let b = 0; b < batch; b++) {
      backend.softmaxBackwardRows(
        at(softmax, b),
        at(buf.pattern, b),
        at(buf.pattern, b),
        nHeads,
        T,
      );
    }
    this.#visit(HOOK.attnScores, l, buf.pattern, T);
    for (let b = 0; b < batch; b++) backend.attentionGradQK(seq(b), at(buf.pattern, b));
  }

  /** The embeddings: hook_pos_embed's and hook_embed's gradients (nothing flows further). */
  embed(): void {
    if (this.m.params.W_pos) this.#branch(HOOK.posEmbed, null);
    this.#branch(HOOK.embed, null);
  }
}
