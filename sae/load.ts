/**
 * Reading an SAE's files: a SAELens folder (`cfg.json`, `sae_weights.safetensors`, optional
 * `sparsity.safetensors`) or Gemma Scope's `params.npz` (no cfg: a JumpReLU SAE whose hook point
 * the caller gives), from a local path, a URL, or a hub repository with a path inside it, through
 * the same hub cache, locks and integrity checks as models (`io/hub.ts`).
 * @module
 */
import { ConfigError, ModelNotFoundError, NpyError, SafetensorsError } from "../core/errors.ts";
import { checkOptions } from "../core/options.ts";
import type { Tensor } from "../core/tensor.ts";
import { fetchHubFiles, type HubOptions, hubSettings } from "../io/hub.ts";
import {
  checkTimeoutMs,
  DEFAULT_DOWNLOAD_TIMEOUT_MS,
  IdleTimeout,
  readAllIdle,
} from "../io/idle_timeout.ts";
import { parseNpz } from "../io/npy.ts";
import { parseSafetensors } from "../io/safetensors.ts";
import { parseSaeConfig, type SaeConfig } from "./config.ts";
import type { SaeWeights } from "./sae.ts";

/** Where an SAE's files are: a local path or URL (string), or a folder or file in a hub repo. */
export type SaeLocation = string | { repo: string; path: string; revision?: string };

/** Options of `SAE.loadFromDisk` and {@linkcode readSaeFiles}. */
export interface LoadSaeOptions extends HubOptions {
  /**
   * For a Gemma Scope `params.npz` (which has no cfg): the hook point the SAE reads, e.g.
   * `blocks.20.hook_resid_post`. Ignored for SAELens folders (their cfg says it).
   */
  hookName?: string;
  /** Hub branch, tag or commit (default "main"). */
  revision?: string;
  /** Progress bars on stderr (default: when stderr is a terminal). */
  progress?: boolean;
  /** fetch to use (tests). */
  fetch?: typeof fetch;
}

/** The option names of {@linkcode LoadSaeOptions}. */
export const LOAD_SAE_OPTION_KEYS: readonly string[] = [
  "hookName",
  "revision",
  "progress",
  "fetch",
  "endpoint",
  "token",
  "cacheDir",
  "offline",
  "downloadTimeoutMs",
];

/** An SAE's files, read and parsed. */
export interface SaeFiles {
  /** The configuration. */
  cfg: SaeConfig;
  /** The weights under SAELens's names. */
  weights: SaeWeights;
  /** SAELens's `log_feature_sparsity` [d_sae] when the folder has `sparsity.safetensors`. */
  sparsity?: Tensor;
  /** One line saying where the files came from. */
  source: string;
}

/** The tensors of a SAELens `sae_weights.safetensors`. */
const WEIGHT_NAMES = ["W_enc", "W_dec", "b_enc", "b_dec", "threshold", "b_gate", "b_mag", "r_mag"];

/**
 * Reads an SAE: a SAELens folder or a Gemma Scope `params.npz` (a path ending in `.npz`), from a
 * local path, a URL, or `{ repo, path }` on the hub. Every malformed file is a typed error
 * (`ConfigError`, `SafetensorsError`, `NpyError`, `WeightsError`), a missing one a
 * `ModelNotFoundError`.
 *
 * @example
 * ```ts ignore
 * import { readSaeFiles } from "./load.ts";
 * const files = await readSaeFiles({
 *   repo: "jbloom/GPT2-Small-SAEs-Reformatted",
 *   path: "blocks.8.hook_resid_pre",
 * });
 * files.cfg.dSae; // 24576
 * ```
 */
export async function readSaeFiles(
  where: SaeLocation,
  opts: LoadSaeOptions = {},
): Promise<SaeFiles> {
  checkOptions(opts, LOAD_SAE_OPTION_KEYS, "loadFromDisk");
  const reader = await openLocation(where, opts);
  if (reader.npz) {
    const bytes = (await reader.read(reader.npz, true))!;
    return fromNpz(bytes, `${reader.label}/${reader.npz}`, opts.hookName, reader.label);
  }
  const cfgBytes = (await reader.read("cfg.json", true))!;
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(cfgBytes));
  } catch (e) {
    throw new ConfigError(`${reader.label}/cfg.json is not valid JSON: ${(e as Error).message}`, {
      cause: e,
    });
  }
  const cfg = parseSaeConfig(json, `${reader.label}/cfg.json`);
  const file = "sae_weights.safetensors";
  const st = parseSafetensors((await reader.read(file, true))!, `${reader.label}/${file}`);
  const weights: Record<string, Tensor> = {};
  for (const name of WEIGHT_NAMES) if (st.has(name)) weights[name] = st.tensor(name);
  for (const name of st.names()) {
    if (!WEIGHT_NAMES.includes(name)) {
      throw new SafetensorsError(
        `${reader.label}/${file}: unexpected tensor ${name}; an SAE has ${WEIGHT_NAMES.join(", ")}`,
      );
    }
  }
  const out: SaeFiles = { cfg, weights: weights as unknown as SaeWeights, source: reader.label };
  const sparsityBytes = await reader.read("sparsity.safetensors", false);
  if (sparsityBytes) {
    const sp = parseSafetensors(sparsityBytes, `${reader.label}/sparsity.safetensors`);
    const name = sp.names()[0];
    if (name !== undefined) out.sparsity = sp.tensor(name);
  }
  return out;
}

/** A Gemma Scope `params.npz`: `w_*` keys renamed `W_*` as SAELens's loader does. */
function fromNpz(
  bytes: Uint8Array,
  fileName: string,
  hookName: string | undefined,
  source: string,
): SaeFiles {
  if (hookName === undefined) {
    throw new ConfigError(
      `${fileName} is a Gemma Scope params.npz, which has no cfg: pass { hookName } (e.g. ` +
        `"blocks.20.hook_resid_post" for a *-res release)`,
    );
  }
  const arrays = parseNpz(bytes, fileName);
  const weights: Record<string, Tensor> = {};
  for (const [key, t] of arrays) {
    const name = key.startsWith("w_") ? `W_${key.slice(2)}` : key;
    if (!WEIGHT_NAMES.includes(name)) {
      throw new NpyError(`${fileName}: unexpected array ${key}; Gemma Scope has W_enc, W_dec, ...`);
    }
    if (name in weights) throw new NpyError(`${fileName}: ${name} appears twice (as w_ and W_)`);
    weights[name] = t;
  }
  const enc = weights.W_enc;
  if (!enc || enc.shape.length !== 2) {
    throw new NpyError(`${fileName}: no 2-d W_enc array (have ${[...arrays.keys()].join(", ")})`);
  }
  // What SAELens's Gemma Scope loader sets: JumpReLU, b_dec not subtracted, no normalisation.
  const cfg = parseSaeConfig({
    architecture: "jumprelu",
    d_in: enc.shape[0],
    d_sae: enc.shape[1],
    dtype: "float32",
    apply_b_dec_to_input: false,
    normalize_activations: "none",
    metadata: { sae_lens_version: "6.0.0", hook_name: hookName },
  }, fileName);
  return { cfg, weights: weights as unknown as SaeWeights, source };
}

/** Reads files from a folder, URL or hub path. */
interface Reader {
  label: string;
  /** A Gemma Scope file to read instead of a SAELens folder. */
  npz?: string;
  read(file: string, required: boolean): Promise<Uint8Array | undefined>;
}

async function openLocation(where: SaeLocation, opts: LoadSaeOptions): Promise<Reader> {
  if (typeof where === "object" && where !== null) {
    const { repo, path } = where;
    if (typeof repo !== "string" || typeof path !== "string") {
      throw new ModelNotFoundError('expected { repo: "owner/name", path: "folder/in/repo" }');
    }
    return await hubReader(repo, path.replace(/^\/+|\/+$/g, ""), {
      ...opts,
      revision: where.revision ?? opts.revision,
    });
  }
  if (typeof where !== "string" || where.length === 0) {
    throw new ModelNotFoundError("expected a path, a URL or { repo, path }");
  }
  const isNpz = where.endsWith(".npz");
  if (/^https?:\/\//.test(where)) {
    const base = isNpz ? where.slice(0, where.lastIndexOf("/")) : where.replace(/\/+$/, "");
    return {
      label: base,
      npz: isNpz ? where.slice(where.lastIndexOf("/") + 1) : undefined,
      read: (file, required) => httpRead(`${base}/${file}`, required, opts),
    };
  }
  const dir = isNpz ? where.slice(0, Math.max(0, where.lastIndexOf("/"))) || "." : where;
  return {
    label: dir.replace(/\/+$/, ""),
    npz: isNpz ? where.slice(where.lastIndexOf("/") + 1) : undefined,
    read: (file, required) => fileRead(`${dir.replace(/\/+$/, "")}/${file}`, required),
  };
}

async function fileRead(path: string, required: boolean): Promise<Uint8Array | undefined> {
  try {
    return await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      if (!required) return undefined;
      throw new ModelNotFoundError(
        `${path} not found: an SAE folder has cfg.json and sae_weights.safetensors (SAELens), ` +
          `or give the path of a Gemma Scope params.npz`,
        { cause: e },
      );
    }
    if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable) {
      throw new ModelNotFoundError(`cannot read ${path}: run with --allow-read`, { cause: e });
    }
    throw e;
  }
}

async function httpRead(
  url: string,
  required: boolean,
  opts: LoadSaeOptions,
): Promise<Uint8Array | undefined> {
  const doFetch = opts.fetch ?? fetch;
  const timeout = opts.downloadTimeoutMs === undefined
    ? DEFAULT_DOWNLOAD_TIMEOUT_MS
    : checkTimeoutMs(opts.downloadTimeoutMs, "downloadTimeoutMs");
  const idle = new IdleTimeout(timeout);
  try {
    let res: Response;
    try {
      res = await doFetch(url, { signal: idle.signal });
    } catch (e) {
      throw new ModelNotFoundError(`could not fetch ${url}: ${(e as Error).message}`, { cause: e });
    }
    idle.touch();
    if (!res.ok) {
      await res.body?.cancel();
      if (!required && res.status === 404) return undefined;
      throw new ModelNotFoundError(`${url}: ${res.status === 404 ? "not found" : res.status}`);
    }
    const total = Number(res.headers.get("content-length") ?? NaN);
    let out: Uint8Array;
    try {
      out = await readAllIdle(res, idle, () => {});
    } catch (e) {
      throw new ModelNotFoundError(`download of ${url} was interrupted: ${(e as Error).message}`, {
        cause: e,
      });
    }
    if (Number.isFinite(total) && out.length !== total) {
      throw new ModelNotFoundError(`${url}: expected ${total} bytes, got ${out.length}`);
    }
    return out;
  } finally {
    idle.clear();
  }
}

async function hubReader(repo: string, path: string, opts: LoadSaeOptions): Promise<Reader> {
  const settings = hubSettings(opts);
  const common = { progress: opts.progress, fetch: opts.fetch, revision: opts.revision };
  const isNpz = path.endsWith(".npz");
  const prefix = isNpz ? path.slice(0, Math.max(0, path.lastIndexOf("/"))) : path;
  const at = (f: string) => (prefix ? `${prefix}/${f}` : f);
  const snap = await fetchHubFiles(settings, repo, {
    ...common,
    required: isNpz ? [path] : [at("cfg.json"), at("sae_weights.safetensors")],
    optional: isNpz ? [] : [[at("sparsity.safetensors")]],
  });
  const label = `${repo}/${prefix}`;
  return {
    label: label.replace(/\/$/, ""),
    npz: isNpz ? path.slice(path.lastIndexOf("/") + 1) : undefined,
    read: async (file, required) => {
      const p = snap.paths[at(file)];
      if (p === undefined) {
        if (!required) return undefined;
        throw new ModelNotFoundError(`${repo} has no ${at(file)}`);
      }
      return await Deno.readFile(p);
    },
  };
}
