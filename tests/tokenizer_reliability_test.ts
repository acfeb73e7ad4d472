/**
 * tokenizer.json files from strangers: patterns that used to hang the load (an unterminated
 * `\x{`) or encoding (catastrophic backtracking), inputs that overflowed the stack (a 6M-character
 * word, 150k added tokens, Sequences nested 50k deep), and a decode that dropped a leading BOM.
 * Anything that could hang or exhaust memory runs in a child process with a deadline (see
 * `bounded_child.ts`); the outcome must be a result or a ConfigError / InputError.
 */
import assert from "node:assert/strict";
import { ConfigError } from "../core/errors.ts";
import { SeededRng } from "../core/rng.ts";
import { BpeTokenizer } from "../tokenizer/bpe.ts";
import { GPT2_PATTERN } from "../tokenizer/byte_level.ts";
import { compilePattern, GPT2_ONIG } from "../tokenizer/pattern.ts";
import { onigRegExp } from "../tokenizer/regex.ts";
import { runChild } from "./bounded_child.ts";

/** A byte-level BPE whose only merges make `中` (UTF-8 e4 b8 ad) one token. */
function tinyJson(extra: Record<string, unknown> = {}): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  ["ä", "¸", "Ń", "ä¸", "ä¸Ń", "a", "b", "Ġ", "ï", "»", "¿", "1", "x", "!"].forEach((t, i) =>
    vocab[t] = i
  );
  return {
    model: { type: "BPE", vocab, merges: ["ä ¸", "ä¸ Ń"] },
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false },
    decoder: { type: "ByteLevel" },
    ...extra,
  };
}

Deno.test("regex: an unterminated \\x{ and every escape truncated at every length return or throw ConfigError", async () => {
  // In a child: the old translation looped forever on "\\x{41" (and died at 4.3 GB).
  const out = await runChild(
    `
const { onigRegExp } = await import(REPO + "tokenizer/regex.ts");
const { ConfigError } = await import(REPO + "core/errors.ts");
const { SeededRng } = await import(REPO + "core/rng.ts");
const bodies = ["x{41}", "x{10FFFF}", "x41", "p{L}", "P{N}", "s", "S", "d", "D", "w", "W", "r", "n",
  "t", "f", "v", "b", "h", "G", "k<a>", "1", "\\\\", "{", "}", "[", "-", "u{41}", "x{110000}", "x{zz}"];
const contexts = [["", ""], ["[", "]"], ["(?i:", ")"], ["a", "+b"], ["[^", "a]"]];
let tried = 0, ok = 0, refused = 0;
const other = [];
const one = (p) => {
  tried++;
  try { onigRegExp(p); ok++; } catch (e) {
    if (e instanceof ConfigError) refused++; else other.push(p + ": " + e);
  }
};
const first = (() => { try { onigRegExp("\\\\x{41"); return "none"; } catch (e) { return e.name; } })();
for (const body of bodies) {
  const esc = "\\\\" + body;
  for (let n = 0; n <= esc.length; n++) for (const [a, b] of contexts) one(a + esc.slice(0, n) + b);
}
// Seeded mutations of the real patterns: cut, duplicate, drop and insert escapes and brackets.
const rng = new SeededRng(21, "regex-fuzz");
const bases = [${
      JSON.stringify(GPT2_ONIG)
    }, "(?i:'s|'t)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)"];
const pieces = ["\\\\", "\\\\x{", "\\\\x", "\\\\p{", "{", "}", "(", ")", "[", "]", "(?i:", "+", "*", "?", "|", "^", "-", "&&"];
for (let k = 0; k < 3000; k++) {
  let p = bases[k % 2];
  for (let m = 0; m < 1 + rng.int(3); m++) {
    const at = rng.int(p.length + 1);
    const r = rng.int(3);
    if (r === 0) p = p.slice(0, at) + pieces[rng.int(pieces.length)] + p.slice(at);
    else if (r === 1) p = p.slice(0, at) + p.slice(at + 1 + rng.int(4));
    else p = p.slice(0, at);
  }
  one(p);
}
report({ first, tried, ok, refused, other: other.slice(0, 5) });
`,
    { timeoutMs: 60_000, heapMiB: 512 },
  );
  assert.ok(!out.timedOut, "the pattern translation did not finish within 60 s");
  assert.ok(out.result, `the child died: ${out.stderr.slice(-500)}`);
  const r = out.result as { first: string; tried: number; refused: number; other: string[] };
  assert.equal(r.first, "ConfigError");
  assert.deepEqual(r.other, []);
  assert.ok(r.tried > 3500 && r.refused > 500, JSON.stringify(r));
});

/** Random text over the characters that tell the patterns' alternatives apart. */
function randomText(rng: SeededRng): string {
  const alphabet = [
    "a",
    "Z",
    "s",
    "t",
    "r",
    "e",
    "v",
    "m",
    "l",
    "d",
    "S",
    "T",
    "R",
    "E",
    "L",
    "D",
    "\u017f",
    "é",
    "\u0301",
    "中",
    "\u{1d49c}",
    "1",
    "٣",
    "²",
    "Ⅻ",
    " ",
    " ",
    "\t",
    "\n",
    "\r",
    "\u0085",
    "\u00a0",
    "\u3000",
    "'",
    "'",
    "!",
    ".",
    "\ufeff",
    "\ud800",
    "😀",
    "_",
  ];
  let s = "";
  const n = rng.int(14);
  for (let i = 0; i < n; i++) s += alphabet[rng.int(alphabet.length)];
  return s;
}

Deno.test("patterns: the linear scanners cut text exactly as the translated RegExps do", () => {
  const llama3 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  const qwen2 = llama3.replace("\\p{N}{1,3}", "\\p{N}");
  const rng = new SeededRng(7, "scanner-diff");
  for (const onig of [GPT2_ONIG, llama3, qwen2]) {
    const matcher = compilePattern(onig);
    const re = onigRegExp(onig);
    for (let k = 0; k < 4000; k++) {
      const text = randomText(rng);
      const expected = Array.from(text.matchAll(re), (m) => [m.index, m.index + m[0].length]);
      assert.deepEqual([...matcher.ranges(text)], expected, `${onig} on ${JSON.stringify(text)}`);
    }
  }
  // GPT-2's ByteLevel regex (JavaScript spelling) is the same pattern.
  assert.equal(onigRegExp(GPT2_ONIG).source, new RegExp(GPT2_PATTERN, "gu").source);
});

Deno.test("patterns: catastrophic backtracking patterns encode in linear time; unknown lookaround is refused", async () => {
  const out = await runChild(
    `
const { tokenizerForModel } = await import(REPO + "tokenizer/for_model.ts");
const base = ${JSON.stringify(tinyJson())};
const t0 = performance.now();
const results = {};
for (const [name, json] of Object.entries({
  nested: { ...base, pre_tokenizer: { type: "Sequence", pretokenizers: [
    { type: "Split", pattern: { Regex: "(a+)+$" }, behavior: "Isolated" }, base.pre_tokenizer] } },
  alternation: { ...base, normalizer: { type: "Replace", pattern: { Regex: "(\\\\w|\\\\p{L})*\\\\d" }, content: "x" } },
})) {
  const tok = await tokenizerForModel({}, { tokenizerJson: JSON.stringify(json) }, "test");
  results[name] = [tok.encode("a".repeat(29) + "!").length, tok.encode("a".repeat(30)).length,
    tok.encode("a".repeat(100000) + "!").length, tok.encode("ab".repeat(50000) + "1b").length];
}
let refused = "none";
try {
  await tokenizerForModel({}, { tokenizerJson: JSON.stringify({ ...base, pre_tokenizer:
    { type: "Split", pattern: { Regex: "(a+)+(?=b)" }, behavior: "Isolated" } }) }, "test");
} catch (e) { refused = e.name + ": " + e.message; }
report({ results, refused, ms: performance.now() - t0 });
`,
    { timeoutMs: 60_000, heapMiB: 1024 },
  );
  assert.ok(!out.timedOut, "encoding with a backtracking pattern did not finish within 60 s");
  assert.ok(out.result, `the child died: ${out.stderr.slice(-800)}`);
  const r = out.result as { results: Record<string, number[]>; refused: string };
  // (a+)+$ keeps runs of a at the end as one piece: the BPE spells each "a" as one token.
  assert.deepEqual(r.results.nested, [30, 30, 100001, 100002]);
  // (\w|\p{L})*\d replaces a word ending in a digit by "x", so "ab...1b" becomes "xb".
  assert.deepEqual(r.results.alternation, [30, 30, 100001, 2]);
  assert.match(r.refused, /^ConfigError: .*lookaround/);
  console.log(`backtracking patterns: ${Math.round(out.result!.ms as number)} ms in the child`);
});

Deno.test("huge but plausible: a 6M-character CJK word encodes (no stack overflow), peak RSS measured", async () => {
  const out = await runChild(
    `
const { BpeTokenizer } = await import(REPO + "tokenizer/bpe.ts");
const tok = BpeTokenizer.fromTokenizerJson(${JSON.stringify(JSON.stringify(tinyJson()))});
const t0 = performance.now();
const ids = tok.encode("中".repeat(6_000_000));
report({ n: ids.length, allOne: ids.every((id) => id === 4), ms: performance.now() - t0 });
`,
    { timeoutMs: 120_000, heapMiB: 3072 },
  );
  assert.ok(!out.timedOut, "6M-character word: no result within 120 s");
  assert.ok(out.result, `the child died: ${out.stderr.slice(-800)}`);
  assert.equal(out.result!.n, 6_000_000);
  assert.equal(out.result!.allOne, true);
  console.log(
    `6M CJK word: ${Math.round(out.result!.ms as number)} ms, peak RSS ` +
      `${Math.round(out.result!.peakRssMiB as number)} MiB`,
  );
});

Deno.test("huge but plausible: 150k added tokens load; Sequences nested 50k deep are a ConfigError", () => {
  const added = Array.from({ length: 150_000 }, (_, i) => ({ id: 20 + i, content: `<t${i}>` }));
  const tok = new BpeTokenizer(tinyJson({ added_tokens: added }));
  assert.equal(tok.vocabSize, 150_020);
  assert.deepEqual(tok.encode("a<t5>a<t149999>"), [5, 25, 5, 150_019]);
  let deep: Record<string, unknown> = { type: "ByteLevel", add_prefix_space: false };
  for (let i = 0; i < 50_000; i++) deep = { type: "Sequence", pretokenizers: [deep] };
  assert.throws(() => new BpeTokenizer(tinyJson({ pre_tokenizer: deep })), ConfigError);
  let deepN: Record<string, unknown> = { type: "NFC" };
  for (let i = 0; i < 50_000; i++) deepN = { type: "Sequence", normalizers: [deepN] };
  assert.throws(() => new BpeTokenizer(tinyJson({ normalizer: deepN })), ConfigError);
  let deepD: Record<string, unknown> = { type: "Fuse" };
  for (let i = 0; i < 50_000; i++) deepD = { type: "Sequence", decoders: [deepD] };
  assert.throws(() => new BpeTokenizer(tinyJson({ decoder: deepD })), ConfigError);
  // Real files nest one level; a few levels still work.
  let ok: Record<string, unknown> = { type: "ByteLevel", add_prefix_space: false };
  for (let i = 0; i < 8; i++) ok = { type: "Sequence", pretokenizers: [ok] };
  assert.deepEqual(new BpeTokenizer(tinyJson({ pre_tokenizer: ok })).encode("ab"), [5, 6]);
});

Deno.test("r50k: long words encode in O(n log n), ids equal js-tiktoken's own encoder", async () => {
  const { r50kTokenizer } = await import("../tokenizer/r50k.ts");
  const { Tiktoken } = await import("js-tiktoken/lite");
  const ranks = (await import("js-tiktoken/ranks/r50k_base")).default;
  const reference = new Tiktoken({ ...ranks, pat_str: GPT2_PATTERN });
  const tok = await r50kTokenizer();
  const rng = new SeededRng(3, "r50k-diff");
  for (let k = 0; k < 2000; k++) {
    const text = randomText(rng) + (k % 7 === 0 ? "<|endoftext|>" + randomText(rng) : "");
    assert.deepEqual(tok.encode(text), reference.encode(text, "all"), JSON.stringify(text));
  }
  // 1000 CJK characters took js-tiktoken's merge 17 s; 300k now take about a second.
  const long = "中文".repeat(150_000);
  const ids = tok.encode(long);
  assert.equal(tok.decode(ids), long);
});

Deno.test("byte-level decode keeps a leading U+FEFF", () => {
  const tok = new BpeTokenizer(tinyJson());
  const ids = tok.encode("\ufeffab");
  assert.deepEqual(ids, [8, 9, 10, 5, 6]);
  assert.equal(tok.decode(ids), "\ufeffab");
});
