/**
 * The design's rules, checked: no import cycle anywhere in the module graph (`deno info --json`),
 * and no byte-offset arithmetic or raw kernel calls outside the kernel layer (`backend/wasm/`):
 * the model, the families, the analyses and the experiments talk to the `Backend` interface.
 */
import assert from "node:assert/strict";
import { fromFileUrl } from "./path.ts";

const ROOT = new URL("../", import.meta.url);

interface InfoModule {
  specifier: string;
  dependencies?: { code?: { specifier: string }; type?: { specifier: string } }[];
}

async function moduleGraph(entry: string): Promise<Map<string, string[]>> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", entry],
    cwd: fromFileUrl(ROOT),
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as { modules: InfoModule[] };
  const local = (s: string) => s.startsWith(ROOT.href);
  const graph = new Map<string, string[]>();
  for (const m of info.modules) {
    if (!local(m.specifier)) continue;
    const deps = (m.dependencies ?? []).flatMap((d) =>
      [d.code?.specifier, d.type?.specifier].filter((s): s is string => !!s && local(s))
    );
    graph.set(m.specifier, deps);
  }
  return graph;
}

/** A cycle in the graph, as a list of modules, or null. */
function findCycle(graph: Map<string, string[]>): string[] | null {
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const visit = (m: string): string[] | null => {
    if (state.get(m) === "done") return null;
    if (state.get(m) === "open") return [...stack.slice(stack.indexOf(m)), m];
    state.set(m, "open");
    stack.push(m);
    for (const d of graph.get(m) ?? []) {
      const c = visit(d);
      if (c) return c;
    }
    stack.pop();
    state.set(m, "done");
    return null;
  };
  for (const m of graph.keys()) {
    const c = visit(m);
    if (c) return c;
  }
  return null;
}

Deno.test("no import cycle in the library, the experiments or the bench", async () => {
  for (const entry of ["mod.ts", "experiments/run.ts", "bench/run.ts"]) {
    const graph = await moduleGraph(entry);
    assert.ok(graph.size > 10, `${entry}: the graph was read (${graph.size} local modules)`);
    const cycle = findCycle(graph);
    assert.equal(
      cycle,
      null,
      `${entry}: import cycle ${cycle?.map((s) => s.slice(ROOT.href.length)).join(" -> ")}`,
    );
  }
});

Deno.test("byte offsets and raw kernels stay inside backend/wasm/", async () => {
  // What raw memory work looks like: a float-size constant, pointer fields and shifts, byte
  // offsets, the raw kernels class, arena marks. (core/ and io/ convert file bytes, which is
  // their job; they never see the backend's memory.)
  const forbidden = /\bF32\b|\.ptr\b|<< 2\b|byteOffset|\bKernels\b|\.mark\(\)|\.release\(/;
  const offenders: string[] = [];
  for (const dir of ["model", "families", "analysis", "experiments"]) {
    for await (const f of Deno.readDir(new URL(`${dir}/`, ROOT))) {
      if (!f.isFile || !f.name.endsWith(".ts")) continue;
      const path = `${dir}/${f.name}`;
      const lines = (await Deno.readTextFile(new URL(path, ROOT))).split("\n");
      lines.forEach((line, i) => {
        if (forbidden.test(line)) offenders.push(`${path}:${i + 1}: ${line.trim()}`);
      });
    }
  }
  assert.deepEqual(offenders, [], "raw memory work outside the kernel layer");
});
