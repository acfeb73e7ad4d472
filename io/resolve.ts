/**
 * Turns a model name into its files: the embedded `induction-toy`, a GPT-2 alias or hub repo id
 * (downloaded into the Hugging Face cache), a local folder, or an http(s) URL of a folder.
 *
 * Permissions are only those each kind of source needs: the embedded model reads nothing but its
 * own two files (by `fetch` next to this module, so it also works when the library is imported by
 * URL); a folder needs `--allow-read`; a URL needs `--allow-net`; hub names need `--allow-net`,
 * read and write access to the cache and, to honour `HF_*` variables, `--allow-env`.
 * @module
 */
import { ConfigError, ModelNotFoundError } from "../core/errors.ts";
import type { TokenizerFiles } from "../tokenizer/bpe.ts";
import { readTokenizerFiles, tokenizerForModel } from "../tokenizer/for_model.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { cacheView, fetchHubFiles, hubSettings } from "./hub.ts";
import { ProgressBar } from "../core/progress.ts";

/** A model's files, loaded into memory, whatever their source. */
export interface ModelFiles {
  /** The name it was asked for: "gpt2", "induction-toy", a path or a URL. */
  name: string;
  /** The parsed `config.json`. */
  config: Record<string, unknown>;
  /** The bytes of `model.safetensors`. */
  weights: Uint8Array;
  /**
   * The tokenizer: from the source's `tokenizer.json` or `vocab.json` + `merges.txt`, else GPT-2's
   * r50k_base when the config is GPT-2's (`model_type` gpt2, 50257 ids); undefined otherwise
   * (induction-toy takes token ids only).
   */
  tokenizer?: Tokenizer;
  /** One line saying where the files came from. */
  source: string;
}

/** How to resolve and download. Everything is optional. */
export interface ResolveOptions {
  /** Hub branch, tag or commit. Default "main". */
  revision?: string;
  /** Hub URL; else `HF_ENDPOINT`; else https://huggingface.co. */
  endpoint?: string;
  /** Hub token; else `HF_TOKEN`. */
  token?: string;
  /** Hub cache root; else `HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`. */
  cacheDir?: string;
  /** Use the cache only, no request; else `HF_HUB_OFFLINE`. */
  offline?: boolean;
  /** Progress bars on stderr; default when stderr is a terminal. */
  progress?: boolean;
  /** fetch to use (tests, custom agents). */
  fetch?: typeof fetch;
}

/**
 * Short names and their hub repositories: TransformerLens's names for GPT-2, Pythia (GPT-NeoX) and
 * Qwen2.5, and the official ids of the modern small models (hub ids resolve without an alias too;
 * listing them names them in messages). `meta-llama/Llama-3.2-1B` is gated: accept its licence on
 * the hub and give a token (`token` or `HF_TOKEN`).
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
  "pythia-14m": "EleutherAI/pythia-14m",
  "pythia-31m": "EleutherAI/pythia-31m",
  "pythia-70m": "EleutherAI/pythia-70m",
  "pythia": "EleutherAI/pythia-70m",
  "pythia-160m": "EleutherAI/pythia-160m",
  "pythia-410m": "EleutherAI/pythia-410m",
  "pythia-1b": "EleutherAI/pythia-1b",
  "pythia-70m-deduped": "EleutherAI/pythia-70m-deduped",
  "pythia-160m-deduped": "EleutherAI/pythia-160m-deduped",
  "pythia-410m-deduped": "EleutherAI/pythia-410m-deduped",
  "pythia-1b-deduped": "EleutherAI/pythia-1b-deduped",
  "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B",
  "Qwen/Qwen2.5-0.5B": "Qwen/Qwen2.5-0.5B",
  "HuggingFaceTB/SmolLM2-135M": "HuggingFaceTB/SmolLM2-135M",
  "HuggingFaceTB/SmolLM2-360M": "HuggingFaceTB/SmolLM2-360M",
  "meta-llama/Llama-3.2-1B": "meta-llama/Llama-3.2-1B",
};

/** The name of the model shipped inside the library. */
export const EMBEDDED_MODEL = "induction-toy";

const REQUIRED = ["config.json", "model.safetensors"];
const TOKENIZER_GROUPS = [["tokenizer.json"], ["vocab.json", "merges.txt"]];
const URL_SCHEME = /^(https?|file):\/\//i;

type Kind =
  | { kind: "embedded" }
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
  if (name === EMBEDDED_MODEL) return { kind: "embedded" };
  if (URL_SCHEME.test(name)) return { kind: "url", url: name.replace(/\/+$/, "") };
  if (looksLikePath(name)) return { kind: "dir", path: name };
  // A folder in the working directory wins over a hub name, as in transformers.
  if (isModelDir(name)) return { kind: "dir", path: name };
  const alias = MODEL_ALIASES[name];
  if (alias) return { kind: "hub", repoId: alias };
  if (/^[^/]+\/[^/]+$/.test(name)) return { kind: "hub", repoId: name };
  throw new ModelNotFoundError(
    `unknown model "${name}": use ${EMBEDDED_MODEL} (embedded), one of ` +
      `${Object.keys(MODEL_ALIASES).join(", ")}, a hub repository id such as ` +
      `openai-community/gpt2, a local folder holding config.json and model.safetensors, or an ` +
      `http(s) URL of such a folder`,
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
 * const gpt2 = await resolveModel("gpt2"); // hub download into ~/.cache/huggingface/hub, once
 * gpt2.tokenizer?.encode("Hello world"); // [15496, 995]
 * ```
 */
export async function resolveModel(
  nameOrPath: string,
  opts: ResolveOptions = {},
): Promise<ModelFiles> {
  const what = classify(nameOrPath);
  const doFetch = opts.fetch ?? fetch;
  let files: Omit<ModelFiles, "tokenizer"> & { tokenizerFiles: TokenizerFiles };
  switch (what.kind) {
    case "embedded": {
      const base = new URL("../weights/induction-toy/", import.meta.url);
      // Quiet by default: its two files are next to this module, not a real download.
      const progress = opts.progress ?? false;
      files = await fromUrl(base.href.replace(/\/$/, ""), doFetch, false, progress);
      files.source = `embedded ${EMBEDDED_MODEL}`;
      break;
    }
    case "url":
      files = await fromUrl(what.url, doFetch, true, opts.progress);
      break;
    case "dir":
      files = await fromDir(what.path);
      break;
    case "hub":
      files = await fromHub(what.repoId, opts);
      break;
  }
  files.name = nameOrPath;
  const tokenizer = await tokenizerForModel(files.config, files.tokenizerFiles, files.source);
  const { tokenizerFiles: _unused, ...rest } = files;
  return { ...rest, tokenizer };
}

/**
 * Whether a model can be loaded without any download: the embedded model, a local folder, or a
 * hub name whose required files are in the cache at the revision. URLs are never "cached".
 * Never makes a request and never throws.
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
    if (what.kind === "dir") {
      return REQUIRED.every((f) => {
        try {
          return Deno.statSync(`${what.path}/${f}`).isFile;
        } catch {
          return false;
        }
      });
    }
    const view = cacheView(hubSettings(opts).cacheDir, what.repoId, opts.revision ?? "main");
    return REQUIRED.every((f) => view.state(f) === "present");
  } catch {
    return false;
  }
}

async function fromHub(repoId: string, opts: ResolveOptions) {
  const settings = hubSettings(opts);
  const revision = opts.revision ?? "main";
  const snap = await fetchHubFiles(settings, repoId, {
    revision,
    required: REQUIRED,
    optional: TOKENIZER_GROUPS,
    progress: opts.progress,
    fetch: opts.fetch,
  });
  const commit = snap.commit.slice(0, 7);
  const source = snap.fromCache
    ? `hub cache ${snap.repoDir} (revision ${revision}, commit ${commit})`
    : `${settings.endpoint}/${repoId} (revision ${revision}, commit ${commit}), cached in ` +
      snap.repoDir;
  const read = (f: string) => Deno.readFile(snap.paths[f]);
  const readText = async (f: string) =>
    snap.paths[f] === undefined ? undefined : await Deno.readTextFile(snap.paths[f]);
  const configPath = snap.paths["config.json"];
  return {
    name: repoId,
    config: parseConfig(await Deno.readTextFile(configPath), configPath),
    weights: await read("model.safetensors"),
    source,
    tokenizerFiles: {
      tokenizerJson: await readText("tokenizer.json"),
      vocabJson: await readText("vocab.json"),
      mergesTxt: await readText("merges.txt"),
    },
  };
}

async function fromDir(path: string) {
  const dir = path.replace(/[\\/]+$/, "") || "/";
  const readRequired = async <T>(file: string, read: (p: string) => Promise<T>): Promise<T> => {
    try {
      return await read(`${dir}/${file}`);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        const hint = file === "model.safetensors"
          ? " (only safetensors weights are read; convert a pytorch_model.bin with transformers' " +
            "save_pretrained(..., safe_serialization=True))"
          : "";
        throw new ModelNotFoundError(`no ${file} in ${dir}${hint}`, { cause: e });
      }
      if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable) {
        throw new ModelNotFoundError(
          `cannot read ${dir}/${file}: run with --allow-read=${dir}`,
          { cause: e },
        );
      }
      throw e;
    }
  };
  const readOptional = async (file: string) => {
    try {
      return await Deno.readTextFile(`${dir}/${file}`);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
  };
  const configText = await readRequired("config.json", Deno.readTextFile);
  return {
    name: path,
    config: parseConfig(configText, `${dir}/config.json`),
    weights: await readRequired("model.safetensors", Deno.readFile),
    source: dir,
    tokenizerFiles: await readTokenizerFiles(readOptional),
  };
}

async function fromUrl(
  base: string,
  doFetch: typeof fetch,
  withTokenizer: boolean,
  progress: boolean | undefined,
) {
  const get = async (file: string, required: boolean): Promise<Response | undefined> => {
    const url = `${base}/${file}`;
    let res: Response;
    try {
      res = await doFetch(url);
    } catch (e) {
      if (!required && !(e instanceof Deno.errors.NotCapable)) return undefined;
      throw new ModelNotFoundError(`could not fetch ${url}: ${(e as Error).message}`, {
        cause: e,
      });
    }
    if (res.ok) return res;
    await res.body?.cancel();
    if (!required && res.status === 404) return undefined;
    throw new ModelNotFoundError(`${url}: ${res.status === 404 ? "not found" : res.status}`);
  };
  const configRes = (await get("config.json", true))!;
  const config = parseConfig(await configRes.text(), `${base}/config.json`);
  const weights = await readBody((await get("model.safetensors", true))!, "model.safetensors", {
    progress,
    url: `${base}/model.safetensors`,
  });
  const readOptional = async (file: string) => (await get(file, false))?.text();
  return {
    name: base,
    config,
    weights,
    source: base,
    tokenizerFiles: withTokenizer ? await readTokenizerFiles(readOptional) : {},
  };
}

async function readBody(
  res: Response,
  label: string,
  opts: { progress?: boolean; url: string },
): Promise<Uint8Array> {
  const lengthText = res.headers.get("content-length");
  const total = lengthText && /^\d+$/.test(lengthText) ? Number(lengthText) : undefined;
  const bar = new ProgressBar({ label, total, enabled: opts.progress });
  const chunks: Uint8Array[] = [];
  let size = 0;
  bar.start(0);
  try {
    for await (const chunk of res.body ?? []) {
      chunks.push(chunk);
      size += chunk.length;
      bar.advance(chunk.length);
    }
  } catch (e) {
    throw new ModelNotFoundError(
      `download of ${opts.url} was interrupted after ${size} bytes: ${(e as Error).message}`,
      { cause: e },
    );
  } finally {
    bar.finish();
  }
  if (total !== undefined && size !== total) {
    throw new ModelNotFoundError(`${opts.url}: expected ${total} bytes, got ${size}`);
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
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
