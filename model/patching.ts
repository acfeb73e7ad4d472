/**
 * Single-position activation patching that recomputes only what a patch can change.
 *
 * A patch at layer l, position p changes nothing before layer l and nothing at positions before p
 * (attention is causal). So each patched run starts from the clean residual stream at the patched
 * layer, computes positions p..T-2 only (reading the clean keys and values of earlier positions;
 * no log-prob reads the last position, and no earlier position attends to it), and unembeds only
 * the positions whose log-probs are asked for. All patched runs of one layer
 * share each matrix product as one ragged batch. Every pass is the one forward pass of
 * `forward.ts`, planned differently.
 *
 * Parallel attention + MLP blocks (GPT-NeoX, Pythia) have no resid_mid: patching it is an
 * InputError there. Their attn_out and mlp_out patches resume at the next block, from the
 * patched resid_post = (resid_pre + attn_out) + mlp_out with the clean value of the other term
 * (the MLP reads resid_pre, so an attn_out patch leaves that block's mlp_out unchanged).
 * @module
 */
import type { Backend, DeviceArray } from "../backend/backend.ts";
import { InputError } from "../core/errors.ts";
import { checkLayer } from "./checks.ts";
import { forward, type ModelRuntime, planRows } from "./forward.ts";
import { type HookedTransformer, hookRegistryOf, runtimeOf } from "./hooked_transformer.ts";
import { HookNames, HookSession } from "./hooks.ts";
import { logProbReducer } from "./next_token.ts";
import { exclusiveUse } from "./exclusive.ts";
import { type Tokens, toTokenTensor } from "./tokens.ts";

/** Residual-stream hook points a single-position patch can target. */
export type PatchPoint = "resid_pre" | "resid_mid" | "attn_out" | "mlp_out";

/** The hook points a {@link PatchPoint} names. */
export const PATCH_POINTS: readonly PatchPoint[] = [
  "mlp_out",
  "attn_out",
  "resid_pre",
  "resid_mid",
];

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

/** A clean run's activations kept on the backend, from which patched runs resume. */
interface CleanState {
  /** resid_pre of each layer, and the final resid_post as entry nLayers: [T, d_model] each. */
  residPre: DeviceArray[];
  /** resid_mid of each layer (parallel blocks: resid_pre + attn_out). */
  residMid: DeviceArray[];
  /** mlp_out of each layer (parallel blocks only: empty otherwise). */
  mlpOut: DeviceArray[];
  /** Each layer's fused Q|K|V rows. */
  qkv: DeviceArray[];
}

/**
 * Next-token log-probs of one sequence with each patch applied alone, for several groups of
 * patches (each at one hook point of one layer), sharing one clean run.
 *
 * This equals running `runWithHooks` once per patch (the naive path, which the tests use as the
 * oracle) up to float32 rounding.
 *
 * @example
 * ```ts
 * import { HookedTransformer, patchedNextTokenLogProbs } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const tokens = [[2047, 5, 9, 13, 5, 9, 13]];
 * const zeros = new Float32Array(model.cfg.dModel);
 * const { clean, patched } = await patchedNextTokenLogProbs(model, tokens, [
 *   { layer: 0, point: "mlp_out", patches: [{ position: 4, value: zeros }] },
 * ]);
 * patched[0][0][5] - clean[5]; // how zeroing layer 0's MLP at position 4 moves log p(13)
 * ```
 */
export async function patchedNextTokenLogProbs(
  model: HookedTransformer,
  tokens: Tokens,
  groups: LayerPatches[],
  opts: PatchedLogProbsOptions = {},
): Promise<PatchedLogProbs> {
  await Promise.resolve();
  const m = runtimeOf(model);
  using _turn = await exclusiveUse(m.backend);
  const { backend, cfg } = m;
  const t = toTokenTensor(tokens, cfg);
  const [batch, T] = t.shape;
  const d = cfg.dModel;
  const L = cfg.nLayers;
  const from = opts.from ?? 0;
  if (batch !== 1) throw new InputError(`patching runs one sequence at a time, got batch ${batch}`);
  if (hookRegistryOf(model).entries("fwd").length > 0) {
    throw new InputError(
      "patchedNextTokenLogProbs resumes runs without hooks, so it would ignore the model's " +
        "registered hooks: remove them first (model.resetHooks({ includingPermanent: true }))",
    );
  }
  for (const { layer, point, patches } of groups) {
    checkLayer(layer, L, "patch");
    if (!PATCH_POINTS.includes(point)) {
      throw new InputError(`patch point must be one of ${PATCH_POINTS.join(", ")}, got ${point}`);
    }
    if (point === "resid_mid" && cfg.parallelAttnMlp) {
      throw new InputError(
        `${cfg.modelName} has parallel attention and MLP blocks, which have no resid_mid (both ` +
          `read resid_pre): patch resid_pre, attn_out or mlp_out`,
      );
    }
    for (const p of patches) {
      if (!Number.isInteger(p.position) || p.position < 0 || p.position >= T) {
        throw new InputError(`patch position ${p.position} is outside [0, ${T})`);
      }
      if (!(p.value instanceof Float32Array) || p.value.length !== d) {
        throw new InputError(`a patch value must be a Float32Array of d_model = ${d} values`);
      }
    }
  }
  const targets = t.data.subarray(1);
  using scope = backend.scope();
  const state: CleanState = {
    residPre: Array.from({ length: L + 1 }, () => scope.alloc(T * d)),
    residMid: Array.from({ length: L }, () => scope.alloc(T * d)),
    mlpOut: cfg.parallelAttnMlp ? Array.from({ length: L }, () => scope.alloc(T * d)) : [],
    qkv: Array.from(
      { length: L },
      () => scope.alloc(T * (cfg.nHeads + 2 * cfg.nKeyValueHeads) * cfg.dHead),
    ),
  };
  const silent = new HookSession(backend, new HookNames(L));
  const clean = new Float32Array(T - 1);
  await forward(m, {
    batch: 1,
    T,
    tokens: t,
    record: state,
    unembed: {
      rows: Int32Array.from({ length: T - 1 }, (_, i) => i),
      each: logProbReducer(backend, cfg.dVocab, targets, clean),
    },
  }, silent);
  const patched: Float32Array[][] = [];
  for (const [i, g] of groups.entries()) {
    patched.push(await patchGroup(m, silent, state, T, targets, g, clean, from));
    opts.onGroup?.(i + 1, groups.length);
  }
  return { clean, patched };
}

/** The patched runs of one group, batched by rows, resumed from the clean state. */
async function patchGroup(
  m: ModelRuntime,
  silent: HookSession,
  state: CleanState,
  T: number,
  targets: Int32Array,
  { layer, point, patches }: LayerPatches,
  clean: Float32Array,
  from: number,
): Promise<Float32Array[]> {
  const { backend, cfg } = m;
  const d = cfg.dModel;
  // Where each patched run starts, and how its first row is formed from clean activations.
  const parallel = cfg.parallelAttnMlp;
  const nextBlock = point === "mlp_out" || (parallel && point === "attn_out");
  const startLayer = nextBlock ? layer + 1 : layer;
  const startMid = !parallel && (point === "resid_mid" || point === "attn_out");
  const source = startMid ? state.residMid[layer] : state.residPre[startLayer];
  const patched = patches.map(() => clean.slice());
  // The last log-prob is read at T - 2, and with causal attention no earlier position reads the
  // last one, so resumed runs stop at T - 1 positions: a patch at T - 1 changes nothing asked
  // for (its log-probs stay the clean ones). A run that starts after the last block (mlp_out of
  // the last layer) changes only its patched row, since no attention follows: it computes that
  // row alone. Each computed row sees the same keys and values as in a full run, so the
  // log-probs are the same bits.
  const Tr = T - 1;
  const noBlocks = startLayer === cfg.nLayers;
  const runs = patches.map((p, i) => ({ p, i }))
    .filter(({ p }) => p.position < Tr && (!noBlocks || p.position >= from));
  const rowsOf = (p: PositionPatch) => noBlocks ? 1 : Tr - p.position;
  for (let i0 = 0; i0 < runs.length;) {
    // Take as many patches as fit the row budget (at least one).
    let i1 = i0;
    let rows = 0;
    while (i1 < runs.length && (i1 === i0 || rows + rowsOf(runs[i1].p) <= MAX_BATCH_ROWS)) {
      rows += rowsOf(runs[i1].p);
      i1++;
    }
    const group = runs.slice(i0, i1).map(({ p }) => p);
    const index = runs.slice(i0, i1).map(({ i }) => i);
    // Without blocks every run is one row at its own position; else run g computes [p, Tr).
    const planT = noBlocks ? 1 : Tr;
    const qStart = group.map((p) => noBlocks ? 0 : p.position);
    const { rowOffset } = planRows({ batch: group.length, T: planT, qStart });
    // Unembed only rows t in [max(p, from), T-2] (just p without blocks), each into its run.
    const rowIndex: number[] = [], owner: number[] = [], pos: number[] = [];
    group.forEach((p, g) => {
      const last = p.position + rowsOf(p) - 1;
      for (let t = Math.max(p.position, from); t <= last; t++) {
        rowIndex.push(rowOffset[g] + t - p.position);
        owner.push(index[g]);
        pos.push(t);
      }
    });
    const lp = new Float32Array(rowIndex.length);
    const rowTargets = Int32Array.from(pos, (t) => targets[t]);
    await forward(m, {
      batch: group.length,
      T: planT,
      qStart,
      positions: noBlocks ? group.map((p) => p.position) : undefined,
      prefixKv: state.qkv,
      startLayer,
      startMid,
      input: async (resid) => {
        for (const [g, p] of group.entries()) {
          const dst = resid.at(rowOffset[g] * d, rowsOf(p) * d);
          backend.copy(source.at(p.position * d, rowsOf(p) * d), dst);
          await patchFirstRow(backend, state, layer, point, p, dst.at(0, d));
        }
      },
      unembed: {
        rows: Int32Array.from(rowIndex),
        each: logProbReducer(backend, cfg.dVocab, rowTargets, lp),
      },
    }, silent);
    lp.forEach((v, j) => patched[owner[j]][pos[j]] = v);
    i0 = i1;
  }
  return patched;
}

/**
 * The residual stream at the patched position: the patched value itself (resid_pre, resid_mid),
 * or the clean stream before the add plus the patched value (attn_out, mlp_out: the same float32
 * adds as a full run; in parallel blocks an attn_out patch then adds the clean mlp_out).
 */
async function patchFirstRow(
  backend: Backend,
  state: CleanState,
  layer: number,
  point: PatchPoint,
  p: PositionPatch,
  row: DeviceArray,
): Promise<void> {
  if (point === "resid_pre" || point === "resid_mid") {
    backend.write(row, p.value);
    return;
  }
  const at = (x: DeviceArray) => backend.read(x.at(p.position * row.length, row.length));
  const before = point === "attn_out" ? state.residPre[layer] : state.residMid[layer];
  const sum = await at(before);
  for (let i = 0; i < sum.length; i++) sum[i] = sum[i] + p.value[i];
  if (point === "attn_out" && state.mlpOut.length > 0) {
    const mlpOut = await at(state.mlpOut[layer]);
    for (let i = 0; i < sum.length; i++) sum[i] = sum[i] + mlpOut[i];
  }
  backend.write(row, sum);
}
