/**
 * The explorer's downloads: a `fetch` for the library's loader (`fromPretrained(name, { fetch })`)
 * that keeps each file of a hub or URL model in the browser's Cache Storage, so that the model
 * loads from there the next time (without the network), and reports each file's progress as it
 * streams in. Only successful GETs are kept; a 404 (an optional tokenizer file) passes through.
 * Where Cache Storage is missing (an insecure origin) files are fetched as they are.
 * @module
 */

/** The Cache Storage cache the explorer keeps models in. */
export const MODEL_CACHE = "tl-explorer-models";

/** One report of a file's download. */
export interface DownloadProgress {
  /** The file's URL. */
  url: string;
  /** Bytes received so far. */
  loaded: number;
  /** The file's size when the server said it (Content-Length), else undefined. */
  total?: number;
  /** Whether the file came from Cache Storage (then loaded = total at once). */
  cached: boolean;
  /** Whether this is the file's last report. */
  done: boolean;
}

/** Milliseconds between two progress reports of one file (the last one always comes). */
const REPORT_EVERY_MS = 50;

/**
 * A `fetch` that answers GETs from Cache Storage's {@link MODEL_CACHE} when it holds the URL, and
 * otherwise fetches, streams the body while calling `onProgress`, and stores a successful
 * response there before returning it.
 *
 * @example
 * ```ts ignore
 * import { cachingFetch } from "./cached_fetch.ts";
 * const fetchCached = cachingFetch((p) => console.log(p.url, p.loaded, p.total));
 * const res = await fetchCached("https://example.org/model/config.json");
 * ```
 */
export function cachingFetch(onProgress: (p: DownloadProgress) => void): typeof fetch {
  return async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const url = input instanceof Request ? input.url : String(input);
    const method = (init?.method ?? (input instanceof Request ? input.method : "GET"))
      .toUpperCase();
    const storage = (globalThis as { caches?: CacheStorage }).caches;
    if (method !== "GET" || storage === undefined) return await fetch(input, init);
    const cache = await storage.open(MODEL_CACHE);
    const hit = await cache.match(url);
    if (hit) {
      const size = Number(hit.headers.get("content-length") ?? NaN);
      const total = Number.isFinite(size) ? size : undefined;
      onProgress({ url, loaded: total ?? 0, total, cached: true, done: true });
      return hit;
    }
    const res = await fetch(input, init);
    if (!res.ok || res.body === null) return res;
    const lengthText = res.headers.get("content-length");
    const total = lengthText && /^\d+$/.test(lengthText) ? Number(lengthText) : undefined;
    const chunks: Uint8Array[] = [];
    let loaded = 0, last = 0;
    const reader = res.body.getReader();
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      loaded += value.length;
      const now = performance.now();
      if (now - last >= REPORT_EVERY_MS) {
        last = now;
        onProgress({ url, loaded, total, cached: false, done: false });
      }
    }
    onProgress({ url, loaded, total, cached: false, done: true });
    const body = new Blob(chunks as BlobPart[]);
    const headers = new Headers(res.headers);
    headers.set("content-length", String(loaded));
    headers.delete("content-encoding"); // the bytes kept are the decoded ones
    const kept = new Response(body, { status: res.status, statusText: res.statusText, headers });
    await cache.put(url, kept.clone());
    return kept;
  };
}
