/**
 * Turns a model name into its files: an embedded model (`induction-toy`, `kjv-small`), an alias (`gpt2`, `pythia-70m`,
 * ...) or hub repo id (downloaded into the Hugging Face cache), a local folder, or an http(s) URL
 * of a folder.
 *
 * Permissions are only those each kind of source needs: an embedded model reads nothing but its
 * own files (by `fetch` next to this module, so it also works when the library is imported by URL
 * or bundled for the browser); a folder needs `--allow-read`; a URL needs `--allow-net`; hub names need `--allow-net`,
 * read and write access to the cache and, to honour `HF_*` variables, `--allow-env`.
 * @module
 */
import { ConfigError, ModelNotFoundError } from "../core/errors.ts";
import { checkOptions } from "../core/options.ts";
import type { TokenizerFiles } from "../tokenizer/bpe.ts";
import { readTokenizerFiles, tokenizerForModel } from "../tokenizer/for_model.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { cacheView, fetchHubFiles, type HubOptions, hubSettings } from "./hub.ts";
import {
  checkTimeoutMs,
  DEFAULT_DOWNLOAD_TIMEOUT_MS,
  IdleTimeout,
  readAllIdle,
} from "./idle_timeout.ts";
import { ProgressBar } from "../core/progress.ts";
import { parseSafetensors } from "./safetensors.ts";
import { parseShardIndex, shardedTensorSource } from "./sharded.ts";
import type { TensorSource } from "./tensor_source.ts";
import { readTorchCheckpoint, type TorchBinLimits } from "./torch_bin.ts";

/** A model's files, loaded into memory, whatever their source. */
export interface ModelFiles {
  /** The name it was asked for: "gpt2", "induction-toy", a path or a URL. */
  name: string;
  /** The parsed `config.json`. */
  config: Record<string, unknown>;
  /**
   * The weights, decoded on demand, whatever their format: `model.safetensors`, a sharded
   * `model.safetensors.index.json`, `pytorch_model.bin`, or a sharded `pytorch_model.bin.index.json`
   * (looked for in that order, as transformers does).
   */
  tensors: TensorSource;
  /** The weight files read: one file, or an index followed by its shards. */
  weightFiles: string[];
  /** The bytes of each of `weightFiles`, as read (the tensors are views of them, not copies). */
  weightBytes: Uint8Array[];
  /**
   * The tokenizer: from the source's `tokenizer.json` or `vocab.json` + `merges.txt`, else GPT-2's
   * r50k_base when the config is GPT-2's (`model_type` gpt2, 50257 ids); undefined otherwise
   * (induction-toy takes token ids only).
   */
  tokenizer?: Tokenizer;
  /** One line saying where the files came from. */
  source: string;
}

/** How to resolve and download: the hub's options, and a few for any source. All optional. */
export interface ResolveOptions extends HubOptions {
  /** Hub branch, tag or commit. Default "main". */
  revision?: string;
  /** Progress bars on stderr; default when stderr is a terminal. */
  progress?: boolean;
  /** fetch to use (tests, custom agents). */
  fetch?: typeof fetch;
  /**
   * Budgets for reading `pytorch_model.bin` files (pickle values, float32 bytes as a multiple of
   * the file's size); the defaults fit every real checkpoint, see {@link TorchBinLimits}.
   */
  torchBinLimits?: TorchBinLimits;
}

/** Every option name of {@link ResolveOptions} (checked against the type at compile time). */
export const RESOLVE_OPTION_KEYS: readonly string[] = Object.keys(
  {
    revision: true,
    endpoint: true,
    token: true,
    cacheDir: true,
    offline: true,
    downloadTimeoutMs: true,
    progress: true,
    fetch: true,
    torchBinLimits: true,
  } satisfies Record<keyof ResolveOptions, true>,
);

/**
 * Short names and their hub repositories: TransformerLens's names for GPT-2, Pythia (GPT-NeoX) and
 * Qwen2.5, and the official ids of the modern small models (hub ids resolve without an alias too;
 * listing them names them in messages). `meta-llama/Llama-3.2-1B` and the Gemma models are gated:
 * accept their licence on the hub and give a token (`token` or `HF_TOKEN`, sent to the hub only).
 *
 * @example
 * ```ts
 * import { MODEL_ALIASES } from "./resolve.ts";
 * MODEL_ALIASES["gpt2-small"]; // "openai-community/gpt2"
 * ```
 */
export const MODEL_ALIASES: Record<string, string> = {
  "gpt2": "openai-community/gpt2",
  "gpt2-small": "openai-community/gpt2",
  "gpt2-medium": "openai-community/gpt2-medium",
  "gpt2-large": "openai-community/gpt2-large",
  "gpt2-xl": "openai-community/gpt2-xl",
  "distilgpt2": "distilbert/distilgpt2",
  // Pythia (GPT-NeoX); its training checkpoints are hub branches: revision "step3000" etc.
  ...Object.fromEntries(
    ["70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b"].flatMap((size) => [
      [`pythia-${size}`, `EleutherAI/pythia-${size}`],
      [`pythia-${size}-deduped`, `EleutherAI/pythia-${size}-deduped`],
    ]),
  ),
  "pythia-14m": "EleutherAI/pythia-14m",
  "pythia-31m": "EleutherAI/pythia-31m",
  "pythia": "EleutherAI/pythia-70m",
  "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B",
  "Qwen/Qwen2.5-0.5B": "Qwen/Qwen2.5-0.5B",
  "HuggingFaceTB/SmolLM2-135M": "HuggingFaceTB/SmolLM2-135M",
  "HuggingFaceTB/SmolLM2-360M": "HuggingFaceTB/SmolLM2-360M",
  "meta-llama/Llama-3.2-1B": "meta-llama/Llama-3.2-1B",
  // Gemma 2 and Gemma 3 (text), TransformerLens's names; gated on the hub (accept the licence,
  // give a token). Their checkpoints are bf16. Gemma-2-2B and larger exceed wasm32 in float32
  // (bench/MEMORY.md).
  "gemma-2-2b": "google/gemma-2-2b",
  "gemma-2-2b-it": "google/gemma-2-2b-it",
  "gemma-2-9b": "google/gemma-2-9b",
  "gemma-3-270m": "google/gemma-3-270m",
  "gemma-3-1b-pt": "google/gemma-3-1b-pt",
  "gemma-3-1b-it": "google/gemma-3-1b-it",
};

/** The name of the embedded model for the study's mechanisms (token ids only, no tokenizer). */
export const EMBEDDED_MODEL = "induction-toy";

/**
 * The models shipped inside the library, in `weights/<name>/`, and the files each has: the
 * study's `induction-toy` (token ids only) and `kjv-small`, a GPT-2-architecture text model with
 * its own tokenizer (`tokenizer.json`), stored in float16 and widened to float32 on load.
 *
 * @example
 * ```ts
 * import { EMBEDDED_MODELS } from "./resolve.ts";
 * Object.keys(EMBEDDED_MODELS); // ["induction-toy", "kjv-small"]
 * ```
 */
export const EMBEDDED_MODELS: Readonly<Record<string, { tokenizer: boolean }>> = {
  "induction-toy": { tokenizer: false },
  "kjv-small": { tokenizer: true },
};

/**
 * The weight files a model may have, in the order transformers prefers them: one safetensors
 * file, sharded safetensors, one PyTorch file, sharded PyTorch files.
 *
 * @example
 * ```ts
 * import { WEIGHT_FILES } from "./resolve.ts";
 * WEIGHT_FILES[0]; // "model.safetensors"
 * ```
 */
export const WEIGHT_FILES = [
  "model.safetensors",
  "model.safetensors.index.json",
  "pytorch_model.bin",
  "pytorch_model.bin.index.json",
] as const;

type WeightFile = typeof WEIGHT_FILES[number];

const TOKENIZER_GROUPS = [["tokenizer.json"], ["vocab.json", "merges.txt"]];
const URL_SCHEME = /^(https?|file):\/\//i;

type Kind =
  | { kind: "embedded"; name: string }
  | { kind: "url"; url: string }
  | { kind: "dir"; path: string }
  | { kind: "hub"; repoId: string };

function looksLikePath(s: string): boolean {
  return s.startsWith("/") || s.startsWith("./") || s.startsWith("../") || s === "." ||
    s === ".." || s.startsWith("~/") || /^[A-Za-z]:[\\/]/.test(s) || s.includes("\\") ||
    s.split("/").length > 2;
}

function canRead(path: string): boolean {
  try {
    return Deno.permissions.querySync({ name: "read", path }).state === "granted";
  } catch {
    return false;
  }
}

function isModelDir(path: string): boolean {
  if (!canRead(path)) return false;
  try {
    return Deno.statSync(`${path}/config.json`).isFile;
  } catch {
    return false;
  }
}

function classify(name: string): Kind {
  if (Object.hasOwn(EMBEDDED_MODELS, name)) return { kind: "embedded", name };
  if (URL_SCHEME.test(name)) return { kind: "url", url: name.replace(/\/+$/, "") };
  if (looksLikePath(name)) return { kind: "dir", path: name };
  // A folder in the working directory wins over a hub name, as in transformers.
  if (isModelDir(name)) return { kind: "dir", path: name };
  const alias = MODEL_ALIASES[name];
  if (alias) return { kind: "hub", repoId: alias };
  if (/^[^/]+\/[^/]+$/.test(name)) return { kind: "hub", repoId: name };
  throw new ModelNotFoundError(
    `unknown model "${name}": use ${
      Object.keys(EMBEDDED_MODELS).join(" or ")
    } (embedded), one of ` +
      `${Object.keys(MODEL_ALIASES).filter((a) => !a.startsWith("pythia")).join(", ")}, ` +
      `pythia-70m ... pythia-12b (and -deduped), a hub repository id such as ` +
      `openai-community/gpt2, a local folder holding config.json and the weights ` +
      `(model.safetensors, pytorch_model.bin, or their sharded index), or an http(s) URL of such ` +
      `a folder`,
  );
}

/**
 * Finds and loads a model's files.
 *
 * @example
 * ```ts
 * import { resolveModel } from "./resolve.ts";
 * const toy = await resolveModel("induction-toy"); // embedded: no download, no permissions
 * toy.config.n_layer; // 3
 * const kjv = await resolveModel("kjv-small"); // embedded, with its tokenizer
 * kjv.tokenizer?.encode("And God said"); // [295, 394, 380]
 * ```
 *
 * @example A hub model (needs the network the first time; cached in ~/.cache/huggingface/hub)
 * ```ts ignore
 * import { resolveModel } from "./resolve.ts";
 * const gpt2 = await resolveModel("gpt2");
 * gpt2.tokenizer?.encode("Hello world"); // [15496, 995]
 * ```
 */
export async function resolveModel(
  nameOrPath: string,
  opts: ResolveOptions = {},
): Promise<ModelFiles> {
  checkOptions(opts, RESOLVE_OPTION_KEYS, "resolveModel");
  const what = classify(nameOrPath);
  const http: HttpOptions = {
    fetch: opts.fetch ?? fetch,
    timeoutMs: opts.downloadTimeoutMs === undefined
      ? DEFAULT_DOWNLOAD_TIMEOUT_MS
      : checkTimeoutMs(opts.downloadTimeoutMs, "downloadTimeoutMs"),
  };
  const limits = opts.torchBinLimits ?? {};
  let files: Loaded;
  switch (what.kind) {
    case "embedded": {
      const base = new URL(`../weights/${what.name}/`, import.meta.url);
      // Quiet by default: its files are next to this module, not a real download.
      const progress = opts.progress ?? false;
      const { tokenizer } = EMBEDDED_MODELS[what.name];
      files = await fromUrl(base.href.replace(/\/$/, ""), http, tokenizer, progress, limits);
      files.source = `embedded ${what.name}`;
      break;
    }
    case "url":
      files = await fromUrl(what.url, http, true, opts.progress, limits);
      break;
    case "dir":
      files = await fromDir(what.path, limits);
      break;
    case "hub":
      files = await fromHub(what.repoId, opts);
      break;
  }
  const tokenizer = await tokenizerForModel(files.config, files.tokenizerFiles, files.source);
  const { config, source, weights } = files;
  return {
    name: nameOrPath,
    config,
    tensors: weights.tensors,
    weightFiles: weights.files,
    weightBytes: weights.bytes,
    tokenizer,
    source,
  };
}

/**
 * Whether a model can be loaded without any download: the embedded model, a local folder with a
 * config and weights, or a hub name whose config and weights (every shard, when sharded) are in
 * the cache at the revision. URLs are never "cached". Never makes a request and never throws.
 *
 * @example
 * ```ts
 * import { isModelCached } from "./resolve.ts";
 * const model = isModelCached("gpt2") ? "gpt2" : "induction-toy";
 * ```
 */
export function isModelCached(
  name: string,
  opts: Pick<ResolveOptions, "revision" | "cacheDir"> = {},
): boolean {
  try {
    const what = classify(name);
    if (what.kind === "embedded") return true;
    if (what.kind === "url") return false;
    let has: (file: string) => boolean;
    let readText: (file: string) => string;
    if (what.kind === "dir") {
      has = (f) => Deno.statSync(`${what.path}/${f}`).isFile;
      readText = (f) => Deno.readTextFileSync(`${what.path}/${f}`);
    } else {
      const view = cacheView(hubSettings(opts).cacheDir, what.repoId, opts.revision ?? "main");
      has = (f) => view.state(f) === "present";
      readText = (f) => Deno.readTextFileSync(view.pathOf(f));
    }
    const exists = (f: string) => {
      try {
        return has(f);
      } catch {
        return false;
      }
    };
    if (!exists("config.json")) return false;
    const format = WEIGHT_FILES.find(exists);
    if (format === undefined) return false;
    if (!format.endsWith(".index.json")) return true;
    return parseShardIndex(readText(format), format).shardFiles.every(exists);
  } catch {
    return false;
  }
}

/** What every kind of source produces before the tokenizer is chosen. */
interface Loaded {
  config: Record<string, unknown>;
  source: string;
  weights: Weights;
  tokenizerFiles: TokenizerFiles;
}

/** Parsed weights, and the files they came from. */
interface Weights {
  tensors: TensorSource;
  files: string[];
  bytes: Uint8Array[];
}

/**
 * Parses the weight file `file` (already read) and, for an index, the shards `readShards` returns
 * (in the order asked).
 */
async function openWeights(
  file: WeightFile,
  bytes: Uint8Array,
  readShards: (files: string[]) => Promise<Uint8Array[]>,
  limits: TorchBinLimits,
): Promise<Weights> {
  const parse = file.startsWith("pytorch_model")
    ? (b: Uint8Array, f: string) => readTorchCheckpoint(b, f, limits)
    : parseSafetensors;
  if (!file.endsWith(".index.json")) {
    return { tensors: parse(bytes, file), files: [file], bytes: [bytes] };
  }
  const index = parseShardIndex(new TextDecoder().decode(bytes), file);
  const shardBytes = await readShards(index.shardFiles);
  const shards = new Map(index.shardFiles.map((f, i) => [f, parse(shardBytes[i], f)]));
  return {
    tensors: shardedTensorSource(index, shards),
    files: [file, ...index.shardFiles],
    bytes: [bytes, ...shardBytes],
  };
}

async function fromHub(repoId: string, opts: ResolveOptions): Promise<Loaded> {
  const settings = hubSettings(opts);
  const revision = opts.revision ?? "main";
  const common = { progress: opts.progress, fetch: opts.fetch };
  const snap = await fetchHubFiles(settings, repoId, {
    ...common,
    revision,
    required: ["config.json"],
    optional: TOKENIZER_GROUPS,
  });
  // Later calls pin the commit the first one resolved, so every file comes from one snapshot.
  const pinned = { ...common, revision: snap.commit };
  const weightSnap = await fetchHubFiles(settings, repoId, {
    ...pinned,
    required: [],
    optional: WEIGHT_FILES.map((f) => [f]),
    oneOfOptional: true,
  });
  const file = WEIGHT_FILES.find((f) => f in weightSnap.paths)!;
  const weights = await openWeights(
    file,
    await Deno.readFile(weightSnap.paths[file]),
    async (shards) => {
      const shardSnap = await fetchHubFiles(settings, repoId, { ...pinned, required: shards });
      return await Promise.all(shards.map((f) => Deno.readFile(shardSnap.paths[f])));
    },
    opts.torchBinLimits ?? {},
  );
  const commit = snap.commit.slice(0, 7);
  const source = snap.fromCache && weightSnap.fromCache
    ? `hub cache ${snap.repoDir} (revision ${revision}, commit ${commit})`
    : `${settings.endpoint}/${repoId} (revision ${revision}, commit ${commit}), cached in ` +
      snap.repoDir;
  const readText = async (f: string) =>
    snap.paths[f] === undefined ? undefined : await Deno.readTextFile(snap.paths[f]);
  const configPath = snap.paths["config.json"];
  return {
    config: parseConfig(await Deno.readTextFile(configPath), configPath),
    weights,
    source,
    tokenizerFiles: {
      tokenizerJson: await readText("tokenizer.json"),
      vocabJson: await readText("vocab.json"),
      mergesTxt: await readText("merges.txt"),
    },
  };
}

async function fromDir(path: string, limits: TorchBinLimits): Promise<Loaded> {
  const dir = path.replace(/[\\/]+$/, "") || "/";
  /** The file's contents, or undefined when it does not exist. */
  const read = async <T>(file: string, how: (p: string) => Promise<T>): Promise<T | undefined> => {
    try {
      return await how(`${dir}/${file}`);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable) {
        throw new ModelNotFoundError(
          `cannot read ${dir}/${file}: run with --allow-read=${dir}`,
          { cause: e },
        );
      }
      throw e;
    }
  };
  const configText = await read("config.json", Deno.readTextFile);
  if (configText === undefined) throw new ModelNotFoundError(`no config.json in ${dir}`);
  const config = parseConfig(configText, `${dir}/config.json`);
  const weights = await findWeights((f) => read(f, Deno.readFile), dir, limits);
  return {
    config,
    weights,
    source: dir,
    tokenizerFiles: await readTokenizerFiles((f) => read(f, Deno.readTextFile)),
  };
}

/** How URL folders are fetched. */
interface HttpOptions {
  fetch: typeof fetch;
  /** Milliseconds without a byte after which a request is abandoned. */
  timeoutMs: number;
}

/**
 * The first weight format `read` finds (it returns undefined for a file that is not there),
 * opened with its shards: the folder or URL `where` is searched in {@link WEIGHT_FILES}' order.
 */
async function findWeights(
  read: (file: string) => Promise<Uint8Array | undefined>,
  where: string,
  limits: TorchBinLimits,
): Promise<Weights> {
  for (const file of WEIGHT_FILES) {
    const bytes = await read(file);
    if (bytes === undefined) continue;
    return await openWeights(file, bytes, async (shards) => {
      const out: Uint8Array[] = [];
      for (const shard of shards) {
        const shardBytes = await read(shard);
        if (shardBytes === undefined) {
          throw new ModelNotFoundError(`no ${shard} in ${where}, though ${file} lists it`);
        }
        out.push(shardBytes);
      }
      return out;
    }, limits);
  }
  throw new ModelNotFoundError(
    `no weights in ${where}: looked for ${WEIGHT_FILES.slice(0, -1).join(", ")} and ` +
      WEIGHT_FILES.at(-1),
  );
}

async function fromUrl(
  base: string,
  http: HttpOptions,
  withTokenizer: boolean,
  progress: boolean | undefined,
  limits: TorchBinLimits,
): Promise<Loaded> {
  // Called as a plain function: browsers refuse fetch called as a method of another object.
  const doFetch = http.fetch;
  /**
   * The file's bytes. Not required: undefined on a 404, and (for extras such as tokenizer files,
   * `quiet`) on a network error too; a stalled server is always an error.
   */
  const get = async (
    file: string,
    required: boolean,
    { quiet = !required, showProgress = false } = {},
  ): Promise<Uint8Array | undefined> => {
    // The name is a path segment, sent literally (a "%2e%2e" in it must not become "..").
    const url = `${base}/${encodeURIComponent(file)}`;
    const idle = new IdleTimeout(http.timeoutMs);
    try {
      let res: Response;
      try {
        res = await doFetch(url, { signal: idle.signal });
      } catch (e) {
        if (quiet && !idle.fired && !(e instanceof Deno.errors.NotCapable)) return undefined;
        throw new ModelNotFoundError(`could not fetch ${url}: ${(e as Error).message}`, {
          cause: e,
        });
      }
      idle.touch();
      if (!res.ok) {
        await res.body?.cancel();
        if (!required && res.status === 404) return undefined;
        throw new ModelNotFoundError(`${url}: ${res.status === 404 ? "not found" : res.status}`);
      }
      return await readBody(res, file, { progress: showProgress && progress, url, idle });
    } finally {
      idle.clear();
    }
  };
  const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  const config = parseConfig(text((await get("config.json", true))!), `${base}/config.json`);
  const weights = await findWeights(
    (file) => get(file, false, { quiet: false, showProgress: true }),
    base,
    limits,
  );
  const readOptional = async (file: string) => {
    const bytes = await get(file, false);
    return bytes && text(bytes);
  };
  return {
    config,
    weights,
    source: base,
    tokenizerFiles: withTokenizer ? await readTokenizerFiles(readOptional) : {},
  };
}

async function readBody(
  res: Response,
  label: string,
  opts: { progress: boolean | undefined; url: string; idle: IdleTimeout },
): Promise<Uint8Array> {
  const lengthText = res.headers.get("content-length");
  const total = lengthText && /^\d+$/.test(lengthText) ? Number(lengthText) : undefined;
  const bar = new ProgressBar({ label, total, enabled: opts.progress });
  let size = 0;
  bar.start(0);
  let out: Uint8Array;
  try {
    out = await readAllIdle(res, opts.idle, (n) => {
      size += n;
      bar.advance(n);
    });
  } catch (e) {
    throw new ModelNotFoundError(
      `download of ${opts.url} was interrupted after ${size} bytes: ${(e as Error).message}`,
      { cause: e },
    );
  } finally {
    bar.finish();
  }
  if (total !== undefined && out.length !== total) {
    throw new ModelNotFoundError(`${opts.url}: expected ${total} bytes, got ${out.length}`);
  }
  return out;
}

function parseConfig(text: string, where: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${where} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ConfigError(`${where} must hold a JSON object`);
  }
  return value as Record<string, unknown>;
}
