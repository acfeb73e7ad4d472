/**
 * A cross-process lock on a file (`flock`, the lock `huggingface_hub`'s `filelock` takes, so Deno
 * and Python processes exclude each other), which never makes a waiter wait forever:
 *
 * - A holder that dies loses its lock at once: the operating system releases `flock` locks when
 *   their process exits, however it exits (SIGKILL included).
 * - A holder that is alive but stuck (stopped, hung) is detected by its silence: while it holds
 *   the lock, a holder in this library touches the lock file's mtime every `staleMs / 4` (a
 *   heartbeat), and a download in progress grows its `.incomplete` file. A waiter that sees
 *   neither change for `staleMs` gives up with a {@link ModelNotFoundError} that names the lock,
 *   the holder's pid and what to do, instead of waiting on.
 * @module
 */
import { ModelNotFoundError } from "../core/errors.ts";

/** What {@link withFileLock} needs. */
export interface FileLockOptions {
  /** Silence (no heartbeat, no change to `progressFile`) after which the holder counts as stuck. */
  staleMs: number;
  /** A file the holder writes to while it works (a download's `.incomplete` file). */
  progressFile?: string;
}

function sign(path: string | undefined): string {
  if (path === undefined) return "";
  try {
    const s = Deno.statSync(path);
    return `${s.size}:${s.mtime?.getTime()}`;
  } catch {
    return "absent";
  }
}

function holderPid(path: string): string {
  try {
    const text = Deno.readTextFileSync(path).trim();
    return /^\d+$/.test(text) ? ` (pid ${text})` : "";
  } catch {
    return "";
  }
}

/**
 * Runs `fn` holding an exclusive lock on `lockPath` (created if missing), waiting for other
 * holders as long as they show signs of life.
 *
 * @example
 * ```ts
 * import { withFileLock } from "./file_lock.ts";
 * const lock = await Deno.makeTempFile({ suffix: ".lock" });
 * const answer = await withFileLock(lock, { staleMs: 20_000 }, () => Promise.resolve(42));
 * await Deno.remove(lock);
 * ```
 */
export async function withFileLock<T>(
  lockPath: string,
  opts: FileLockOptions,
  fn: () => Promise<T>,
): Promise<T> {
  const file = await Deno.open(lockPath, { create: true, read: true, write: true });
  try {
    // Wait, polling: Deno's blocking lock() could not be given up on.
    const poll = opts.staleMs / 8;
    let last = sign(lockPath) + sign(opts.progressFile);
    let lastChange = performance.now();
    let quietPolls = 0;
    while (!(await file.tryLock(true))) {
      await new Promise((r) => setTimeout(r, poll));
      const now = sign(lockPath) + sign(opts.progressFile);
      if (now !== last) {
        last = now;
        lastChange = performance.now();
        quietPolls = 0;
      } else if (++quietPolls >= 8 && performance.now() - lastChange >= opts.staleMs) {
        // At least 8 quiet polls: a stall of this process's own event loop is not the holder's.
        const s = ((performance.now() - lastChange) / 1000).toFixed(1);
        const progress = opts.progressFile ? ` and ${opts.progressFile} did not change` : "";
        throw new ModelNotFoundError(
          `another process${holderPid(lockPath)} holds the lock ${lockPath} and has shown no ` +
            `sign of life for ${s} s (no heartbeat${progress}): it looks stuck. Stop it (its ` +
            `lock goes when it exits) and try again.`,
        );
      }
    }
    // Holding: say who holds it (for the message above), then beat.
    await file.truncate(0);
    await file.write(new TextEncoder().encode(`${Deno.pid}\n`));
    let beat = Promise.resolve();
    const heartbeat = setInterval(() => {
      const t = new Date();
      beat = file.utime(t, t).catch(() => {});
    }, opts.staleMs / 4);
    try {
      return await fn();
    } finally {
      clearInterval(heartbeat);
      await beat;
      await file.truncate(0); // the next holder may be another program: no stale pid
      await file.unlock();
    }
  } finally {
    file.close();
  }
}
