/**
 * Shared by the toolkit tests: the tiny reference model from `tests/fixtures/` and a relative error.
 * @module
 */
import assert from "node:assert/strict";
import { HookedTransformer, type Tokenizer } from "../mod.ts";
import { fixturePath } from "./fixtures.ts";
import type { Device } from "../backend/select.ts";
import type { WeightDtype } from "../backend/backend.ts";

/** Options of {@linkcode fixtureModel}. */
export interface FixtureModelOptions {
  /** All four of `from_pretrained`'s processing steps (default true), or none. */
  processed?: boolean;
  /** The device (default wasm). */
  device?: Device;
  /** How the big matrices are stored (default f32). */
  weightDtype?: WeightDtype;
  /** A tokenizer to attach. */
  tokenizer?: Tokenizer;
}

/** A model from `tests/fixtures/<dir>` (config.json, model.safetensors), on one thread. */
export async function fixtureModel(
  dir: string,
  opts: FixtureModelOptions = {},
): Promise<HookedTransformer> {
  const path = fixturePath(dir);
  const processed = opts.processed ?? true;
  return await HookedTransformer.fromBytes(
    JSON.parse(await Deno.readTextFile(`${path}/config.json`)),
    await Deno.readFile(`${path}/model.safetensors`),
    {
      name: dir,
      tokenizer: opts.tokenizer,
      threads: 1,
      device: opts.device ?? "wasm",
      weightDtype: opts.weightDtype ?? "f32",
      foldLn: processed,
      centerWritingWeights: processed,
      centerUnembed: processed,
      foldValueBiases: processed,
    },
  );
}

/**
 * The tiny GPT-2 (2 layers, 4 heads, d_model 32, vocabulary 96) with or without processing, on
 * `device` (default wasm).
 */
export function tinyModel(
  processed = true,
  tokenizer?: Tokenizer,
  device: Device = "wasm",
): Promise<HookedTransformer> {
  return fixtureModel("tiny-hf-f32", { processed, tokenizer, device });
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
