/**
 * The sparse autoencoder as a module (SAELens's `SAE`, camelCased): its weights under SAELens's
 * names, `encode`, `decode` and `forward` for every architecture, computed on a backend's kernels
 * (the encoder and decoder products with `matmul`, the activation with `activation("relu")`,
 * `jumpRelu`, `gatedRelu` or `topkRows`), and the hook points SAELens gives it
 * (`hook_sae_input`, `hook_sae_acts_pre`, `hook_sae_acts_post`, `hook_sae_recons`,
 * `hook_sae_output`, `hook_sae_error`), visited as nested hook points when it is spliced into a
 * model (`sae/splice.ts`). Loading is in `sae/load.ts`; `SAE.loadFromDisk` and
 * `SAE.fromPretrained` in `sae/mod.ts`.
 * @module
 */
import type { Backend, DeviceArray, PackedMatrix } from "../backend/backend.ts";
import { InputError, WeightsError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";
import { exclusiveUse, runNextTurnNow } from "../model/exclusive.ts";
import type { NestedHookPoints } from "../model/hooks.ts";
import type { SaeConfig } from "./config.ts";

/** SAELens's hook points of an SAE, in the order a forward pass visits them. */
export const SAE_HOOK_POINTS = [
  "hook_sae_input",
  "hook_sae_acts_pre",
  "hook_sae_acts_post",
  "hook_sae_recons",
  "hook_sae_error",
  "hook_sae_output",
] as const;

/** One of {@linkcode SAE_HOOK_POINTS}. */
export type SaeHookPoint = typeof SAE_HOOK_POINTS[number];

/** An SAE's parameters, SAELens names (`threshold` for JumpReLU, `b_gate`/`b_mag`/`r_mag` gated). */
export interface SaeWeights {
  /** Encoder [d_in, d_sae]. */
  W_enc: Tensor;
  /** Decoder [d_sae, d_out]. */
  W_dec: Tensor;
  /** Encoder bias [d_sae] (gated SAEs have none: b_gate and b_mag). */
  b_enc?: Tensor;
  /** Decoder bias [d_out]. */
  b_dec: Tensor;
  /** JumpReLU thresholds [d_sae]. */
  threshold?: Tensor;
  /** Gated: the gate's bias [d_sae]. */
  b_gate?: Tensor;
  /** Gated: the magnitude's bias [d_sae]. */
  b_mag?: Tensor;
  /** Gated: the magnitude's log scale [d_sae] (W_mag = W_enc * exp(r_mag)). */
  r_mag?: Tensor;
}

/** The weights as they live on one backend. */
interface DeviceSae {
  /** [d_in, d_sae] (gated: [d_in, 2 d_sae], gate then magnitude columns). */
  enc: PackedMatrix;
  bEnc: DeviceArray;
  dec: PackedMatrix;
  bDec: DeviceArray;
  threshold?: DeviceArray;
  /** topk with rescale: ||W_dec[f]|| and its reciprocal. */
  decNorm?: DeviceArray;
  invDecNorm?: DeviceArray;
}

/** What one computation of the SAE returns (host arrays, row-major, `rows` rows). */
export interface SaeRun {
  /** The features [rows, d_sae] (hook_sae_acts_post, after its hooks), when asked. */
  acts?: Float32Array;
  /** The output [rows, d_out] in the hook's flat layout (hook_sae_recons then normalisation-out). */
  out?: Float32Array;
}

/** Options of the internal computation. */
export interface SaeRunOptions {
  /** Where the nested hook points are visited (a spliced SAE), with their name prefix. */
  nested?: { points: NestedHookPoints; prefix: string; shape: number[] };
  /** Return the features. */
  acts?: boolean;
  /** Decode and return the output. */
  out?: boolean;
}

/** Rows of features computed at once when nothing needs the whole tensor (bounds memory). */
const CHUNK_FLOATS = 1 << 24;

/** The per-row normalisation state: in x * a + b, out y * c + d (SAELens's run-time norms). */
interface RowNorm {
  mul: Float64Array;
  /** layer_norm only: the row mean (out adds it, in subtracts it first). */
  mu?: Float64Array;
}

/**
 * A sparse autoencoder or transcoder (SAELens's `SAE`). Its weights are host tensors under
 * SAELens's names; it computes on `backend`, and on any other backend it is spliced into (the
 * weights are uploaded there once, on first use).
 *
 * @example
 * ```ts
 * import { SAE } from "./mod.ts";
 * const d = 4, n = 8;
 * const sae = await SAE.fromTensors(
 *   { d_in: d, d_sae: n, hook_name: "blocks.0.hook_resid_pre", architecture: "standard" },
 *   {
 *     W_enc: { data: new Float32Array(d * n).fill(0.1), shape: [d, n] },
 *     W_dec: { data: new Float32Array(n * d).fill(0.1), shape: [n, d] },
 *     b_enc: { data: new Float32Array(n), shape: [n] },
 *     b_dec: { data: new Float32Array(d), shape: [d] },
 *   },
 *   { threads: 1 },
 * );
 * const x = { data: new Float32Array([1, 2, 3, 4]), shape: [1, d] };
 * (await sae.encode(x)).shape; // [1, 8]: every feature 0.1 * (1 + 2 + 3 + 4) = 1
 * (await sae.forward(x)).shape; // [1, 4]
 * ```
 */
export class SAEModule {
  /** The configuration (SAELens's `cfg`, camelCased). */
  readonly cfg: SaeConfig;
  /** The backend `encode`, `decode` and `forward` compute on. */
  readonly backend: Backend;
  readonly #w: SaeWeights;
  readonly #devices = new Map<Backend, DeviceSae>();
  /** ||W_dec[f]|| in float64 (topk rescale, DLA). */
  #decNorms?: Float64Array;

  /**
   * Checks the weights against the config (shapes, which tensors each architecture needs) and
   * uploads them to `backend`. Throws a {@link WeightsError} naming the tensor otherwise.
   */
  constructor(cfg: SaeConfig, weights: SaeWeights, backend: Backend) {
    this.cfg = cfg;
    this.backend = backend;
    const { dIn, dSae, dOut, architecture: arch } = cfg;
    const need = (name: keyof SaeWeights, shape: number[]): Tensor => {
      const t = weights[name];
      if (!t) {
        throw new WeightsError(
          `the ${arch} SAE needs ${name} [${shape}], which the weights do not have`,
        );
      }
      const same = t.shape.length === shape.length && t.shape.every((d, i) => d === shape[i]);
      if (!same || t.data.length !== shape.reduce((a, b) => a * b, 1)) {
        throw new WeightsError(
          `${name} has shape [${t.shape}], but the config (d_in ${dIn}, d_sae ${dSae}, d_out ` +
            `${dOut}) needs [${shape}]`,
        );
      }
      for (let i = 0; i < t.data.length; i++) {
        if (!Number.isFinite(t.data[i])) {
          throw new WeightsError(`${name} holds a non-finite value (${t.data[i]}) at ${i}`);
        }
      }
      return t;
    };
    const w: SaeWeights = {
      W_enc: need("W_enc", [dIn, dSae]),
      W_dec: need("W_dec", [dSae, dOut]),
      b_dec: need("b_dec", [dOut]),
    };
    if (arch === "gated") {
      w.b_gate = need("b_gate", [dSae]);
      w.b_mag = need("b_mag", [dSae]);
      w.r_mag = need("r_mag", [dSae]);
    } else w.b_enc = need("b_enc", [dSae]);
    if (arch === "jumprelu" || arch === "jumprelu_transcoder") {
      w.threshold = need("threshold", [dSae]);
    }
    this.#w = w;
    this.#device(backend);
  }

  /** Encoder [d_in, d_sae] (the SAE's own array: treat as read-only). */
  get W_enc(): Tensor {
    return this.#w.W_enc;
  }
  /** Decoder [d_sae, d_out] (read-only). */
  get W_dec(): Tensor {
    return this.#w.W_dec;
  }
  /** Encoder bias [d_sae]; undefined for gated SAEs (see b_gate, b_mag). */
  get b_enc(): Tensor | undefined {
    return this.#w.b_enc;
  }
  /** Decoder bias [d_out] (read-only). */
  get b_dec(): Tensor {
    return this.#w.b_dec;
  }
  /** JumpReLU thresholds [d_sae], when the architecture has them. */
  get threshold(): Tensor | undefined {
    return this.#w.threshold;
  }
  /** Gated: the gate's bias [d_sae]. */
  get b_gate(): Tensor | undefined {
    return this.#w.b_gate;
  }
  /** Gated: the magnitude's bias [d_sae]. */
  get b_mag(): Tensor | undefined {
    return this.#w.b_mag;
  }
  /** Gated: the magnitude's log scale [d_sae]. */
  get r_mag(): Tensor | undefined {
    return this.#w.r_mag;
  }

  /** ||W_dec[f]|| per feature, in float64. */
  decoderNorms(): Float64Array {
    if (this.#decNorms) return this.#decNorms;
    const { dSae, dOut } = this.cfg;
    const n = new Float64Array(dSae);
    const W = this.#w.W_dec.data;
    for (let f = 0; f < dSae; f++) {
      let s = 0;
      for (let j = 0; j < dOut; j++) s += W[f * dOut + j] ** 2;
      n[f] = Math.sqrt(s);
    }
    return this.#decNorms = n;
  }

  /** Whether the SAE's decoder rows are rescaled (top-k with rescale_acts_by_decoder_norm). */
  get rescalesByDecoderNorm(): boolean {
    return this.cfg.architecture === "topk" && this.cfg.rescaleActsByDecoderNorm === true;
  }

  /** Whether it reads one hook point and writes another. */
  get isTranscoder(): boolean {
    return this.cfg.hookNameOut !== undefined;
  }

  /**
   * The weights on `backend`, uploaded there on first use. Uploading needs no backend scope open
   * (call it before a run: `model.addSae` and `runWithSaes` do).
   */
  #device(backend: Backend): DeviceSae {
    const have = this.#devices.get(backend);
    if (have) return have;
    runNextTurnNow(backend); // a cache held on the backend moves to the host first
    const { dIn, dSae, dOut, architecture } = this.cfg;
    const w = this.#w;
    let enc: PackedMatrix, bEnc: DeviceArray;
    if (architecture === "gated") {
      // one product for gate and magnitude: [W_enc | W_enc * exp(r_mag)], bias [b_gate | b_mag]
      const both = new Float32Array(dIn * 2 * dSae);
      const r = w.r_mag!.data;
      for (let i = 0; i < dIn; i++) {
        for (let f = 0; f < dSae; f++) {
          const v = w.W_enc.data[i * dSae + f];
          both[i * 2 * dSae + f] = v;
          both[i * 2 * dSae + dSae + f] = v * Math.exp(r[f]);
        }
      }
      enc = backend.uploadMatrix(both, dIn, 2 * dSae);
      const bias = new Float32Array(2 * dSae);
      bias.set(w.b_gate!.data);
      bias.set(w.b_mag!.data, dSae);
      bEnc = backend.upload(bias);
    } else {
      enc = backend.uploadMatrix(w.W_enc.data, dIn, dSae);
      bEnc = backend.upload(w.b_enc!.data);
    }
    const dev: DeviceSae = {
      enc,
      bEnc,
      dec: backend.uploadMatrix(w.W_dec.data, dSae, dOut),
      bDec: backend.upload(w.b_dec.data),
    };
    if (w.threshold) dev.threshold = backend.upload(w.threshold.data);
    if (this.rescalesByDecoderNorm) {
      const norms = this.decoderNorms();
      dev.decNorm = backend.upload(Float32Array.from(norms));
      dev.invDecNorm = backend.upload(Float32Array.from(norms, (v) => 1 / v));
    }
    this.#devices.set(backend, dev);
    return dev;
  }

  /** Uploads the weights to `backend` now (before a run on it). */
  prepare(backend: Backend): void {
    this.#device(backend);
  }

  /**
   * Encodes: the features [..., d_sae] of `x` [..., d_in] (for `hook_z` SAEs [..., n_heads,
   * d_head] or already flat), as SAELens's `encode`.
   */
  async encode(x: Tensor): Promise<Tensor> {
    const rows = this.#rowsOf(x, "encode");
    using _turn = await exclusiveUse(this.backend);
    const r = await this.run(this.backend, x.data, rows, { acts: true });
    return { data: r.acts!, shape: [...this.#lead(x), this.cfg.dSae] };
  }

  /**
   * Decodes features [..., d_sae] into the output [..., d_out] (with normalisation-out only for
   * the normalisations that need no input: none here, as SAELens's `decode` after an `encode` of
   * the same input; `hook_z` SAEs return [..., n_heads, d_head] when `dHead` is given).
   */
  async decode(features: Tensor, opts: { dHead?: number } = {}): Promise<Tensor> {
    const { dSae, dOut } = this.cfg;
    if (features.shape.at(-1) !== dSae || features.data.length % dSae) {
      throw new InputError(`decode expects features [..., ${dSae}], got [${features.shape}]`);
    }
    if (
      this.cfg.normalizeActivations === "constant_norm_rescale" ||
      this.cfg.normalizeActivations === "layer_norm"
    ) {
      throw new InputError(
        `decode alone cannot undo ${this.cfg.normalizeActivations} (it needs the input's ` +
          `statistics): use forward(x)`,
      );
    }
    const rows = features.data.length / dSae;
    using _turn = await exclusiveUse(this.backend);
    const out = await this.#decodeRows(this.backend, features.data, rows);
    const lead = features.shape.slice(0, -1);
    const shape = opts.dHead ? [...lead, dOut / opts.dHead, opts.dHead] : [...lead, dOut];
    return { data: out, shape };
  }

  /** The reconstruction of `x` (SAELens's `forward` without the error term), in x's shape. */
  async forward(x: Tensor): Promise<Tensor> {
    const rows = this.#rowsOf(x, "forward");
    using _turn = await exclusiveUse(this.backend);
    const out = (await this.run(this.backend, x.data, rows, { out: true })).out!;
    if (this.isTranscoder && this.cfg.dOut !== this.cfg.dIn) {
      return { data: out, shape: [...this.#lead(x), this.cfg.dOut] };
    }
    return { data: out, shape: [...x.shape] };
  }

  /** The leading dims of an input (all but the model dims). */
  #lead(x: Tensor): number[] {
    const flat = x.shape.at(-1) === this.cfg.dIn;
    return x.shape.slice(0, flat ? -1 : -2);
  }

  /** Rows of an input, checked: [..., d_in], or [..., n_heads, d_head] for hook_z SAEs. */
  #rowsOf(x: Tensor, what: string): number {
    const { dIn } = this.cfg;
    const ok = x && x.data instanceof Float32Array && Array.isArray(x.shape) &&
      x.shape.length >= 1 && x.data.length % dIn === 0 &&
      (x.shape.at(-1) === dIn ||
        (this.cfg.reshapeActivations === "hook_z" && x.shape.length >= 2 &&
          x.shape.at(-1)! * x.shape.at(-2)! === dIn));
    if (!ok) {
      throw new InputError(
        `${what} expects an activation [..., ${dIn}]` +
          (this.cfg.reshapeActivations === "hook_z" ? " or [..., n_heads, d_head]" : "") +
          `, got [${x?.shape}]`,
      );
    }
    return x.data.length / dIn;
  }

  /** The SAE's input after SAELens's `process_sae_in`: norm-in, minus b_dec (a new array). */
  #processIn(x: Float32Array, rows: number): { sae: Float32Array; norm?: RowNorm } {
    const { dIn, normalizeActivations: mode, applyBDecToInput } = this.cfg;
    const out = new Float32Array(rows * dIn);
    let norm: RowNorm | undefined;
    if (mode === "constant_norm_rescale") {
      // c = sqrt(d_in) / ||x||: in x c, out y / c
      const mul = new Float64Array(rows);
      for (let r = 0; r < rows; r++) {
        let s = 0;
        for (let j = 0; j < dIn; j++) s += x[r * dIn + j] ** 2;
        const c = Math.sqrt(dIn) / Math.sqrt(s);
        mul[r] = 1 / c;
        for (let j = 0; j < dIn; j++) out[r * dIn + j] = x[r * dIn + j] * c;
      }
      norm = { mul };
    } else if (mode === "layer_norm") {
      // (x - mu) / (std + 1e-5) with the unbiased std; out y std + mu
      const mul = new Float64Array(rows), mu = new Float64Array(rows);
      for (let r = 0; r < rows; r++) {
        let m = 0;
        for (let j = 0; j < dIn; j++) m += x[r * dIn + j];
        m /= dIn;
        let v = 0;
        for (let j = 0; j < dIn; j++) v += (x[r * dIn + j] - m) ** 2;
        const std = Math.sqrt(v / (dIn - 1));
        mul[r] = std;
        mu[r] = m;
        for (let j = 0; j < dIn; j++) out[r * dIn + j] = (x[r * dIn + j] - m) / (std + 1e-5);
      }
      norm = { mul, mu };
    } else out.set(x.subarray(0, rows * dIn));
    if (applyBDecToInput) {
      const b = this.#w.b_dec.data;
      for (let r = 0; r < rows; r++) {
        for (let j = 0; j < dIn; j++) out[r * dIn + j] -= b[j];
      }
    }
    return { sae: out, norm };
  }

  /** Normalisation-out in place over rows of d_out floats. */
  #processOut(y: Float32Array, rows: number, norm?: RowNorm): void {
    if (!norm) return;
    const { dOut } = this.cfg;
    for (let r = 0; r < rows; r++) {
      const m = norm.mul[r], mu = norm.mu ? norm.mu[r] : 0;
      for (let j = 0; j < dOut; j++) y[r * dOut + j] = y[r * dOut + j] * m + mu;
    }
  }

  /** The per-row factor normalisation-out multiplies a reconstruction by (DLA), or undefined. */
  outputScale(x: Float32Array, rows: number): Float64Array | undefined {
    return this.#processIn(x, rows).norm?.mul;
  }

  /** features @ W_dec + b_dec (features / ||W_dec|| when rescaled), no normalisation-out. */
  async #decodeRows(backend: Backend, feats: Float32Array, rows: number): Promise<Float32Array> {
    const { dSae, dOut } = this.cfg;
    const dev = this.#device(backend);
    const out = new Float32Array(rows * dOut);
    const chunk = Math.max(1, Math.floor(CHUNK_FLOATS / Math.max(dSae, dOut)));
    using scope = backend.scope();
    const a = scope.alloc(Math.min(rows, chunk) * dSae);
    const y = scope.alloc(Math.min(rows, chunk) * dOut);
    for (let r0 = 0; r0 < rows; r0 += chunk) {
      const n = Math.min(chunk, rows - r0);
      backend.write(a, feats.subarray(r0 * dSae, (r0 + n) * dSae));
      if (dev.invDecNorm) backend.affineRows(a, a, n, dSae, dev.invDecNorm);
      backend.matmul(a, dev.dec, y, n, { bias: dev.bDec });
      await backend.readInto(y.at(0, n * dOut), out, r0 * dOut);
    }
    return out;
  }

  /**
   * The gradient at the features [rows, d_sae] from the gradient at the reconstruction (before
   * normalisation-out) `g` [rows, d_out]: g @ W_dec^T on the backend (divided by ||W_dec[f]||
   * for rescaled top-k SAEs, whose decoder reads features / norm). The caller holds the
   * backend's turn (`model/exclusive.ts`).
   */
  async decoderGrad(backend: Backend, g: Float32Array, rows: number): Promise<Float32Array> {
    const { dSae, dOut } = this.cfg;
    if (g.length !== rows * dOut) {
      throw new InputError(`decoderGrad: expected ${rows} x ${dOut} values, got ${g.length}`);
    }
    const dev = this.#device(backend);
    const out = new Float32Array(rows * dSae);
    const chunk = Math.max(1, Math.floor(CHUNK_FLOATS / Math.max(dSae, dOut)));
    using scope = backend.scope();
    const a = scope.alloc(Math.min(rows, chunk) * dOut);
    const c = scope.alloc(Math.min(rows, chunk) * dSae);
    for (let r0 = 0; r0 < rows; r0 += chunk) {
      const n = Math.min(chunk, rows - r0);
      backend.write(a, g.subarray(r0 * dOut, (r0 + n) * dOut));
      backend.matmulTransposed(a, dev.dec, c, n);
      if (dev.invDecNorm) backend.affineRows(c, c, n, dSae, dev.invDecNorm);
      await backend.readInto(c.at(0, n * dSae), out, r0 * dSae);
    }
    return out;
  }

  /**
   * The SAE over `rows` rows of `x` on `backend`: the features and/or the output, visiting the
   * nested hook points when spliced (`opts.nested`: their hooks may change each value, and the
   * cache keeps them). Rows go in chunks that bound the backend's memory unless a nested point
   * needs the whole tensor. The caller holds the backend's turn (`model/exclusive.ts`): a
   * spliced SAE runs inside the model's pass.
   */
  async run(backend: Backend, x: Float32Array, rows: number, opts: SaeRunOptions): Promise<SaeRun> {
    const { dIn, dSae, dOut, architecture: arch } = this.cfg;
    const dev = this.#device(backend);
    const nested = opts.nested;
    const name = (p: SaeHookPoint) => `${nested!.prefix}.${p}`;
    const wants = (p: SaeHookPoint) => !!nested && nested.points.wants(name(p));
    const lead = nested ? nested.shape : [rows];
    const visit = (p: SaeHookPoint, data: Float32Array, cols: number[]): Float32Array =>
      nested!.points.visit(name(p), { data, shape: [...lead, ...cols] }).data;

    let input = x.subarray(0, rows * dIn);
    if (wants("hook_sae_input")) input = visit("hook_sae_input", input.slice(), [dIn]);
    const { sae: saeIn, norm } = this.#processIn(input, rows);

    const wantPre = wants("hook_sae_acts_pre");
    const wantPost = wants("hook_sae_acts_post");
    const wantRecons = wants("hook_sae_recons");
    const whole = wantPre || wantPost || wantRecons;
    const gated = arch === "gated";
    const preCols = gated ? 2 * dSae : dSae;
    const chunk = whole ? rows : Math.max(1, Math.floor(CHUNK_FLOATS / preCols));
    const acts = opts.acts ? new Float32Array(rows * dSae) : undefined;
    const out = opts.out ? new Float32Array(rows * dOut) : undefined;
    const step = Math.min(rows, chunk);

    using scope = backend.scope();
    const xb = scope.alloc(step * dIn);
    const pre = scope.alloc(step * preCols);
    const post = scope.alloc(step * dSae);
    const y = opts.out ? scope.alloc(step * dOut) : undefined;
    for (let r0 = 0; r0 < rows; r0 += chunk) {
      const n = Math.min(chunk, rows - r0);
      backend.write(xb, saeIn.subarray(r0 * dIn, (r0 + n) * dIn));
      backend.matmul(xb, dev.enc, pre, n, { bias: dev.bEnc });
      if (wantPre) {
        // gated: hook_sae_acts_pre is the magnitude's pre-activation
        const mag = gated ? pre.at(dSae) : pre;
        const v = visit("hook_sae_acts_pre", await backend.readRows(mag, n, dSae, preCols), [dSae]);
        backend.writeRows(mag, v, n, dSae, preCols);
      }
      if (arch === "standard" || arch === "transcoder") {
        backend.activation("relu", pre.at(0, n * dSae), post.at(0, n * dSae));
      } else if (arch === "jumprelu" || arch === "jumprelu_transcoder") {
        backend.jumpRelu(pre, dev.threshold!, post, n, dSae);
      } else if (gated) backend.gatedRelu(pre, post, n, dSae);
      else {
        // topk: select (and keep) pre * ||W_dec[f]|| when rescaling, as SAELens
        if (dev.decNorm) backend.affineRows(pre, pre, n, dSae, dev.decNorm);
        backend.topkRows(pre, post, n, dSae, this.cfg.k!);
      }
      if (wantPost) {
        const v = visit("hook_sae_acts_post", await backend.readRows(post, n, dSae, dSae), [dSae]);
        backend.write(post, v);
        if (acts) acts.set(v, r0 * dSae);
      } else if (acts) await backend.readInto(post.at(0, n * dSae), acts, r0 * dSae);
      if (y) {
        if (dev.invDecNorm) backend.affineRows(post, post, n, dSae, dev.invDecNorm);
        backend.matmul(post, dev.dec, y, n, { bias: dev.bDec });
        if (wantRecons) {
          const v = visit("hook_sae_recons", await backend.readRows(y, n, dOut, dOut), [dOut]);
          out!.set(v, r0 * dOut);
        } else await backend.readInto(y.at(0, n * dOut), out!, r0 * dOut);
      }
    }
    if (out) this.#processOut(out, rows, norm);
    return { acts, out };
  }
}
