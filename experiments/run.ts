/**
 * `deno task experiments`: reproduces "How to interpret GPT2-small" on one model and writes
 * `results.json` (every number) and `report.html` (one self-contained page) into a folder.
 *
 * ```sh
 * deno task experiments                       # GPT-2 small if cached, else the embedded model
 * deno task experiments --model gpt2 --out out/gpt2
 * deno task experiments --model induction-toy --seq-len 20 --batch 4
 * deno task experiments --model gpt2 --sae gpt2-small-res-jb blocks.6.hook_resid_pre
 * deno task experiments --model kjv-small     # the embedded text model (it has no induction heads)
 * ```
 *
 * Exit codes: 0 done; 1 the run failed (the model could not be found, ...); 2 bad flags.
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";
import denoJson from "../deno.json" with { type: "json" };
import { renderReport } from "./report/render.ts";
import type { ExperimentResults, HeadRef } from "./report/schema.ts";
import { LensError } from "../core/errors.ts";
import { familyName } from "../families/registry.ts";
import { HookedTransformer } from "../model/hooked_transformer.ts";
import { EMBEDDED_MODEL, isModelCached, resolveModel } from "../io/resolve.ts";
import { formatSeconds, Reporter } from "./progress.ts";
import { runStudy, STUDY_STEPS } from "./study.ts";
import { type Device, DEVICES } from "../backend/select.ts";
import { SAE } from "../sae/mod.ts";

/** The command's help text. */
export const USAGE = `deno task experiments [flags]

Reproduces "How to interpret GPT2-small" (repeated tokens, induction and previous-token heads,
MLP patching, the K-composition circuit), adds a direct logit attribution and a logit lens of
the repeated tokens, and writes results.json and report.html.

Flags:
  --model NAME|PATH     gpt2, gpt2-medium, ..., an owner/name hub id, a local folder or a URL,
                        or an embedded model: induction-toy (the study's mechanisms) or
                        kjv-small (a text model trained on the King James Bible, which has no
                        induction heads). Default: gpt2 when its files are already in the
                        Hugging Face cache, else induction-toy.
  --seq-len N           length of the random segment; sequences are 1 + 2N tokens (default 50)
  --batch N             number of sequences (default 30)
  --seed N              seed of the random tokens (default 0)
  --out DIR             output folder (default out/experiments)
  --prev-head L.H       previous-token head to plot and compose (default: the best-scoring
                        one in a layer before the induction head)
  --induction-head L.H  induction head to plot and compose (default: the best-scoring one)
  --top-pairs K         K-composition table: top K previous-token heads x top K induction
                        heads (default 3)
  --device D            wasm (default), webgpu, or auto (a hardware WebGPU adapter if any)
  --sae RELEASE ID      add a section on a sparse autoencoder of a SAELens release (e.g.
                        --sae gpt2-small-res-jb blocks.6.hook_resid_pre): its features most
                        active on the repeated half and their attribution to the correct
                        token's logit. --sae PATH loads a SAELens folder (or URL) instead
  -h, --help            this text

Exit codes: 0 done, 1 the run failed, 2 bad flags.
`;

/** The parsed command line. */
export interface CliOptions {
  /** `--model`, when given. */
  model?: string;
  /** `--seq-len`. */
  seqLen: number;
  /** `--batch`. */
  batch: number;
  /** `--seed`. */
  seed: number;
  /** `--out`. */
  out: string;
  /** `--prev-head`, when given. */
  prevHead?: HeadRef;
  /** `--induction-head`, when given. */
  inductionHead?: HeadRef;
  /** `--top-pairs`. */
  topPairs: number;
  /** `--device`, when given. */
  device?: Device;
  /** `--sae RELEASE ID` (`id` set) or `--sae PATH` (a SAELens folder or URL). */
  sae?: { name: string; id?: string };
  /** `--help`. */
  help: boolean;
}

/** A bad command line: the message says what and how to fix it (exit code 2). */
export class UsageError extends Error {
  /** @param message What was wrong. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The flags, for `node:util`'s `parseArgs`. */
const FLAGS = {
  model: { type: "string" },
  "seq-len": { type: "string" },
  batch: { type: "string" },
  seed: { type: "string" },
  out: { type: "string" },
  "prev-head": { type: "string" },
  "induction-head": { type: "string" },
  "top-pairs": { type: "string" },
  device: { type: "string" },
  sae: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const satisfies NonNullable<ParseArgsConfig["options"]>;
type Flag = keyof typeof FLAGS;

function positiveInt(flag: string, v: string, max = 1_000_000): number {
  if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > max) {
    throw new UsageError(`--${flag} takes a whole number from 1 to ${max}, got "${v}"`);
  }
  return Number(v);
}

function headRef(flag: string, v: string): HeadRef {
  const m = v.match(/^(\d+)\.(\d+)$/);
  if (!m) {
    throw new UsageError(`--${flag} takes LAYER.HEAD, e.g. 5.5 (zero-based), got "${v}"`);
  }
  return [Number(m[1]), Number(m[2])];
}

/**
 * Parses the flags (both `--flag value` and `--flag=value`); throws {@linkcode UsageError}.
 *
 * @example
 * ```ts
 * import { parseCliArgs } from "./run.ts";
 * parseCliArgs(["--seq-len", "20", "--prev-head=0.2"]).prevHead; // [0, 2]
 * ```
 */
export function parseCliArgs(args: string[]): CliOptions {
  const opts: CliOptions = {
    seqLen: 50,
    batch: 30,
    seed: 0,
    out: "out/experiments",
    topPairs: 3,
    help: false,
  };
  // parseArgs splits the words (`--flag value`, `--flag=value`, `-h`); not in strict mode, which
  // would refuse `--seed -1` (a value starting with a dash) and word its own errors. The checks
  // below give this command's messages.
  const { tokens } = parseArgs({
    args,
    options: FLAGS,
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  const seen = new Set<Flag>();
  let previous: (typeof tokens)[number] | undefined;
  for (const token of tokens) {
    const after = previous;
    previous = token;
    if (token.kind === "positional") {
      // `--sae RELEASE ID`: the word right after --sae's value is the SAE's id
      if (after?.kind === "option" && after.name === "sae" && opts.sae?.id === undefined) {
        opts.sae!.id = token.value;
        continue;
      }
      throw new UsageError(`unexpected argument "${token.value}" (flags start with --)`);
    }
    if (token.kind === "option-terminator") {
      throw new UsageError(`unexpected argument "--" (flags start with --)`);
    }
    if (!Object.hasOwn(FLAGS, token.name)) throw new UsageError(`unknown flag ${token.rawName}`);
    const name = token.name as Flag;
    if (name === "help") {
      if (token.value !== undefined) throw new UsageError(`${token.rawName} takes no value`);
      opts.help = true;
      continue;
    }
    if (seen.has(name)) throw new UsageError(`--${name} is given twice`);
    seen.add(name);
    // `--out --batch 4`: parseArgs takes `--batch` as the value; it is the next flag.
    const value = token.value;
    if (value === undefined || (!token.inlineValue && value.startsWith("--"))) {
      throw new UsageError(`--${name} needs a value`);
    }
    switch (name) {
      case "model":
        if (!value.trim()) throw new UsageError("--model needs a name or a path");
        opts.model = value;
        break;
      case "seq-len":
        opts.seqLen = positiveInt(name, value);
        break;
      case "batch":
        opts.batch = positiveInt(name, value);
        break;
      case "seed":
        if (!/^-?\d+$/.test(value) || !Number.isSafeInteger(Number(value))) {
          throw new UsageError(`--seed takes a whole number, got "${value}"`);
        }
        opts.seed = Number(value);
        break;
      case "out":
        if (!value.trim()) throw new UsageError("--out needs a folder");
        opts.out = value;
        break;
      case "prev-head":
        opts.prevHead = headRef(name, value);
        break;
      case "induction-head":
        opts.inductionHead = headRef(name, value);
        break;
      case "top-pairs":
        opts.topPairs = positiveInt(name, value, 50);
        break;
      case "device":
        if (!(DEVICES as readonly string[]).includes(value)) {
          throw new UsageError(`--device takes wasm, webgpu or auto, got "${value}"`);
        }
        opts.device = value as Device;
        break;
      case "sae":
        if (!value.trim()) throw new UsageError("--sae needs a release and an id, or a folder");
        opts.sae = { name: value };
        break;
    }
  }
  return opts;
}

/** Which model a run uses, and the one line saying why. */
export function chooseModel(flag: string | undefined): { name: string; choice: string } {
  if (flag) return { name: flag, choice: "chosen with --model" };
  if (isModelCached("gpt2")) {
    return {
      name: "gpt2",
      choice: "GPT-2 small, found in the Hugging Face cache (no --model given)",
    };
  }
  return {
    name: EMBEDDED_MODEL,
    choice: "the embedded model, because GPT-2 small's files are not on this machine " +
      "(--model gpt2 downloads them, about 550 MB)",
  };
}

/**
 * `results.json`'s text: indented objects, with each innermost array of numbers on one line.
 */
export function resultsJson(results: ExperimentResults): string {
  return JSON.stringify(results, null, 2).replace(
    /\[\n\s*(-?[\d.eE+-]+(?:,\n\s*-?[\d.eE+-]+)*)\n\s*\]/g,
    (_, body: string) => `[${body.replace(/,\n\s*/g, ", ")}]`,
  ) + "\n";
}

/**
 * Writes files into `dir` all or nothing: each goes to a temporary name first; then each previous
 * file is set aside and the new one renamed into place (a rename within a folder is atomic). If
 * any step fails, the files already moved are put back, the temporary files are removed, and the
 * previous files are left as they were.
 */
export async function writeAtomically(dir: string, files: Record<string, string>): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const tag = `${Deno.pid}-${Date.now().toString(36)}`;
  const temps: [string, string][] = [];
  const placed: { final: string; backup: string | null }[] = [];
  try {
    for (const [i, [name, text]] of Object.entries(files).entries()) {
      // Temporary names carry no part of `name`, so they are plain files in `dir` whatever it holds.
      const tmp = `${dir}/.write-${tag}-${i}.tmp`;
      temps.push([tmp, `${dir}/${name}`]);
      await Deno.writeTextFile(tmp, text);
    }
    for (const [tmp, final] of temps) {
      const backup = await exists(final) ? `${final}.${tag}.bak` : null;
      if (backup) await Deno.rename(final, backup);
      placed.push({ final, backup });
      await Deno.rename(tmp, final);
    }
  } catch (e) {
    for (const { final, backup } of placed.reverse()) {
      if (backup) await Deno.rename(backup, final).catch(() => {});
      else await Deno.remove(final).catch(() => {});
    }
    for (const [tmp] of temps) await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  for (const { backup } of placed) if (backup) await Deno.remove(backup).catch(() => {});
}

/** Whether a file is at `path`; a folder there is an error (it cannot be replaced by a file). */
async function exists(path: string): Promise<boolean> {
  try {
    if ((await Deno.lstat(path)).isDirectory) throw new Error(`${path} is a folder, not a file`);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

function mb(text: string): string {
  const bytes = new TextEncoder().encode(text).length;
  return bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${Math.ceil(bytes / 1e3)} kB`;
}

/** Runs the command; returns the exit code. */
export async function main(args: string[], reporter?: Reporter): Promise<number> {
  let opts: CliOptions;
  try {
    opts = parseCliArgs(args);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`error: ${e.message}\nRun with --help for the flags.`);
    return 2;
  }
  if (opts.help) {
    console.log(USAGE);
    return 0;
  }
  // Loading the model is step 1; the study numbers the rest; with --sae, its load and section.
  const rep = reporter ?? new Reporter(1 + STUDY_STEPS + (opts.sae ? 2 : 0));
  const startedAt = performance.now();
  try {
    const { name, choice } = chooseModel(opts.model);
    rep.line(`model: ${name} — ${choice}`);

    const t0 = performance.now();
    const files = await resolveModel(name);
    const model = await HookedTransformer.fromTensors(files.config, files.tensors, {
      name: files.name,
      tokenizer: files.tokenizer,
      checkFinite: true, // a NaN weight would turn the whole report into NaN: say which one
      device: opts.device,
    });
    const loadSeconds = (performance.now() - t0) / 1000;
    const earlierTimings = [{ step: "load", label: "Load the model", seconds: loadSeconds }];
    const cfg = model.cfg;
    rep.step(
      "load model",
      loadSeconds,
      `${familyName(cfg)}, ${cfg.nLayers} layers x ${cfg.nHeads} heads, d_model ${cfg.dModel}, ` +
        `d_vocab ${cfg.dVocab}, on ${cfg.device}; ` +
        files.source,
    );

    // Flags that depend on the model's shape.
    const maxSeq = Math.floor((cfg.nCtx - 1) / 2);
    const bad = (msg: string) => {
      console.error(`error: ${msg}\nRun with --help for the flags.`);
      return 2;
    };
    if (opts.seqLen > maxSeq) {
      return bad(
        `--seq-len ${opts.seqLen} is too long for ${name}: 1 + 2 x seq_len tokens must fit its ` +
          `context of ${cfg.nCtx}, so at most ${maxSeq}`,
      );
    }
    for (
      const [flag, h] of [["prev-head", opts.prevHead], ["induction-head", opts.inductionHead]]
    ) {
      const ref = h as HeadRef | undefined;
      if (ref && (ref[0] >= cfg.nLayers || ref[1] >= cfg.nHeads)) {
        return bad(
          `--${flag} ${ref.join(".")} is not a head of ${name} (layers 0..${cfg.nLayers - 1}, ` +
            `heads 0..${cfg.nHeads - 1})`,
        );
      }
    }
    if (opts.prevHead && opts.inductionHead && opts.prevHead[0] >= opts.inductionHead[0]) {
      rep.line(
        `note: the previous-token head ${opts.prevHead.join(".")} is not in an earlier layer ` +
          `than the induction head ${opts.inductionHead.join(".")}, so it cannot K-compose with it`,
      );
    }

    // The SAE before the study: a missing or mismatched one fails in seconds, not at the end.
    let sae: { sae: SAE; source: string } | undefined;
    if (opts.sae) {
      const t1 = performance.now();
      const { name: where, id } = opts.sae;
      const loaded = id !== undefined
        ? await SAE.fromPretrained(where, id, { backend: model.backend })
        : await SAE.loadFromDisk(where, { backend: model.backend });
      // one short spliced pass: the hook point exists and the widths agree
      await model.runWithSaes([[cfg.bosTokenId, cfg.bosTokenId]], {
        saes: [loaded],
        returnType: "logits",
      });
      const seconds = (performance.now() - t1) / 1000;
      sae = { sae: loaded, source: id !== undefined ? `${where} / ${id}` : where };
      earlierTimings.push({ step: "load-sae", label: "Load the SAE", seconds });
      rep.step(
        "load SAE",
        seconds,
        `${sae.source}: ${loaded.cfg.architecture}, d_sae ${loaded.cfg.dSae}, reads ` +
          loaded.cfg.hookName,
      );
    }

    const results = await runStudy(model, {
      seqLen: opts.seqLen,
      batch: opts.batch,
      seed: opts.seed,
      prevHead: opts.prevHead,
      inductionHead: opts.inductionHead,
      topPairs: opts.topPairs,
      model: { name, source: files.source, choice },
      library: { name: denoJson.name, version: denoJson.version },
      earlierTimings,
      sae,
      startedAt,
      reporter: rep,
    });

    // Render both before writing either, then write both atomically.
    const json = resultsJson(results);
    const html = renderReport(results);
    const dir = opts.out.replace(/\/+$/, "") || ".";
    await writeAtomically(dir, { "results.json": json, "report.html": html });
    rep.line(
      `wrote ${dir}/results.json (${mb(json)}) and ${dir}/report.html (${mb(html)}) in ${
        formatSeconds((performance.now() - startedAt) / 1000)
      }; open the report in a browser`,
    );
    return 0;
  } catch (e) {
    if (e instanceof LensError) {
      console.error(`error: ${e.message}`);
      return 1;
    }
    throw e;
  }
}

if (import.meta.main) {
  let code = 1;
  try {
    code = await main(Deno.args);
  } catch (e) {
    // A bug, not a user error: keep the stack.
    console.error("error:", e);
  }
  // Exit explicitly: kernel worker threads must not keep the process alive.
  Deno.exit(code);
}
