/**
 * Single-position activation patching that recomputes only what a patch can change.
 *
 * A patch at layer l, position p changes nothing before layer l and nothing at positions before p
 * (attention is causal). So each patched run starts from the clean residual stream at the patched
 * layer, computes positions p..T-1 only (reading the clean keys and values of earlier positions),
 * and unembeds only the positions whose log-probs are asked for. All patched runs of one layer
 * share each matrix product as one ragged batch.
 * @module
 */
import { InputError } from "../core/errors.ts";
import type { Engine } from "./engine.ts";
import { fullPlan, resumePlan } from "./forward.ts";
import type { TokenTensor } from "./tokens.ts";

const F32 = 4;

/** Residual-stream hook points a single-position patch can target. */
export type PatchPoint = "resid_pre" | "resid_mid" | "attn_out" | "mlp_out";

/** Replace the activation at `position` (batch 0) with `value` [d_model]. */
export interface PositionPatch {
  /** The patched position (batch 0). */
  position: number;
  /** The replacement activation, [d_model]. */
  value: Float32Array;
}

/** Single-position patches of one hook point at one layer, each applied alone. */
export interface LayerPatches {
  /** The block whose hook point is patched. */
  layer: number;
  /** Which residual-stream activation of that block. */
  point: PatchPoint;
  /** The patches, each run alone. */
  patches: PositionPatch[];
}

/** Next-token log-probs of the clean run and of each patched run. */
export interface PatchedLogProbs {
  /** lp[t] = log softmax(logits[t])[tokens[t + 1]], t = 0..T-2. */
  clean: Float32Array;
  /** `patched[g][i]`: like `clean`, for patch i of group g, in the order given. */
  patched: Float32Array[][];
}

/** Options of {@link patchedNextTokenLogProbs}. */
export interface PatchedLogProbsOptions {
  /** Log-probs at t < from are not needed and are copied from the clean run (default 0). */
  from?: number;
  /** Called after each group: `(groupsDone, groups)`. */
  onGroup?: (done: number, total: number) => void;
}

/** Upper bound on rows of one ragged batch, to bound memory (about 100 MB for GPT-2 small). */
const MAX_BATCH_ROWS = 3072;

/** A clean run's activations kept in WebAssembly memory, from which patched runs resume. */
interface CleanState {
  /** resid_pre of each layer, and the final resid_post as entry nLayers: [T, d_model] each. */
  residPre: number[];
  /** resid_mid of each layer. */
  residMid: number[];
  /** Each layer's fused Q|K|V rows [T, 3 d_model]. */
  qkv: number[];
}

/**
 * Next-token log-probs of one sequence with each patch applied alone, for several groups of
 * patches (each at one hook point of one layer), sharing one clean run.
 *
 * This equals running `runWithHooks` once per patch (the naive path, which the tests use as the
 * oracle) up to float32 rounding.
 *
 * @example
 * ```ts ignore
 * const { clean, patched } = patchedNextTokenLogProbs(model.engine, tokens, [
 *   { layer: 0, point: "mlp_out", patches: [{ position: 51, value: cleanMlpOutAt1 }] },
 * ], { from: 50 });
 * ```
 */
export function patchedNextTokenLogProbs(
  engine: Engine,
  tokens: TokenTensor,
  groups: LayerPatches[],
  opts: PatchedLogProbsOptions = {},
): PatchedLogProbs {
  const { k, cfg } = engine;
  const [batch, T] = tokens.shape;
  const d = cfg.dModel;
  const L = cfg.nLayers;
  const from = opts.from ?? 0;
  if (batch !== 1) throw new InputError(`patching runs one sequence at a time, got batch ${batch}`);
  for (const { layer, patches } of groups) {
    if (!Number.isInteger(layer) || layer < 0 || layer >= L) {
      throw new InputError(`layer ${layer} is outside [0, ${L})`);
    }
    for (const p of patches) {
      if (!Number.isInteger(p.position) || p.position < 0 || p.position >= T) {
        throw new InputError(`patch position ${p.position} is outside [0, ${T})`);
      }
      if (p.value.length !== d) {
        throw new InputError(`patch value has ${p.value.length} values, expected d_model = ${d}`);
      }
    }
  }
  const targets = tokens.data.subarray(1);
  const mark = k.mark();
  try {
    const state: CleanState = {
      residPre: Array.from({ length: L + 1 }, () => k.alloc(T * d)),
      residMid: Array.from({ length: L }, () => k.alloc(T * d)),
      qkv: Array.from({ length: L }, () => k.alloc(T * 3 * d)),
    };
    const clean = new Float32Array(T - 1);
    {
      const inner = k.mark();
      const { pass, buf } = engine.pass(fullPlan(1, T));
      engine.embed(tokens, buf.x, buf.z, engine.silent);
      k.add(buf.x, buf.z, buf.resid, T * d);
      for (let l = 0; l < L; l++) {
        k.copy(buf.resid, state.residPre[l], T * d);
        pass.attentionHalf(l);
        k.copy(buf.qkv, state.qkv[l], T * 3 * d);
        k.copy(buf.resid, state.residMid[l], T * d);
        pass.mlpHalf(l);
      }
      k.copy(buf.resid, state.residPre[L], T * d);
      pass.finalLayerNorm();
      const rows = Int32Array.from({ length: T - 1 }, (_, t) => t);
      logProbsOfRows(engine, buf.x, rows, targets, clean);
      k.release(inner);
    }
    const patched = groups.map((g, i) => {
      const out = patchGroup(engine, state, T, targets, g, clean, from);
      opts.onGroup?.(i + 1, groups.length);
      return out;
    });
    return { clean, patched };
  } finally {
    k.release(mark);
  }
}

/** The patched runs of one group, batched by rows, resumed from the clean state. */
function patchGroup(
  engine: Engine,
  state: CleanState,
  T: number,
  targets: Int32Array,
  { layer, point, patches }: LayerPatches,
  clean: Float32Array,
  from: number,
): Float32Array[] {
  const { k, cfg } = engine;
  const d = cfg.dModel;
  const L = cfg.nLayers;
  // Where each patched run starts, and how its first row is formed from clean activations.
  const startLayer = point === "mlp_out" ? layer + 1 : layer;
  const fromMid = point === "resid_mid" || point === "attn_out";
  const source = fromMid ? state.residMid[layer] : state.residPre[startLayer];
  const firstRow = (p: PositionPatch, dst: number) => {
    const v = k.view(dst, d);
    if (point === "resid_pre" || point === "resid_mid") v.set(p.value);
    else {
      // resid = clean resid before the add + patched value, the same float32 add as a full run.
      const before = point === "attn_out" ? state.residPre[layer] : state.residMid[layer];
      const base = k.read(before + p.position * d * F32, d);
      for (let i = 0; i < d; i++) v[i] = base[i] + p.value[i];
    }
  };

  const patched = patches.map(() => clean.slice());
  for (let i0 = 0; i0 < patches.length;) {
    // Take as many patches as fit the row budget (at least one).
    let i1 = i0;
    let rows = 0;
    while (
      i1 < patches.length && (i1 === i0 || rows + T - patches[i1].position <= MAX_BATCH_ROWS)
    ) {
      rows += T - patches[i1].position;
      i1++;
    }
    const group = patches.slice(i0, i1);
    const inner = k.mark();
    const plan = resumePlan(group.map((p) => p.position), T, state.qkv);
    const { pass, buf } = engine.pass(plan);
    group.forEach((p, g) => {
      const dst = buf.resid + plan.rowOffset[g] * d * F32;
      k.copy(source + p.position * d * F32, dst, (T - p.position) * d);
      firstRow(p, dst);
    });
    if (fromMid) pass.mlpHalf(layer);
    for (let l = fromMid ? layer + 1 : startLayer; l < L; l++) pass.block(l);
    pass.finalLayerNorm();
    // Unembed only rows t in [max(p, from), T-2]: gather them, then write each into its run.
    const rowIndex: number[] = [];
    const owner: number[] = [];
    const pos: number[] = [];
    group.forEach((p, g) => {
      for (let t = Math.max(p.position, from); t <= T - 2; t++) {
        rowIndex.push(plan.rowOffset[g] + t - p.position);
        owner.push(i0 + g);
        pos.push(t);
      }
    });
    const lp = new Float32Array(rowIndex.length);
    const rowTargets = Int32Array.from(pos, (t) => targets[t]);
    logProbsOfRows(engine, buf.x, Int32Array.from(rowIndex), rowTargets, lp);
    lp.forEach((v, j) => patched[owner[j]][pos[j]] = v);
    k.release(inner);
    i0 = i1;
  }
  return patched;
}

/**
 * Log-prob of a target token for selected rows of the final normalized residual `x`:
 * out[j] = log softmax(x[rows[j]] @ W_U + b_U)[targets[j]].
 */
export function logProbsOfRows(
  engine: Engine,
  x: number,
  rows: Int32Array,
  targets: ArrayLike<number>,
  out: Float32Array,
) {
  const { k, cfg } = engine;
  const d = cfg.dModel;
  const V = cfg.dVocab;
  const mark = k.mark();
  try {
    const gathered = k.alloc(rows.length * d);
    rows.forEach((r, j) => k.copy(x + r * d * F32, gathered + j * d * F32, d));
    const chunk = k.alloc(engine.logitChunkRows * V);
    engine.unembed(gathered, rows.length, chunk, (r0, m, logits) => {
      const lse = k.logSumExpRows(chunk, m, V);
      for (let i = 0; i < m; i++) out[r0 + i] = logits[i * V + targets[r0 + i]] - lse[i];
    });
  } finally {
    k.release(mark);
  }
}
