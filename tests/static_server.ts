/**
 * A loopback static file server over the repository root for tests: `Deno.serve` on 127.0.0.1,
 * port 0 (the system picks a free one), GET and HEAD only, with the content types a browser or a
 * remote `deno` importer needs (`.ts` as `application/typescript`, `.wasm` as `application/wasm`,
 * ...). Paths outside the root, dot files and folders are refused. Every request is logged.
 *
 * Run it by hand to serve the repository:
 * `deno run --allow-net=127.0.0.1 --allow-read tests/static_server.ts [port]` (the browser example
 * is served, built and cross-origin isolated, by `deno task serve:browser`).
 * @module
 */
import { fromFileUrl } from "./path.ts";

/** The repository root (this file's parent's parent). */
export const REPO_ROOT: string = fromFileUrl(new URL("../", import.meta.url)).replace(/\/$/, "");

/** Content type by file extension (lower case, with the dot). */
export const CONTENT_TYPES: Readonly<Record<string, string>> = {
  ".ts": "application/typescript; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".wasm": "application/wasm",
  ".json": "application/json; charset=utf-8",
  ".html": "text/html; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".md": "text/markdown; charset=utf-8",
  ".txt": "text/plain; charset=utf-8",
  ".png": "image/png",
  ".svg": "image/svg+xml",
  ".map": "application/json; charset=utf-8",
};

/** The content type served for a path (`application/octet-stream` when unknown). */
export function contentType(path: string): string {
  const dot = path.lastIndexOf(".");
  const ext = dot < 0 ? "" : path.slice(dot).toLowerCase();
  return CONTENT_TYPES[ext] ?? "application/octet-stream";
}

/** One request the server received. */
export interface StaticRequest {
  method: string;
  path: string;
  status: number;
}

/** Options of {@link startStaticServer}. */
export interface StaticServerOptions {
  /** Folder served (default: the repository root). */
  root?: string;
  /** Port (default 0: any free port). */
  port?: number;
  /** Extra response headers on every answer (e.g. COOP/COEP to try cross-origin isolation). */
  headers?: Record<string, string>;
  /**
   * More folders served beside the root: URL path prefix (e.g. `models/gpt2/`, no leading
   * slash, ending with `/`) -> folder (e.g. the explorer's `--model=<folder>`).
   */
  mounts?: Record<string, string>;
}

/** A running static server. */
export interface StaticServer {
  /** `http://127.0.0.1:PORT` (no trailing slash). */
  origin: string;
  /** The port it listens on. */
  port: number;
  /** All requests so far. */
  requests: StaticRequest[];
  /** Stops the server (waits for open connections to finish). */
  close(): Promise<void>;
}

function isSafe(rel: string): boolean {
  return rel.split("/").every((part) => part !== "" && !part.startsWith("."));
}

/** Starts the server; close it with {@link StaticServer.close}. */
export function startStaticServer(opts: StaticServerOptions = {}): Promise<StaticServer> {
  const root = (opts.root ?? REPO_ROOT).replace(/\/$/, "");
  const extra = opts.headers ?? {};
  const requests: StaticRequest[] = [];
  const handler = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    let rel: string;
    try {
      rel = decodeURIComponent(url.pathname).replace(/^\/+/, "");
    } catch {
      rel = "\0";
    }
    if (rel === "" || rel.endsWith("/")) rel += "index.html";
    const answer = (status: number, body: BodyInit | null, headers: Record<string, string>) => {
      requests.push({ method: req.method, path: url.pathname, status });
      return new Response(req.method === "HEAD" ? null : body, {
        status,
        headers: { ...extra, "cache-control": "no-store", ...headers },
      });
    };
    const text = { "content-type": "text/plain; charset=utf-8" };
    if (req.method !== "GET" && req.method !== "HEAD") {
      return answer(405, "method not allowed\n", { ...text, allow: "GET, HEAD" });
    }
    if (rel.includes("\0") || !isSafe(rel)) return answer(403, "forbidden\n", text);
    const mount = Object.keys(opts.mounts ?? {}).find((prefix) => rel.startsWith(prefix));
    const path = mount === undefined
      ? `${root}/${rel}`
      : `${opts.mounts![mount].replace(/\/$/, "")}/${rel.slice(mount.length)}`;
    try {
      const info = await Deno.stat(path);
      if (!info.isFile) return answer(404, "not found\n", text);
      const body = await Deno.readFile(path);
      return answer(200, body, {
        "content-type": contentType(path),
        "content-length": String(body.length),
      });
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return answer(404, "not found\n", text);
      return answer(500, `${(e as Error).message}\n`, text);
    }
  };
  return new Promise((resolve) => {
    const server = Deno.serve({
      hostname: "127.0.0.1",
      port: opts.port ?? 0,
      onListen: ({ port }) => {
        resolve({
          origin: `http://127.0.0.1:${port}`,
          port,
          requests,
          close: () => server.shutdown(),
        });
      },
    }, handler);
  });
}

if (import.meta.main) {
  const port = Deno.args[0] ? Number(Deno.args[0]) : 0;
  const server = await startStaticServer({ port });
  console.log(`serving ${REPO_ROOT} at ${server.origin}/`);
}
