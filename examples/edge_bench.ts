/**
 * Measures the edge example (`examples/edge.ts`): cold start (process start to the first answer)
 * and resident memory (after the model is loaded, and after requests), for the three ways it can
 * start: from a local checkout, by URL with Deno's module cache warm, and by URL with an empty
 * cache (a first deployment); then the memory and time of the worst requests the request limits
 * admit, under a bounded hostile load. Linux only (reads `/proc/PID/status`). Prints Markdown
 * tables.
 *
 * `deno run --allow-run --allow-read --allow-write --allow-env --allow-net=127.0.0.1 examples/edge_bench.ts [--runs=5] [--rounds=5] [--only=limits]`
 * @module
 */
import { startStaticServer } from "../tests/static_server.ts";
import { maxBatch, requestWork } from "./edge.ts";

const ROOT = decodeURIComponent(new URL("../", import.meta.url).pathname).replace(/\/$/, "");

/** One way of starting the edge server. */
interface Mode {
  name: string;
  /** deno arguments before the script, given the edge port. */
  args(port: number): string[];
  /** DENO_DIR for this run (default: the one this process uses, warm). */
  denoDir?(run: number): string;
}

/** Figures of one start. */
interface Sample {
  /** Wall time from spawning deno to the first answer. */
  coldStartMs: number;
  /** CPU time (user + system, all threads) the process used until then. */
  cpuMs: number;
}

function flag(name: string, fallback: string): string {
  const hit = Deno.args.find((a) => a.startsWith(`--${name}=`));
  return hit ? hit.slice(name.length + 3) : fallback;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function procStatus(pid: number): Promise<{ rss: number; hwm: number }> {
  // Through cat: Deno asks for --allow-all to read /proc directly.
  const out = await new Deno.Command("cat", { args: [`/proc/${pid}/status`] }).output();
  const text = new TextDecoder().decode(out.stdout);
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text)?.[1]);
  return { rss: kb("VmRSS") * 1024, hwm: kb("VmHWM") * 1024 };
}

/** User + system CPU time of a process so far, in ms (from /proc/PID/stat, 10 ms ticks). */
async function cpuTime(pid: number): Promise<number> {
  const out = await new Deno.Command("cat", { args: [`/proc/${pid}/stat`] }).output();
  const text = new TextDecoder().decode(out.stdout);
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

async function loadAverage(): Promise<string> {
  const out = await new Deno.Command("cat", { args: ["/proc/loadavg"] }).output();
  return new TextDecoder().decode(out.stdout).split(" ").slice(0, 3).join(" ");
}

function mib(bytes: number): string {
  return (bytes / 1048576).toFixed(1);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** `batch` sequences of [BOS] + `seqLen` random ids repeated (fixed, seeded here). */
function repeatedBody(batch: number, seqLen: number): string {
  let x = 12345;
  const rows: number[][] = [];
  for (let b = 0; b < batch; b++) {
    const r = Array.from(
      { length: seqLen },
      () => (x = (x * 1103515245 + 12345) % 2147483648) % 2047,
    );
    rows.push([2047, ...r, ...r]);
  }
  return JSON.stringify({ tokens: rows });
}

/** The study's batch: 30 sequences of 101 tokens. */
function studyBody(): string {
  return repeatedBody(30, 50);
}

const SMALL = JSON.stringify({ tokens: [2047, 5, 9, 13, 5, 9, 13] });

function spawn(mode: Mode, port: number, run: number) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-config", "--no-lock", "--no-prompt", ...mode.args(port), `--port=${port}`],
    env: { ...(mode.denoDir ? { DENO_DIR: mode.denoDir(run) } : {}), NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

async function post(port: number, body: string): Promise<Response> {
  return await fetch(`http://127.0.0.1:${port}/head-scores`, { method: "POST", body });
}

/** Starts the server and posts the small request until it answers: the cold start. */
async function coldStart(mode: Mode, run: number): Promise<Sample> {
  const port = freePort();
  const t0 = performance.now();
  const child = spawn(mode, port, run);
  const drained = Promise.all([child.stdout.cancel(), child.stderr.cancel()]);
  try {
    for (;;) {
      try {
        const res = await post(port, SMALL);
        const t1 = performance.now();
        if (res.status !== 200) throw new Error(`status ${res.status}: ${await res.text()}`);
        await res.body?.cancel();
        return { coldStartMs: t1 - t0, cpuMs: await cpuTime(child.pid) };
      } catch (e) {
        if (!(e instanceof TypeError)) throw e; // connection refused: not listening yet
        if (performance.now() - t0 > 60_000) throw new Error("no answer in 60 s");
        await new Promise((r) => setTimeout(r, 2));
      }
    }
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await drained;
  }
}

/** Memory after the model is loaded, after one small request, and after the study's batch. */
async function memory(mode: Mode) {
  const port = freePort();
  const child = spawn(mode, port, 1_000_000);
  const errDrained = child.stderr.cancel();
  const lines = await waitLoaded(child);
  try {
    await new Promise((r) => setTimeout(r, 200));
    const afterLoad = await procStatus(child.pid);
    const small = await post(port, SMALL);
    await small.body?.cancel();
    const afterSmall = await procStatus(child.pid);
    const t0 = performance.now();
    const study = await post(port, studyBody());
    const { ms } = await study.json();
    const studyMs = performance.now() - t0;
    const afterStudy = await procStatus(child.pid);
    for (let i = 0; i < 5; i++) await (await post(port, studyBody())).body?.cancel();
    const afterSix = await procStatus(child.pid);
    return { afterLoad, afterSmall, afterStudy, afterSix, studyMs, computeMs: ms as number };
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await lines.cancel().catch(() => {});
    await errDrained;
  }
}

/** Waits for edge.ts's "loaded" line; returns a reader that must be cancelled at the end. */
async function waitLoaded(child: Deno.ChildProcess) {
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (!/loaded .* ms after start/.test(seen)) {
    const { value, done } = await lines.read();
    if (done) throw new Error(`edge.ts exited before loading:\n${seen}`);
    seen += value;
  }
  return lines;
}

/**
 * Memory and time of the worst requests the limits admit (the most sequences of T tokens, for
 * short to full-context T), each posted `rounds` times after six over-limit requests (16,381
 * sequences of 3 tokens), as a hostile client would: one row per request kind.
 */
async function limits(mode: Mode, rounds: number) {
  const port = freePort();
  const child = spawn(mode, port, 2_000_000);
  const errDrained = child.stderr.cancel();
  const lines = await waitLoaded(child);
  const rowsOut: string[] = [];
  try {
    await new Promise((r) => setTimeout(r, 200));
    const afterLoad = await procStatus(child.pid);
    const hostile = JSON.stringify({ tokens: Array.from({ length: 16_381 }, () => [1, 2, 2]) });
    const t0 = performance.now();
    for (let i = 0; i < 6; i++) {
      const res = await post(port, hostile);
      if (res.status !== 400) throw new Error(`16,381 x 3 answered ${res.status}`);
      await res.body?.cancel();
    }
    const refusedMs = (performance.now() - t0) / 6;
    const afterRefused = await procStatus(child.pid);
    rowsOut.push(
      `| 16,381 x 3 (refused, 400) | - | ${refusedMs.toFixed(1)} | - | ${mib(afterRefused.rss)} | ${
        mib(afterRefused.hwm)
      } |`,
    );
    const kinds = [3, 45, 101, 255].map((T) => {
      const batch = maxBatch(T);
      return { T, batch, body: repeatedBody(batch, (T - 1) / 2) };
    });
    for (const { T, batch, body } of kinds) {
      const wall: number[] = [];
      const compute: number[] = [];
      for (let r = 0; r < rounds; r++) {
        const t1 = performance.now();
        const res = await post(port, body);
        const { ms } = await res.json();
        if (res.status !== 200) throw new Error(`${batch} x ${T} answered ${res.status}`);
        wall.push(performance.now() - t1);
        compute.push(ms);
      }
      const st = await procStatus(child.pid);
      rowsOut.push(
        `| ${batch} x ${T} | ${requestWork(batch, T)} | ${median(wall).toFixed(0)} | ${
          median(compute).toFixed(0)
        } | ${mib(st.rss)} | ${mib(st.hwm)} |`,
      );
    }
    // Then all of them in turn, again and again: memory must stay bounded.
    const cycles: string[] = [];
    for (let c = 0; c < rounds; c++) {
      for (const { body } of kinds) await (await post(port, body)).body?.cancel();
      const st = await procStatus(child.pid);
      cycles.push(`${mib(st.rss)} (peak ${mib(st.hwm)})`);
    }
    return { afterLoad, rows: rowsOut, cycles };
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await lines.cancel().catch(() => {});
    await errDrained;
  }
}

/** The example run from this checkout with the permissions its docs give. */
const LOCAL_CHECKOUT: Mode = {
  name: "local checkout",
  args: (p) => [
    `--allow-net=127.0.0.1:${p}`,
    `--allow-read=${ROOT}/backend/wasm,${ROOT}/weights/induction-toy`,
    `${ROOT}/examples/edge.ts`,
  ],
};

async function printLimits(rounds: number): Promise<void> {
  const m = await limits(LOCAL_CHECKOUT, rounds);
  console.log(
    `\nThe limits' worst requests (local checkout; RSS after load ${mib(m.afterLoad.rss)} MiB; ` +
      `${rounds} of each in turn):\n`,
  );
  console.log(
    "| request (batch x T) | work | request, ms (median) | compute, ms (median) | RSS after, MiB | " +
      "peak (VmHWM), MiB |",
  );
  console.log("| --- | --- | --- | --- | --- | --- |");
  for (const row of m.rows) console.log(row);
  console.log(`\nRSS after each round of all four in turn, MiB: ${m.cycles.join(", ")}`);
}

if (import.meta.main) {
  const runs = Number(flag("runs", "5"));
  const rounds = Number(flag("rounds", "5"));
  if (flag("only", "") === "limits") {
    console.log(`cpus: ${navigator.hardwareConcurrency}; load average: ${await loadAverage()}`);
    await printLimits(rounds);
    Deno.exit(0);
  }
  const files = await startStaticServer();
  const host = `127.0.0.1:${files.port}`;
  const tmp = await Deno.makeTempDir({ prefix: "edge-bench-" });
  const warmDir = `${tmp}/warm`;
  // For scale: the same start-up and request with a handler that loads nothing.
  const baseline = `${tmp}/baseline.ts`;
  await Deno.writeTextFile(
    baseline,
    `const port = Number(Deno.args[0].slice(7));
Deno.serve({ port, hostname: "127.0.0.1", onListen() {
  console.log("baseline: loaded 0 ms after start");
} }, async (req) => new Response(JSON.stringify({ ms: 0, n: (await req.text()).length })));
`,
  );
  const modes: Mode[] = [
    {
      name: "baseline: Deno.serve, no library",
      args: (p) => [`--allow-net=127.0.0.1:${p}`, baseline],
      denoDir: () => warmDir,
    },
    { ...LOCAL_CHECKOUT, denoDir: () => warmDir },
    {
      name: "by URL, module cache warm",
      args: (p) => [
        `--allow-net=127.0.0.1:${p},${host}`,
        `--allow-import=${host}`,
        `${files.origin}/examples/edge.ts`,
      ],
      denoDir: () => warmDir,
    },
    {
      name: "by URL, empty module cache",
      args: (p) => [
        `--allow-net=127.0.0.1:${p},${host}`,
        `--allow-import=${host}`,
        `${files.origin}/examples/edge.ts`,
      ],
      denoDir: (run) => `${tmp}/fresh-${run}`,
    },
  ];
  try {
    const version = (await new Deno.Command(Deno.execPath(), { args: ["--version"] }).output())
      .stdout;
    console.log(`deno: ${new TextDecoder().decode(version).split("\n")[0]}`);
    console.log(
      `cpus: ${navigator.hardwareConcurrency}; load average: ${await loadAverage()}; ` +
        `runs per mode: ${runs} (median, min-max)\n`,
    );
    // Warm the shared cache once (not measured).
    for (const mode of modes.slice(0, 3)) await coldStart(mode, 0);
    console.log(
      "| start | cold start to first answer, ms | CPU time until then, ms | RSS after load, MiB | " +
        "after a small request | after the study's 30x101 batch | peak (VmHWM) | " +
        "30x101 request, ms |",
    );
    console.log("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (const mode of modes) {
      const samples: number[] = [];
      const cpu: number[] = [];
      for (let r = 0; r < runs; r++) {
        const sample = await coldStart(mode, r);
        samples.push(sample.coldStartMs);
        cpu.push(sample.cpuMs);
      }
      const m = await memory(mode);
      console.log(
        `| ${mode.name} | ${median(samples).toFixed(0)} (${Math.min(...samples).toFixed(0)}-${
          Math.max(...samples).toFixed(0)
        }) | ${median(cpu).toFixed(0)} | ${mib(m.afterLoad.rss)} | ${mib(m.afterSmall.rss)} | ${
          mib(m.afterStudy.rss)
        } ` +
          `(${mib(m.afterSix.rss)} after 6) | ${mib(m.afterSix.hwm)} | ${m.studyMs.toFixed(0)} ` +
          `(compute ${m.computeMs.toFixed(0)}) |`,
      );
    }
    await printLimits(rounds);
  } finally {
    await files.close();
    await Deno.remove(tmp, { recursive: true });
  }
}
