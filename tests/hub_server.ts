/**
 * A fake Hugging Face hub on 127.0.0.1 for tests: serves a folder at
 * `/{repo}/resolve/{revision}/{file}` with the hub's headers (X-Repo-Commit, ETag = git blob sha1,
 * and for LFS files a 302 to a CDN on another port with X-Linked-Etag = sha256 and X-Linked-Size),
 * supports HEAD and Range, and has knobs to misbehave: cut the connection mid-file, stall it,
 * announce a wrong sha256 or an unsafe ETag, answer 404, go slowly, redirect in a loop, require a
 * token. Every request is logged.
 * @module
 */
import { fixturePath } from "./fixtures.ts";

/** One request the fake hub or its CDN received. */
export interface LoggedRequest {
  server: "hub" | "cdn";
  method: string;
  path: string;
  range: string | null;
  authorization: string | null;
}

/** Knobs of the fake hub. */
export interface FakeHubOptions {
  /** Repository id served. Default "tiny/gpt2-f32". */
  repoId?: string;
  /** Folder served. Default the `tiny-hf-f32` fixture. */
  dir?: string;
  /** More files to serve (e.g. tokenizer files), by name. */
  extraFiles?: Record<string, Uint8Array | string>;
  /** Commit hash announced for revision "main". */
  commit?: string;
  /** Files served as LFS (302 to the CDN). Default: names ending in ".safetensors". */
  isLfs?: (file: string) => boolean;
  /** Stop sending `file`'s body at absolute byte `at`, `times` times (Infinity: always). */
  cut?: { file: string; at: number; times: number };
  /** Announce a wrong sha256 for LFS files. */
  wrongSha?: boolean;
  /** Files answered with 404 even if present. */
  missing?: string[];
  /**
   * After absolute byte `at` of `file`, send nothing more (the connection stays open, as a stalled
   * server's does), `times` times; the stalled responses end when the client gives up.
   */
  stall?: { file: string; at: number; times: number };
  /** Announce this ETag (X-Linked-Etag for LFS files) for `file` instead of the real one. */
  etag?: { file: string; value: string };
  /** The CDN answers every request with a redirect to itself. */
  cdnRedirectLoop?: boolean;
  /** Send bodies in chunks of this size, pausing `delayMs` between chunks. */
  slow?: { chunk: number; delayMs: number };
  /** Require `Authorization: Bearer {token}` on the hub (401 otherwise, as the hub does). */
  token?: string;
}

/** A running fake hub. */
export interface FakeHub {
  /** Use as `endpoint`. */
  endpoint: string;
  /** Origin of the CDN server LFS files redirect to. */
  cdn: string;
  repoId: string;
  commit: string;
  /** sha256 (hex) of each served file. */
  sha256: Record<string, string>;
  /** Bytes of each served file. */
  files: Record<string, Uint8Array>;
  /** All requests so far. */
  requests: LoggedRequest[];
  /** Stops both servers. */
  close(): Promise<void>;
}

async function digest(algorithm: "SHA-1" | "SHA-256", data: Uint8Array): Promise<string> {
  const buf = await crypto.subtle.digest(algorithm, data as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function gitBlobSha1(data: Uint8Array): Promise<string> {
  const header = new TextEncoder().encode(`blob ${data.length}\0`);
  const all = new Uint8Array(header.length + data.length);
  all.set(header);
  all.set(data, header.length);
  return await digest("SHA-1", all);
}

/** Starts the fake hub and its CDN; close it when done. */
export async function startFakeHub(opts: FakeHubOptions = {}): Promise<FakeHub> {
  const repoId = opts.repoId ?? "tiny/gpt2-f32";
  const dir = opts.dir ?? fixturePath("tiny-hf-f32");
  const commit = opts.commit ?? "0123456789abcdef0123456789abcdef01234567";
  const isLfs = opts.isLfs ?? ((f: string) => f.endsWith(".safetensors"));
  const files: Record<string, Uint8Array> = {};
  for (const entry of Deno.readDirSync(dir)) {
    if (entry.isFile) files[entry.name] = Deno.readFileSync(`${dir}/${entry.name}`);
  }
  for (const [name, content] of Object.entries(opts.extraFiles ?? {})) {
    files[name] = typeof content === "string" ? new TextEncoder().encode(content) : content;
  }
  const sha256: Record<string, string> = {};
  const sha1: Record<string, string> = {};
  for (const [name, data] of Object.entries(files)) {
    sha256[name] = await digest("SHA-256", data);
    sha1[name] = await gitBlobSha1(data);
  }
  const bySha = new Map(Object.entries(sha256).map(([name, sha]) => [sha, name]));
  const requests: LoggedRequest[] = [];
  let cutsLeft = opts.cut?.times ?? 0;
  let stallsLeft = opts.stall?.times ?? 0;

  const log = (server: "hub" | "cdn", req: Request) =>
    requests.push({
      server,
      method: req.method,
      path: new URL(req.url).pathname,
      range: req.headers.get("range"),
      authorization: req.headers.get("authorization"),
    });

  /** 200 or 206 with the body, honouring Range, slowness and cuts. */
  const serveBytes = (req: Request, name: string, headers: Headers): Response => {
    const data = files[name];
    let start = 0;
    let status = 200;
    const range = req.headers.get("range");
    const m = range?.match(/^bytes=(\d+)-$/);
    if (m) {
      start = Number(m[1]);
      if (start >= data.length) {
        headers.set("content-range", `bytes */${data.length}`);
        return new Response(null, { status: 416, headers });
      }
      status = 206;
      headers.set("content-range", `bytes ${start}-${data.length - 1}/${data.length}`);
    }
    headers.set("content-length", String(data.length - start));
    headers.set("accept-ranges", "bytes");
    if (req.method === "HEAD") return new Response(null, { status, headers });
    const cutHere = opts.cut?.file === name && cutsLeft > 0 && opts.cut.at >= start;
    if (cutHere) cutsLeft--;
    const stallHere = opts.stall?.file === name && stallsLeft > 0 && opts.stall.at >= start;
    if (stallHere) stallsLeft--;
    const end = cutHere ? opts.cut!.at : stallHere ? opts.stall!.at : data.length;
    const chunk = opts.slow?.chunk ?? 16 * 1024;
    let pos = start;
    let cancelled: () => void = () => {};
    const body = new ReadableStream<Uint8Array>({
      async pull(ctl) {
        if (pos >= end) {
          if (stallHere) {
            // Stalled: hold the connection open, sending nothing, until the client goes away.
            await new Promise<void>((resolve) => cancelled = resolve);
            return;
          }
          ctl.close(); // early when cut: Content-Length promised more, so the client errors
          return;
        }
        if (opts.slow && pos > start) await new Promise((r) => setTimeout(r, opts.slow!.delayMs));
        const next = Math.min(end, pos + chunk);
        ctl.enqueue(data.slice(pos, next));
        pos = next;
      },
      cancel() {
        cancelled();
      },
    });
    return new Response(body, { status, headers });
  };

  const cdnServer = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    log("cdn", req);
    if (opts.cdnRedirectLoop) return Response.redirect(req.url, 302);
    const sha = new URL(req.url).pathname.match(/^\/lfs\/([0-9a-f]{64})$/)?.[1];
    const name = sha ? bySha.get(sha) : undefined;
    if (!name) return new Response("NoSuchKey", { status: 404 });
    // An S3-like ETag, unrelated to the sha256: the client must not use it.
    return serveBytes(req, name, new Headers({ etag: `"${sha1[name].slice(0, 32)}"` }));
  });
  const cdn = `http://127.0.0.1:${cdnServer.addr.port}`;

  const hubServer = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    log("hub", req);
    const path = decodeURIComponent(new URL(req.url).pathname);
    const prefix = `/${repoId}/resolve/`;
    if (opts.token && req.headers.get("authorization") !== `Bearer ${opts.token}`) {
      return new Response("Invalid username or password.", {
        status: 401,
        headers: { "x-error-code": "RepositoryNotFound" },
      });
    }
    if (!path.startsWith(prefix)) {
      return new Response("Repository not found", {
        status: 404,
        headers: { "x-error-code": "RepositoryNotFound" },
      });
    }
    const rest = path.slice(prefix.length);
    const slash = rest.indexOf("/");
    const revision = rest.slice(0, slash);
    const name = rest.slice(slash + 1);
    if (revision !== "main" && revision !== commit) {
      return new Response("Invalid rev id", {
        status: 404,
        headers: { "x-error-code": "RevisionNotFound" },
      });
    }
    const headers = new Headers({ "x-repo-commit": commit });
    if (!(name in files) || opts.missing?.includes(name)) {
      headers.set("x-error-code", "EntryNotFound");
      return new Response("Entry not found", { status: 404, headers });
    }
    const etagOverride = opts.etag?.file === name ? opts.etag.value : undefined;
    if (isLfs(name)) {
      const sha = etagOverride ?? (opts.wrongSha ? "f".repeat(64) : sha256[name]);
      headers.set("x-linked-etag", `"${sha}"`);
      headers.set("x-linked-size", String(files[name].length));
      headers.set("etag", `"${sha1[name]}"`); // the hub's ETag of the LFS pointer, not the file
      headers.set("location", `${cdn}/lfs/${sha256[name]}`);
      return new Response(req.method === "HEAD" ? null : "Found.", { status: 302, headers });
    }
    headers.set("etag", `"${etagOverride ?? sha1[name]}"`);
    return serveBytes(req, name, headers);
  });
  const endpoint = `http://127.0.0.1:${hubServer.addr.port}`;

  return {
    endpoint,
    cdn,
    repoId,
    commit,
    sha256,
    files,
    requests,
    async close() {
      await Promise.all([hubServer.shutdown(), cdnServer.shutdown()]);
    },
  };
}
