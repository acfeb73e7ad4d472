/**
 * The GPT-2 forward pass over the WebAssembly kernels, with hook points. One code path serves
 * plain runs (every position of every sequence) and resumed runs (each sequence computes only
 * positions [qStart, T) from a given layer, reading the clean keys and values before qStart),
 * which is what makes activation patching cheap.
 * @module
 */
import type { Kernels } from "../backend/wasm/kernels.ts";
import type { HookedTransformerConfig } from "./config.ts";
import type { DeviceLayerNorm, DeviceWeights } from "./device_weights.ts";
import { hookShape } from "./hook_points.ts";
import type { HookSession } from "./hooks.ts";

const F32 = 4;

/**
 * Which rows a pass computes. Sequence b computes positions [qStart[b], T); its rows are stored
 * compactly from `rowOffset[b]`. `prefixKv[l]` points at a clean run's Q|K|V rows [T, 3 d_model]
 * of layer l, read for positions before qStart (null when every qStart is 0).
 */
export interface RowPlan {
  batch: number;
  T: number;
  qStart: Int32Array;
  rowOffset: Int32Array;
  rows: number;
  prefixKv: number[] | null;
}

/** A plan computing every position of `batch` sequences of length T. */
export function fullPlan(batch: number, T: number): RowPlan {
  const rowOffset = new Int32Array(batch);
  for (let b = 0; b < batch; b++) rowOffset[b] = b * T;
  return { batch, T, qStart: new Int32Array(batch), rowOffset, rows: batch * T, prefixKv: null };
}

/** A plan where sequence b computes positions [starts[b], T), with clean K/V before that. */
export function resumePlan(starts: ArrayLike<number>, T: number, prefixKv: number[]): RowPlan {
  const batch = starts.length;
  const qStart = Int32Array.from(starts);
  const rowOffset = new Int32Array(batch);
  let rows = 0;
  for (let b = 0; b < batch; b++) {
    rowOffset[b] = rows;
    rows += T - qStart[b];
  }
  return { batch, T, qStart, rowOffset, rows, prefixKv };
}

/** Activation buffers of one pass (byte offsets in WebAssembly memory). */
export interface PassBuffers {
  /** Residual stream [rows, d_model], updated in place. */
  resid: number;
  /** LayerNorm output [rows, d_model]. */
  x: number;
  /** LayerNorm scale [rows]. */
  scale: number;
  /** Fused Q|K|V [rows, 3 d_model]. */
  qkv: number;
  /** Head outputs [rows, d_model]. */
  z: number;
  /** attn_out / mlp_out [rows, d_model]. */
  out: number;
  /** MLP hidden [rows, d_mlp]. */
  mlp: number;
  /** Attention pattern [batch, head, T, T], when a hook or the cache asks for it. */
  pattern: number;
  /** Attention scores [batch, head, T, T], when asked for. */
  scores: number;
  /** [T, 3 d_model] scratch gathering one resumed sequence's Q|K|V (resumed plans only). */
  kv: number;
}

/** Allocates the buffers a pass over `plan` needs (from the kernels' arena). */
export function allocBuffers(
  k: Kernels,
  cfg: HookedTransformerConfig,
  plan: RowPlan,
  withPattern: boolean,
  withScores: boolean,
): PassBuffers {
  const { rows, batch, T } = plan;
  const d = cfg.dModel;
  const attn = batch * cfg.nHeads * T * T;
  return {
    resid: k.alloc(rows * d),
    x: k.alloc(rows * d),
    scale: k.alloc(rows),
    qkv: k.alloc(rows * 3 * d),
    z: k.alloc(rows * d),
    out: k.alloc(rows * d),
    mlp: k.alloc(rows * cfg.dMlp),
    pattern: withPattern ? k.alloc(attn) : 0,
    scores: withScores ? k.alloc(attn) : 0,
    kv: plan.prefixKv ? k.alloc(T * 3 * d) : 0,
  };
}

/** Runs transformer blocks over a plan's rows, visiting hook points. */
export class ForwardPass {
  constructor(
    private readonly k: Kernels,
    private readonly cfg: HookedTransformerConfig,
    private readonly w: DeviceWeights,
    private readonly plan: RowPlan,
    private readonly buf: PassBuffers,
    private readonly hooks: HookSession,
  ) {}

  /** Shape of a hook point's activation for this pass (full plans only have hooks). */
  private shape(name: string): number[] {
    return hookShape(name, this.cfg, this.plan.batch, this.plan.T);
  }

  private visit(name: string, ptr: number, cols: number, stride = cols): boolean {
    if (!this.hooks.wants(name)) return false;
    return this.hooks.visit(name, ptr, this.shape(name), this.plan.rows, cols, stride);
  }

  /** LayerNorm of the residual stream into `x`, with its two hook points. */
  private layerNorm(prefix: string, ln: DeviceLayerNorm | null) {
    const { k, cfg, buf, plan } = this;
    const scaleName = `${prefix}.hook_scale`;
    const wantScale = this.hooks.wants(scaleName);
    k.layerNorm(buf.resid, buf.x, plan.rows, cfg.dModel, cfg.eps, {
      gamma: ln?.gamma,
      beta: ln?.beta,
      scale: wantScale ? buf.scale : undefined,
    });
    if (wantScale) this.visit(scaleName, buf.scale, 1);
    this.visit(`${prefix}.hook_normalized`, buf.x, cfg.dModel);
  }

  /** Runs block `l` (both halves). */
  block(l: number) {
    this.attentionHalf(l);
    this.mlpHalf(l);
  }

  /** resid_pre -> resid_mid of block `l`: LayerNorm, attention, residual add. */
  attentionHalf(l: number) {
    const { k, cfg, buf, plan } = this;
    const blk = this.w.blocks[l];
    const d = cfg.dModel;
    const p = `blocks.${l}`;
    this.visit(`${p}.hook_resid_pre`, buf.resid, d);
    this.layerNorm(`${p}.ln1`, blk.ln1);
    k.matmul(buf.x, blk.W_QKV.ptr, buf.qkv, plan.rows, d, 3 * d, {
      bias: blk.b_QKV,
      bDtype: blk.W_QKV.dtype,
    });
    this.visit(`${p}.attn.hook_q`, buf.qkv, d, 3 * d);
    this.visit(`${p}.attn.hook_k`, buf.qkv + d * F32, d, 3 * d);
    this.visit(`${p}.attn.hook_v`, buf.qkv + 2 * d * F32, d, 3 * d);
    this.attention(l);
    this.visit(`${p}.attn.hook_z`, buf.z, d);
    k.matmul(buf.z, blk.W_O.ptr, buf.out, plan.rows, d, d, {
      bias: blk.b_O,
      bDtype: blk.W_O.dtype,
    });
    this.visit(`${p}.hook_attn_out`, buf.out, d);
    k.add(buf.resid, buf.out, buf.resid, plan.rows * d);
    this.visit(`${p}.hook_resid_mid`, buf.resid, d);
  }

  /** resid_mid -> resid_post of block `l`: LayerNorm, MLP, residual add. */
  mlpHalf(l: number) {
    const { k, cfg, buf, plan } = this;
    const blk = this.w.blocks[l];
    const d = cfg.dModel;
    const p = `blocks.${l}`;
    this.layerNorm(`${p}.ln2`, blk.ln2);
    k.matmul(buf.x, blk.W_in.ptr, buf.mlp, plan.rows, d, cfg.dMlp, {
      bias: blk.b_in,
      bDtype: blk.W_in.dtype,
    });
    this.visit(`${p}.mlp.hook_pre`, buf.mlp, cfg.dMlp);
    k.geluNew(buf.mlp, buf.mlp, plan.rows * cfg.dMlp);
    this.visit(`${p}.mlp.hook_post`, buf.mlp, cfg.dMlp);
    k.matmul(buf.mlp, blk.W_out.ptr, buf.out, plan.rows, cfg.dMlp, d, {
      bias: blk.b_out,
      bDtype: blk.W_out.dtype,
    });
    this.visit(`${p}.hook_mlp_out`, buf.out, d);
    k.add(buf.resid, buf.out, buf.resid, plan.rows * d);
    this.visit(`${p}.hook_resid_post`, buf.resid, d);
  }

  /** The final LayerNorm into `x`. */
  finalLayerNorm() {
    this.layerNorm("ln_final", this.w.lnFinal);
  }

  private attention(l: number) {
    const { k, cfg, buf, plan } = this;
    const d = cfg.dModel;
    const { nHeads, dHead } = cfg;
    const scale = 1 / Math.sqrt(dHead);
    const p = `blocks.${l}.attn`;
    const wantScores = this.hooks.wants(`${p}.hook_attn_scores`);
    const wantPattern = wantScores || this.hooks.wants(`${p}.hook_pattern`);
    const T = plan.T;
    const perSeq = nHeads * T * T * F32;

    // Where sequence b's Q|K|V rows live: in place for full plans; gathered into `kv` otherwise.
    const seq = (b: number) => {
      const qStart = plan.qStart[b];
      const nQ = T - qStart;
      const own = buf.qkv + plan.rowOffset[b] * 3 * d * F32;
      let base = own - qStart * 3 * d * F32; // row 0 of the sequence, when stored in place
      if (plan.prefixKv) {
        base = buf.kv;
        k.copy(plan.prefixKv[l], base, qStart * 3 * d);
        k.copy(own, base + qStart * 3 * d * F32, nQ * 3 * d);
      }
      return {
        q: base + qStart * 3 * d * F32,
        k: base + d * F32,
        v: base + 2 * d * F32,
        stride: 3 * d,
        z: buf.z + plan.rowOffset[b] * d * F32,
        zStride: d,
        nQ,
        qStart,
        nHeads,
        dHead,
        scale,
      };
    };

    if (!wantPattern) {
      for (let b = 0; b < plan.batch; b++) k.attention(seq(b));
      return;
    }
    if (wantScores) {
      for (let b = 0; b < plan.batch; b++) k.attentionScores(seq(b), buf.scores + b * perSeq);
      this.hooks.visit(
        `${p}.hook_attn_scores`,
        buf.scores,
        this.shape(`${p}.hook_attn_scores`),
        plan.batch * nHeads * T,
        T,
      );
      for (let b = 0; b < plan.batch; b++) {
        k.softmaxCausal(buf.scores + b * perSeq, buf.pattern + b * perSeq, nHeads, T, 0);
      }
    } else {
      for (let b = 0; b < plan.batch; b++) {
        k.attention({ ...seq(b), pattern: buf.pattern + b * perSeq });
      }
    }
    const name = `${p}.hook_pattern`;
    const hooked = this.hooks.visit(
      name,
      buf.pattern,
      this.shape(name),
      plan.batch * nHeads * T,
      T,
    );
    if (wantScores || hooked) {
      for (let b = 0; b < plan.batch; b++) {
        k.attentionApply({ ...seq(b), pattern: buf.pattern + b * perSeq });
      }
    }
  }
}
