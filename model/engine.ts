/**
 * The engine under `HookedTransformer`: kernels, parameters in WebAssembly memory, and the passes
 * built from them (full runs with hooks, resumed runs for patching, next-token log-probs).
 * @module
 */
import type { BDtype, Kernels } from "../backend/wasm/kernels.ts";
import type { HookedTransformerConfig } from "./config.ts";
import type { Gpt2Params } from "../families/gpt2.ts";
import type { Tensor } from "../core/tensor.ts";
import { type DeviceWeights, uploadWeights } from "./device_weights.ts";
import { allocBuffers, ForwardPass, fullPlan, type RowPlan } from "./forward.ts";
import { hookShape } from "./hook_points.ts";
import { HookSession } from "./hooks.ts";
import type { TokenTensor } from "./tokens.ts";

/** Rows of logits computed per unembedding call, so WebAssembly memory holds one chunk only. */
const LOGIT_CHUNK_ROWS = 64;
const F32 = 4;

/** The model's compute: owns the device weights; every method is synchronous. */
export class Engine {
  readonly device: DeviceWeights;
  /** A session with no hooks and no cache, for passes nobody observes. */
  readonly silent: HookSession;

  constructor(
    readonly k: Kernels,
    readonly cfg: HookedTransformerConfig,
    readonly params: Gpt2Params,
    weightDtype: BDtype = "f32",
  ) {
    this.device = uploadWeights(k, params, cfg, weightDtype);
    this.silent = new HookSession(k, new Map(), new Set());
  }

  /** Whether any hook point ending in `suffix` is observed by the session. */
  #observes(session: HookSession, suffix: string): boolean {
    for (let l = 0; l < this.cfg.nLayers; l++) {
      if (session.wants(`blocks.${l}.attn.${suffix}`)) return true;
    }
    return false;
  }

  /**
   * A full forward pass with hooks. Returns logits [batch, pos, d_vocab], or null when
   * `withLogits` is false (the unembedding is skipped entirely).
   */
  forward(tokens: TokenTensor, session: HookSession, withLogits: boolean): Tensor | null {
    const { k, cfg } = this;
    const [batch, T] = tokens.shape;
    const plan = fullPlan(batch, T);
    const scores = this.#observes(session, "hook_attn_scores");
    const pattern = scores || this.#observes(session, "hook_pattern");
    const mark = k.mark();
    try {
      const buf = allocBuffers(k, cfg, plan, pattern, scores);
      const chunk = withLogits ? k.alloc(LOGIT_CHUNK_ROWS * cfg.dVocab) : 0;
      this.embed(tokens, buf.x, buf.z, session);
      k.add(buf.x, buf.z, buf.resid, plan.rows * cfg.dModel);
      const pass = new ForwardPass(k, cfg, this.device, plan, buf, session);
      for (let l = 0; l < cfg.nLayers; l++) pass.block(l);
      pass.finalLayerNorm();
      if (!withLogits) return null;
      const out = new Float32Array(plan.rows * cfg.dVocab);
      this.unembed(buf.x, plan.rows, chunk, (r0, _m, logits) => out.set(logits, r0 * cfg.dVocab));
      return { data: out, shape: [batch, T, cfg.dVocab] };
    } finally {
      k.release(mark);
    }
  }

  /** Writes W_E[tokens] into `embed` and W_pos[positions] into `pos`, with their hook points. */
  embed(tokens: TokenTensor, embed: number, pos: number, session: HookSession) {
    const k = this.k;
    const d = this.cfg.dModel;
    const [batch, T] = tokens.shape;
    const rows = batch * T;
    const e = k.view(embed, rows * d);
    const p = k.view(pos, rows * d);
    const WE = this.params.W_E.data;
    const WP = this.params.W_pos.data;
    for (let r = 0; r < rows; r++) {
      const id = tokens.data[r];
      const t = r % T;
      e.set(WE.subarray(id * d, id * d + d), r * d);
      p.set(WP.subarray(t * d, t * d + d), r * d);
    }
    const shape = hookShape("hook_embed", this.cfg, batch, T);
    session.visit("hook_embed", embed, shape, rows, d);
    session.visit("hook_pos_embed", pos, shape, rows, d);
  }

  /**
   * logits = x @ W_U + b_U for `rows` rows of x, in chunks; `each(firstRow, rowCount, logits)`
   * receives a view of each chunk (valid only during the call).
   */
  unembed(
    x: number,
    rows: number,
    chunk: number,
    each: (firstRow: number, count: number, logits: Float32Array) => void,
  ) {
    const { k, device } = this;
    const { dModel: d, dVocab: V } = this.cfg;
    for (let r0 = 0; r0 < rows; r0 += LOGIT_CHUNK_ROWS) {
      const m = Math.min(LOGIT_CHUNK_ROWS, rows - r0);
      k.matmul(x + r0 * d * F32, device.W_U.ptr, chunk, m, d, V, {
        bias: device.b_U,
        bDtype: device.W_U.dtype,
      });
      each(r0, m, k.view(chunk, m * V));
    }
  }

  /** Rows of logits computed per unembedding call. */
  get logitChunkRows(): number {
    return LOGIT_CHUNK_ROWS;
  }

  /**
   * Starts a pass over `plan`, by default with no hooks (resumed runs). A session that caches
   * `hook_pattern` points needs `pattern` true (the buffer they are written to).
   */
  pass(
    plan: RowPlan,
    pattern = false,
    session: HookSession = this.silent,
  ): { pass: ForwardPass; buf: ReturnType<typeof allocBuffers> } {
    const buf = allocBuffers(this.k, this.cfg, plan, pattern, false);
    return { pass: new ForwardPass(this.k, this.cfg, this.device, plan, buf, session), buf };
  }
}
