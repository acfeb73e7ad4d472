/**
 * The edge example (`examples/edge.ts`): its handler, called without a socket, answers good
 * requests with the library's numbers and bad ones with 400 and a message, and keeps serving;
 * and the example itself, run by URL in a fresh `deno` with network access only, serves the same
 * answer over HTTP.
 */
import assert from "node:assert/strict";
import { generateRepeatedTokens, headScores, HookedTransformer } from "../mod.ts";
import {
  createHandler,
  type HeadScoresResponse,
  MAX_BODY_BYTES,
  MAX_ROWS,
  MAX_WORK,
  maxBatch,
  parseHeadScoresRequest,
  requestWork,
  topHeads,
} from "../examples/edge.ts";
import { REPO_ROOT, startStaticServer } from "./static_server.ts";

const handler = createHandler();
const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
const tokens = generateRepeatedTokens(model, 50, 30, { seed: 7 });
const rows: number[][] = Array.from(
  { length: 30 },
  (_, b) => Array.from(tokens.data.subarray(b * 101, (b + 1) * 101)),
);

function post(body: BodyInit | null, path = "/head-scores", method = "POST"): Promise<Response> {
  return handler(new Request(`http://edge.test${path}`, { method, body }));
}

async function expectError(res: Response, status: number, pattern: RegExp): Promise<void> {
  const body = await res.json();
  assert.equal(res.status, status, JSON.stringify(body));
  assert.equal(typeof body.error, "string", "the answer has an error message");
  assert.match(body.error, pattern);
}

Deno.test("edge: a batch of repeated tokens gets the library's head scores and top heads", async () => {
  const res = await post(JSON.stringify({ tokens: rows, seqLen: 50 }));
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
  const body = await res.json() as HeadScoresResponse;
  const expected = await headScores(model, tokens, 50);
  assert.deepEqual(body.induction, expected.induction);
  assert.deepEqual(body.previousToken, expected.previousToken);
  assert.deepEqual(body.duplicateToken, expected.duplicateToken);
  assert.equal(body.model, "induction-toy");
  assert.deepEqual([body.nLayers, body.nHeads, body.batch, body.seqLen], [3, 4, 30, 50]);
  assert.equal(body.repeated, true);
  assert.deepEqual(body.top.induction, topHeads(expected.induction));
  assert.deepEqual(
    { layer: body.top.induction[0].layer, head: body.top.induction[0].head },
    { layer: 1, head: 2 },
    "the toy's induction head comes first",
  );
  assert.deepEqual(
    body.top.previousToken.slice(0, 2).map((h) => `${h.layer}.${h.head}`).sort(),
    ["0.2", "0.3"],
    "the toy's previous-token heads come first",
  );
  assert.ok(body.top.induction[0].score > body.top.induction[1].score);
});

Deno.test("edge: one flat sequence, seqLen inferred", async () => {
  const res = await post(JSON.stringify({ tokens: rows[3] }));
  assert.equal(res.status, 200);
  const body = await res.json() as HeadScoresResponse;
  const expected = await headScores(model, [rows[3]], 50);
  assert.deepEqual(body.induction, expected.induction);
  assert.equal(body.batch, 1);
  assert.equal(body.seqLen, 50);
});

Deno.test("edge: bad requests get 400 with a message, and the handler keeps serving", async () => {
  const long = Array.from({ length: 257 }, (_, i) => i);
  const cases: [BodyInit, RegExp][] = [
    ["{tokens: [1, 2, 3]", /not valid JSON/],
    ["", /not valid JSON/],
    [JSON.stringify([1, 2, 3]), /must be a JSON object/],
    [JSON.stringify({}), /missing field "tokens"/],
    [JSON.stringify({ tokens: "2047 1 2" }), /"tokens" must be an array/],
    [JSON.stringify({ tokens: [] }), /"tokens" is empty/],
    [JSON.stringify({ tokens: [[]] }), /tokens\[0\] is empty/],
    [
      JSON.stringify({ tokens: [2047, 1, 2048] }),
      /tokens\[2\] = 2048 is outside the vocabulary.*\[0, 2048\)/,
    ],
    [JSON.stringify({ tokens: [2047, -1, 3] }), /tokens\[1\] = -1 is outside the vocabulary/],
    [JSON.stringify({ tokens: [2047, 1.5, 3] }), /tokens\[1\] = 1.5 is not in the vocabulary/],
    [JSON.stringify({ tokens: [2047, "7", 3] }), /tokens\[1\] = the string "7"/],
    [JSON.stringify({ tokens: [2047, null, 3] }), /tokens\[1\] = null/],
    [JSON.stringify({ tokens: [[2047, 1, 1], [2047, 1]] }), /ragged batch.*tokens\[1\] has 2/],
    [JSON.stringify({ tokens: [[2047, 1, 1], 5] }), /tokens\[1\] is 5/],
    [JSON.stringify({ tokens: [2047, [1], 1] }), /tokens\[1\] is an array/],
    [JSON.stringify({ tokens: long }), /257 tokens are too long.*n_ctx\) is 256/],
    [JSON.stringify({ tokens: [2047, 1, 2, 1] }), /T must be odd/],
    [JSON.stringify({ tokens: [2047, 1, 1], seqLen: 2 }), /"seqLen" 2 needs .* 5 tokens, got 3/],
    [JSON.stringify({ tokens: [2047, 1, 1], seqLen: "1" }), /"seqLen" must be a positive integer/],
    [JSON.stringify({ tokens: [2047, 1, 1], seqLen: 0 }), /"seqLen" must be a positive integer/],
    [JSON.stringify({ tokens: [2047, 1, 1], seq_len: 1 }), /unknown field "seq_len"/],
    [
      JSON.stringify({ tokens: Array.from({ length: 20 }, () => long.slice(0, 255)) }),
      /too much work.*20 x 255 x 383 = 1953300 > 1048576; send at most 10 sequences of 255/,
    ],
    [
      JSON.stringify({ tokens: Array.from({ length: 129 }, () => [2047, 1, 1]) }),
      /too many sequences: 129, the limit is 128/,
    ],
    [new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), /not valid UTF-8/],
  ];
  for (const [body, pattern] of cases) {
    await expectError(await post(body), 400, pattern);
    // Still serving: a good request right after each bad one.
    const ok = await post(JSON.stringify({ tokens: [2047, 5, 9, 5, 9] }));
    assert.equal(ok.status, 200, `after ${String(body).slice(0, 60)}`);
    await ok.body?.cancel();
  }
});

Deno.test("edge: bodies over the limit are refused without being read whole", async () => {
  const big = JSON.stringify({ tokens: Array.from({ length: MAX_BODY_BYTES }, () => 1) });
  await expectError(await post(big), 400, new RegExp(`body is too large.*${MAX_BODY_BYTES}`));
  // A streamed body with no content-length, cut off once past the limit.
  let sent = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      if (sent > 4 * MAX_BODY_BYTES) return c.close();
      sent += 65536;
      c.enqueue(new Uint8Array(65536).fill(0x20));
    },
  });
  await expectError(await post(stream), 400, /body is too large: more than/);
  assert.ok(sent < 4 * MAX_BODY_BYTES, `stopped reading after ${sent} bytes`);
  assert.equal((await post(JSON.stringify({ tokens: [2047, 3, 3] }))).status, 200);
});

Deno.test("edge: routes", async () => {
  const usage = await handler(new Request("http://edge.test/"));
  assert.equal(usage.status, 200);
  assert.match(await usage.text(), /POST \/head-scores/);
  await expectError(await post(null, "/head-scores", "GET"), 405, /use POST/);
  await expectError(await post("{}", "/nope"), 404, /no route \/nope/);
  await expectError(await post("{}", "/"), 405, /use GET/);
});

Deno.test("edge: concurrent requests are answered like sequential ones", async () => {
  const bodies = [0, 1, 2, 3].map((b) => JSON.stringify({ tokens: rows.slice(b, b + 2 + b) }));
  const answers = await Promise.all(bodies.map((b) => post(b).then((r) => r.json())));
  for (let i = 0; i < bodies.length; i++) {
    const expected = await headScores(model, rows.slice(i, i + 2 + i), 50);
    assert.deepEqual(answers[i].induction, expected.induction, `request ${i}`);
  }
});

Deno.test("edge: a model that fails to load gives 503, and the next request tries again", async () => {
  let attempts = 0;
  const flaky = createHandler({
    load: () => {
      attempts++;
      return attempts === 1
        ? Promise.reject(new Error("network down"))
        : HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
    },
  });
  const req = () =>
    flaky(
      new Request("http://edge.test/head-scores", {
        method: "POST",
        body: JSON.stringify({ tokens: [2047, 4, 4] }),
      }),
    );
  await expectError(await req(), 503, /could not be loaded: network down/);
  assert.equal((await req()).status, 200);
  assert.equal(attempts, 2);
});

Deno.test("edge: parseHeadScoresRequest checks limits against the config", () => {
  const cfg = { dVocab: 10, nCtx: 9 };
  assert.deepEqual(parseHeadScoresRequest({ tokens: [9, 1, 2, 1, 2] }, cfg), {
    tokens: [[9, 1, 2, 1, 2]],
    seqLen: 2,
  });
  assert.throws(() => parseHeadScoresRequest({ tokens: [9, 1, 10] }, cfg), /outside/);
  // Work counts the linear term: 2 x 3 x (3 + 128) = 786, though 2 x 3^2 is only 18.
  const two = { tokens: [[1, 1, 1], [1, 1, 1]] };
  assert.equal(requestWork(2, 3), 786);
  assert.equal(parseHeadScoresRequest(two, cfg, { maxWork: 786 }).tokens.length, 2);
  assert.throws(
    () => parseHeadScoresRequest(two, cfg, { maxWork: 785 }),
    /too much work.*2 x 3 x 131 = 786 > 785; send at most 1 sequences of 3 tokens/,
  );
  assert.throws(() => parseHeadScoresRequest(two, cfg, { maxRows: 1 }), /too many sequences: 2/);
  assert.ok(requestWork(30, 101) <= MAX_WORK, "the study's batch fits");
  assert.deepEqual([3, 45, 101, 255].map((T) => maxBatch(T)), [MAX_ROWS, MAX_ROWS, 45, 10]);
  for (const T of [3, 45, 101, 255]) {
    assert.ok(requestWork(maxBatch(T), T) <= MAX_WORK);
    if (maxBatch(T) < MAX_ROWS) assert.ok(requestWork(maxBatch(T) + 1, T) > MAX_WORK);
  }
  assert.throws(() => createHandler({ maxRows: 0 }), /maxRows must be a positive integer, got 0/);
  assert.throws(() => createHandler({ maxWork: 1.5 }), /maxWork must be a positive integer/);
});

/** The hostile request: 16,381 sequences of 3 tokens in a 131 KB body. */
function manyShortRows(): string {
  const body = JSON.stringify({ tokens: Array.from({ length: 16_381 }, () => [1, 2, 2]) });
  assert.ok(body.length <= MAX_BODY_BYTES, `${body.length} bytes: under the body limit`);
  return body;
}

Deno.test("edge: 16,381 sequences of 3 tokens are refused with 400 before any compute", async () => {
  const body = manyShortRows();
  await expectError(await post(body), 400, /too many sequences: 16381, the limit is 128/);
  // Within the row limit, the linear term still counts: 128 rows of 63 tokens, not 127 x 63^2.
  const rows63 = Array.from(
    { length: 128 },
    () => [2047, ...Array(31).fill(1), ...Array(31).fill(1)],
  );
  await expectError(
    await post(JSON.stringify({ tokens: rows63 })),
    400,
    /too much work.*128 x 63 x 191 = 1540224 > 1048576; send at most 87 sequences of 63/,
  );
});

Deno.test({
  name: "edge: examples/edge.ts run by URL with network access only serves the same scores",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const files = await startStaticServer();
    const dir = await Deno.makeTempDir({ prefix: "edge-url-" });
    const host = `127.0.0.1:${files.port}`;
    // A free port for the edge server: bind one, release it, hand it over.
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (probe.addr as Deno.NetAddr).port;
    probe.close();
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-config",
        "--no-lock",
        "--no-prompt",
        `--allow-net=${host},127.0.0.1:${port}`,
        `--allow-import=${host}`,
        `${files.origin}/examples/edge.ts`,
        `--port=${port}`,
      ],
      cwd: dir,
      env: { DENO_DIR: `${dir}/deno-dir`, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const out: string[] = [];
    const drain = async (s: ReadableStream<Uint8Array>) => {
      const decoder = new TextDecoder();
      for await (const c of s) out.push(decoder.decode(c, { stream: true }));
    };
    const drained = Promise.all([drain(child.stdout), drain(child.stderr)]);
    try {
      const body = JSON.stringify({ tokens: rows.slice(0, 4) });
      let res: Response | undefined;
      const t0 = performance.now();
      while (!res && performance.now() - t0 < 60_000) {
        try {
          res = await fetch(`http://127.0.0.1:${port}/head-scores`, { method: "POST", body });
        } catch {
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      assert.ok(res, `the edge server did not answer in 60 s:\n${out.join("")}`);
      assert.equal(res.status, 200, out.join(""));
      const answer = await res.json() as HeadScoresResponse;
      const expected = await headScores(model, rows.slice(0, 4), 50);
      assert.deepEqual(answer.induction, expected.induction);
      assert.deepEqual(answer.previousToken, expected.previousToken);
      const bad = await fetch(`http://127.0.0.1:${port}/head-scores`, {
        method: "POST",
        body: "[",
      });
      await expectError(bad, 400, /not valid JSON/);
      const again = await fetch(`http://127.0.0.1:${port}/head-scores`, { method: "POST", body });
      assert.deepEqual((await again.json()).induction, expected.induction);
    } finally {
      child.kill("SIGTERM");
      await child.status;
      await drained;
      await files.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** VmRSS and VmHWM of a process, in MiB (through cat: Deno asks for -A to read /proc itself). */
async function memoryOf(pid: number): Promise<{ rss: number; peak: number }> {
  const out = await new Deno.Command("cat", { args: [`/proc/${pid}/status`] }).output();
  const text = new TextDecoder().decode(out.stdout);
  const mib = (key: string) =>
    Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text)?.[1]) / 1024;
  return { rss: mib("VmRSS"), peak: mib("VmHWM") };
}

Deno.test({
  name: "edge: under a hostile load, over-limit requests get 400 and memory stays bounded",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (probe.addr as Deno.NetAddr).port;
    probe.close();
    // The example as documented: a local checkout, reading only the kernels and the model.
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-config",
        "--no-lock",
        "--no-prompt",
        `--allow-net=127.0.0.1:${port}`,
        `--allow-read=${REPO_ROOT}/backend/wasm,${REPO_ROOT}/weights/induction-toy`,
        `${REPO_ROOT}/examples/edge.ts`,
        `--port=${port}`,
      ],
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000); // bounds the whole test
    try {
      let seen = "";
      while (!/loaded .* ms after start/.test(seen)) {
        const { value, done } = await lines.read();
        if (done) assert.fail(`edge.ts exited before loading:\n${seen}\n${await stderr}`);
        seen += value;
      }
      const send = (body: string) =>
        fetch(`http://127.0.0.1:${port}/head-scores`, { method: "POST", body });
      const loaded = await memoryOf(child.pid);
      const hostile = manyShortRows();
      for (let i = 0; i < 6; i++) await expectError(await send(hostile), 400, /too many sequences/);
      const refused = await memoryOf(child.pid);
      // Parsing six 131 KB bodies, no compute: measured +3 MiB.
      assert.ok(refused.rss - loaded.rss < 16, `RSS ${loaded.rss} -> ${refused.rss} MiB`);
      // The worst requests the limits admit, long and short sequences.
      for (const T of [45, 101, 255]) {
        const r = Array.from({ length: (T - 1) / 2 }, (_, i) => (i * 7) % 2047);
        const rows = Array.from({ length: maxBatch(T) }, () => [2047, ...r, ...r]);
        const res = await send(JSON.stringify({ tokens: rows }));
        assert.equal(res.status, 200, await res.clone().text());
        await res.body?.cancel();
      }
      // Measured: 73 MiB after load, +3 after the refused requests, 145 MiB at the peak after these
      // three, 178 after five rounds of all four kinds (docs/edge.md); before the limits, one
      // 16,381 x 3 request alone took it to 347-357 MiB.
      const after = await memoryOf(child.pid);
      assert.ok(after.peak < 256, `peak RSS ${after.peak} MiB (after load ${loaded.rss})`);
    } finally {
      clearTimeout(timer);
      child.kill("SIGTERM");
      await child.status;
      await lines.cancel().catch(() => {});
      await stderr;
    }
  },
});
