/**
 * Many patched runs of one batch of tokens, each recomputing only what its patch can change, for
 * activation patching with any metric of the logits (TransformerLens's `patching` module).
 *
 * One base run of the tokens (the corrupted input) records each layer's residual stream and
 * keys/values and its logits. A patched run then starts at the patched layer from the base
 * residual stream, computes only positions from the patched one on (reading the base run's keys
 * and values of earlier positions; 0 when a patch covers every position), edits the patched
 * activation in the backend's memory where the pass reaches it (`ForwardPlan.edits`), and
 * unembeds the positions it computed; the logits of earlier positions are the base run's. Runs of
 * one group share every matrix product as one ragged batch. Patches that edits cannot express
 * run as hooks on full positions from the patched layer.
 * @module
 */
import type { DeviceArray } from "../backend/backend.ts";
import { InputError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";
import { type EditLayout, forward, type ModelRuntime, planRows } from "./forward.ts";
import { exclusiveUse } from "./exclusive.ts";
import { type HookedTransformer, runtimeOf } from "./hooked_transformer.ts";
import type { HookPoint } from "./hook_table.ts";
import { type HookFn, HookNames, HookSession } from "./hooks.ts";
import type { TokenTensor } from "./tokens.ts";

/** A group of patched runs that start at the same place and patch the same hook point. */
export interface PatchGroup {
  /** The block the runs start in (n_layers: straight to the final norm). */
  startLayer: number;
  /** Start at `startLayer`'s resid_mid (its MLP half) instead of its resid_pre. */
  startMid: boolean;
  /** Per run: the first position it recomputes (the same for each sequence of the batch). */
  qStart: number[];
  /**
   * The patch as an edit in the backend's memory: `apply` is called once per run `run` and
   * sequence `b` of the batch (plan sequence `s = run * batch + b`).
   */
  edit?: {
    point: HookPoint;
    layer: number | null;
    apply(x: DeviceArray, at: EditLayout, run: number, b: number, s: number): void;
  };
  /**
   * Or the patch as a hook (every qStart 0): called per run with that run's [batch, ...] part of
   * the activation, which it edits in place.
   */
  hook?: { name: string; fn: (act: Tensor, run: number) => void };
}

/** Bounds one group pass: rows computed together, and floats of logits held for the metric. */
const MAX_ROWS = 3072;
const MAX_LOGIT_FLOATS = 1 << 26;

/**
 * Runs `tokens` once, then every group's patched runs; `onRun(group, run, logits)` receives each
 * run's full logits [batch, pos, d_vocab] (valid during the call). With `logitPositions` only those
 * positions are unembedded in patched runs (the others keep the base run's logits). Returns the
 * base run's logits.
 */
export async function runPatchGroups(
  model: HookedTransformer,
  tokens: TokenTensor,
  groups: PatchGroup[],
  onRun: (group: number, run: number, logits: Tensor) => void,
  onGroup?: (done: number, total: number) => void,
  logitPositions?: readonly number[],
): Promise<Tensor> {
  const m = runtimeOf(model);
  using _turn = await exclusiveUse(m.backend);
  const { backend, cfg } = m;
  const [B, T] = tokens.shape;
  const L = cfg.nLayers, d = cfg.dModel, V = cfg.dVocab;
  const W = (cfg.nHeads + 2 * cfg.nKeyValueHeads) * cfg.dHead;
  const names = new HookNames(L);
  const silent = new HookSession(backend, names);
  using scope = backend.scope();
  const base = {
    residPre: Array.from({ length: L + 1 }, () => scope.alloc(B * T * d)),
    residMid: Array.from({ length: L }, () => scope.alloc(B * T * d)),
    qkv: Array.from({ length: L }, () => scope.alloc(B * T * W)),
  };
  const baseLogits = new Float32Array(B * T * V);
  await forward(m, {
    batch: B,
    T,
    tokens,
    record: base,
    unembed: { each: (r0, _n, logits) => backend.readInto(logits, baseLogits, r0 * V) },
  }, silent);

  for (const [gi, g] of groups.entries()) {
    for (const q of g.qStart) {
      if (!Number.isInteger(q) || q < 0 || q >= T) {
        throw new InputError(`patch position ${q} is outside [0, ${T})`);
      }
    }
    if (g.hook && g.qStart.some((q) => q > 0)) {
      throw new InputError("hook patches run on every position");
    }
    const perRun = B * T * V;
    for (let r0 = 0; r0 < g.qStart.length;) {
      let r1 = r0, rows = 0;
      while (
        r1 < g.qStart.length &&
        (r1 === r0 ||
          (rows + B * (T - g.qStart[r1]) <= MAX_ROWS && (r1 - r0 + 1) * perRun <= MAX_LOGIT_FLOATS))
      ) {
        rows += B * (T - g.qStart[r1]);
        r1++;
      }
      await runChunk(
        m,
        g,
        r0,
        r1,
        { B, T, tokens, base, baseLogits, names, silent, logitPositions },
        (run, logits) => onRun(gi, run, logits),
      );
      r0 = r1;
    }
    onGroup?.(gi + 1, groups.length);
  }
  return { data: baseLogits, shape: [B, T, V] };
}

interface BaseRun {
  B: number;
  T: number;
  tokens: TokenTensor;
  base: { residPre: DeviceArray[]; residMid: DeviceArray[]; qkv: DeviceArray[] };
  baseLogits: Float32Array;
  names: HookNames;
  silent: HookSession;
  /** Positions to unembed (all when absent). */
  logitPositions?: readonly number[];
}

/** Runs r0..r1-1 of group `g` as one pass. */
async function runChunk(
  m: ModelRuntime,
  g: PatchGroup,
  r0: number,
  r1: number,
  ctx: BaseRun,
  onRun: (run: number, logits: Tensor) => void,
): Promise<void> {
  const { backend, cfg } = m;
  const { B, T, base } = ctx;
  const d = cfg.dModel, V = cfg.dVocab;
  const runs = r1 - r0;
  const S = runs * B;
  const qStart = Int32Array.from({ length: S }, (_, s) => g.qStart[r0 + Math.floor(s / B)]);
  const prefixSeq = Int32Array.from({ length: S }, (_, s) => s % B);
  const { rowOffset } = planRows({ batch: S, T, qStart });
  const logits = Array.from({ length: runs }, () => ctx.baseLogits.slice());
  // Computed rows (of the asked positions) are unembedded into their run's logits; the others
  // keep the base run's.
  const wanted = ctx.logitPositions ? new Set(ctx.logitPositions) : undefined;
  const rowIndex: number[] = [], rowRun: number[] = [], rowAt: number[] = [];
  for (let s = 0; s < S; s++) {
    for (let t = qStart[s]; t < T; t++) {
      if (wanted && !wanted.has(t)) continue;
      rowIndex.push(rowOffset[s] + t - qStart[s]);
      rowRun.push(Math.floor(s / B));
      rowAt.push(((s % B) * T + t) * V);
    }
  }
  const fromTokens = g.startLayer === 0 && !g.startMid && qStart.every((q) => q === 0);
  const source = g.startMid ? base.residMid[g.startLayer] : base.residPre[g.startLayer];
  let session = ctx.silent;
  if (g.hook) {
    const { name, fn } = g.hook;
    const hook: HookFn = (act) => {
      const per = act.data.length / runs;
      for (let r = 0; r < runs; r++) {
        fn(
          { data: act.data.subarray(r * per, (r + 1) * per), shape: [B, ...act.shape.slice(1)] },
          r0 + r,
        );
      }
    };
    session = new HookSession(backend, ctx.names, new Map([[name, [hook]]]));
  }
  await forward(m, {
    batch: S,
    T,
    qStart,
    prefixKv: base.qkv,
    prefixSeq,
    startLayer: g.startLayer,
    startMid: g.startMid,
    tokens: fromTokens ? repeatTokens(ctx.tokens, runs) : undefined,
    input: fromTokens ? undefined : (resid) => {
      for (let s = 0; s < S; s++) {
        const b = s % B, q = qStart[s];
        backend.copy(
          source.at((b * T + q) * d, (T - q) * d),
          resid.at(rowOffset[s] * d, (T - q) * d),
        );
      }
    },
    edits: g.edit
      ? [{
        point: g.edit.point,
        layer: g.edit.layer,
        apply: (x, at) => {
          for (let s = 0; s < S; s++) g.edit!.apply(x, at, r0 + Math.floor(s / B), s % B, s);
        },
      }]
      : undefined,
    unembed: {
      rows: Int32Array.from(rowIndex),
      each: async (first, count, chunk) => {
        const values = await backend.read(chunk);
        for (let j = 0; j < count; j++) {
          logits[rowRun[first + j]].set(values.subarray(j * V, (j + 1) * V), rowAt[first + j]);
        }
      },
    },
  }, session);
  logits.forEach((data, r) => onRun(r0 + r, { data, shape: [B, T, V] }));
}

function repeatTokens(t: TokenTensor, times: number): TokenTensor {
  const data = new Int32Array(t.data.length * times);
  for (let i = 0; i < times; i++) data.set(t.data, i * t.data.length);
  return { data, shape: [t.shape[0] * times, t.shape[1]] };
}
