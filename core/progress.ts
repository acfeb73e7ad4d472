/**
 * Progress: the callback long analysis steps report through, and a one-line progress bar on
 * stderr (bytes done of total, rate and time left, redrawn in place with "\r" and ended with a
 * newline; quiet unless stderr is a terminal or it is forced) used by downloads and experiments.
 * @module
 */

/**
 * Called as work advances: `done` units of `total` finished (`done` ends equal to `total`).
 * Units are whatever the step counts (layers patched, rows of a circuit streamed). Calls are
 * synchronous and in order; keep the callback cheap (redraw a bar at most a few times a second).
 *
 * @example
 * ```ts
 * import type { ProgressCallback } from "./progress.ts";
 * const onProgress: ProgressCallback = (done, total) => {
 *   console.log(`${done}/${total} (${((100 * done) / total).toFixed(0)}%)`);
 * };
 * onProgress(3, 12); // "3/12 (25%)"
 * ```
 */
export type ProgressCallback = (done: number, total: number) => void;

/** How a progress bar is shown. */
export interface ProgressOptions {
  /** What is being downloaded, e.g. "model.safetensors". */
  label: string;
  /** Total bytes, when known. */
  total?: number;
  /** Draw at all? Default: when stderr is a terminal. */
  enabled?: boolean;
  /** Where lines go. Default: stderr. */
  write?: (text: string) => void;
  /** Clock in milliseconds (tests). Default: `performance.now`. */
  now?: () => number;
  /** Least time between redraws, ms. Default 100. */
  intervalMs?: number;
}

const encoder = new TextEncoder();
const BAR_WIDTH = 20;

/**
 * Whether progress is drawn: the explicit choice, else whether stderr is a terminal.
 *
 * @example
 * ```ts
 * import { progressEnabled } from "./progress.ts";
 * progressEnabled(true); // true
 * progressEnabled(); // Deno.stderr.isTerminal()
 * ```
 */
export function progressEnabled(explicit?: boolean): boolean {
  if (explicit !== undefined) return explicit;
  try {
    return typeof Deno !== "undefined" && Deno.stderr.isTerminal();
  } catch {
    return false;
  }
}

/**
 * Bytes in the units people read (powers of 1000, like the hub and `ls -h --si`).
 *
 * @example
 * ```ts
 * import { formatBytes } from "./progress.ts";
 * formatBytes(548_105_171); // "548.1 MB"
 * ```
 */
export function formatBytes(n: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let u = 0;
  let v = n;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]}`;
}

/**
 * Seconds as m:ss or h:mm:ss.
 *
 * @example
 * ```ts
 * import { formatDuration } from "./progress.ts";
 * formatDuration(83); // "1:23"
 * formatDuration(3725); // "1:02:05"
 * ```
 */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "--:--";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

/**
 * A progress bar for one download.
 *
 * @example
 * ```ts
 * import { ProgressBar } from "./progress.ts";
 * const bar = new ProgressBar({ label: "model.safetensors", total: 1_000_000, enabled: true });
 * bar.start(0);
 * bar.advance(500_000); // "\rmodel.safetensors [##########----------]  50% 500.0 kB / 1.0 MB ..."
 * bar.finish(); // final line, then "\n"
 * ```
 */
export class ProgressBar {
  readonly #label: string;
  readonly #total: number | undefined;
  readonly #enabled: boolean;
  readonly #write: (text: string) => void;
  readonly #now: () => number;
  readonly #interval: number;
  #done = 0;
  #resumedFrom = 0;
  #startedAt = 0;
  #lastDraw = -Infinity;
  #lastLength = 0;
  #finished = false;

  /** Sets up the bar; nothing is drawn before {@link ProgressBar.start}. */
  constructor(opts: ProgressOptions) {
    this.#label = opts.label;
    this.#total = opts.total;
    this.#enabled = progressEnabled(opts.enabled);
    this.#write = opts.write ?? ((text) => Deno.stderr.writeSync(encoder.encode(text)));
    this.#now = opts.now ?? (() => performance.now());
    this.#interval = opts.intervalMs ?? 100;
  }

  /** Starts timing; `already` bytes were there before (a resumed download). */
  start(already = 0): void {
    this.#done = already;
    this.#resumedFrom = already;
    this.#startedAt = this.#now();
    this.#draw(true);
  }

  /** Adds `bytes` received; redraws at most every `intervalMs`. */
  advance(bytes: number): void {
    this.#done += bytes;
    this.#draw(false);
  }

  /** Draws the final state and ends the line. Safe to call twice. */
  finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    if (!this.#enabled) return;
    this.#draw(true);
    this.#write("\n");
  }

  /** The current line, without "\r" (tests and logs). */
  line(): string {
    const elapsed = (this.#now() - this.#startedAt) / 1000;
    const rate = elapsed > 0 ? (this.#done - this.#resumedFrom) / elapsed : 0;
    const parts = [this.#label];
    if (this.#total !== undefined && this.#total > 0) {
      const frac = Math.min(1, this.#done / this.#total);
      const filled = Math.round(frac * BAR_WIDTH);
      parts.push(`[${"#".repeat(filled)}${"-".repeat(BAR_WIDTH - filled)}]`);
      parts.push(`${String(Math.floor(frac * 100)).padStart(3)}%`);
      parts.push(`${formatBytes(this.#done)} / ${formatBytes(this.#total)}`);
      parts.push(`${formatBytes(Math.round(rate))}/s`);
      const left = rate > 0 ? (this.#total - this.#done) / rate : NaN;
      parts.push(`${formatDuration(left)} left`);
    } else {
      parts.push(formatBytes(this.#done), `${formatBytes(Math.round(rate))}/s`);
    }
    return parts.join(" ");
  }

  #draw(force: boolean): void {
    if (!this.#enabled || this.#finished && !force) return;
    const t = this.#now();
    if (!force && t - this.#lastDraw < this.#interval) return;
    this.#lastDraw = t;
    const text = this.line();
    const pad = Math.max(0, this.#lastLength - text.length);
    this.#lastLength = text.length;
    this.#write(`\r${text}${" ".repeat(pad)}`);
  }
}
