/**
 * Progress of `deno task experiments` on stderr: one line per finished step, and a bar with
 * counts and time left for the long steps (the patching sweep, the circuits). On a terminal the
 * bar is redrawn in place with "\r"; elsewhere (CI logs, pipes) it prints a few plain lines
 * (start, every quarter, end) instead.
 * @module
 */

import { formatDuration, progressEnabled } from "../core/progress.ts";

/** Where progress goes and how it is drawn. */
export interface ReporterOptions {
  /** Redraw bars in place? Default: when stderr is a terminal. */
  tty?: boolean;
  /** Writes text to the log. Default: stderr. */
  write?: (text: string) => void;
  /** Clock in milliseconds. Default `performance.now`. */
  now?: () => number;
  /** Print nothing at all. */
  quiet?: boolean;
}

const encoder = new TextEncoder();
const BAR = 24;

/** Seconds for a log line: "412 ms", "3.2 s", "2:05". */
export function formatSeconds(s: number): string {
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(1)} s`;
  return formatDuration(s);
}

/** A bar for one long step; create it with {@linkcode Reporter.bar}. */
export class ProgressLine {
  #r: Reporter;
  #label: string;
  #unit: string;
  #total = 0;
  #start: number;
  #lastDraw = -Infinity;
  #nextQuarter = 1;
  #done = 0;
  #finished = false;
  #announced = false;

  /** @internal */
  constructor(reporter: Reporter, label: string, unit: string) {
    this.#r = reporter;
    this.#label = label;
    this.#unit = unit;
    this.#start = reporter.now();
  }

  /** Reports `done` of `total` units finished (the total may be set or changed on any call). */
  update(done: number, total: number = this.#total): void {
    if (this.#finished) return;
    this.#done = done;
    this.#total = total;
    const r = this.#r;
    if (r.quiet || total <= 0) return;
    const now = r.now();
    if (r.tty) {
      if (now - this.#lastDraw < 100 && done < total) return;
      this.#lastDraw = now;
      r.write(`\r\x1b[2K${this.#text(now)}`);
    } else {
      if (!this.#announced) {
        this.#announced = true;
        r.write(`  ${this.#label}: ${total} ${this.#unit} to do\n`);
      }
      // Plain lines at 25%, 50% and 75%; the end is reported by the step's own line.
      if (this.#nextQuarter <= 3 && done * 4 >= this.#nextQuarter * total && done < total) {
        r.write(`  ${this.#text(now)}\n`);
        this.#nextQuarter = Math.floor((done * 4) / total) + 1;
      }
    }
  }

  #text(now: number): string {
    const total = this.#total;
    const done = Math.min(this.#done, total);
    const frac = total > 0 ? done / total : 0;
    const filled = Math.round(frac * BAR);
    const elapsed = (now - this.#start) / 1000;
    const left = done > 0 ? (elapsed * (total - done)) / done : NaN;
    const bar = this.#r.tty ? `[${"█".repeat(filled)}${"░".repeat(BAR - filled)}] ` : "";
    return `${this.#label}: ${bar}${done}/${total} ${this.#unit} (${Math.round(frac * 100)}%), ` +
      `${formatDuration(elapsed)} elapsed, ${done > 0 ? formatDuration(left) : "--:--"} left`;
  }

  /** Ends the bar (clears it on a terminal); the caller then reports the step. */
  finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    if (!this.#r.quiet && this.#r.tty) this.#r.write("\r\x1b[2K");
  }
}

/** Writes the run's progress: numbered steps, their times, and bars for long steps. */
export class Reporter {
  /** Whether bars are redrawn in place. */
  readonly tty: boolean;
  /** Whether nothing is printed. */
  readonly quiet: boolean;
  /** The clock, ms. */
  readonly now: () => number;
  /** Writes raw text. */
  readonly write: (text: string) => void;
  #steps: number;
  #step = 0;

  /** @param steps How many numbered steps the run has (for "[3/7]"). */
  constructor(steps: number, opts: ReporterOptions = {}) {
    this.#steps = steps;
    this.tty = progressEnabled(opts.tty);
    this.quiet = opts.quiet ?? false;
    this.now = opts.now ?? (() => performance.now());
    this.write = opts.write ?? ((text) => {
      Deno.stderr.writeSync(encoder.encode(text));
    });
  }

  /** Prints one line as it is. */
  line(text: string): void {
    if (!this.quiet) this.write(`${text}\n`);
  }

  /** Prints a finished step: "[3/7] head scores  0.4 s  (details)". */
  step(label: string, seconds: number, details = ""): void {
    this.#step++;
    const n = `[${this.#step}/${this.#steps}]`;
    this.line(
      `${n} ${label.padEnd(28)} ${formatSeconds(seconds).padStart(8)}${
        details ? `   ${details}` : ""
      }`,
    );
  }

  /** Starts a progress bar for a long step. */
  bar(label: string, unit: string): ProgressLine {
    return new ProgressLine(this, label, unit);
  }
}
