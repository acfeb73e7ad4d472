/**
 * Finds the reference fixtures committed in `tests/fixtures/` (see its README: what each file is
 * and who wrote it; they are never regenerated).
 * @module
 */
import { fromFileUrl } from "./path.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url);

/**
 * Absolute path of a file or folder under `tests/fixtures/` (`""` for the folder itself).
 *
 * @example
 * ```ts
 * import { fixturePath } from "./fixtures.ts";
 * Deno.statSync(`${fixturePath("tiny-hf-f32")}/model.safetensors`).isFile; // true
 * ```
 */
export function fixturePath(name: string): string {
  const path = fromFileUrl(new URL(name, FIXTURES));
  try {
    Deno.statSync(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    throw new Error(
      `reference fixture ${path} not found: tests/fixtures/ is part of the repository; restore ` +
        `it with git checkout -- tests/fixtures`,
      { cause: e },
    );
  }
  return path;
}

/** The four tiny reference models and the dtype key of their golden outputs. */
export const TINY_MODELS = [
  { dir: "tiny-hf-f32", golden: "f32" },
  { dir: "tiny-hf-f16", golden: "f16" },
  { dir: "tiny-hf-bf16", golden: "bf16" },
  { dir: "tiny-official-layout", golden: "f32" },
] as const;

/** The golden outputs HF transformers computed in float64 for the tiny models. */
export interface TinyGolden {
  /** The token ids the outputs are for, [batch][pos]. */
  tokens: number[][];
  /** Per dtype key (`f32`, `f16`, `bf16`): `logits`, `attentions` and `hidden_states`. */
  [dtype: string]: unknown;
}

/**
 * Reads `tiny-golden.json`.
 *
 * @example
 * ```ts
 * import { readTinyGolden } from "./fixtures.ts";
 * readTinyGolden().tokens.length; // 2
 * ```
 */
export function readTinyGolden(): TinyGolden {
  return JSON.parse(Deno.readTextFileSync(fixturePath("tiny-golden.json")));
}

/** Absolute path of a file or folder under this repository's `tests/fixtures/` (copies). */
export function repoFixturePath(name: string): string {
  return fromFileUrl(new URL(`fixtures/${name}`, import.meta.url));
}
