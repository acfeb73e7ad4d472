import assert from "node:assert/strict";
import { ConfigError, InputError } from "../core/errors.ts";
import { BpeTokenizer, tokenizerFromFiles } from "../tokenizer/bpe.ts";
import { preTokenize, toByteLevel } from "../tokenizer/byte_level.ts";
import { R50K_END_OF_TEXT, r50kTokenizer } from "../tokenizer/r50k.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { gpt2FilesFromRanks } from "./tokenizer_files.ts";

const FIXED_CORPUS = [
  "Hello world",
  "",
  " ",
  "  a\n\n\tb  ",
  "\n",
  "   leading and trailing   ",
  "I'm sure they'll say it's what we'd've done; DON'T SHOUT.",
  "The year 2024 had 366 days; pi is 3.14159 and 1,000,000 is a lot.",
  "function f(x) { return x ** 2 + 1; } // comment\n\tconst a = [1, 2, 3];",
  "emoji 😀👍🏽 family 👨‍👩‍👧‍👦 flag 🇫🇷",
  "中文字符和日本語のテキスト、한국어",
  "combining: e\u0301 a\u0308 n\u0303 Z\u0335\u0321\u0327a\u0336l\u0337g\u0338o",
  "Ünïcödé façade — “quotes” … ellipsis",
  "zero\u200bwidth\u00a0nbsp\u3000ideographic space",
  "mixed <|endoftext|> special in the middle",
  "<|endoftext|>",
  "tabs\t\t\tand\r\nwindows\r\nnewlines",
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
  "https://example.com/path?query=1&b=2#frag",
  "x\u0085y \ufeffbom",
];

/** A seeded generator of mixed-script strings, so the corpus is large but repeatable. */
function randomCorpus(n: number, seed: number): string[] {
  let s = seed >>> 0;
  const next = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
  const pieces = [
    ..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    ..." ,.;:!?'\"-()[]{}<>/\\|@#$%^&*_+=~`",
    " ",
    " ",
    "  ",
    "\n",
    "\t",
    "'s",
    "'ll",
    "é",
    "ß",
    "ø",
    "中",
    "文",
    "の",
    "😀",
    "🏽",
    "\u0301",
    "\u200d",
    "\u00a0",
    " the",
    " and",
    "ing",
  ];
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const len = Math.floor(next() * 40);
    let str = "";
    for (let j = 0; j < len; j++) str += pieces[Math.floor(next() * pieces.length)];
    out.push(str);
  }
  return out;
}

const CORPUS = [...FIXED_CORPUS, ...randomCorpus(300, 12345)];

function tokenizerJsonFromFiles(vocabJson: string, mergesTxt: string): string {
  const merges = mergesTxt.split("\n").slice(1).filter((l) => l !== "");
  return JSON.stringify({
    version: "1.0",
    added_tokens: [{ id: 50256, content: "<|endoftext|>", special: true }],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true },
    decoder: { type: "ByteLevel" },
    model: { type: "BPE", vocab: JSON.parse(vocabJson), merges },
  });
}

Deno.test("r50k: known GPT-2 ids", async () => {
  const tok = await r50kTokenizer();
  assert.deepEqual(tok.encode("Hello world"), [15496, 995]);
  assert.deepEqual(tok.tokenStrings([15496, 995]), ["Hello", " world"]);
  assert.equal(tok.decode([15496, 995]), "Hello world");
  assert.deepEqual(tok.encode("<|endoftext|>"), [R50K_END_OF_TEXT]);
  assert.equal(tok.decode([R50K_END_OF_TEXT]), "<|endoftext|>");
  assert.equal(await r50kTokenizer(), tok, "one shared instance");
});

Deno.test("r50k: exact round trips of Unicode and whitespace", async () => {
  const tok = await r50kTokenizer();
  for (const text of CORPUS) assert.equal(tok.decode(tok.encode(text)), text);
  assert.deepEqual(tok.tokenStrings(tok.encode("  a\n\n\tb  ")).join(""), "  a\n\n\tb  ");
});

Deno.test("r50k: token strings show a character cut across tokens as U+FFFD", async () => {
  const tok = await r50kTokenizer();
  const ids = tok.encode(" 😀");
  assert.ok(ids.length > 1, "the emoji takes more than one token");
  const strs = tok.tokenStrings(ids);
  assert.ok(strs.every((s) => s.includes("\uFFFD")), JSON.stringify(strs));
  assert.equal(tok.decode(ids), " 😀");
});

Deno.test("r50k: ids outside the vocabulary are an InputError", async () => {
  const tok = await r50kTokenizer();
  assert.throws(() => tok.decode([50257]), InputError);
  assert.throws(() => tok.tokenStrings([-1]), InputError);
  assert.throws(() => tok.decode([1.5]), InputError);
});

Deno.test("pre-tokenizer: GPT-2's regex with Unicode White_Space", () => {
  assert.deepEqual(preTokenize("I'm here!  ok"), ["I", "'m", " here", "!", " ", " ok"]);
  assert.deepEqual(preTokenize("  a\n\n\tb  "), [" ", " a", "\n\n", "\t", "b", "  "]);
  // U+0085 is White_Space (Python `regex`, tiktoken, HF), U+FEFF is not (JavaScript's \s differs).
  assert.deepEqual(preTokenize("x\u0085y"), ["x", "\u0085", "y"]);
  assert.deepEqual(preTokenize("\ufeffhi"), ["\ufeff", "hi"]);
  assert.equal(toByteLevel(" é\n"), "ĠÃ©Ċ");
});

Deno.test("files BPE (vocab.json + merges.txt and tokenizer.json) agrees with r50k", async () => {
  const r50k = await r50kTokenizer();
  const { vocabJson, mergesTxt } = gpt2FilesFromRanks();
  assert.equal(mergesTxt.split("\n").length - 2, 50000, "GPT-2 has 50000 merges");
  const dir = await Deno.makeTempDir({ prefix: "tokenizer_test_" });
  try {
    await Deno.writeTextFile(`${dir}/vocab.json`, vocabJson);
    await Deno.writeTextFile(`${dir}/merges.txt`, mergesTxt);
    await Deno.writeTextFile(`${dir}/tokenizer.json`, tokenizerJsonFromFiles(vocabJson, mergesTxt));
    const fromPair = BpeTokenizer.fromVocabAndMerges(
      await Deno.readTextFile(`${dir}/vocab.json`),
      await Deno.readTextFile(`${dir}/merges.txt`),
    );
    const fromJson = BpeTokenizer.fromTokenizerJson(
      await Deno.readTextFile(`${dir}/tokenizer.json`),
    );
    for (const tok of [fromPair, fromJson] as Tokenizer[]) {
      assert.deepEqual(tok.encode("Hello world"), [15496, 995]);
      for (const text of CORPUS) {
        const ids = tok.encode(text);
        assert.deepEqual(ids, r50k.encode(text), JSON.stringify(text));
        assert.equal(tok.decode(ids), text);
        assert.deepEqual(tok.tokenStrings(ids), r50k.tokenStrings(ids));
      }
    }
    assert.equal(fromPair.vocabSize, 50257);
    assert.deepEqual(tokenizerFromFiles({ vocabJson, mergesTxt })?.encode(" hi"), [23105]);
    assert.equal(tokenizerFromFiles({ vocabJson }), undefined, "merges.txt missing");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("files BPE: a tiny vocabulary, added tokens and prefix space", () => {
  const vocab = { "a": 0, "b": 1, "Ġ": 2, "ab": 3, "Ġab": 4 };
  const tok = BpeTokenizer.fromVocabAndMerges(JSON.stringify(vocab), "#version: 0.2\na b\nĠ ab\n");
  assert.deepEqual(tok.encode("ab ab"), [3, 4]);
  assert.deepEqual(tok.encode("ba"), [1, 0]);
  assert.equal(tok.decode([3, 4]), "ab ab");
  assert.throws(() => tok.decode([9]), InputError);
  assert.throws(() => tok.encode("c"), ConfigError);

  const json = JSON.stringify({
    added_tokens: [{ id: 5, content: "<s>" }, { id: 6, content: "<s>x" }],
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [{ type: "ByteLevel", add_prefix_space: true }],
    },
    decoder: { type: "ByteLevel" },
    model: { type: "BPE", vocab, merges: [["a", "b"], ["Ġ", "ab"]] },
  });
  const withAdded = BpeTokenizer.fromTokenizerJson(json);
  // As HF tokenizers 0.22 gives: the prefix space goes before every stretch between added tokens.
  assert.deepEqual(withAdded.encode("ab<s>ab<s>x"), [4, 5, 4, 6]);
  assert.equal(withAdded.decode([4, 5, 4, 6]), " ab<s> ab<s>x");
  assert.equal(withAdded.vocabSize, 7);
});

Deno.test("files BPE: what the library does not implement is a ConfigError naming it", () => {
  const base = { model: { type: "BPE", vocab: { a: 0 }, merges: [] } };
  const cases: Array<[unknown, RegExp]> = [
    ["{", /not valid JSON/],
    [[1], /must hold a JSON object/],
    [{ model: { type: "WordPiece" } }, /"WordPiece" model; only BPE/],
    [{ ...base, normalizer: { type: "Precompiled" } }, /normalizer "Precompiled"/],
    [{ ...base, pre_tokenizer: { type: "BertPreTokenizer" } }, /pre-tokenizer "BertPreTokenizer"/],
    [{ ...base, decoder: { type: "WordPiece" } }, /decoder "WordPiece"/],
    [{ ...base, post_processor: { type: "RobertaProcessing" } }, /post-processor/],
    [{ ...base, pre_tokenizer: { type: "Split", pattern: { Regex: "a++" } } }, /possessive/],
    [{ ...base, pre_tokenizer: { type: "Split", pattern: { Regex: "\\bx" } } }, /escape \\b/],
    [{ model: { type: "BPE", vocab: { a: 0 }, merges: ["a b"] } }, /not in the vocabulary/],
    [{ model: { type: "BPE", vocab: { a: 0 }, merges: [], dropout: 0.1 } }, /dropout/],
    [{ ...base, added_tokens: [{ id: "x" }] }, /malformed added token/],
  ];
  for (const [json, pattern] of cases) {
    const text = typeof json === "string" ? json : JSON.stringify(json);
    assert.throws(() => BpeTokenizer.fromTokenizerJson(text), (e: Error) => {
      assert.ok(e instanceof ConfigError, `${e}`);
      assert.match(e.message, pattern);
      return true;
    });
  }
  assert.throws(() => BpeTokenizer.fromVocabAndMerges("{}", "#version: 0.2\na b c\n"), ConfigError);
});

Deno.test("the js-tiktoken version in deno.json is the one tokenizer/r50k.ts loads", async () => {
  const source = await Deno.readTextFile(new URL("../tokenizer/r50k.ts", import.meta.url));
  const used = new Set([...source.matchAll(/"(npm:js-tiktoken@[^/"]+)\//g)].map((m) => m[1]));
  // The library's pin (deno.json) and the tests' (tests/deno.json, whose ranks the tests read).
  for (const file of ["../deno.json", "./deno.json"]) {
    const config = JSON.parse(await Deno.readTextFile(new URL(file, import.meta.url)));
    assert.deepEqual([...used], [config.imports["js-tiktoken"]], file);
  }
});
