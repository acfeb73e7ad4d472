/**
 * The tiny Gemma 2 and Gemma 3 checkpoints copied into `tests/fixtures/` (from the shared
 * reference fixtures, README section "Gemma"), their float64 references, and how the Gemma tests
 * load them.
 * @module
 */
import type { Device } from "../backend/select.ts";
import { HookedTransformer } from "../model/hooked_transformer.ts";
import { fixturePath } from "./fixtures.ts";
import { readFamily } from "./families_fixtures.ts";

/** The two models. */
export const GEMMA_FIXTURES = ["tiny-gemma2", "tiny-gemma3"] as const;

/** One model's references in `gemma-golden.json`. */
export interface GemmaGolden {
  layer_types: string[];
  embed_normalizer: number;
  logits: number[][][];
  hidden_states: number[][][][];
  attentions: number[][][][][];
}

/** `gemma-golden.json`: the tokens [2][14] and each model's references. */
export const GEMMA_GOLDEN = JSON.parse(
  await Deno.readTextFile(fixturePath("gemma-golden.json")),
) as { tokens: number[][] } & Record<(typeof GEMMA_FIXTURES)[number], GemmaGolden>;

/** Loads a Gemma fixture (one thread), processed as TransformerLens does or not at all. */
export async function loadGemma(
  dir: string,
  processed: boolean,
  opts: { threads?: number; device?: Device } = {},
): Promise<HookedTransformer> {
  const files = await readFamily(dir);
  return await HookedTransformer.fromBytes(files.config, files.bytes, {
    name: dir,
    threads: opts.threads ?? 1,
    device: opts.device,
    foldLn: processed,
    centerWritingWeights: processed,
    centerUnembed: processed,
    foldValueBiases: processed,
  });
}

/** Largest absolute difference of two equally long arrays (the gemma tests import it here). */
export { maxAbsDiff } from "./assertions.ts";
