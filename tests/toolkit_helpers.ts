/**
 * Shared by the toolkit tests: the tiny reference model from `tests/fixtures/` and a relative error.
 * @module
 */
import assert from "node:assert/strict";
import { HookedTransformer, type Tokenizer } from "../mod.ts";
import { fixturePath } from "./fixtures.ts";
import type { Device } from "../backend/select.ts";

/**
 * The tiny GPT-2 (2 layers, 4 heads, d_model 32, vocabulary 96) with or without processing, on
 * `device` (default wasm).
 */
export async function tinyModel(
  processed = true,
  tokenizer?: Tokenizer,
  device: Device = "wasm",
): Promise<HookedTransformer> {
  const dir = fixturePath("tiny-hf-f32");
  return await HookedTransformer.fromBytes(
    JSON.parse(await Deno.readTextFile(`${dir}/config.json`)),
    await Deno.readFile(`${dir}/model.safetensors`),
    {
      name: "tiny-hf-f32",
      tokenizer,
      threads: 1,
      device,
      foldLn: processed,
      centerWritingWeights: processed,
      centerUnembed: processed,
      foldValueBiases: processed,
    },
  );
}

/** max |a - b| / max(|b|), the relative error of a tensor against a reference. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, "lengths");
  let diff = 0, scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / scale;
}

/**
 * A character tokenizer for the tiny model's 96 ids: printable ASCII (32..126) is id = code - 32;
 * id 95 is the model's BOS/EOS token, shown as `<|endoftext|>`.
 */
export const CHAR_TOKENIZER: Tokenizer = {
  vocabSize: 96,
  encode: (text) =>
    Array.from(text, (c) => {
      const id = c.charCodeAt(0) - 32;
      if (id < 0 || id > 94) throw new Error(`no token for ${JSON.stringify(c)}`);
      return id;
    }),
  decode: (ids) =>
    ids.map((id) => id === 95 ? "<|endoftext|>" : String.fromCharCode(id + 32)).join(""),
  tokenStrings: (ids) => ids.map((id) => CHAR_TOKENIZER.decode([id])),
};
