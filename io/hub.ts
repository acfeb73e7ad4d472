/**
 * Downloads model files from a Hugging Face hub into the hub's own cache layout, the one Python's
 * `huggingface_hub` uses, so files downloaded by either are reused by the other:
 *
 * ```
 * {cache}/models--{owner}--{name}/
 *   blobs/{etag}                       file contents, named by the hub's ETag (sha256 for LFS)
 *   blobs/{etag}.incomplete            a download in progress (resumed with a Range request)
 *   snapshots/{commit}/{file}          symlink to ../../blobs/{etag} (a plain file where symlinks fail)
 *   refs/{revision}                    the commit a branch or tag pointed at
 *   .no_exist/{commit}/{file}          the hub said this file does not exist at this commit
 * {cache}/.locks/models--{owner}--{name}/{etag}.lock   (flock, shared with Python)
 * ```
 *
 * A load whose required files are in the cache makes no request at all. Environment variables
 * (`HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_CACHE`, `HF_HOME`, `HF_HUB_OFFLINE`,
 * `HF_HUB_DOWNLOAD_TIMEOUT`, `XDG_CACHE_HOME`, `HOME`) are read only here, and only when the env
 * permission is granted.
 *
 * Concurrency, as in `huggingface_hub`: a file is downloaded and linked into its snapshot under
 * the blob's lock, so processes sharing a cache download each file once, and none sees a blob
 * another is moving. A request that gets no byte for `downloadTimeoutMs` is abandoned and a
 * download retried from where it stopped; a lock holder that dies or hangs does not block the
 * others (see `file_lock.ts`).
 * @module
 */
import { InputError, IntegrityError, ModelNotFoundError } from "../core/errors.ts";
import { ProgressBar } from "../core/progress.ts";
import { withFileLock } from "./file_lock.ts";
import { checkTimeoutMs, DEFAULT_DOWNLOAD_TIMEOUT_MS, IdleTimeout } from "./idle_timeout.ts";

/** The public hub, used when neither the options nor `HF_ENDPOINT` name another. */
export const DEFAULT_ENDPOINT = "https://huggingface.co";

/** Where and how to reach the hub and its cache, after options and environment are merged. */
export interface HubSettings {
  /** e.g. "https://huggingface.co" (no trailing slash). */
  endpoint: string;
  /** Bearer token, if any. */
  token?: string;
  /** The hub cache root (the folder holding `models--*`). */
  cacheDir: string;
  /** Cache only: no request at all. */
  offline: boolean;
  /** Milliseconds without a byte from the server after which a request is abandoned. */
  downloadTimeoutMs: number;
}

/** Options a caller may set; anything unset comes from the environment, then defaults. */
export interface HubOptions {
  /** Hub URL; else `HF_ENDPOINT`; else https://huggingface.co. */
  endpoint?: string;
  /** Token; else `HF_TOKEN`. */
  token?: string;
  /** Cache root; else `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`. */
  cacheDir?: string;
  /** Cache only; else `HF_HUB_OFFLINE`. */
  offline?: boolean;
  /**
   * Milliseconds a request may go without receiving a byte (headers or body) before it is
   * abandoned; a download then resumes where it stopped, up to 5 attempts while each makes
   * progress. Else `HF_HUB_DOWNLOAD_TIMEOUT` (seconds, as `huggingface_hub` reads it); else 10 s.
   */
  downloadTimeoutMs?: number;
}

/**
 * Reads an environment variable only when the env permission for it is already granted, so code
 * run without `--allow-env` never prompts or throws; anything else reads as unset.
 *
 * @example
 * ```ts
 * import { readEnv } from "./hub.ts";
 * const token = readEnv("HF_TOKEN"); // undefined without --allow-env
 * ```
 */
export function readEnv(name: string): string | undefined {
  try {
    if (Deno.permissions.querySync({ name: "env", variable: name }).state !== "granted") {
      return undefined;
    }
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}

const TRUE_VALUES = new Set(["1", "on", "yes", "true"]);

function expandHome(path: string, home: string | undefined): string {
  if (home && (path === "~" || path.startsWith("~/"))) return home + path.slice(1);
  return path;
}

/**
 * Merges options with the environment, as `huggingface_hub` does.
 *
 * @example
 * ```ts
 * import { hubSettings } from "./hub.ts";
 * const s = hubSettings({ cacheDir: "/tmp/hf" });
 * s.cacheDir; // "/tmp/hf"
 * s.endpoint; // $HF_ENDPOINT or "https://huggingface.co"
 * ```
 */
export function hubSettings(opts: HubOptions = {}): HubSettings {
  const endpoint = (opts.endpoint ?? readEnv("HF_ENDPOINT") ?? DEFAULT_ENDPOINT).replace(
    /\/+$/,
    "",
  );
  const token = opts.token ?? readEnv("HF_TOKEN");
  const offlineEnv = readEnv("HF_HUB_OFFLINE");
  const offline = opts.offline ?? (offlineEnv !== undefined &&
    TRUE_VALUES.has(offlineEnv.trim().toLowerCase()));
  let cacheDir = opts.cacheDir;
  if (cacheDir === undefined) {
    const home = readEnv("HOME") ?? readEnv("USERPROFILE");
    const hubCache = readEnv("HF_HUB_CACHE") ?? readEnv("HUGGINGFACE_HUB_CACHE");
    if (hubCache) {
      cacheDir = expandHome(hubCache, home);
    } else {
      let hfHome = readEnv("HF_HOME");
      if (!hfHome) {
        const xdg = readEnv("XDG_CACHE_HOME") ?? (home ? `${home}/.cache` : undefined);
        if (xdg) hfHome = `${xdg}/huggingface`;
      }
      if (!hfHome) {
        throw new ModelNotFoundError(
          "cannot locate the Hugging Face cache: HOME, HF_HOME and HF_HUB_CACHE are unset or " +
            "unreadable. Grant --allow-env (and set one of them) or pass cacheDir.",
        );
      }
      cacheDir = `${expandHome(hfHome, home)}/hub`;
    }
  }
  return {
    endpoint,
    token,
    cacheDir: cacheDir.replace(/\/+$/, "") || "/",
    offline,
    downloadTimeoutMs: downloadTimeout(opts.downloadTimeoutMs),
  };
}

function downloadTimeout(option: number | undefined): number {
  if (option !== undefined) return checkTimeoutMs(option, "downloadTimeoutMs");
  const env = readEnv("HF_HUB_DOWNLOAD_TIMEOUT");
  if (env === undefined) return DEFAULT_DOWNLOAD_TIMEOUT_MS;
  const seconds = Number(env);
  if (env.trim() === "" || !Number.isFinite(seconds) || seconds <= 0) {
    throw new InputError(
      `HF_HUB_DOWNLOAD_TIMEOUT must be a positive number of seconds, got ${JSON.stringify(env)}`,
    );
  }
  return seconds * 1000;
}

const REPO_ID = /^[A-Za-z0-9][\w.-]{0,95}\/[A-Za-z0-9][\w.-]{0,95}$/;
const COMMIT = /^[0-9a-f]{40}$/;

/**
 * Whether a string is a hub repository id `owner/name` (letters, digits, `-`, `_`, `.`; no `--`
 * or `..`, as the hub requires).
 *
 * @example
 * ```ts
 * import { isRepoId } from "./hub.ts";
 * isRepoId("openai-community/gpt2"); // true
 * isRepoId("./models/gpt2"); // false
 * ```
 */
export function isRepoId(s: string): boolean {
  return REPO_ID.test(s) && !s.includes("--") && !s.includes("..") && !/[.-]$/.test(s);
}

/**
 * The cache folder name of a model repository, as `huggingface_hub.repo_folder_name`.
 *
 * @example
 * ```ts
 * import { repoFolderName } from "./hub.ts";
 * repoFolderName("openai-community/gpt2"); // "models--openai-community--gpt2"
 * ```
 */
export function repoFolderName(repoId: string): string {
  return `models--${repoId.split("/").join("--")}`;
}

function checkRevision(revision: string): void {
  const parts = revision.split("/");
  if (
    revision === "" || revision.includes("\\") || revision.includes("\0") ||
    parts.some((p) => p === "" || p === "." || p === "..")
  ) {
    throw new ModelNotFoundError(`invalid revision ${JSON.stringify(revision)}`);
  }
}

/**
 * The URL the hub serves a file at: `{endpoint}/{repo}/resolve/{revision}/{file}`.
 *
 * @example
 * ```ts
 * import { hubFileUrl } from "./hub.ts";
 * hubFileUrl("https://huggingface.co", "openai-community/gpt2", "main", "config.json");
 * // "https://huggingface.co/openai-community/gpt2/resolve/main/config.json"
 * ```
 */
export function hubFileUrl(endpoint: string, repoId: string, revision: string, file: string) {
  const path = file.split("/").map(encodeURIComponent).join("/");
  return `${endpoint}/${repoId}/resolve/${encodeURIComponent(revision)}/${path}`;
}

function statOrNull(path: string): Deno.FileInfo | null {
  try {
    return Deno.statSync(path);
  } catch {
    return null;
  }
}

/** What the cache knows about one file at one commit. */
export type CachedFileState = "present" | "absent" | "unknown";

/** A repository's view in the cache at one revision. */
export interface CacheView {
  /** `{cache}/models--owner--name`. */
  repoDir: string;
  /** The commit the revision resolves to in the cache (via `refs/`), if known. */
  commit?: string;
  /** Path of `snapshots/{commit}/{file}`. */
  pathOf(file: string): string;
  /** Whether the file is cached, known not to exist, or unknown. */
  state(file: string): CachedFileState;
}

/**
 * Looks a repository up in the cache without any request (and without writing).
 *
 * @example
 * ```ts
 * import { cacheView, hubSettings } from "./hub.ts";
 * const view = cacheView(hubSettings().cacheDir, "openai-community/gpt2", "main");
 * view.state("model.safetensors"); // "present" when downloaded before
 * ```
 */
export function cacheView(cacheDir: string, repoId: string, revision: string): CacheView {
  checkRevision(revision);
  const repoDir = `${cacheDir}/${repoFolderName(repoId)}`;
  let commit: string | undefined;
  if (COMMIT.test(revision)) {
    commit = revision;
  } else {
    try {
      const text = Deno.readTextFileSync(`${repoDir}/refs/${revision}`).trim();
      if (COMMIT.test(text)) commit = text;
    } catch {
      // no ref: not cached at this revision
    }
  }
  return {
    repoDir,
    commit,
    pathOf: (file) => `${repoDir}/snapshots/${commit}/${file}`,
    state(file) {
      if (!commit) return "unknown";
      if (statOrNull(`${repoDir}/snapshots/${commit}/${file}`)?.isFile) return "present";
      if (statOrNull(`${repoDir}/.no_exist/${commit}/${file}`)) return "absent";
      return "unknown";
    },
  };
}

/** What {@link fetchHubFiles} needs. */
export interface FetchHubOptions {
  /** Branch, tag or commit. Default "main". */
  revision?: string;
  /** Files that must exist (e.g. config.json, model.safetensors). */
  required: string[];
  /**
   * Optional file groups, tried in order; the first group whose files all exist is used and the
   * rest are not requested (e.g. `[["tokenizer.json"], ["vocab.json", "merges.txt"]]`).
   */
  optional?: string[][];
  /**
   * One of the optional groups must exist (e.g. the weight formats a model may come in). The cache
   * then answers only when it can tell which group the repository has (the first group not known
   * to be absent is fully cached); otherwise the hub is asked, and a repository with none of the
   * groups is a ModelNotFoundError. Default false: optional groups are extras, and a cache holding
   * the required files answers without them.
   */
  oneOfOptional?: boolean;
  /** Draw progress bars (default: when stderr is a terminal). */
  progress?: boolean;
  /** fetch to use (tests). */
  fetch?: typeof fetch;
}

/** The result of {@link fetchHubFiles}. */
export interface HubSnapshot {
  /** `{cache}/models--owner--name`. */
  repoDir: string;
  /** The revision asked for. */
  revision: string;
  /** The commit it resolved to. */
  commit: string;
  /** Local path of each file found (required, and the chosen optional group). */
  paths: Record<string, string>;
  /** True when nothing was requested (everything came from the cache). */
  fromCache: boolean;
}

function notCachedHint(repoId: string, repoDir: string): string {
  return `${repoId} is not in the Hugging Face cache (looked in ${repoDir}). ` +
    `Connect to the network to download it, or use --model induction-toy (the embedded model, ` +
    `no download needed).`;
}

/**
 * Makes sure a repository's files are in the cache, downloading what is missing, and returns
 * their paths. With every required file cached at the revision (through `refs/`), no request is
 * made at all. Offline (`settings.offline`), only the cache is used.
 *
 * @example Downloads from the hub (needs the network and write access to the cache)
 * ```ts ignore
 * import { fetchHubFiles, hubSettings } from "./hub.ts";
 * const snap = await fetchHubFiles(hubSettings(), "openai-community/gpt2", {
 *   required: ["config.json", "model.safetensors"],
 *   optional: [["tokenizer.json"], ["vocab.json", "merges.txt"]],
 * });
 * const bytes = await Deno.readFile(snap.paths["model.safetensors"]);
 * ```
 */
export async function fetchHubFiles(
  settings: HubSettings,
  repoId: string,
  opts: FetchHubOptions,
): Promise<HubSnapshot> {
  if (!isRepoId(repoId)) throw new ModelNotFoundError(`invalid hub repository id "${repoId}"`);
  const revision = opts.revision ?? "main";
  const view = cacheView(settings.cacheDir, repoId, revision);
  const optional = opts.optional ?? [];

  // 1. Everything required is cached: answer from the cache, with no request.
  const cachedGroup = view.commit ? pickCachedGroup(view, optional, opts.oneOfOptional) : undefined;
  if (
    view.commit && cachedGroup !== undefined &&
    opts.required.every((f) => view.state(f) === "present")
  ) {
    const paths: Record<string, string> = {};
    for (const f of [...opts.required, ...cachedGroup]) paths[f] = view.pathOf(f);
    return { repoDir: view.repoDir, revision, commit: view.commit, paths, fromCache: true };
  }
  if (settings.offline) {
    throw new ModelNotFoundError(
      `downloads are off (HF_HUB_OFFLINE or the offline option), and ` +
        notCachedHint(repoId, view.repoDir),
    );
  }

  // 2. Download. The first file resolves the revision to a commit; the rest use that commit.
  const dl = new Downloader(settings, repoId, view.repoDir, revision, opts);
  const paths: Record<string, string> = {};
  for (const f of opts.required) {
    const got = await dl.get(f, true);
    paths[f] = got!;
  }
  for (const group of optional) {
    const found: Record<string, string> = {};
    let complete = true;
    for (const f of group) {
      const got = await dl.get(f, false);
      if (got === undefined) {
        complete = false;
        break;
      }
      found[f] = got;
    }
    if (complete) {
      Object.assign(paths, found);
      break;
    }
  }
  if (opts.oneOfOptional && !optional.some((g) => g.every((f) => f in paths))) {
    const first = hubFileUrl(settings.endpoint, repoId, dl.commit ?? revision, optional[0][0]);
    const groups = optional.map((g) => g.join(" + ")).join(", ");
    throw new ModelNotFoundError(
      `${repoId} (revision ${revision}) has none of ${groups} (looked for ${first} first)`,
    );
  }
  return { repoDir: view.repoDir, revision, commit: dl.commit!, paths, fromCache: false };
}

/**
 * The optional group the cache can answer with: the first fully cached group ([] when none is).
 * With `oneOfOptional`, groups known to be absent are skipped and the first other group must be
 * fully cached; undefined means the cache cannot tell and the hub must be asked.
 */
function pickCachedGroup(
  view: CacheView,
  groups: string[][],
  oneOfOptional = false,
): string[] | undefined {
  for (const group of groups) {
    const states = group.map((f) => view.state(f));
    if (states.every((s) => s === "present")) return group;
    if (oneOfOptional && !states.includes("absent")) return undefined;
  }
  return oneOfOptional ? undefined : [];
}

interface FileMeta {
  commit: string;
  etag: string;
  weak: boolean;
  size?: number;
  /** Where the bytes are (the CDN URL for LFS files). */
  location: string;
}

function normalizeEtag(raw: string | null): { etag: string; weak: boolean } | undefined {
  if (!raw) return undefined;
  const weak = raw.startsWith("W/");
  const etag = (weak ? raw.slice(2) : raw).replace(/^"+|"+$/g, "");
  return etag ? { etag, weak } : undefined;
}

const MAX_ATTEMPTS = 5;

class Downloader {
  commit: string | undefined;
  #settings: HubSettings;
  #repoId: string;
  #repoDir: string;
  #revision: string;
  #opts: FetchHubOptions;
  #fetch: typeof fetch;

  constructor(
    settings: HubSettings,
    repoId: string,
    repoDir: string,
    revision: string,
    opts: FetchHubOptions,
  ) {
    this.#settings = settings;
    this.#repoId = repoId;
    this.#repoDir = repoDir;
    this.#revision = revision;
    this.#opts = opts;
    this.#fetch = opts.fetch ?? fetch;
  }

  /** Path of the cached file, or undefined when an optional file does not exist. */
  async get(file: string, required: boolean): Promise<string | undefined> {
    const rev = this.commit ?? this.#revision;
    const url = hubFileUrl(this.#settings.endpoint, this.#repoId, rev, file);
    const meta = await this.#head(url, file, required);
    if (!meta) return undefined;
    if (this.commit && meta.commit !== this.commit) {
      throw new ModelNotFoundError(
        `${url} answered with commit ${meta.commit}, expected ${this.commit}`,
      );
    }
    this.commit = meta.commit;
    this.#writeRef(meta.commit);
    const blobs = `${this.#repoDir}/blobs`;
    const blob = `${blobs}/${meta.etag}`;
    const pointer = `${this.#repoDir}/snapshots/${meta.commit}/${file}`;
    if (statOrNull(pointer)?.isFile) return pointer;
    await Deno.mkdir(blobs, { recursive: true });
    const lockDir = `${this.#settings.cacheDir}/.locks/${repoFolderName(this.#repoId)}`;
    await Deno.mkdir(lockDir, { recursive: true });
    // Download and link under the lock, as huggingface_hub does: where symlinks fail, linking
    // moves a new blob into the snapshot, which another process must not see half-done.
    const lockOptions = {
      staleMs: 2 * this.#settings.downloadTimeoutMs,
      progressFile: `${blob}.incomplete`,
    };
    await withFileLock(`${lockDir}/${meta.etag}.lock`, lockOptions, async () => {
      if (statOrNull(pointer)?.isFile) return; // linked by another process while we waited
      const newBlob = !statOrNull(blob)?.isFile;
      if (newBlob) await this.#download(url, file, meta, blob);
      await linkIntoSnapshot(blob, pointer, meta.etag, newBlob);
    });
    return pointer;
  }

  #authHeaders(url: string): Headers {
    const h = new Headers({ "accept-encoding": "identity" });
    // The token goes to the hub only, never to the CDN a large file redirects to.
    if (this.#settings.token && new URL(url).origin === new URL(this.#settings.endpoint).origin) {
      h.set("authorization", `Bearer ${this.#settings.token}`);
    }
    return h;
  }

  #networkError(url: string, e: unknown): ModelNotFoundError {
    return new ModelNotFoundError(
      `could not reach ${url} (${(e as Error)?.message ?? e}), and ` +
        notCachedHint(this.#repoId, this.#repoDir),
      { cause: e },
    );
  }

  /** HEAD, following same-origin redirects (renamed repos) but not the CDN redirect. */
  async #head(url: string, file: string, required: boolean): Promise<FileMeta | undefined> {
    let current = url;
    for (let hop = 0; hop < 10; hop++) {
      const idle = new IdleTimeout(this.#settings.downloadTimeoutMs);
      let res: Response;
      try {
        res = await this.#fetch(current, {
          method: "HEAD",
          redirect: "manual",
          headers: this.#authHeaders(current),
          signal: idle.signal,
        });
      } catch (e) {
        throw this.#networkError(current, e);
      } finally {
        idle.clear();
      }
      await res.body?.cancel();
      const h = res.headers;
      if (res.status >= 300 && res.status < 400 && h.get("location")) {
        const next = new URL(h.get("location")!, current).href;
        if (new URL(next).origin === new URL(current).origin && !h.get("x-linked-etag")) {
          current = next;
          continue;
        }
        return this.#meta(current, h, next);
      }
      if (res.ok) return this.#meta(current, h, current);
      if (res.status === 404 || res.status === 401 || res.status === 403) {
        const code = h.get("x-error-code");
        const commit = h.get("x-repo-commit");
        if (!required) {
          if (res.status === 404 && commit && COMMIT.test(commit) && code !== "RevisionNotFound") {
            await this.#markMissing(commit, file);
          }
          return undefined;
        }
        const why = res.status === 404
          ? (code === "RevisionNotFound"
            ? `revision "${this.#revision}" does not exist`
            : code === "RepositoryNotFound"
            ? "the repository does not exist"
            : "not found")
          : `access denied (${res.status}): the repository does not exist, or it is private or ` +
            `gated; set HF_TOKEN to a token that can read it`;
        throw new ModelNotFoundError(`${url}: ${why}`);
      }
      throw new ModelNotFoundError(`${url}: the server answered ${res.status} ${res.statusText}`);
    }
    throw new ModelNotFoundError(`${url}: too many redirects`);
  }

  #meta(url: string, h: Headers, location: string): FileMeta {
    const commit = h.get("x-repo-commit");
    if (!commit || !COMMIT.test(commit)) {
      throw new ModelNotFoundError(
        `${url} does not look like a Hugging Face hub (no X-Repo-Commit header); check ` +
          `HF_ENDPOINT or the endpoint option`,
      );
    }
    const tag = normalizeEtag(h.get("x-linked-etag")) ?? normalizeEtag(h.get("etag"));
    if (!tag) {
      throw new ModelNotFoundError(`${url} sent no ETag, so the file cannot be cached`);
    }
    // The ETag names the blob's file: it must be one plain name ("." and ".." are folders).
    if (!/^[\w.-]+$/.test(tag.etag) || /^\.+$/.test(tag.etag)) {
      throw new IntegrityError(
        `${url} announced the ETag ${JSON.stringify(tag.etag)}, which is not a hash and cannot ` +
          `name a file in the cache; nothing was downloaded. Check HF_ENDPOINT or the endpoint ` +
          `option: a Hugging Face hub sends a sha256 or a git blob id.`,
      );
    }
    const sizeText = h.get("x-linked-size") ?? h.get("content-length");
    const size = sizeText !== null && /^\d+$/.test(sizeText) ? Number(sizeText) : undefined;
    return { commit, etag: tag.etag, weak: tag.weak, size, location };
  }

  #writeRef(commit: string): void {
    if (this.#revision === commit) return;
    const ref = `${this.#repoDir}/refs/${this.#revision}`;
    try {
      if (Deno.readTextFileSync(ref) === commit) return;
    } catch {
      // not there yet
    }
    Deno.mkdirSync(ref.slice(0, ref.lastIndexOf("/")), { recursive: true });
    const tmp = `${ref}.${crypto.randomUUID()}.tmp`;
    Deno.writeTextFileSync(tmp, commit);
    Deno.renameSync(tmp, ref);
  }

  async #markMissing(commit: string, file: string): Promise<void> {
    const marker = `${this.#repoDir}/.no_exist/${commit}/${file}`;
    await Deno.mkdir(marker.slice(0, marker.lastIndexOf("/")), { recursive: true });
    await Deno.writeFile(marker, new Uint8Array());
    this.#writeRef(commit);
  }

  /** Downloads into `{blob}.incomplete`, resuming, verifies, then renames to `blob`. */
  async #download(url: string, file: string, meta: FileMeta, blob: string): Promise<void> {
    const partial = `${blob}.incomplete`;
    let lastError: unknown;
    for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
      const before = statOrNull(partial)?.size ?? 0;
      const idle = new IdleTimeout(this.#settings.downloadTimeoutMs);
      try {
        await this.#attempt(url, file, meta, partial, idle);
        lastError = undefined;
        break;
      } catch (e) {
        if (e instanceof IntegrityError || e instanceof ModelNotFoundError) throw e;
        lastError = e;
        const after = statOrNull(partial)?.size ?? 0;
        if (after <= before) break; // no progress: give up, keep the partial file for next time
      } finally {
        idle.clear();
      }
    }
    if (lastError !== undefined) {
      const have = statOrNull(partial)?.size ?? 0;
      if (have === 0) await Deno.remove(partial).catch(() => {});
      const kept = have > 0
        ? `${have} of ${meta.size ?? "?"} bytes are kept in ${partial} and the next load ` +
          `resumes from there`
        : "no byte was received, so nothing was kept";
      throw new ModelNotFoundError(
        `download of ${url} was interrupted (${(lastError as Error)?.message ?? lastError}); ` +
          kept,
        { cause: lastError },
      );
    }
    await verify(partial, file, url, meta);
    await Deno.rename(partial, blob);
  }

  /** One GET of the file's bytes from where `partial` ends; `idle` abandons a stalled one. */
  async #attempt(
    url: string,
    file: string,
    meta: FileMeta,
    partial: string,
    idle: IdleTimeout,
  ): Promise<void> {
    let offset = statOrNull(partial)?.size ?? 0;
    if (meta.size !== undefined && offset > meta.size) {
      await Deno.truncate(partial, 0);
      offset = 0;
    }
    if (meta.size !== undefined && offset === meta.size && offset > 0) return; // all there
    const headers = this.#authHeaders(meta.location);
    if (offset > 0) headers.set("range", `bytes=${offset}-`);
    const res = await this.#fetch(meta.location, {
      headers,
      redirect: "follow",
      signal: idle.signal,
    });
    idle.touch();
    if (res.status === 200 && offset > 0) {
      offset = 0; // the server ignored the Range: start over
    } else if (res.status === 206) {
      const range = res.headers.get("content-range") ?? "";
      if (!range.startsWith(`bytes ${offset}-`)) {
        await res.body?.cancel();
        await Deno.truncate(partial, 0);
        throw new Error(`unexpected Content-Range "${range}" for a resume from byte ${offset}`);
      }
    } else if (res.status === 416 && offset > 0) {
      await res.body?.cancel();
      await Deno.truncate(partial, 0);
      throw new Error("the server refused to resume (416); starting over");
    } else if (!res.ok) {
      await res.body?.cancel();
      const what = res.status === 404 ? "not found" : `the server answered ${res.status}`;
      throw new ModelNotFoundError(`${meta.location} (for ${url}): ${what}`);
    }
    const out = await Deno.open(partial, { create: true, write: true });
    const bar = new ProgressBar({ label: file, total: meta.size, enabled: this.#opts.progress });
    try {
      await out.truncate(offset);
      await out.seek(offset, Deno.SeekMode.Start);
      bar.start(offset);
      if (res.body) {
        for await (const chunk of res.body) {
          idle.touch();
          let written = 0;
          while (written < chunk.length) written += await out.write(chunk.subarray(written));
          bar.advance(chunk.length);
        }
      }
    } finally {
      out.close();
      bar.finish();
    }
    const got = statOrNull(partial)?.size ?? 0;
    if (meta.size !== undefined && got < meta.size) {
      throw new Error(`the connection closed after ${got} of ${meta.size} bytes`);
    }
  }
}

async function hashFile(path: string, algorithm: "sha256" | "sha1", prefix?: string) {
  const { createHash } = await import("node:crypto"); // loaded only when a download is verified
  const h = createHash(algorithm);
  if (prefix) h.update(prefix);
  const f = await Deno.open(path, { read: true });
  for await (const chunk of f.readable) h.update(chunk); // the stream closes the file
  return h.digest("hex");
}

/** Checks size and the hub's checksum; on a mismatch deletes the partial file and throws. */
async function verify(partial: string, file: string, url: string, meta: FileMeta): Promise<void> {
  const size = Deno.statSync(partial).size;
  const fail = async (what: string) => {
    await Deno.remove(partial).catch(() => {});
    throw new IntegrityError(`${file} from ${url}: ${what}; nothing was cached`);
  };
  if (meta.size !== undefined && size !== meta.size) {
    await fail(`expected ${meta.size} bytes, got ${size}`);
  }
  const etag = meta.etag.toLowerCase();
  if (/^[0-9a-f]{64}$/.test(etag)) {
    const actual = await hashFile(partial, "sha256");
    if (actual !== etag) await fail(`sha256 announced ${etag}, downloaded file has ${actual}`);
  } else if (/^[0-9a-f]{40}$/.test(etag) && !meta.weak) {
    // A non-LFS file's ETag is its git blob id: sha1("blob {size}\0" + content).
    const actual = await hashFile(partial, "sha1", `blob ${size}\0`);
    if (actual !== etag) {
      await fail(`git blob sha1 announced ${etag}, downloaded file has ${actual}`);
    }
  }
}

/**
 * Points `snapshots/{commit}/{file}` at the blob: a relative symlink as `huggingface_hub` makes;
 * where symlinks are not possible (Windows without developer mode, or Deno without full
 * read/write permission), the blob is moved there when new, else copied, as `huggingface_hub`
 * does. The pointer appears atomically (made under a temporary name, then renamed).
 */
async function linkIntoSnapshot(
  blob: string,
  pointer: string,
  etag: string,
  newBlob: boolean,
): Promise<void> {
  const dir = pointer.slice(0, pointer.lastIndexOf("/"));
  await Deno.mkdir(dir, { recursive: true });
  const depth = pointer.split("/").length - blob.split("/").length + 1; // snapshots/{commit}/...
  const target = `${"../".repeat(depth)}blobs/${etag}`;
  const tmp = `${pointer}.${crypto.randomUUID()}.tmp`;
  try {
    await Deno.symlink(target, tmp);
    await Deno.rename(tmp, pointer);
    return;
  } catch {
    await Deno.remove(tmp).catch(() => {});
  }
  if (newBlob) {
    await Deno.rename(blob, pointer);
  } else {
    await Deno.copyFile(blob, tmp);
    await Deno.rename(tmp, pointer);
  }
}
