/**
 * Renders `report.html` from a results object: one self-contained file (uPlot's script and
 * stylesheet, our drawing script and the data all inlined) that opens from disk with no network.
 *
 * The page: a header with the model, the settings and the headline numbers beside the study's GPT-2
 * small figures; then one section per step, each chart with a one-line caption saying what to see.
 * The text and tables are rendered here; the charts are drawn in the browser by `client.ts`.
 * @module
 */

import { CLIENT_JS } from "./client.ts";
import type { ExperimentResults, HeadRef, RankedHead } from "./schema.ts";
import { UPLOT_CSS, UPLOT_JS, UPLOT_LICENSE, UPLOT_VERSION } from "./uplot.ts";

/** The data the browser script draws from (a compact, rounded view of the results). */
export interface ReportView {
  /** Length of the random segment. */
  seqLen: number;
  /** Mean log-prob of the first half. */
  firstHalf: number;
  /** Mean log-prob of the second half. */
  secondHalf: number;
  /** Mean log-prob at each position, [2 seqLen]. */
  perPosition: number[];
  /** Token ids of sequence 0. */
  tokens: number[];
  /** Token strings of sequence 0, when known. */
  tokenStrings?: string[];
  /** Head scores [layer][head]. */
  heads: { induction: number[][]; previousToken: number[][]; duplicateToken: number[][] };
  /** The chosen heads. */
  chosen: { induction: HeadRef; prev: HeadRef };
  /** Attention patterns of the chosen heads, [query][key]. */
  attention: {
    induction: { layer: number; head: number; pattern: number[][] };
    previousToken: { layer: number; head: number; pattern: number[][] };
  };
  /** Patching sweeps and the value range shared by both colour scales. */
  patching: {
    study: { positions: number[]; scores: number[][] };
    aligned: { positions: number[]; scores: number[][] };
    range: [number, number];
  };
  /** Attribution patching's estimates beside the exact scores, when the run did it. */
  attribution?: {
    study: AttributionView;
    aligned: AttributionView;
  };
}

/** One sweep's exact scores and attribution estimates, [layer][column]. */
export interface AttributionView {
  /** The patched position of each column. */
  positions: number[];
  /** Exact loss changes. */
  exact: number[][];
  /** First-order estimates. */
  estimates: number[][];
  /** Their correlation. */
  correlation: number;
}

/** Rounds to `digits` significant digits, keeping the JSON small. */
function round(x: number, digits = 5): number {
  return Number.isFinite(x) ? Number(x.toPrecision(digits)) : x;
}

function roundGrid(a: number[][], digits = 5): number[][] {
  return a.map((row) => row.map((x) => round(x, digits)));
}

/**
 * The compact view of `results` that the report's script draws.
 *
 * @example
 * ```ts ignore
 * import { reportView } from "./render.ts";
 * const view = reportView(results);
 * view.attention.induction.pattern.length; // 1 + 2 seqLen
 * ```
 */
export function reportView(results: ExperimentResults): ReportView {
  const r = results;
  const all = [...r.patching.study.scores.flat(), ...r.patching.aligned.scores.flat()];
  const lo = Math.min(0, ...all.filter(Number.isFinite));
  const hi = Math.max(0, ...all.filter(Number.isFinite));
  const b = r.attention.induction.batchIndex;
  const attribution = (a: "study" | "aligned"): AttributionView => ({
    positions: r.attribution![a].positions,
    exact: roundGrid(r.patching[a].scores),
    estimates: roundGrid(r.attribution![a].estimates),
    correlation: round(r.attribution![a].correlation),
  });
  return {
    seqLen: r.settings.seqLen,
    firstHalf: r.logProbs.firstHalf,
    secondHalf: r.logProbs.secondHalf,
    perPosition: r.logProbs.perPosition.map((x) => round(x)),
    tokens: r.tokens.data[b] ?? [],
    tokenStrings: r.tokenStrings,
    heads: {
      induction: roundGrid(r.headScores.induction),
      previousToken: roundGrid(r.headScores.previousToken),
      duplicateToken: roundGrid(r.headScores.duplicateToken),
    },
    chosen: { induction: r.settings.inductionHead, prev: r.settings.prevHead },
    attention: {
      induction: {
        layer: r.attention.induction.layer,
        head: r.attention.induction.head,
        pattern: roundGrid(r.attention.induction.pattern, 4),
      },
      previousToken: {
        layer: r.attention.previousToken.layer,
        head: r.attention.previousToken.head,
        pattern: roundGrid(r.attention.previousToken.pattern, 4),
      },
    },
    patching: {
      study: {
        positions: r.patching.study.positions,
        scores: roundGrid(r.patching.study.scores),
      },
      aligned: {
        positions: r.patching.aligned.positions,
        scores: roundGrid(r.patching.aligned.scores),
      },
      range: [round(lo), round(hi)],
    },
    attribution: r.attribution
      ? { study: attribution("study"), aligned: attribution("aligned") }
      : undefined,
  };
}

const HTML_ESCAPES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

/** Escapes text for HTML content and attribute values. */
function esc(text: string | number): string {
  return String(text).replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]);
}

/** JSON safe inside a `<script>` element (no `</script>`, no `<!--`). */
function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/</g, "\\u003c").replace(/\u2028/g, "\\u2028")
    .replace(/\u2029/g, "\\u2029");
}

/** A number for reading: fixed digits and a true minus sign. */
function num(x: number | undefined, digits = 3): string {
  if (x === undefined || !Number.isFinite(x)) return "–";
  let s = x.toFixed(digits);
  if (/^-0(\.0*)?$/.test(s)) s = s.slice(1);
  return s.replace("-", "−");
}

/** A fraction for reading: 4 decimals, or 2 significant digits when it is that small. */
function frac(x: number | undefined): string {
  if (x === undefined || !Number.isFinite(x)) return "–";
  if (x === 0) return "0";
  if (Math.abs(x) < 0.001) return x.toExponential(1).replace("-", "−");
  return num(x, 4);
}

/** Seconds for reading. */
function secs(s: number): string {
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - 60 * m)} s`;
}

function head(h: HeadRef | RankedHead): string {
  return Array.isArray(h) ? `${h[0]}.${h[1]}` : `${h.layer}.${h.head}`;
}

function scoreOf(grid: number[][], h: HeadRef): number | undefined {
  return grid[h[0]]?.[h[1]];
}

interface Card {
  label: string;
  value: string;
  sub?: string;
  ref: string;
}

function cardHtml(c: Card): string {
  return `<div class="card"><div class="k">${esc(c.label)}</div>` +
    `<div class="v">${c.value}</div>` +
    (c.sub ? `<div class="sub">${c.sub}</div>` : "") +
    `<div class="ref"><span class="refdot"></span>study ${c.ref}</div></div>`;
}

function barCell(value: number, max: number, chosen: boolean): string {
  const pct = max > 0 ? Math.max(0.5, Math.min(100, (100 * value) / max)) : 0;
  return `<td class="barcell"><div class="bartrack"><div class="bar${chosen ? " chosen" : ""}" ` +
    `style="width:${pct.toFixed(1)}%"></div></div></td>`;
}

/** A bar for a signed value: its length is |value| / max, red when negative. */
function signedBar(value: number, max: number): string {
  const pct = max > 0 ? Math.max(0.5, Math.min(100, (100 * Math.abs(value)) / max)) : 0;
  return `<td class="barcell"><div class="bartrack"><div class="bar${value < 0 ? " neg" : ""}" ` +
    `style="width:${pct.toFixed(1)}%"></div></div></td>`;
}

/** The second worked analysis: direct logit attribution and the logit lens (when present). */
function toolkitSection(r: ExperimentResults): string {
  const k = r.toolkit;
  if (!k) return "";
  const [p0, p1] = k.positions;
  const parts = k.dla.components;
  const maxPart = Math.max(...parts.map((c) => Math.abs(c.attribution)), 1e-9);
  const partRows = parts.map((c) =>
    `<tr><td><code>${esc(c.label)}</code></td><td class="num">${num(c.attribution, 2)}</td>${
      signedBar(c.attribution, maxPart)
    }</tr>`
  ).join("");
  const maxHead = Math.max(...k.dla.topHeads.map((h) => Math.abs(h.attribution)), 1e-9);
  const headRows = k.dla.topHeads.map((h) =>
    `<tr><td><code>${esc(h.label)}</code></td><td class="num">${num(h.attribution, 2)}</td>${
      signedBar(h.attribution, maxHead)
    }</tr>`
  ).join("");
  const lens = k.logitLens;
  const lensRows = lens.labels.map((label, i) =>
    `<tr><td><code>${esc(label)}</code></td><td class="num">${num(lens.logProbFirst[i], 2)}</td>` +
    `<td class="num">${num(lens.logProbSecond[i], 2)}</td><td class="num">${
      num(lens.accuracySecond[i], 2)
    }</td>${barCell(lens.accuracySecond[i], 1, i === lens.labels.length - 1)}</tr>`
  ).join("");
  return `<section id="toolkit">
<h2>Who writes the answer: logit attribution and the logit lens</h2>
<p class="caption">A second analysis, written with the library's TransformerLens toolkit only (<code>cache.decomposeResid</code>, <code>stackHeadResults</code>, <code>logitAttrs</code>, <code>accumulatedResid</code>, tensor ops): on the first ${k.batch} sequences, how much each component writes the correct next token's logit on the repeated half (positions ${p0}…${
    p1 - 1
  }, mean over positions and sequences), and what each layer's residual stream would predict through the final norm and the unembedding. The attributions plus b_U reproduce the logits to ${
    k.dla.sumCheck.toExponential(1)
  }.</p>
<div class="grid2">
<div>
<table>
<thead><tr><th>component</th><th class="num">logit attribution</th><th></th></tr></thead>
<tbody>${partRows}</tbody>
</table>
<table style="margin-top:14px">
<thead><tr><th>head</th><th class="num">logit attribution</th><th></th></tr></thead>
<tbody>${headRows}</tbody>
</table>
</div>
<div>
<table>
<thead><tr><th>stream</th><th class="num">log-prob, 1st half</th><th class="num">log-prob, repeat</th><th class="num">top-1, repeat</th><th></th></tr></thead>
<tbody>${lensRows}</tbody>
</table>
</div>
</div>
</section>
`;
}

/** The SAE's features on the repeated half (`--sae`; empty when the run had none). */
function saeSection(r: ExperimentResults): string {
  const s = r.sae;
  if (!s) return "";
  const [p0, p1] = s.positions;
  const where = s.layer === null
    ? "outside the blocks"
    : s.layer === s.inductionLayer
    ? `in block ${s.layer}, the induction head's`
    : `in block ${s.layer} (the induction head is in block ${s.inductionLayer})`;
  const table = (rows: typeof s.topActive, title: string) => {
    const max = Math.max(...rows.map((f) => Math.abs(f.attribution)), 1e-9);
    const body = rows.map((f) =>
      `<tr><td class="num">${f.feature}</td><td class="num">${num(f.meanRepeat, 3)}</td>` +
      `<td class="num">${num(f.meanFirst, 3)}</td><td class="num">${num(f.densityRepeat, 2)}</td>` +
      `<td class="num">${num(f.dla, 4)}</td><td class="num">${num(f.attribution, 4)}</td>${
        signedBar(f.attribution, max)
      }</tr>`
    ).join("");
    return `<table>
<caption>${esc(title)}</caption>
<thead><tr><th class="num">feature</th><th class="num">mean act., repeat</th><th class="num">1st half</th><th class="num">density, repeat</th><th class="num">direct logit attr.</th><th class="num">attribution</th><th></th></tr></thead>
<tbody>${body || '<tr><td colspan="7">no feature is active on the repeated half</td></tr>'}</tbody>
</table>`;
  };
  return `<section id="sae">
<h2>Sparse autoencoder features on the repeat</h2>
<p class="caption">The SAE <code>${esc(s.source)}</code> (${
    esc(s.architecture)
  }, ${s.dSae} features) reads <code>${esc(s.hookName)}</code>${
    s.hookNameOut ? ` and writes <code>${esc(s.hookNameOut)}</code>` : ""
  }, ${where}. On the first ${s.batch} sequences, spliced with its error term (the clean model's run): the features most active on the repeated half (positions ${p0}…${
    p1 - 1
  }), and each feature's effect on the correct next token's logit there: directly (its activation × decoder direction through the final norm and W<sub>U</sub>, mean over positions) and in total to first order (gradient × activation of the mean correct-token logit, ${
    num(s.metric, 3)
  }, summed over positions; the error term's share is ${
    num(s.errorAttribution, 4)
  }). Active features per position (L0): ${num(s.l0.first, 1)} on the first half, ${
    num(s.l0.repeat, 1)
  } on the repeat. Loss on the repeat: ${num(s.loss.clean, 3)} clean, ${
    num(s.loss.spliced, 3)
  } with the reconstruction in place of the activation.</p>
${table(s.topActive, "Most active on the repeat")}
<div style="margin-top:18px">${table(s.topAttribution, "Largest attribution (absolute)")}</div>
</section>
`;
}

function sameHead(a: HeadRef, b: HeadRef): boolean {
  return a[0] === b[0] && a[1] === b[1];
}

const STYLE = `
:root {
  --ink: #1f2330; --muted: #6b7280; --faint: #9aa1ae; --line: #e3e6ee; --bg: #f6f7fa;
  --accent: #2f61b5; --warm: #d9604a; --card: #ffffff;
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body {
  margin: 0; background: var(--bg); color: var(--ink);
  font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  -webkit-font-smoothing: antialiased;
}
.wrap { max-width: 1120px; margin: 0 auto; padding: 0 28px; }
header { background: var(--card); border-bottom: 1px solid var(--line); padding: 30px 0 26px; }
.eyebrow {
  text-transform: uppercase; letter-spacing: .09em; font-size: 11.5px; font-weight: 650;
  color: var(--accent);
}
h1 { font-size: 30px; line-height: 1.2; margin: 6px 0 8px; letter-spacing: -0.015em; font-weight: 700; }
h1 .model { color: var(--accent); }
.meta { color: var(--muted); font-size: 14px; display: flex; flex-wrap: wrap; gap: 4px 18px; }
.meta b { color: var(--ink); font-weight: 600; }
.choice { color: var(--muted); font-size: 13.5px; margin-top: 4px; }
.cards { display: grid; grid-template-columns: repeat(6, minmax(0, 1fr)); gap: 12px; margin-top: 22px; }
.card {
  background: var(--card); border: 1px solid var(--line); border-radius: 12px; padding: 12px 14px 11px;
  display: flex; flex-direction: column; gap: 2px;
}
.card .k { font-size: 12px; color: var(--muted); font-weight: 550; }
.card .v {
  white-space: nowrap; font-size: 23px; font-weight: 680; letter-spacing: -0.01em; font-variant-numeric: tabular-nums;
  line-height: 1.25;
}
.card .v small { font-size: 13px; color: var(--muted); font-weight: 550; }
.card .sub { font-size: 12px; color: var(--muted); }
.card .ref {
  font-size: 11.5px; color: var(--faint); margin-top: auto; padding-top: 6px;
  border-top: 1px dashed var(--line); font-variant-numeric: tabular-nums;
}
.refdot {
  display: inline-block; width: 7px; height: 7px; border-radius: 50%; background: #c4c9d4;
  margin-right: 5px; vertical-align: 1px;
}
.cards-legend { font-size: 12px; color: var(--faint); margin-top: 8px; }
.note {
  margin-top: 16px; background: #fff8ec; border: 1px solid #f3dfb8; color: #6b4e16;
  border-radius: 10px; padding: 9px 14px; font-size: 13.5px;
}
main { padding: 8px 0 24px; }
section {
  background: var(--card); border: 1px solid var(--line); border-radius: 14px; padding: 22px 24px 20px;
  margin: 20px 0;
}
section h2 { font-size: 19px; margin: 0 0 3px; letter-spacing: -0.01em; }
.caption { color: var(--muted); margin: 0 0 16px; font-size: 14px; max-width: 82ch; }
.grid2 { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 28px; }
.grid3 { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: 22px; }
figure { margin: 0; min-width: 0; }
figcaption { font-size: 13.5px; font-weight: 650; margin-bottom: 8px; }
figcaption span { color: var(--muted); font-weight: 450; }
.chart { position: relative; min-height: 60px; }
.chart canvas { display: block; }
.cell-hl {
  position: absolute; display: none; pointer-events: none; outline: 2px solid var(--ink);
  outline-offset: 0; border-radius: 1px;
}
.tip {
  position: fixed; display: none; pointer-events: none; z-index: 20; background: rgba(31,35,48,.95);
  color: #fff; font-size: 12px; line-height: 1.45; padding: 6px 9px; border-radius: 7px;
  white-space: nowrap; font-variant-numeric: tabular-nums; box-shadow: 0 4px 14px rgba(0,0,0,.18);
}
.tip .dim { color: #b9bfcc; }
.uplot { font-family: inherit; }
.u-legend { font-size: 12.5px; color: var(--muted); }
.u-legend .u-value { font-variant-numeric: tabular-nums; color: var(--ink); }
.split { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1.5fr); gap: 28px; align-items: start; }
.big { font-size: 44px; font-weight: 720; letter-spacing: -0.02em; line-height: 1.1; font-variant-numeric: tabular-nums; }
.big small { font-size: 15px; font-weight: 550; color: var(--muted); letter-spacing: 0; }
.stat { margin-bottom: 18px; }
.stat .k { font-size: 13px; color: var(--muted); font-weight: 550; }
.stat .ref { font-size: 12.5px; color: var(--faint); }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; font-variant-numeric: tabular-nums; }
th { white-space: nowrap; font-weight: 600; color: var(--muted); font-size: 12px; text-align: left; padding: 0 10px 6px; border-bottom: 1px solid var(--line); }
td { padding: 6px 10px; border-bottom: 1px solid var(--line); white-space: nowrap; }
tr:last-child td { border-bottom: none; }
td.num, th.num { text-align: right; }
tr.chosen td { background: #fbf3f1; }
.dim { color: var(--faint); font-weight: 450; }
tr.chosen td:first-child { box-shadow: inset 3px 0 0 var(--warm); }
.barcell { width: 45%; }
.bartrack { height: 10px; background: #eef1f6; border-radius: 5px; overflow: hidden; }
.bar { height: 100%; background: var(--accent); border-radius: 5px; }
.bar.chosen { background: var(--warm); }
.bar.time { background: #8a94a8; }
.bar.neg { background: #c0504d; opacity: .75; }
.legend-chip { display: inline-block; width: 10px; height: 10px; border: 2.5px solid var(--warm); border-radius: 2px; vertical-align: -1px; }
footer { color: var(--faint); font-size: 12.5px; padding: 4px 0 36px; }
footer a { color: inherit; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: .92em; }
@media (max-width: 980px) {
  .cards { grid-template-columns: repeat(3, minmax(0, 1fr)); }
  .grid3 { grid-template-columns: 1fr; }
  .split { grid-template-columns: 1fr; }
}
@media (max-width: 720px) {
  .grid2 { grid-template-columns: 1fr; }
  .cards { grid-template-columns: repeat(2, minmax(0, 1fr)); }
}
`;

/**
 * The whole `report.html` for a results object: self-contained (no external URL, no request), with
 * every chart drawn when the page loads.
 *
 * @example
 * ```ts ignore
 * import { renderReport } from "./render.ts";
 * await Deno.writeTextFile("report.html", renderReport(results));
 * ```
 */
export function renderReport(results: ExperimentResults): string {
  const r = results;
  const cfg = r.model.config;
  const ref = r.reference;
  const S = r.settings.seqLen;
  const prev = r.settings.prevHead;
  const ind = r.settings.inductionHead;
  const bestInd = r.headScores.topInduction[0];
  const prevScore = scoreOf(r.headScores.previousToken, prev);
  const indScore = scoreOf(r.headScores.induction, ind);
  const kc = r.circuits.kComposition;

  const cards: Card[] = [
    {
      label: "Log-prob, 1st half",
      value: num(r.logProbs.firstHalf),
      sub: "random tokens",
      ref: num(ref.firstHalf),
    },
    {
      label: "Log-prob, 2nd half",
      value: num(r.logProbs.secondHalf),
      sub: "the tokens repeated",
      ref: num(ref.secondHalf),
    },
    {
      label: "Accuracy",
      value: `${num(r.logProbs.accuracyFirst, 2)} <small>→</small> ${
        num(r.logProbs.accuracySecond, 2)
      }`,
      sub: "1st → 2nd half",
      ref: `${num(ref.accuracyFirst, 2)} → ${num(ref.accuracySecond, 2)}`,
    },
    {
      label: "Induction head",
      value: `${head(ind)} <small>${num(indScore, 2)}</small>`,
      sub: r.settings.inductionHeadFrom === "flag"
        ? `by flag; best is ${bestInd ? head(bestInd) : "–"}`
        : "best induction score",
      ref: `${head(ref.inductionHead)} · ${num(ref.inductionHead.score, 2)}`,
    },
    {
      label: "Prev-token head",
      value: `${head(prev)} <small>${num(prevScore, 2)}</small>`,
      sub: r.settings.prevHeadFrom === "flag" ? "chosen by flag" : "best prev-token score",
      ref: head(ref.previousTokenHead),
    },
    {
      label: "K-composition",
      value: frac(kc.top1),
      sub: `top-1 of ${head(kc.prev)} → ${head(kc.induction)}`,
      ref: num(ref.kComposition.top1, 4),
    },
  ];

  const note = r.model.isGpt2Small ? "" : `<div class="note"><b>${esc(r.model.name)}</b> is not ` +
    `GPT-2 small, so the grey reference figures (the study's, for GPT-2 small) show what to ` +
    `compare the pattern with, not values this model should match.</div>`;

  const maxPair = Math.max(r.circuits.chance, ...r.circuits.pairs.map((p) => p.top1));
  const topPrev = new Map(r.headScores.topPreviousToken.map((h) => [head(h), h.score]));
  const topInd = new Map(r.headScores.topInduction.map((h) => [head(h), h.score]));
  const pairRows = r.circuits.pairs.map((p) => {
    const chosen = sameHead(p.prev, kc.prev) && sameHead(p.induction, kc.induction);
    const ps = topPrev.get(head(p.prev)) ?? scoreOf(r.headScores.previousToken, p.prev);
    const is = topInd.get(head(p.induction)) ?? scoreOf(r.headScores.induction, p.induction);
    return `<tr${chosen ? ' class="chosen"' : ""}><td><b>${head(p.prev)}</b> <span class="dim">` +
      `(${num(ps, 2)})</span></td><td><b>${head(p.induction)}</b> <span class="dim">(${
        num(is, 2)
      })</span></td><td class="num"><b>${frac(p.top1)}</b></td>${
        barCell(p.top1, maxPair, chosen)
      }</tr>`;
  }).join("");

  const totalSteps = r.timings.reduce((a, t) => a + t.seconds, 0);
  const maxStep = Math.max(...r.timings.map((t) => t.seconds), 1e-9);
  const timingRows = r.timings.map((t) =>
    `<tr><td>${esc(t.label)}</td><td class="num">${secs(t.seconds)}</td>` +
    `<td class="barcell"><div class="bartrack"><div class="bar time" style="width:${
      Math.max(0.5, (100 * t.seconds) / maxStep).toFixed(1)
    }%"></div></div></td></tr>`
  ).join("");

  const created = r.createdAt.replace("T", " ").replace(/\.\d+Z$/, " UTC").replace(/Z$/, " UTC");
  const view = reportView(r);
  const title = `Induction heads in ${r.model.name}`;
  const licenseComment = UPLOT_LICENSE.replace(/\*\//g, "* /");

  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="${esc(r.library.name)} ${esc(r.library.version)}">
<title>${esc(title)} · TransformerLens for Deno</title>
<style>${UPLOT_CSS}</style>
<style>${STYLE}</style>
</head>
<body>
<header>
<div class="wrap">
<div class="eyebrow">How to interpret GPT-2 small · reproduced with TransformerLens for Deno</div>
<h1>Induction heads in <span class="model">${esc(r.model.name)}</span></h1>
<div class="meta">
${
    cfg.family
      ? `<span class="family">${esc(cfg.family)}</span>`
      : ""
  }<span><b>${cfg.nLayers}</b> layers × <b>${cfg.nHeads}</b> heads, d_model <b>${cfg.dModel}</b>, vocabulary <b>${cfg.dVocab}</b></span>
<span>seq_len <b>${S}</b> · batch <b>${r.settings.batch}</b> · seed <b>${r.settings.seed}</b></span>
<span>ran in <b>${secs(r.totalSeconds)}</b></span>
</div>
<div class="choice">${esc(r.model.choice)}${
    r.model.choice.includes(r.model.source) ? "" : ` · loaded from ${esc(r.model.source)}`
  }</div>
<div class="cards">${cards.map(cardHtml).join("")}</div>
<div class="cards-legend"><span class="refdot"></span>study: the GPT-2 small figures of “How to interpret GPT2-small”, for comparison</div>
${note}
</div>
</header>
<main class="wrap">

<section id="logprobs">
<h2>Repeated tokens become predictable</h2>
<p class="caption">Each sequence is [BOS] + ${S} random tokens + the same ${S} tokens again: the log-prob of the correct next token is flat and low over the first copy, then jumps up as soon as the tokens start repeating.</p>
<div class="chart" data-chart="logprob"></div>
</section>

<section id="heads">
<h2>Which heads do it</h2>
<p class="caption">Mean attention on the diagonal each head type looks for: induction heads attend to the token after the previous occurrence of the current token, previous-token heads to the token just before. <span class="legend-chip"></span> marks the heads used below.</p>
<div class="grid3">
<figure><figcaption>Induction score <span>offset 1 − seq_len</span></figcaption><div class="chart" data-chart="heads" data-kind="induction"></div></figure>
<figure><figcaption>Previous-token score <span>offset −1</span></figcaption><div class="chart" data-chart="heads" data-kind="previousToken"></div></figure>
<figure><figcaption>Duplicate-token score <span>offset −seq_len</span></figcaption><div class="chart" data-chart="heads" data-kind="duplicateToken"></div></figure>
</div>
</section>

<section id="attention">
<h2>What those heads look at</h2>
<p class="caption">Attention of sequence 0, query by key (dashed lines split the two copies): the induction head ${
    head(ind)
  } draws a stripe ${
    S - 1
  } positions left of the diagonal in the second copy; the previous-token head ${
    head(prev)
  } hugs the diagonal just below it.</p>
<div class="grid2">
<figure><figcaption>Induction head ${
    head(ind)
  }</figcaption><div class="chart" data-chart="attention" data-kind="induction"></div></figure>
<figure><figcaption>Previous-token head ${
    head(prev)
  }</figcaption><div class="chart" data-chart="attention" data-kind="previousToken"></div></figure>
</div>
</section>

<section id="patching">
<h2>Do the MLPs matter?</h2>
<p class="caption">Loss on the second copy after replacing one MLP's output (<code>${
    esc(r.patching.hook)
  }</code>) at one position with the clean run's value from ${S} positions earlier, minus the clean loss${
    r.patching.cleanLoss === undefined ? "" : ` (${num(r.patching.cleanLoss)} nats)`
  }: red means the patch hurt, blue means it helped, white means the MLP there does not matter.</p>
<figure><figcaption>Study's alignment <span>positions ${S}…${
    2 * S - 1
  }; the first column takes its value from BOS (in the study, only that column moved)</span></figcaption>
<div class="chart" data-chart="patching" data-kind="study"></div></figure>
<figure style="margin-top:18px"><figcaption>Aligned <span>positions ${S + 1}…${
    2 * S
  }, each from the same token in the first copy</span></figcaption>
<div class="chart" data-chart="patching" data-kind="aligned"></div></figure>
</section>

${attributionSection(r)}
<section id="circuit">
<h2>The circuit in the weights</h2>
<p class="caption">K-composition: through the full vocabulary-by-vocabulary circuit of the previous-token head's output read by the induction head's keys, the fraction of tokens whose best-matching key is the token itself (chance is 1/d_vocab).</p>
<div class="split">
<div>
<div class="stat"><div class="k">K-composition ${head(kc.prev)} → ${
    head(kc.induction)
  }, top-1</div><div class="big">${frac(kc.top1)}</div><div class="ref">chance 1/${cfg.dVocab} = ${
    frac(r.circuits.chance)
  } · GPT-2 small (study), ${head(ref.kComposition.prev)} → ${head(ref.kComposition.induction)}: ${
    num(ref.kComposition.top1, 4)
  }</div></div>
<div class="stat"><div class="k">OV copying of ${
    head([r.circuits.ovCopying.layer, r.circuits.ovCopying.head])
  }, top-1</div><div class="big">${
    frac(r.circuits.ovCopying.top1)
  }</div><div class="ref">the fraction of tokens the head, attending to them, predicts as the next token</div></div>
</div>
<div>
<table>
<thead><tr><th>prev-token head <span class="dim">(score)</span></th><th>induction head <span class="dim">(score)</span></th><th class="num">top-1</th><th></th></tr></thead>
<tbody>${pairRows}</tbody>
</table>
</div>
</div>
</section>

${toolkitSection(r)}
${saeSection(r)}
<section id="timings">
<h2>Where the time went</h2>
<p class="caption">Wall-clock time of each step on this machine (${esc(r.runtime)}), ${
    secs(totalSteps)
  } of steps in a ${secs(r.totalSeconds)} run.</p>
<table><tbody>${timingRows}</tbody></table>
</section>
</main>
<footer class="wrap">
Generated ${esc(created)} by ${esc(r.library.name)} ${
    esc(r.library.version)
  } · every number is in <code>results.json</code> beside this file · charts drawn with uPlot ${UPLOT_VERSION} (MIT licence, © Leon Sorokin), inlined.
</footer>
<script id="report-data" type="application/json">${scriptJson(view)}</script>
<script>/*! uPlot ${UPLOT_VERSION} licence:
${licenseComment}
*/
${UPLOT_JS}</script>
<script>${CLIENT_JS}</script>
</body>
</html>
`;
}

/** The section comparing attribution patching with exact patching (empty when not run). */
function attributionSection(r: ExperimentResults): string {
  const a = r.attribution;
  if (!a) return "";
  const S = r.settings.seqLen;
  const speed = a.seconds > 0 ? `, ${num(a.exactSeconds / a.seconds, 0)}× less time` : "";
  return `<section id="attribution">
<h2>What the gradient predicts</h2>
<p class="caption">Attribution patching estimates every patch above at once, from one forward and one backward pass: (clean value − patched-over value) · ∂loss/∂<code>${
    esc(a.hook)
  }</code>, summed over d_model. Each dot is one layer (darker: later) and position; on the dashed line the estimate equals the exact loss change. Both sweeps took ${
    secs(a.seconds)
  } against ${
    secs(a.exactSeconds)
  } of exact patching${speed}. A first-order estimate is good where a patch changes the activation a little, and can be far off where it changes it a lot: in the study's alignment the first column patches in BOS's activation.</p>
<div class="grid2">
<figure><figcaption>Study's alignment <span>positions ${S}…${2 * S - 1} · correlation ${
    num(a.study.correlation)
  }</span></figcaption><div class="chart" data-chart="scatter" data-kind="study"></div></figure>
<figure><figcaption>Aligned <span>positions ${S + 1}…${2 * S} · correlation ${
    num(a.aligned.correlation)
  }</span></figcaption><div class="chart" data-chart="scatter" data-kind="aligned"></div></figure>
</div>
</section>`;
}

/**
 * The external references in an HTML text: `src`/`href` attributes, CSS `url(...)` and `@import`
 * that point to http(s) or protocol-relative URLs. A self-contained report has none.
 *
 * @example
 * ```ts
 * import { externalReferences } from "./render.ts";
 * externalReferences('<img src="https://example.com/a.png">'); // ["https://example.com/a.png"]
 * externalReferences('<a href="#top">top</a>'); // []
 * ```
 */
export function externalReferences(html: string): string[] {
  const found: string[] = [];
  const patterns = [
    /\b(?:src|href|srcset|action|poster|data)\s*=\s*["']?\s*((?:https?:)?\/\/[^"'\s>]+)/gi,
    /url\(\s*["']?\s*((?:https?:)?\/\/[^"')\s]+)/gi,
    /@import\s+["']((?:https?:)?\/\/[^"']+)/gi,
  ];
  for (const re of patterns) {
    for (const m of html.matchAll(re)) found.push(m[1]);
  }
  return found;
}
