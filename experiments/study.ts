/**
 * The study "How to interpret GPT2-small", step by step, on a loaded model: repeated tokens,
 * log-probs, head scores, attention patterns, MLP patching (both alignments) and the circuits,
 * timed, with progress, into one {@linkcode ExperimentResults} object. `run.ts` is the command
 * line around it.
 * @module
 */

import { kCompositionCircuit, ovCircuit } from "../analysis/circuits.ts";
import { top1Accuracy } from "../analysis/factored_matrix.ts";
import { attentionPattern } from "../analysis/head_scores.ts";
import { logProbsAndHeadScores } from "../analysis/log_probs.ts";
import { patchingScores, patchPositions } from "../analysis/patching.ts";
import { attributionScores, correlation } from "../analysis/attribution.ts";
import { generateRepeatedTokens } from "../analysis/repeated_tokens.ts";
import {
  type CompositionPair,
  type ExperimentResults,
  type HeadRef,
  type RankedHead,
  RESULTS_SCHEMA,
  RESULTS_SCHEMA_VERSION,
  type StepTiming,
  STUDY_REFERENCE,
} from "./report/schema.ts";
import type { HookedTransformer } from "../model/hooked_transformer.ts";
import { familyName } from "../families/registry.ts";
import { MODEL_ALIASES } from "../io/resolve.ts";
import { Reporter } from "./progress.ts";
import { toolkitAnalysis } from "./toolkit_analysis.ts";
import { type SaeAnalysis, saeAnalysis } from "./sae_analysis.ts";
import type { SAEModule } from "../sae/sae.ts";

/** The run's settings and the facts about the model that `results.json` records. */
export interface StudyOptions {
  /** Length of the random segment (the study: 50). */
  seqLen: number;
  /** Sequences (the study: 30). */
  batch: number;
  /** Seed of the token generator. */
  seed: number;
  /** The previous-token head to plot and compose; default {@linkcode chooseHeads}'s. */
  prevHead?: HeadRef;
  /** The induction head to plot and compose; default the best-scoring one. */
  inductionHead?: HeadRef;
  /** Top heads of each kind paired for the K-composition table (default 3). */
  topPairs?: number;
  /** How the model was named, where it came from and why it was chosen. */
  model: { name: string; source: string; choice: string };
  /** The library's name and version. */
  library: { name: string; version: string };
  /** Steps already done before the model was handed over (loading), timed by the caller. */
  earlierTimings?: StepTiming[];
  /** `performance.now()` when the run started (for the total); default: now. */
  startedAt?: number;
  /** Where progress goes; default a quiet reporter. */
  reporter?: Reporter;
  /** An SAE to analyse on the repeated tokens (`--sae`), and how it was named. */
  sae?: { sae: SAEModule; source: string };
}

/** The study's model: TransformerLens's "gpt2"/"gpt2-small", i.e. openai-community/gpt2. */
export function isGpt2Small(name: string, cfg: HookedTransformer["cfg"]): boolean {
  const repo = MODEL_ALIASES[name] ?? name;
  return repo === "openai-community/gpt2" && cfg.nLayers === 12 && cfg.nHeads === 12 &&
    cfg.dModel === 768 && cfg.dVocab === 50257;
}

/**
 * Heads sorted by score, best first (ties: lower layer, then lower head).
 *
 * @example
 * ```ts
 * import { rankHeads } from "./study.ts";
 * rankHeads([[0.1, 0.9], [0.5, 0.2]], 2); // [{ layer: 0, head: 1, score: 0.9 }, { layer: 1, head: 0, score: 0.5 }]
 * ```
 */
export function rankHeads(scores: number[][], k = Infinity): RankedHead[] {
  return scores
    .flatMap((row, layer) => row.map((score, head) => ({ layer, head, score })))
    .filter((h) => Number.isFinite(h.score))
    .sort((a, b) => b.score - a.score || a.layer - b.layer || a.head - b.head)
    .slice(0, k);
}

/**
 * The heads the plots and the circuit use, unless given: the best induction head, and the best
 * previous-token head in an earlier layer than it (K-composition reads an earlier head's output;
 * when no earlier layer has one, the best previous-token head overall).
 */
export function chooseHeads(
  induction: RankedHead[],
  previousToken: RankedHead[],
  given: { prevHead?: HeadRef; inductionHead?: HeadRef } = {},
): { prev: HeadRef; induction: HeadRef } {
  const ind: HeadRef = given.inductionHead ??
    (induction[0] ? [induction[0].layer, induction[0].head] : [0, 0]);
  if (given.prevHead) return { prev: given.prevHead, induction: ind };
  const earlier = previousToken.find((h) => h.layer < ind[0]) ?? previousToken[0];
  return { prev: earlier ? [earlier.layer, earlier.head] : [0, 0], induction: ind };
}

/**
 * The K-composition pairs to measure: every top-`k` previous-token head (by score) in an earlier
 * layer than every top-`k` induction head, plus the chosen pair; no duplicates, chosen first.
 */
export function compositionPairs(
  induction: RankedHead[],
  previousToken: RankedHead[],
  chosen: { prev: HeadRef; induction: HeadRef },
  k: number,
): [HeadRef, HeadRef][] {
  const out: [HeadRef, HeadRef][] = [[chosen.prev, chosen.induction]];
  const key = (p: HeadRef, i: HeadRef) => `${p}|${i}`;
  const seen = new Set([key(chosen.prev, chosen.induction)]);
  for (const p of previousToken.slice(0, k)) {
    for (const i of induction.slice(0, k)) {
      const pr: HeadRef = [p.layer, p.head], ir: HeadRef = [i.layer, i.head];
      if (p.layer >= i.layer || seen.has(key(pr, ir))) continue;
      seen.add(key(pr, ir));
      out.push([pr, ir]);
    }
  }
  return out;
}

function fmt(x: number, d = 3): string {
  return x.toFixed(d);
}

/**
 * How many numbered steps {@link runStudy} reports (tokens, log-probs, head scores, attention,
 * MLP patching, attribution patching, circuits, logit attribution and lens), one more with an SAE:
 * a caller that reports steps of its own before the study (the command's model loading, and the
 * SAE's) adds its count to this.
 */
export const STUDY_STEPS = 8;

/** Runs the whole study on `model` and returns every number, with timings. */
export async function runStudy(
  model: HookedTransformer,
  opts: StudyOptions,
): Promise<ExperimentResults> {
  const startedAt = opts.startedAt ?? performance.now();
  const rep = opts.reporter ??
    new Reporter(STUDY_STEPS + (opts.sae ? 1 : 0), { quiet: true });
  const cfg = model.cfg;
  const { seqLen, batch, seed } = opts;
  const topK = opts.topPairs ?? 3;
  const timings: StepTiming[] = [...(opts.earlierTimings ?? [])];
  const timed = async <T>(step: string, label: string, f: () => Promise<T> | T) => {
    const t0 = performance.now();
    const value = await f();
    const seconds = (performance.now() - t0) / 1000;
    timings.push({ step, label, seconds });
    return { value, seconds };
  };

  // 1. Tokens.
  const tok = await timed(
    "tokens",
    "Repeated tokens",
    () => generateRepeatedTokens(model, seqLen, batch, { seed }),
  );
  const tokens = tok.value;
  const T = tokens.shape[1];
  rep.step("repeated tokens", tok.seconds, `${batch} x ${T}, seed ${seed}`);

  // 2. Log-probs, with the head scores' patterns cached in the same forward pass.
  const lp = await timed(
    "logprobs",
    "Log-probs and head scores (one pass)",
    () => logProbsAndHeadScores(model, tokens, seqLen),
  );
  const s = lp.value.summary;
  rep.step(
    "log-probs",
    lp.seconds,
    `first half ${fmt(s.firstHalf)}, second ${fmt(s.secondHalf)}; accuracy ${
      fmt(s.accuracyFirst, 2)
    } / ${fmt(s.accuracySecond, 2)}`,
  );

  // 3. Head scores and the chosen heads.
  const hs = await timed("heads", "Head scores (from that pass)", () => lp.value.scores);
  const scores = hs.value;
  const topInduction = rankHeads(scores.induction, 10);
  const topPreviousToken = rankHeads(scores.previousToken, 10);
  const topDuplicateToken = rankHeads(scores.duplicateToken, 10);
  const chosen = chooseHeads(topInduction, topPreviousToken, opts);
  const at = (g: number[][], h: HeadRef) => g[h[0]][h[1]];
  rep.step(
    "head scores",
    hs.seconds,
    `induction ${chosen.induction.join(".")} (${
      fmt(at(scores.induction, chosen.induction), 2)
    }), ` +
      `previous-token ${chosen.prev.join(".")} (${fmt(at(scores.previousToken, chosen.prev), 2)})`,
  );

  // 4. Attention patterns of the chosen heads (sequence 0).
  const att = await timed("attention", "Attention patterns", async () => ({
    induction: await attentionPattern(model, tokens, ...chosen.induction),
    previousToken: await attentionPattern(model, tokens, ...chosen.prev),
  }));
  rep.step(
    "attention patterns",
    att.seconds,
    `heads ${chosen.induction.join(".")} and ${chosen.prev.join(".")}`,
  );

  // 5. MLP patching, both alignments, one bar over both sweeps.
  const L = cfg.nLayers;
  const patchBar = rep.bar("MLP patching", "layer sweeps");
  const patch = await timed("patching", "MLP patching (2 sweeps)", async () => {
    const study = await patchingScores(model, tokens, seqLen, {
      hook: "mlp_out",
      alignment: "study",
      onProgress: (done) => patchBar.update(done, 2 * L),
    });
    const aligned = await patchingScores(model, tokens, seqLen, {
      hook: "mlp_out",
      alignment: "aligned",
      onProgress: (done) => patchBar.update(L + done, 2 * L),
    });
    return { study, aligned };
  });
  patchBar.finish();
  let peak = { v: 0, l: 0, p: 0, which: "study" };
  for (const which of ["study", "aligned"] as const) {
    const pos = patchPositions(seqLen, which).targets;
    patch.value[which].forEach((row, l) =>
      row.forEach((v, j) => {
        if (Math.abs(v) > Math.abs(peak.v)) peak = { v, l, p: pos[j], which };
      })
    );
  }
  rep.step(
    "MLP patching",
    patch.seconds,
    `${2 * L * seqLen} patched runs; largest change ${fmt(peak.v, 4)} at layer ${peak.l}, ` +
      `position ${peak.p} (${peak.which})`,
  );

  // 5b. The same sweeps estimated by attribution patching: one forward and backward pass each.
  const attr = await timed("attribution", "Attribution patching (2 sweeps)", async () => ({
    study: await attributionScores(model, tokens, seqLen, { alignment: "study" }),
    aligned: await attributionScores(model, tokens, seqLen, { alignment: "aligned" }),
  }));
  const r = (a: "study" | "aligned") => correlation(patch.value[a].flat(), attr.value[a].flat());
  rep.step(
    "attribution patching",
    attr.seconds,
    `2 forward + backward passes; correlation with exact patching ${fmt(r("study"))} ` +
      `(study's alignment), ${fmt(r("aligned"))} (aligned)`,
  );

  // 6. Circuits: K-composition pairs and the induction head's OV copying.
  const pairs = compositionPairs(topInduction, topPreviousToken, chosen, topK);
  const n = cfg.dVocab;
  const jobs = pairs.length + 1;
  const circBar = rep.bar(`Circuits (${pairs.length} K-comp + OV)`, "rows");
  const circ = await timed(
    "circuits",
    `Circuits (${pairs.length} K-composition pair${pairs.length === 1 ? "" : "s"} + OV)`,
    async () => {
      const measured: CompositionPair[] = [];
      for (const [i, [p, ind]] of pairs.entries()) {
        const top1 = await top1Accuracy(kCompositionCircuit(model, p, ind), {
          onProgress: (done) => circBar.update(i * n + done, jobs * n),
        });
        measured.push({ prev: p, induction: ind, top1 });
      }
      const ov = await top1Accuracy(ovCircuit(model, ...chosen.induction), {
        onProgress: (done) => circBar.update(pairs.length * n + done, jobs * n),
      });
      return { measured, ov };
    },
  );
  circBar.finish();
  const kComposition = circ.value.measured[0];
  const sortedPairs = [...circ.value.measured].sort((a, b) => b.top1 - a.top1);
  rep.step(
    "circuits",
    circ.seconds,
    `K-composition ${kComposition.prev.join(".")} -> ${kComposition.induction.join(".")} top-1 ${
      fmt(kComposition.top1, 4)
    }; OV copying ${chosen.induction.join(".")} ${fmt(circ.value.ov, 4)}`,
  );

  // 7. The second worked analysis, with the public toolkit: direct logit attribution and a
  // logit lens on the repeated tokens.
  const kit = await timed(
    "toolkit",
    "Direct logit attribution and logit lens",
    () => toolkitAnalysis(model, tokens, seqLen),
  );
  const top = kit.value.dla.topHeads[0];
  const lens = kit.value.logitLens;
  rep.step(
    "logit attribution and lens",
    kit.seconds,
    `head ${top.label} writes the answer most (${fmt(top.attribution, 2)}); logit lens top-1 on ` +
      `the repeat ${lens.accuracySecond.map((a) => fmt(a, 2)).join(" → ")}`,
  );

  // 8. With --sae: the SAE's features most active on the repeated half and their attribution to
  // the correct token's logit.
  let saeResult: SaeAnalysis | undefined;
  if (opts.sae) {
    const { sae, source } = opts.sae;
    const sa = await timed(
      "sae",
      `SAE features (${source})`,
      () =>
        saeAnalysis(model, sae, tokens, seqLen, { inductionLayer: chosen.induction[0], source }),
    );
    saeResult = sa.value;
    const f = sa.value.topActive[0];
    rep.step(
      "SAE features",
      sa.seconds,
      `${sa.value.hookName}: L0 ${fmt(sa.value.l0.repeat, 1)} on the repeat; loss ${
        fmt(sa.value.loss.clean)
      } -> ${fmt(sa.value.loss.spliced)} spliced` +
        (f ? `; feature ${f.feature} most active (attribution ${fmt(f.attribution, 3)})` : ""),
    );
  }

  const totalSeconds = (performance.now() - startedAt) / 1000;
  const positions = (a: "study" | "aligned") => patchPositions(seqLen, a).targets;
  const rows = Array.from(
    { length: tokens.shape[0] },
    (_, b) => Array.from(tokens.data.subarray(b * T, (b + 1) * T)),
  );
  let tokenStrings: string[] | undefined;
  try {
    tokenStrings = model.tokenizer?.tokenStrings(rows[0]);
  } catch {
    tokenStrings = undefined;
  }
  return {
    schema: RESULTS_SCHEMA,
    schemaVersion: RESULTS_SCHEMA_VERSION,
    library: opts.library,
    createdAt: new Date().toISOString(),
    runtime: `Deno ${Deno.version.deno}, ${Deno.build.os} ${Deno.build.arch}, ${
      navigator.hardwareConcurrency ?? "?"
    } cores`,
    model: {
      ...opts.model,
      isGpt2Small: isGpt2Small(opts.model.name, cfg),
      config: {
        modelName: cfg.modelName,
        family: familyName(cfg),
        originalArchitecture: cfg.originalArchitecture,
        nLayers: cfg.nLayers,
        nHeads: cfg.nHeads,
        dModel: cfg.dModel,
        dHead: cfg.dHead,
        dMlp: cfg.dMlp,
        dVocab: cfg.dVocab,
        nCtx: cfg.nCtx,
        bosTokenId: cfg.bosTokenId,
      },
    },
    settings: {
      seqLen,
      batch,
      seed,
      prevHead: chosen.prev,
      prevHeadFrom: opts.prevHead ? "flag" : "best",
      inductionHead: chosen.induction,
      inductionHeadFrom: opts.inductionHead ? "flag" : "best",
      topPairs: topK,
      patchingHook: "mlp_out",
    },
    tokens: { shape: [tokens.shape[0], T], data: rows },
    ...(tokenStrings ? { tokenStrings } : {}),
    logProbs: {
      firstHalf: s.firstHalf,
      secondHalf: s.secondHalf,
      accuracyFirst: s.accuracyFirst,
      accuracySecond: s.accuracySecond,
      perPosition: s.perPosition,
      perToken: s.logProbs,
    },
    headScores: {
      induction: scores.induction,
      previousToken: scores.previousToken,
      duplicateToken: scores.duplicateToken,
      topInduction,
      topPreviousToken,
      topDuplicateToken,
    },
    attention: {
      induction: {
        layer: chosen.induction[0],
        head: chosen.induction[1],
        batchIndex: 0,
        pattern: att.value.induction.pattern,
      },
      previousToken: {
        layer: chosen.prev[0],
        head: chosen.prev[1],
        batchIndex: 0,
        pattern: att.value.previousToken.pattern,
      },
    },
    patching: {
      hook: "mlp_out",
      cleanLoss: -s.logProbs[0].slice(seqLen).reduce((a, b) => a + b, 0) / seqLen,
      study: { alignment: "study", positions: positions("study"), scores: patch.value.study },
      aligned: {
        alignment: "aligned",
        positions: positions("aligned"),
        scores: patch.value.aligned,
      },
    },
    attribution: {
      hook: "mlp_out",
      study: {
        alignment: "study",
        positions: positions("study"),
        estimates: attr.value.study,
        correlation: r("study"),
      },
      aligned: {
        alignment: "aligned",
        positions: positions("aligned"),
        estimates: attr.value.aligned,
        correlation: r("aligned"),
      },
      seconds: attr.seconds,
      exactSeconds: patch.seconds,
    },
    circuits: {
      chance: 1 / n,
      kComposition,
      pairs: sortedPairs,
      ovCopying: { layer: chosen.induction[0], head: chosen.induction[1], top1: circ.value.ov },
    },
    toolkit: kit.value,
    ...(saeResult ? { sae: saeResult } : {}),
    timings,
    totalSeconds,
    reference: STUDY_REFERENCE,
  };
}
