/**
 * The tiny GPT-NeoX, Llama and Qwen2 checkpoints copied into `tests/fixtures/` (from the shared
 * reference fixtures), and how the family tests load them.
 * @module
 */
import type { Device } from "../backend/select.ts";
import type { WeightDtype } from "../backend/backend.ts";
import { HookedTransformer } from "../model/hooked_transformer.ts";
import { fixturePath } from "./fixtures.ts";

/** The four models, and the final norm's tensor names in their checkpoints. */
export const FAMILY_FIXTURES = [
  { dir: "tiny-neox", finalNorm: "gpt_neox.final_layer_norm" },
  { dir: "tiny-neox-sequential", finalNorm: "gpt_neox.final_layer_norm" },
  { dir: "tiny-llama", finalNorm: "model.norm" },
  { dir: "tiny-qwen2", finalNorm: "model.norm" },
] as const;

/** A fixture's `config.json` and `model.safetensors` bytes. */
export async function readFamily(
  dir: string,
): Promise<{ config: Record<string, unknown>; bytes: Uint8Array }> {
  const path = fixturePath(dir);
  return {
    config: JSON.parse(await Deno.readTextFile(`${path}/config.json`)),
    bytes: await Deno.readFile(`${path}/model.safetensors`),
  };
}

/**
 * Loads a fixture model (one thread), processed as TransformerLens does or not at all, on
 * `device` (default wasm).
 */
export async function loadFamily(
  dir: string,
  processed: boolean,
  weightDtype: WeightDtype = "f32",
  bytes?: Uint8Array,
  device: Device = "wasm",
): Promise<HookedTransformer> {
  const files = await readFamily(dir);
  return await HookedTransformer.fromBytes(files.config, bytes ?? files.bytes, {
    name: dir,
    threads: 1,
    device,
    foldLn: processed,
    centerWritingWeights: processed,
    centerUnembed: processed,
    foldValueBiases: processed,
    weightDtype,
  });
}

/** Each row of `logits` minus its mean over the vocabulary (float64). */
export function centred(logits: number[], V: number): number[] {
  const out = logits.slice();
  for (let r = 0; r < out.length; r += V) {
    let mean = 0;
    for (let j = 0; j < V; j++) mean += out[r + j];
    mean /= V;
    for (let j = 0; j < V; j++) out[r + j] -= mean;
  }
  return out;
}
