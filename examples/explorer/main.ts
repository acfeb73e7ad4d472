/// <reference lib="dom" />
/**
 * The explorer's page module (bundled into `main.js` by `build.ts`). It imports no part of the
 * library: it starts the model worker (`explorer_worker.ts`), sends it the state of the page's
 * controls (debounced while typing) and places the views' HTML it sends back, each in its tab's
 * panel. The state lives in the URL (`protocol.ts`). For the test and for scripts it exposes
 * `window.__explorer` (the model's info, the last result, errors, latency and longest-task
 * figures; `info.device` is where the model computes, also in `#threads`'s `data-device`) and
 * marks the body with `data-computed="<request id>"` and `data-prompt` once a result
 * is shown, and `data-complete="true"` once activation patching's grids are in it too (with a
 * corrupted prompt they come second: the worker sends every other view first).
 * @module
 */
import { type DownloadProgress, MODEL_CACHE } from "./cached_fetch.ts";
import {
  EMBEDDED_MODELS,
  type ExplorerDevice,
  type ExplorerMessage,
  type ExplorerResult,
  type ExplorerState,
  type ModelInfo,
  type PageMessage,
  parseState,
  stateToSearch,
  type ViewName,
  VIEWS,
} from "./protocol.ts";

/** What the page exposes to scripts and tests. */
interface ExplorerGlobal {
  info?: ModelInfo;
  result?: ExplorerResult;
  error?: string;
  /** The main thread's longest task in ms (Long Tasks API: only tasks over 50 ms count). */
  longestTaskMs?: number;
  /**
   * The longest gap between two animation frames while a result was awaited, in ms: how long
   * the page could not paint or answer input (about 16.7 at 60 Hz when it never blocks).
   */
  longestFrameGapMs?: number;
  /**
   * For the last result computed after typing: milliseconds from the last keystroke (input
   * event) to the frame after its views were placed (debounce, worker compute, transfer and
   * layout included), and the worker's share; with a corrupted prompt every view comes first
   * (patching as attribution patching's estimate), then activation patching's grids.
   */
  latency?: {
    typedToShownMs: number;
    computeMs: number;
    id: number;
    /** With a corrupted prompt: to activation patching's grids too (the complete result). */
    typedToCompleteMs?: number;
    /** The worker's compute of the complete result. */
    completeComputeMs?: number;
  };
  /** The last progress report of each file of the model being loaded, by URL. */
  downloads?: Record<string, DownloadProgress>;
}

declare global {
  var __explorer: ExplorerGlobal;
}

/** Default prompts, one per kind of model. */
const TEXT_PROMPT = "And God said, Let there be light: and there was light.";
/** Length of the random segment (repeated once after BOS) for an id-only model. */
const SEGMENT = 10;
/** Milliseconds of quiet after typing before the views are recomputed. */
const DEBOUNCE_MS = 150;

function el<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`the page has no #${id}`);
  return found as T;
}

const explorer: ExplorerGlobal = {};
globalThis.__explorer = explorer;

if (PerformanceObserver.supportedEntryTypes?.includes("longtask")) {
  explorer.longestTaskMs = 0;
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      explorer.longestTaskMs = Math.max(explorer.longestTaskMs ?? 0, e.duration);
    }
  }).observe({ type: "longtask", buffered: true });
}

const state: ExplorerState = parseState(location.search);
const inputs = {
  model: el<HTMLInputElement>("model"),
  prompt: el<HTMLTextAreaElement>("prompt"),
  corrupted: el<HTMLInputElement>("corrupted"),
  answer: el<HTMLInputElement>("answer"),
  wrong: el<HTMLInputElement>("wrong"),
  sae: el<HTMLInputElement>("sae"),
  device: el<HTMLSelectElement>("device"),
};
const status = el("status"), threads = el("threads"), error = el("error");
const random = el<HTMLButtonElement>("random");
let info: ModelInfo | undefined;
let nextId = 0, wanted = 0, randomSeed = 0;
/** The prompt of the request in flight (`wanted`). */
let wantedPrompt = "";
let timer: ReturnType<typeof setTimeout> | undefined;
/** When the last input event came (performance.now()), and the request it led to. */
let typedAt: number | undefined, typedId = 0;
/** Frame gaps are watched while a request is in flight. */
let watchingFrames = false;
/** The id of the last request answered (a result placed, or an error shown). */
let shown = 0;

function watchFrames(): void {
  if (watchingFrames) return;
  watchingFrames = true;
  let last = performance.now();
  const tick = (now: number) => {
    explorer.longestFrameGapMs = Math.max(explorer.longestFrameGapMs ?? 0, now - last);
    last = now;
    if (wanted !== shown) requestAnimationFrame(tick);
    else watchingFrames = false;
  };
  requestAnimationFrame(tick);
}

const worker = new Worker(new URL("./explorer_worker.ts", import.meta.url), { type: "module" });
const send = (m: PageMessage) => worker.postMessage(m);

function saveUrl(): void {
  history.replaceState(null, "", stateToSearch(state));
}

function showError(text: string): void {
  explorer.error = text;
  error.textContent = text;
}

function showView(view: ViewName): void {
  state.view = view;
  for (const b of document.querySelectorAll<HTMLButtonElement>("nav button[data-view]")) {
    b.setAttribute("aria-selected", String(b.dataset.view === view));
  }
  for (const v of VIEWS) el(`view-${v}`).hidden = v !== view;
  saveUrl();
}

function compute(): void {
  if (!info) return;
  wanted = ++nextId;
  wantedPrompt = state.prompt;
  if (typedAt !== undefined) typedId = wanted;
  watchFrames();
  status.textContent = "Computing\u2026";
  send({ kind: "compute", id: wanted, state: { ...state } });
}

function scheduleCompute(): void {
  clearTimeout(timer);
  timer = setTimeout(compute, DEBOUNCE_MS);
}

const download = el("download"), downloadText = el("download-text");
const downloadBar = el<HTMLProgressElement>("download-bar");

/** Shows a file's download: the bar holds the bytes of the file in flight. */
function showProgress(p: DownloadProgress): void {
  const downloads = explorer.downloads ??= {};
  const { url, loaded, total, cached, done } = p; // without the message's kind
  downloads[p.url] = { url, loaded, total, cached, done };
  download.hidden = false;
  const file = decodeURIComponent(new URL(p.url).pathname.split("/").pop() ?? p.url);
  const mb = (n: number) => (n / 1e6).toFixed(1);
  if (p.total !== undefined && p.total > 0) {
    downloadBar.max = p.total;
    downloadBar.value = p.loaded;
  } else downloadBar.removeAttribute("value"); // size unknown: an indeterminate bar
  downloadText.textContent = p.cached
    ? `${file}: from the browser's cache`
    : `Downloading ${file}: ${mb(p.loaded)}${p.total ? ` of ${mb(p.total)}` : ""} MB`;
}

/** After a load: what was downloaded and what came from the cache. */
function summarizeDownloads(): void {
  const files = Object.values(explorer.downloads ?? {});
  if (files.length === 0) return;
  const fetched = files.filter((f) => !f.cached);
  const bytes = files.reduce((s, f) => s + f.loaded, 0);
  downloadBar.max = 1;
  downloadBar.value = 1;
  downloadText.textContent = `${files.length} files (${(bytes / 1e6).toFixed(1)} MB): ` +
    (fetched.length === 0
      ? "all from the browser's cache"
      : `${fetched.length} downloaded and kept in the browser's cache`);
}

el("forget").addEventListener("click", async () => {
  await caches.delete(MODEL_CACHE);
  downloadText.textContent = "Forgot the downloaded models: the next load downloads again.";
});

function load(): void {
  info = undefined;
  explorer.downloads = undefined;
  download.hidden = true;
  threads.textContent = "threads: loading";
  threads.dataset.device = "";
  send({ kind: "load", model: state.model, device: state.device });
}

/** The placement of results in progress (they are placed one after another). */
let placing: Promise<void> = Promise.resolve();

/**
 * Places a result's views: the one shown first, then each other in a task of its own, so that
 * no single task of the main thread parses every view's HTML (the page answers input between).
 */
async function showResult(r: ExplorerResult): Promise<void> {
  if (r.id !== wanted) return; // a newer request is on its way
  const previous = explorer.result;
  if (r.update) {
    // Completes the partial result of the same request: only its views are placed again.
    if (previous?.id !== r.id) return;
    explorer.result = {
      ...previous,
      html: { ...previous.html, ...r.html },
      notes: { ...previous.notes, ...r.notes },
      computeMs: r.computeMs,
      partial: false,
    };
  } else explorer.result = r;
  explorer.error = undefined;
  error.textContent = "";
  const views = r.update ? VIEWS.filter((v) => r.html[v] !== undefined) : VIEWS;
  const order = [
    ...views.filter((v) => v === state.view),
    ...views.filter((v) => v !== state.view),
  ];
  for (const [i, v] of order.entries()) {
    if (i > 0) {
      await new Promise((resolve) => setTimeout(resolve, 0));
      if (r.id !== wanted) return;
    }
    const panel = el(`view-${v}`);
    const note = r.notes[v];
    // The attention view (every head of every layer, the largest) is placed a layer per task:
    // views.ts writes it as the head scores followed by one <section data-layer> per layer.
    const parts = (r.html[v] ?? `<p class="note">${note ?? ""}</p>`).split(
      /(?=<section data-layer=")/,
    );
    panel.innerHTML = parts[0];
    for (const part of parts.slice(1)) {
      await new Promise((resolve) => setTimeout(resolve, 0));
      if (r.id !== wanted) return;
      panel.insertAdjacentHTML("beforeend", part);
    }
    if (r.html[v] && note) panel.insertAdjacentHTML("afterbegin", `<p class="note">${note}</p>`);
    if (v === "attention" && r.html.attention) addAttendStrips(r.tokens);
  }
  const where = info?.device === "webgpu" ? " on WebGPU" : "";
  status.textContent = r.partial
    ? `${r.tokens.length} tokens, every view in ${r.computeMs} ms${where}; activation patching\u2026`
    : `${r.tokens.length} tokens, every view in ${r.computeMs} ms${where}`;
  document.body.dataset.prompt = wantedPrompt;
  document.body.dataset.computed = String(r.id);
  document.body.dataset.complete = String(!r.partial);
  if (!r.partial) shown = r.id;
  if (typedAt !== undefined && typedId === r.id) {
    const since = typedAt;
    if (!r.partial) typedAt = undefined;
    // The next frame starts after this task's layout: the views are on screen by then.
    requestAnimationFrame(() => {
      const ms = Math.round(performance.now() - since);
      if (!r.update) explorer.latency = { typedToShownMs: ms, computeMs: r.computeMs, id: r.id };
      if (!r.partial && explorer.latency?.id === r.id) {
        explorer.latency.typedToCompleteMs = ms;
        explorer.latency.completeComputeMs = r.computeMs;
      }
    });
  }
}

/** The chosen head as [layer, head] (`state.head`, default L0H0). */
function chosenHead(): [number, number] {
  const m = /^L(\d+)H(\d+)$/.exec(state.head);
  return m ? [Number(m[1]), Number(m[2])] : [0, 0];
}

/** One head's attention weights from its grid in the attention panel: [query][key]. */
function headWeights(layer: number, head: number): number[][] {
  const out: number[][] = [];
  const sel = `#view-attention section[data-layer="${layer}"] details[data-head="${head}"] td.c`;
  for (const c of document.querySelectorAll<HTMLElement>(sel)) {
    (out[Number(c.dataset.row)] ??= [])[Number(c.dataset.col)] = Number(c.dataset.value);
  }
  return out;
}

/**
 * Above the attention heads: the tokens twice, for the chosen head; hovering or focusing a token
 * colours the first strip by what it attends to and the second by what attends to it (each
 * span's weight in `data-value` and its tooltip).
 */
function addAttendStrips(tokens: string[]): void {
  if (!info) return;
  const panel = el("view-attention");
  const options: string[] = [];
  for (let l = 0; l < info.nLayers; l++) {
    for (let h = 0; h < info.nHeads; h++) options.push(`L${l}H${h}`);
  }
  const [layer, head] = chosenHead();
  const box = document.createElement("div");
  box.id = "attend";
  box.innerHTML =
    `<label>Head <select id="attend-head">${
      options.map((o) => `<option${o === `L${layer}H${head}` ? " selected" : ""}>${o}</option>`)
        .join("")
    }</select></label> <span class="note">Hover or Tab to a token: the first line shows what it ` +
    `attends to, the second what attends to it.</span>`;
  const strips = ["to", "from"].map((kind) => {
    const strip = document.createElement("div");
    strip.className = "strip";
    strip.dataset.strip = kind;
    tokens.forEach((t, i) => {
      const span = document.createElement("span");
      span.tabIndex = 0;
      span.dataset.pos = String(i);
      span.textContent = t.replaceAll("\n", "\u21b5");
      strip.append(span);
    });
    box.append(strip);
    return strip;
  });
  const show = (q: number) => {
    const [l, h] = chosenHead();
    const w = headWeights(l, h);
    const paint = (strip: HTMLElement, value: (k: number) => number | undefined) => {
      strip.querySelectorAll<HTMLElement>("span").forEach((span, k) => {
        const v = value(k);
        span.dataset.value = v === undefined ? "" : String(v);
        span.title = v === undefined ? "masked" : `weight ${v.toPrecision(4)}`;
        span.style.background = v === undefined ? "" : `rgba(8, 48, 107, ${v})`;
        span.style.color = v !== undefined && v > 0.5 ? "#fff" : "";
        span.classList.toggle("current", k === q);
      });
    };
    paint(strips[0], (k) => k <= q ? w[q]?.[k] : undefined); // q attends to k
    paint(strips[1], (k) => k >= q ? w[k]?.[q] : undefined); // k attends to q
  };
  for (const strip of strips) {
    strip.addEventListener("mouseover", (e) => {
      const pos = (e.target as HTMLElement).dataset?.pos;
      if (pos !== undefined) show(Number(pos));
    });
    strip.addEventListener("focusin", (e) => {
      const pos = (e.target as HTMLElement).dataset?.pos;
      if (pos !== undefined) show(Number(pos));
    });
  }
  box.querySelector<HTMLSelectElement>("select")!.addEventListener("change", (e) => {
    state.head = (e.target as HTMLSelectElement).value;
    saveUrl();
    show(tokens.length - 1);
  });
  panel.prepend(box);
  show(tokens.length - 1);
}

worker.onmessage = (event: MessageEvent<ExplorerMessage>) => {
  const m = event.data;
  if (m.kind === "status") status.textContent = m.text;
  else if (m.kind === "progress") showProgress(m);
  else if (m.kind === "ready") {
    info = explorer.info = m.info;
    summarizeDownloads();
    threads.dataset.threads = String(m.info.threads);
    threads.dataset.isolated = String(m.info.crossOriginIsolated);
    threads.dataset.device = m.info.device;
    inputs.device.value = state.device;
    threads.textContent = m.info.device === "webgpu"
      ? `${m.info.name}: on WebGPU (adapter: ${m.info.adapter ?? "unnamed"})${
        state.device === "auto" ? ", chosen by auto" : ""
      }`
      : `${m.info.name}: WebAssembly on ${m.info.threads} thread${m.info.threads === 1 ? "" : "s"}${
        state.device === "auto" ? " (auto: no hardware WebGPU adapter)" : ""
      }${
        m.info.crossOriginIsolated
          ? ""
          : " (not cross-origin isolated: one thread; serve the page " +
            "with Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: " +
            "require-corp for one per core)"
      }`;
    random.hidden = m.info.hasTokenizer;
    el("prompt-note").textContent = m.info.hasTokenizer
      ? ""
      : `${m.info.name} has no text tokenizer: the prompt is token ids in [0, ${m.info.dVocab}), ` +
        `separated by spaces. "Random segment, repeated" gives the induction study's input.`;
    if (state.prompt === "") {
      if (m.info.hasTokenizer) {
        state.prompt = inputs.prompt.value = TEXT_PROMPT;
      } else {
        send({ kind: "random", segment: SEGMENT, seed: randomSeed++ });
        return;
      }
    }
    saveUrl();
    compute();
  } else if (m.kind === "random") {
    state.prompt = inputs.prompt.value = m.ids.join(" ");
    saveUrl();
    compute();
  } else if (m.kind === "result") {
    // One placement at a time: a partial result yields between its views, and the update that
    // completes it must not be overwritten by the partial's later views.
    placing = placing.then(() => showResult(m.result)).catch((e) => showError(String(e)));
  } else if (m.kind === "error") {
    if (m.id !== undefined && m.id !== wanted) return;
    shown = wanted;
    status.textContent = "Error";
    showError(m.message);
  }
};
worker.onerror = (e) => showError(`the model worker failed: ${e.message}`);

for (const key of ["prompt", "corrupted", "answer", "wrong", "sae"] as const) {
  inputs[key].value = state[key];
  inputs[key].addEventListener("input", () => {
    typedAt = performance.now();
    state[key] = inputs[key].value;
    saveUrl();
    scheduleCompute();
  });
}
inputs.model.value = state.model;
// The picker lists the embedded models and the model the page was opened with (the server's
// --model=<folder>); a hub name or URL typed in the field is downloaded into Cache Storage.
if (!EMBEDDED_MODELS.includes(state.model)) {
  const option = document.createElement("option");
  option.value = state.model;
  option.textContent = "the model given at start";
  el("models").append(option);
}
const loadTyped = () => {
  state.model = inputs.model.value.trim() || state.model;
  state.prompt = inputs.prompt.value = "";
  saveUrl();
  load();
};
el("load").addEventListener("click", loadTyped);
// Another device loads the same model there and recomputes the same prompt.
inputs.device.value = state.device;
inputs.device.addEventListener("change", () => {
  state.device = inputs.device.value as ExplorerDevice;
  saveUrl();
  load();
});
inputs.model.addEventListener("keydown", (e) => {
  if (e.key === "Enter") loadTyped();
});
random.addEventListener("click", () => {
  if (info) send({ kind: "random", segment: SEGMENT, seed: randomSeed++ });
});
for (const b of document.querySelectorAll<HTMLButtonElement>("nav button[data-view]")) {
  b.addEventListener("click", () => showView(b.dataset.view as ViewName));
}
showView(state.view);
load();
