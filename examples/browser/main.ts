/// <reference lib="dom" />
/**
 * The browser example's page module (bundled into `main.js` by `build.ts`; browsers do not run
 * .ts). It starts the model worker (`model_worker.ts`), which runs the embedded `induction-toy`
 * model off the main thread on the study's input (30 sequences of [BOS] + 50 random token ids
 * repeated once, seed 0), and draws what the worker sends back:
 *
 * - the attention pattern of its induction head, layer 1 head 2, on the first sequence (a heatmap
 *   on a canvas),
 * - that head's attention along the induction and previous-token diagonals (uPlot lines),
 * - the induction and previous-token scores of every head (uPlot bars),
 *
 * and shows the scores as JSON in `<pre id="scores">` (also `window.__scores`) and how many
 * threads computed them in `#threads` (`data-threads`, `data-isolated`). The page imports no part
 * of the library: its main thread only draws.
 * @module
 */
// deno-lint-ignore no-import-prefix
import uPlot from "npm:uplot@1.6.32";
import {
  deviceFromQuery,
  HEAD,
  LAYER,
  type PageDevice,
  type PageScores,
  SEQ_LEN,
  type WorkerMessage,
} from "./config.ts";

declare global {
  var __scores: PageScores | undefined;
  var __error: string | undefined;
  /** The longest task the page's main thread ran, in ms (Long Tasks API: only tasks over 50 ms
   * are reported, so 0 means none was that long); undefined where the browser lacks the API. */
  var __longestTaskMs: number | undefined;
}

/** Records the main thread's longest task in `__longestTaskMs` (the page must stay responsive). */
function watchLongTasks(): void {
  if (!PerformanceObserver.supportedEntryTypes?.includes("longtask")) return;
  globalThis.__longestTaskMs = 0;
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      globalThis.__longestTaskMs = Math.max(globalThis.__longestTaskMs ?? 0, entry.duration);
    }
  }).observe({ type: "longtask", buffered: true });
}

function el<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`the page has no #${id}`);
  return found as T;
}

/** White (0) to dark blue (1), with a square-root scale so that weak attention stays visible. */
function colour(v: number): [number, number, number] {
  const t = Math.sqrt(Math.min(1, Math.max(0, v)));
  const from = [255, 255, 255];
  const to = [8, 48, 107];
  return [0, 1, 2].map((i) => Math.round(from[i] + (to[i] - from[i]) * t)) as [
    number,
    number,
    number,
  ];
}

/** Draws `pattern[q][k]` (rows: queries, columns: keys) as a heatmap on a canvas. */
function drawHeatmap(canvas: HTMLCanvasElement, pattern: number[][], seqLen: number): void {
  const T = pattern.length;
  const cell = Math.max(2, Math.floor(480 / T));
  const margin = 40;
  const size = T * cell;
  canvas.width = margin + size + 16;
  canvas.height = margin + size + 16;
  const ctx = canvas.getContext("2d");
  if (!ctx) throw new Error("no 2d canvas context");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const image = ctx.createImageData(size, size);
  for (let q = 0; q < T; q++) {
    for (let k = 0; k < T; k++) {
      const [r, g, b] = k > q ? [240, 240, 240] : colour(pattern[q][k]);
      for (let dy = 0; dy < cell; dy++) {
        let at = ((q * cell + dy) * size + k * cell) * 4;
        for (let dx = 0; dx < cell; dx++, at += 4) {
          image.data[at] = r;
          image.data[at + 1] = g;
          image.data[at + 2] = b;
          image.data[at + 3] = 255;
        }
      }
    }
  }
  ctx.putImageData(image, margin, margin);
  // Where the repeat starts (position 1 + seqLen: BOS, then the first copy).
  ctx.strokeStyle = "#c0392b";
  ctx.lineWidth = 1;
  const edge = margin + (1 + seqLen) * cell + 0.5;
  ctx.beginPath();
  ctx.moveTo(margin, edge);
  ctx.lineTo(margin + size, edge);
  ctx.moveTo(edge, margin);
  ctx.lineTo(edge, margin + size);
  ctx.stroke();
  ctx.fillStyle = "#333";
  ctx.font = "11px sans-serif";
  ctx.textAlign = "left";
  ctx.fillText("key position \u2192", margin + size / 2 - 40, 12);
  ctx.save();
  ctx.translate(10, margin + size / 2 - 45);
  ctx.rotate(Math.PI / 2);
  ctx.fillText("query position \u2192", 0, 0);
  ctx.restore();
  for (const p of [0, 1 + seqLen, T - 1]) {
    const at = margin + p * cell + cell / 2;
    ctx.textAlign = "center";
    ctx.fillText(String(p), at, 30);
    ctx.textAlign = "right";
    ctx.fillText(String(p), margin - 4, at + 4);
  }
}

/** The drawn head's attention along the induction and previous-token diagonals, by query. */
function drawDiagonals(target: HTMLElement, pattern: number[][], seqLen: number): uPlot {
  const T = pattern.length;
  const xs = Array.from({ length: T }, (_, q) => q);
  const induction = xs.map((q) => (q > seqLen ? pattern[q][q - seqLen + 1] : null));
  const previous = xs.map((q) => (q >= 1 ? pattern[q][q - 1] : null));
  const bos = xs.map((q) => pattern[q][0]);
  return new uPlot(
    {
      width: 560,
      height: 260,
      title: `Layer ${LAYER} head ${HEAD}: attention from each query`,
      scales: { x: { time: false }, y: { range: [0, 1] } },
      legend: { live: false },
      axes: [{ label: "query position" }, { label: "attention" }],
      series: [
        {},
        { label: "to the token after its earlier copy", stroke: "#08306b", width: 2 },
        { label: "to the previous token", stroke: "#e67e22", width: 1.5 },
        { label: "to BOS", stroke: "#7f8c8d", width: 1, dash: [4, 3] },
      ],
    },
    [xs, induction, previous, bos],
    target,
  );
}

/** Induction and previous-token scores of every head as bars. */
function drawScores(target: HTMLElement, induction: number[][], previous: number[][]): uPlot {
  const nHeads = induction[0].length;
  const labels = induction.flatMap((row, l) => row.map((_, h) => `${l}.${h}`));
  const xs = labels.map((_, i) => i);
  const bars = (align: -1 | 1) => uPlot.paths.bars!({ size: [0.4, 40], align });
  return new uPlot(
    {
      width: 560,
      height: 260,
      title: "Head scores on the repeated tokens (layer.head)",
      scales: { x: { time: false, range: [-0.6, xs.length - 0.4] }, y: { range: [0, 1] } },
      legend: { live: false },
      axes: [
        {
          label: `head (${nHeads} a layer)`,
          splits: () => xs,
          values: (_u, splits) => splits.map((i) => labels[i] ?? ""),
        },
        { label: "score" },
      ],
      series: [
        {},
        {
          label: "induction",
          stroke: "#08306b",
          fill: "#08306b",
          paths: bars(-1),
          points: { show: false },
        },
        {
          label: "previous token",
          stroke: "#e67e22",
          fill: "#e67e22",
          paths: bars(1),
          points: { show: false },
        },
      ],
    },
    [xs, induction.flat(), previous.flat()],
    target,
  );
}

/** Runs the model worker once and resolves with what it computed. */
function runWorker(status: HTMLElement, device: PageDevice): Promise<PageScores> {
  const worker = new Worker(new URL("./model_worker.ts", import.meta.url), { type: "module" });
  return new Promise<PageScores>((resolve, reject) => {
    worker.onmessage = (event: MessageEvent<WorkerMessage>) => {
      const m = event.data;
      if (m.kind === "status") {
        status.textContent = m.text;
      } else {
        worker.terminate();
        if (m.kind === "result") resolve(m.scores);
        else reject(Object.assign(new Error(m.message), { stack: m.stack ?? m.message }));
      }
    };
    worker.onerror = (e) => {
      e.preventDefault();
      worker.terminate();
      reject(new Error(`the model worker failed: ${e.message || "it could not start"}`));
    };
    worker.postMessage({ kind: "run", device });
  });
}

/** Says how many threads computed, and why not more. */
function showThreads(target: HTMLElement, r: PageScores): void {
  target.dataset.threads = String(r.threads);
  target.dataset.isolated = String(r.crossOriginIsolated);
  target.dataset.device = r.device;
  target.textContent = r.device === "webgpu"
    ? `Computed in a Web Worker on WebGPU (${r.adapter || "the browser's adapter"}); ` +
      `?device=wasm runs it on WebAssembly.`
    : r.threads > 1
    ? `Computed in a Web Worker on ${r.threads} threads (the browser reports ${r.cores} cores; ` +
      `the page is cross-origin isolated, so the kernels' worker threads share its memory).`
    : r.crossOriginIsolated
    ? `Computed in a Web Worker on 1 thread (the browser reports ${r.cores} core).`
    : `Computed in a Web Worker on 1 thread: the page is not cross-origin isolated, so the ` +
      `kernels may not share memory with more threads. Serve it with the headers ` +
      `Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp.`;
}

async function main(): Promise<void> {
  watchLongTasks();
  const status = el<HTMLParagraphElement>("status");
  status.textContent = "Starting the model worker\u2026";
  const device = deviceFromQuery(location.search);
  const toggle = document.getElementById("device-toggle") as HTMLAnchorElement | null;
  if (toggle) {
    const other = device === "webgpu" ? "wasm" : "webgpu";
    toggle.href = `?device=${other}`;
    toggle.textContent = other === "webgpu" ? "Run it on WebGPU" : "Run it on WebAssembly";
  }
  const result = await runWorker(status, device);
  drawHeatmap(el<HTMLCanvasElement>("heatmap"), result.pattern, SEQ_LEN);
  drawDiagonals(el("diagonals"), result.pattern, SEQ_LEN);
  drawScores(el("scores-chart"), result.induction, result.previousToken);
  showThreads(el("threads"), result);
  const { pattern: _omit, ...shown } = result;
  el("scores").textContent = JSON.stringify(shown, null, 1);
  const best = result.induction[LAYER][HEAD];
  status.textContent = `${result.model}: ${result.induction.length} layers x ` +
    `${result.induction[0].length} heads, loaded in ${result.loadMs} ms, computed in ` +
    `${result.computeMs} ms ${
      result.device === "webgpu"
        ? "on WebGPU"
        : `on ${result.threads} thread${result.threads === 1 ? "" : "s"}`
    }. ` +
    `Induction score of layer ${LAYER} head ${HEAD}: ${best.toFixed(3)}.`;
  globalThis.__scores = result;
}

/** Runs the page (only where there is a page). */
export function start(): Promise<void> {
  return main().catch((e) => {
    const message = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    globalThis.__error = e instanceof Error && e.stack ? e.stack : message;
    const status = document.getElementById("status");
    if (status) {
      status.textContent = `Error: ${message}`;
      status.className = "error";
    }
    console.error(e);
  });
}

if ("document" in globalThis) start();
