/**
 * Runs a script in a child `deno` process with a deadline, for the adversarial tests whose
 * failure mode is a hang or a fatal (uncatchable) out-of-memory: the child prints one JSON line
 * with its outcome and its own peak RSS (`VmHWM` of `/proc/self/status`), and the parent kills it
 * past the deadline. A child that dies (OOM, stack) shows as `code`/`signal` with no result.
 */
import { REPO_ROOT } from "./static_server.ts";

/** What the child reported, or how it ended. */
export interface ChildOutcome {
  /** Exit code. */
  code: number;
  /** The signal that ended it (SIGKILL when the deadline passed). */
  signal: Deno.Signal | null;
  /** Whether the parent killed it at the deadline. */
  timedOut: boolean;
  /** The JSON the child printed last (undefined if it died first). */
  result?: Record<string, unknown>;
  /** Standard error, for messages. */
  stderr: string;
}

/**
 * The lines every child script starts with: `report(obj)` prints `obj` plus `peakRssMiB` and
 * `threads` (from /proc/self/status) as the child's result line. `REPO` is the repository's
 * file URL, for imports.
 */
export function childPrelude(): string {
  return `const REPO = ${JSON.stringify(`file://${REPO_ROOT}/`)};
function procStatus(key) {
  const m = Deno.readTextFileSync("/proc/self/status").match(new RegExp("^" + key + ":\\\\s+(\\\\d+)", "m"));
  return m ? Number(m[1]) : -1;
}
function report(obj) {
  console.log(JSON.stringify({ ...obj, peakRssMiB: procStatus("VmHWM") / 1024, threads: procStatus("Threads") }));
}
`;
}

/**
 * Runs `body` (an ES module's text, after {@link childPrelude}) in a fresh `deno run -A` with a
 * V8 heap limit of `heapMiB` (so a runaway allocation ends the child quickly) and kills it after
 * `timeoutMs`.
 */
export async function runChild(
  body: string,
  { timeoutMs, heapMiB = 2048 }: { timeoutMs: number; heapMiB?: number },
): Promise<ChildOutcome> {
  const dir = await Deno.makeTempDir({ prefix: "bounded_child_" });
  try {
    const script = `${dir}/main.js`;
    await Deno.writeTextFile(script, childPrelude() + body);
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-lock", `--v8-flags=--max-old-space-size=${heapMiB}`, script],
      cwd: REPO_ROOT,
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    try {
      const out = await child.output();
      const dec = new TextDecoder();
      const lines = dec.decode(out.stdout).trim().split("\n").filter((l) => l.startsWith("{"));
      return {
        code: out.code,
        signal: out.signal,
        timedOut,
        result: lines.length > 0 ? JSON.parse(lines.at(-1)!) : undefined,
        stderr: dec.decode(out.stderr),
      };
    } finally {
      clearTimeout(timer);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
