/**
 * An edge function: a `Deno.serve` handler that loads the embedded `induction-toy` model once and
 * answers `POST /head-scores` with the attention-head scores of the token ids it is sent.
 *
 * Run it (local checkout; the kernels and the model are read next to the library):
 * `deno run --allow-net=127.0.0.1:8000 --allow-read=backend/wasm,weights/induction-toy examples/edge.ts`
 * or by URL, with no file system at all:
 * `deno run --allow-net=127.0.0.1:8000,HOST --allow-import=HOST http://HOST/examples/edge.ts`.
 * Options: `--port=8000` (0: any free port), `--hostname=127.0.0.1`.
 *
 * ```sh
 * curl -s localhost:8000/head-scores -d '{"tokens": [2047, 5, 9, 13, 5, 9, 13]}'
 * ```
 *
 * Requests are checked before any compute: invalid JSON, wrong types, ids outside the vocabulary,
 * ragged batches, sequences longer than the context, too many sequences, too much work or too
 * large a body get a 400 with `{ "error": "..." }`, and the server goes on serving. Runs are
 * serialised: one model, one WebAssembly memory (which never shrinks, so the limits bound it).
 * @module
 */
import { headScores, HookedTransformer, InputError } from "../mod.ts";
import type { HookedTransformerConfig } from "../mod.ts";

/** Largest request body accepted, in bytes (the study's 30 x 101 ids take about 15 KB). */
export const MAX_BODY_BYTES = 131072;
/** Most sequences in one request (the study's batch is 30). */
export const MAX_ROWS = 128;
/**
 * How many query-key pairs one position's work is worth in {@link MAX_WORK}. Measured on
 * induction-toy (one thread): a position costs about 6.5 KB and 72 us (its activations and
 * matmuls), a pair 78 B and 0.46 us (the cached patterns and the attention), ratios of 83 in
 * memory and 156 in time.
 */
export const PAIRS_PER_POSITION = 128;
/**
 * Largest work of one request: batch x T x (T + {@link PAIRS_PER_POSITION}), T = tokens per
 * sequence, which counts both what grows with batch x T (activations, matmuls) and what grows
 * with batch x T^2 (attention patterns). The study's 30 x 101 batch is 693,870; at the limit a
 * request takes at most 10 sequences of 255 tokens, 45 of 101 or 128 of 45 (see docs/edge.md for
 * their memory and time).
 */
export const MAX_WORK = 1 << 20;
/** How many heads the `top` lists give. */
export const TOP_K = 3;

/** A parsed, checked `POST /head-scores` request. */
export interface HeadScoresRequest {
  /** Token ids `[batch][T]`, T = 1 + 2 seqLen. */
  tokens: number[][];
  /** Length of the repeated segment. */
  seqLen: number;
}

/** One head and its score. */
export interface RankedHead {
  layer: number;
  head: number;
  score: number;
}

/** The JSON answer of `POST /head-scores`. */
export interface HeadScoresResponse {
  /** The model's name. */
  model: string;
  nLayers: number;
  nHeads: number;
  batch: number;
  seqLen: number;
  /** Whether every sequence is `[first] + r + r` (induction scores mean most on such input). */
  repeated: boolean;
  /** `[nLayers][nHeads]`: mean attention from each token to the one after its earlier copy. */
  induction: number[][];
  /** `[nLayers][nHeads]`: mean attention to the previous token. */
  previousToken: number[][];
  /** `[nLayers][nHeads]`: mean attention to the earlier copy of the same token. */
  duplicateToken: number[][];
  /** The highest-scoring heads, best first. */
  top: { induction: RankedHead[]; previousToken: RankedHead[] };
  /** Milliseconds spent computing (queueing excluded). */
  ms: number;
}

/** Options of {@link createHandler}. */
export interface HandlerOptions {
  /** How to get the model (called once; again only after a failure). Default: the embedded toy. */
  load?: () => Promise<HookedTransformer>;
  /** Largest body in bytes (default {@link MAX_BODY_BYTES}). */
  maxBodyBytes?: number;
  /** Most sequences in a request (default {@link MAX_ROWS}). */
  maxRows?: number;
  /** Largest batch x T x (T + {@link PAIRS_PER_POSITION}) (default {@link MAX_WORK}). */
  maxWork?: number;
}

/** The limits {@link parseHeadScoresRequest} checks a request against. */
export interface RequestLimits {
  /** Most sequences (default {@link MAX_ROWS}). */
  maxRows?: number;
  /** Largest batch x T x (T + {@link PAIRS_PER_POSITION}) (default {@link MAX_WORK}). */
  maxWork?: number;
}

/**
 * The work of a request of `batch` sequences of `T` tokens, as {@link MAX_WORK} counts it.
 *
 * @example
 * ```ts
 * import { requestWork } from "./edge.ts";
 * requestWork(30, 101); // 693870, the study's batch
 * ```
 */
export function requestWork(batch: number, T: number): number {
  return batch * T * (T + PAIRS_PER_POSITION);
}

/**
 * The most sequences of `T` tokens one request may carry under the limits.
 *
 * @example
 * ```ts
 * import { maxBatch } from "./edge.ts";
 * maxBatch(101); // 45
 * maxBatch(3); // 128: the row limit
 * ```
 */
export function maxBatch(T: number, limits: RequestLimits = {}): number {
  const maxRows = limits.maxRows ?? MAX_ROWS;
  return Math.min(maxRows, Math.floor((limits.maxWork ?? MAX_WORK) / requestWork(1, T)));
}

/** The request handler, plus `ready()` to load the model ahead of the first request. */
export type EdgeHandler = ((req: Request) => Promise<Response>) & {
  /** Loads the model now (the first request otherwise does); resolves when it is loaded. */
  ready(): Promise<HookedTransformer>;
};

/** A request the handler refuses with 400 and this message. */
export class BadRequest extends Error {
  /** HTTP status sent (400 unless said otherwise). */
  readonly status: number;
  /** @param message what is wrong, for the client */
  constructor(message: string, status = 400) {
    super(message);
    this.name = "BadRequest";
    this.status = status;
  }
}

const USAGE = `TransformerLens for Deno: attention-head scores of the embedded induction-toy model.

POST /head-scores   body: {"tokens": number[] | number[][], "seqLen"?: number}
  tokens: one sequence of token ids, or a batch of equally long ones, each [BOS] + r + r with
  r of length seqLen (so T = 1 + 2 seqLen tokens; seqLen defaults to (T - 1) / 2). Ids are
  integers in [0, d_vocab); T is at most n_ctx; at most ${MAX_ROWS} sequences, and
  batch x T x (T + ${PAIRS_PER_POSITION}) at most ${MAX_WORK} (e.g. 45 sequences of 101 tokens).
  answer: {induction, previousToken, duplicateToken: [layer][head], top: {induction,
  previousToken: [{layer, head, score}]}, repeated, batch, seqLen, ...}
  Bad requests get 400 and {"error": "..."}.

example: curl -s HOST/head-scores -d '{"tokens": [2047, 5, 9, 13, 5, 9, 13]}'
`;

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body) + "\n", {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}

/** Reads at most `limit` bytes of the body as text; a longer body is a {@link BadRequest}. */
export async function readBody(req: Request, limit: number): Promise<string> {
  const declared = req.headers.get("content-length");
  if (declared !== null && /^\d+$/.test(declared) && Number(declared) > limit) {
    await req.body?.cancel();
    throw new BadRequest(`body is too large: ${declared} bytes, the limit is ${limit}`);
  }
  if (!req.body) return "";
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > limit) {
      await reader.cancel();
      throw new BadRequest(`body is too large: more than ${limit} bytes`);
    }
    chunks.push(value);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(all);
  } catch {
    throw new BadRequest("body is not valid UTF-8 text");
  }
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "string") return `the string ${JSON.stringify(v.slice(0, 20))}`;
  if (typeof v === "number") return String(v);
  return `a value of type ${typeof v}`;
}

/**
 * Checks a parsed JSON body against the model's config and returns the request, or throws a
 * {@link BadRequest} that says what is wrong.
 */
export function parseHeadScoresRequest(
  body: unknown,
  cfg: Pick<HookedTransformerConfig, "dVocab" | "nCtx">,
  limits: RequestLimits = {},
): HeadScoresRequest {
  const maxRows = limits.maxRows ?? MAX_ROWS;
  const maxWork = limits.maxWork ?? MAX_WORK;
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new BadRequest(`the body must be a JSON object {"tokens": [...]}, got ${describe(body)}`);
  }
  const obj = body as Record<string, unknown>;
  const unknown = Object.keys(obj).filter((k) => k !== "tokens" && k !== "seqLen");
  if (unknown.length > 0) {
    throw new BadRequest(
      `unknown field ${JSON.stringify(unknown[0])}: the body has "tokens" and optionally "seqLen"`,
    );
  }
  const raw = obj.tokens;
  if (raw === undefined) throw new BadRequest(`missing field "tokens"`);
  if (!Array.isArray(raw)) {
    throw new BadRequest(
      `"tokens" must be an array of token ids or an array of such arrays, got ${describe(raw)}`,
    );
  }
  if (raw.length === 0) throw new BadRequest(`"tokens" is empty`);
  const nested = Array.isArray(raw[0]);
  const rows = (nested ? raw : [raw]) as unknown[];
  if (rows.length > maxRows) {
    throw new BadRequest(
      `too many sequences: ${rows.length}, the limit is ${maxRows} per request; split the batch`,
    );
  }
  const T = Array.isArray(rows[0]) ? rows[0].length : 0;
  const tokens: number[][] = [];
  for (let b = 0; b < rows.length; b++) {
    const row = rows[b];
    const where = nested ? `tokens[${b}]` : "tokens";
    if (!Array.isArray(row)) {
      throw new BadRequest(
        `${where} is ${describe(row)}: "tokens" must be all ids (one sequence) or all arrays ` +
          `(a batch)`,
      );
    }
    if (row.length !== T) {
      throw new BadRequest(
        `ragged batch: tokens[0] has ${T} ids but ${where} has ${row.length}; ` +
          `every sequence must have the same length`,
      );
    }
    for (let i = 0; i < row.length; i++) {
      const id = row[i];
      if (Array.isArray(id)) {
        throw new BadRequest(
          `${where}[${i}] is an array: "tokens" must be all ids (one sequence) or all arrays ` +
            `of ids (a batch)`,
        );
      }
      if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id >= cfg.dVocab) {
        const what = typeof id === "number" && Number.isInteger(id) ? "is outside" : "is not in";
        throw new BadRequest(
          `${where}[${i}] = ${describe(id)} ${what} the vocabulary: token ids are integers in ` +
            `[0, ${cfg.dVocab})`,
        );
      }
    }
    tokens.push(row as number[]);
  }
  if (T === 0) throw new BadRequest(`${nested ? "tokens[0]" : "tokens"} is empty`);
  if (T > cfg.nCtx) {
    throw new BadRequest(
      `sequences of ${T} tokens are too long: the model's context (n_ctx) is ${cfg.nCtx}`,
    );
  }
  let seqLen: number;
  if (obj.seqLen === undefined) {
    if (T < 3 || T % 2 === 0) {
      throw new BadRequest(
        `sequences of ${T} tokens are not [BOS] + r + r: T must be odd and at least 3 ` +
          `(T = 1 + 2 seqLen), or pass "seqLen"`,
      );
    }
    seqLen = (T - 1) / 2;
  } else {
    const s = obj.seqLen;
    if (typeof s !== "number" || !Number.isInteger(s) || s < 1) {
      throw new BadRequest(`"seqLen" must be a positive integer, got ${describe(s)}`);
    }
    if (T !== 1 + 2 * s) {
      throw new BadRequest(
        `"seqLen" ${s} needs sequences of 1 + 2 x ${s} = ${1 + 2 * s} tokens, got ${T}`,
      );
    }
    seqLen = s;
  }
  const work = requestWork(tokens.length, T);
  if (work > maxWork) {
    throw new BadRequest(
      `too much work for one request: batch x T x (T + ${PAIRS_PER_POSITION}) = ` +
        `${tokens.length} x ${T} x ${T + PAIRS_PER_POSITION} = ${work} > ${maxWork}; send at ` +
        `most ${maxBatch(T, limits)} sequences of ${T} tokens, or shorter ones`,
    );
  }
  return { tokens, seqLen };
}

function isRepeated(tokens: number[][], seqLen: number): boolean {
  return tokens.every((row) => {
    for (let i = 1; i <= seqLen; i++) if (row[i] !== row[i + seqLen]) return false;
    return true;
  });
}

/** The `k` highest entries of a `[layer][head]` table, best first (ties: lower layer, head). */
export function topHeads(scores: number[][], k = TOP_K): RankedHead[] {
  const all: RankedHead[] = [];
  scores.forEach((row, layer) => row.forEach((score, head) => all.push({ layer, head, score })));
  all.sort((a, b) => b.score - a.score || a.layer - b.layer || a.head - b.head);
  return all.slice(0, k);
}

/**
 * Creates the handler. The model is loaded on the first request (or by `ready()`), once; if
 * loading fails, that request gets a 503 and the next one tries again.
 *
 * @example
 * ```ts ignore
 * import { createHandler } from "./edge.ts";
 * const handler = createHandler();
 * const res = await handler(new Request("http://x/head-scores", {
 *   method: "POST",
 *   body: JSON.stringify({ tokens: [2047, 5, 9, 13, 5, 9, 13] }),
 * }));
 * (await res.json()).top.induction[0]; // { layer: 1, head: 2, score: ... }
 * ```
 */
export function createHandler(opts: HandlerOptions = {}): EdgeHandler {
  // One thread: the toy model is small, and worker threads would cost start-up time and memory.
  const load = opts.load ??
    (() => HookedTransformer.fromPretrained("induction-toy", { threads: 1 }));
  const maxBody = limit(opts.maxBodyBytes, MAX_BODY_BYTES, "maxBodyBytes");
  const limits = {
    maxRows: limit(opts.maxRows, MAX_ROWS, "maxRows"),
    maxWork: limit(opts.maxWork, MAX_WORK, "maxWork"),
  };
  let model: Promise<HookedTransformer> | undefined;
  let queue: Promise<unknown> = Promise.resolve();

  const ready = (): Promise<HookedTransformer> => {
    if (!model) {
      const p = load();
      model = p;
      p.catch(() => {
        if (model === p) model = undefined;
      });
    }
    return model;
  };

  /** Runs `fn` after every earlier run has finished (one model, one WebAssembly memory). */
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = queue.then(fn, fn);
    queue = run.catch(() => {});
    return run;
  };

  const answer = async (req: Request): Promise<Response> => {
    const text = await readBody(req, maxBody);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (e) {
      throw new BadRequest(`body is not valid JSON: ${(e as Error).message}`);
    }
    let m: HookedTransformer;
    try {
      m = await ready();
    } catch (e) {
      return json(503, { error: `the model could not be loaded: ${(e as Error).message}` });
    }
    const { tokens, seqLen } = parseHeadScoresRequest(body, m.cfg, limits);
    return await serial(async () => {
      const t0 = performance.now();
      const scores = await headScores(m, tokens, seqLen);
      const result: HeadScoresResponse = {
        model: m.cfg.modelName,
        nLayers: m.cfg.nLayers,
        nHeads: m.cfg.nHeads,
        batch: tokens.length,
        seqLen,
        repeated: isRepeated(tokens, seqLen),
        ...scores,
        top: {
          induction: topHeads(scores.induction),
          previousToken: topHeads(scores.previousToken),
        },
        ms: Math.round((performance.now() - t0) * 100) / 100,
      };
      return json(200, result);
    });
  };

  const handler = async (req: Request): Promise<Response> => {
    const { pathname } = new URL(req.url);
    try {
      if (pathname === "/") {
        if (req.method !== "GET" && req.method !== "HEAD") {
          return json(405, { error: `${req.method} / is not supported: use GET` }, {
            allow: "GET",
          });
        }
        return new Response(req.method === "HEAD" ? null : USAGE, {
          headers: { "content-type": "text/plain; charset=utf-8" },
        });
      }
      if (pathname === "/head-scores") {
        if (req.method !== "POST") {
          return json(405, { error: `${req.method} /head-scores is not supported: use POST` }, {
            allow: "POST",
          });
        }
        return await answer(req);
      }
      return json(404, { error: `no route ${pathname}: see GET / for usage` });
    } catch (e) {
      if (e instanceof BadRequest) return json(e.status, { error: e.message });
      if (e instanceof InputError) return json(400, { error: e.message });
      console.error("edge: request failed:", e);
      return json(500, { error: `internal error: ${(e as Error).message}` });
    }
  };
  return Object.assign(handler, { ready });
}

/** An option of {@link createHandler}: a positive integer, or the default when unset. */
function limit(value: unknown, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 1) {
    throw new InputError(`createHandler: ${name} must be a positive integer, got ${String(value)}`);
  }
  return value;
}

function flag(name: string, fallback: string): string {
  const hit = Deno.args.find((a) => a.startsWith(`--${name}=`));
  return hit ? hit.slice(name.length + 3) : fallback;
}

function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

if (import.meta.main) {
  const port = Number(flag("port", "8000"));
  const hostname = flag("hostname", "127.0.0.1");
  const handler = createHandler();
  const server = Deno.serve({
    port,
    hostname,
    onListen: (addr) => console.log(`edge: listening on http://${addr.hostname}:${addr.port}/`),
  }, handler);
  const model = await handler.ready();
  console.log(
    `edge: ${model.cfg.modelName} loaded ${performance.now().toFixed(0)} ms after start; RSS ${
      mib(Deno.memoryUsage().rss)
    }`,
  );
  await server.finished;
}
