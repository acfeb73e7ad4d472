/**
 * Finds the read-only reference fixtures in `../shared/` beside the repository root.
 * @module
 */
import { fromFileUrl } from "./path.ts";

const SHARED = new URL("../../shared/", import.meta.url);

function sharedDir(sub: string): string {
  const dir = fromFileUrl(new URL(sub, SHARED));
  try {
    Deno.statSync(dir);
  } catch {
    throw new Error(
      `reference fixtures not found at ${dir}: the tests read ../shared/ beside the repository ` +
        `root (a checkout of the project next to its shared/ folder)`,
    );
  }
  return dir;
}

/** Absolute path of a folder or file under `../shared/fixtures/`. */
export function fixturePath(name: string): string {
  return sharedDir(`fixtures/${name}`);
}

/** Absolute path of a folder or file under `../shared/models/`. */
export function sharedModelPath(name: string): string {
  return sharedDir(`models/${name}`);
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
  tokens: number[][];
  [dtype: string]: unknown;
}

/** Reads `tiny-golden.json`. */
export function readTinyGolden(): TinyGolden {
  return JSON.parse(Deno.readTextFileSync(fixturePath("tiny-golden.json")));
}

/** Absolute path of a file or folder under this repository's `tests/fixtures/` (copies). */
export function repoFixturePath(name: string): string {
  return fromFileUrl(new URL(`fixtures/${name}`, import.meta.url));
}
