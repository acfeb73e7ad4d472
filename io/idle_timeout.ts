/**
 * Idle timeouts for HTTP transfers: a request is abandoned when the server sends nothing (no
 * headers, no body bytes) for a while, as `huggingface_hub`'s read timeout does. A deadline for
 * the whole transfer would fail slow but steady downloads of large files; an idle timeout fails
 * only stalled ones.
 * @module
 */
import { InputError } from "../core/errors.ts";

/** How long a transfer may go without a byte before it is abandoned, as `huggingface_hub`'s. */
export const DEFAULT_DOWNLOAD_TIMEOUT_MS = 10_000;

/**
 * Checks a timeout option at run time: a positive, finite number of milliseconds.
 *
 * @example
 * ```ts
 * import { checkTimeoutMs } from "./idle_timeout.ts";
 * checkTimeoutMs(500, "downloadTimeoutMs"); // 500
 * ```
 */
export function checkTimeoutMs(value: unknown, name: string): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
    throw new InputError(
      `${name} must be a positive number of milliseconds, got ${
        typeof value === "string" ? JSON.stringify(value) : String(value)
      }`,
    );
  }
  return value;
}

/**
 * A countdown that aborts its `signal` when nothing happened for `ms`: pass `signal` to `fetch`,
 * call `touch()` on every sign of life (headers, each chunk of the body), and `clear()` when
 * done. Once it fires, the pending `fetch` or body read rejects with an `Error` whose message says
 * how long the server was silent.
 *
 * @example
 * ```ts
 * import { IdleTimeout } from "./idle_timeout.ts";
 * const idle = new IdleTimeout(10_000);
 * try {
 *   const res = await fetch("data:,hello", { signal: idle.signal });
 *   for await (const _chunk of res.body!) idle.touch();
 * } finally {
 *   idle.clear();
 * }
 * ```
 */
export class IdleTimeout {
  /** Aborted when the countdown runs out. */
  readonly signal: AbortSignal;
  readonly #ctl = new AbortController();
  readonly #ms: number;
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** Starts the countdown. @param ms milliseconds of silence allowed */
  constructor(ms: number) {
    this.#ms = ms;
    this.signal = this.#ctl.signal;
    this.touch();
  }

  /** Whether the countdown ran out (so a failed transfer was a stall, not another error). */
  get fired(): boolean {
    return this.signal.aborted;
  }

  /** Restarts the countdown. */
  touch(): void {
    clearTimeout(this.#timer);
    if (this.fired) return;
    this.#timer = setTimeout(() => {
      const s = this.#ms / 1000;
      this.#ctl.abort(new Error(`the server sent nothing for ${s} s`));
    }, this.#ms);
  }

  /** Stops the countdown for good. */
  clear(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

/**
 * Reads a response body whole, restarting `idle` at each chunk and calling `onChunk` with each
 * chunk's length (for progress bars). The caller handles errors (a stall rejects with the
 * countdown's message).
 *
 * @example
 * ```ts
 * import { IdleTimeout, readAllIdle } from "./idle_timeout.ts";
 * const idle = new IdleTimeout(10_000);
 * const res = await fetch("data:,hello", { signal: idle.signal });
 * const bytes = await readAllIdle(res, idle); // 5 bytes
 * idle.clear();
 * ```
 */
export async function readAllIdle(
  res: Response,
  idle: IdleTimeout,
  onChunk: (length: number) => void = () => {},
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of res.body ?? []) {
    idle.touch();
    chunks.push(chunk);
    size += chunk.length;
    onChunk(chunk.length);
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
