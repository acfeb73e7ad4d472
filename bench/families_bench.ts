/**
 * Forward speed of the other families at real models' shapes, with seeded random weights: a
 * GPT-NeoX of Pythia-160M's shape, a Llama of SmolLM2-135M's and a Gemma 3 of Gemma-3-270M's
 * (bf16 checkpoint, as released), processed as `from_pretrained` does, on the benchmark's tokens
 * (1 x 101 and 30 x 101, full logits). `bench/run.ts` prints them beside GPT-2 small's forward
 * measured in the same run; alone:
 *
 *   deno run -A bench/families_bench.ts              prints the table (without the GPT-2 column)
 *   deno run -A bench/families_bench.ts gemma        only the shapes whose name contains "gemma"
 * @module
 */
import { numel } from "../core/tensor.ts";
import { parseSafetensors } from "../io/safetensors.ts";
import { HookedTransformer } from "../model/hooked_transformer.ts";
import { median } from "./peers/common.ts";
import {
  GEMMA3_270M,
  PYTHIA_160M,
  SMOLLM2_135M,
  syntheticGemma,
  syntheticGptNeox,
  syntheticLlama,
} from "../weights/synthetic_families.ts";
import type { SyntheticGpt2 } from "../weights/synthetic.ts";

/** The benchmarked shapes and how to make their checkpoints. */
export const FAMILY_SHAPES: readonly { name: string; make: () => SyntheticGpt2 }[] = [
  { name: "pythia-160m (GPT-NeoX)", make: () => syntheticGptNeox({ ...PYTHIA_160M, seed: 0 }) },
  { name: "SmolLM2-135M (Llama)", make: () => syntheticLlama({ ...SMOLLM2_135M, seed: 0 }) },
  {
    name: "gemma-3-270m (Gemma 3)",
    make: () => syntheticGemma({ ...GEMMA3_270M, seed: 0, dtype: "BF16" }),
  },
];

/** One family's forward timings. */
export interface FamilyForward {
  name: string;
  /** Parameters of the checkpoint (a tied unembedding counted once). */
  params: number;
  /** By run (`1x101`, `30x101`): median seconds and tokens per second. */
  runs: Record<string, { seconds: number; tokensPerSecond: number }>;
}

/** Median seconds of `model.run` on the tokens (first run untimed: tier-up, page faults). */
async function time(model: HookedTransformer, tokens: number[][], reps: number): Promise<number> {
  await model.run(tokens);
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t = performance.now();
    await model.run(tokens);
    times.push((performance.now() - t) / 1000);
  }
  return median(times);
}

/**
 * Loads each family shape in turn (its synthetic checkpoint, default threads) and times its
 * forward on row 0 of `tokens` and on all of them; token ids beyond a vocabulary wrap around.
 */
export async function benchFamilies(
  tokens: number[][],
  log: (line: string) => void = () => {},
  only?: string,
): Promise<FamilyForward[]> {
  const out: FamilyForward[] = [];
  const shapes = FAMILY_SHAPES.filter((s) => !only || s.name.toLowerCase().includes(only));
  for (const { name, make } of shapes) {
    log(`forward: ${name} ...`);
    const { config, weights } = make();
    const file = parseSafetensors(weights);
    const params = file.names().reduce((n, t) => n + numel(file.info(t).shape), 0);
    const model = await HookedTransformer.fromBytes(config, weights, { name });
    const V = model.cfg.dVocab;
    const ids = tokens.map((row) => row.map((t) => t % V));
    const runs: FamilyForward["runs"] = {};
    for (const batch of [1, ids.length]) {
      const rows = ids.slice(0, batch);
      const seconds = await time(model, rows, batch === 1 ? 5 : 3);
      runs[`${batch}x${rows[0].length}`] = {
        seconds,
        tokensPerSecond: (batch * rows[0].length) / seconds,
      };
    }
    out.push({ name, params, runs });
    model.dispose();
  }
  return out;
}

/**
 * The table: seconds and tokens per second per family and run, and the ratio of tokens per second
 * to GPT-2 small's (`gpt2`: its tokens per second by run, from the same process).
 */
export function familiesTable(
  results: FamilyForward[],
  gpt2?: Record<string, number>,
): string {
  const lines = [
    "model                       params   tokens  seconds  tokens/s  vs GPT-2 small",
  ];
  for (const r of results) {
    for (const [key, run] of Object.entries(r.runs)) {
      const vs = gpt2?.[key] ? `${(run.tokensPerSecond / gpt2[key]).toFixed(2)}x` : "-";
      lines.push(
        `${r.name.padEnd(26)} ${`${(r.params / 1e6).toFixed(0)}M`.padStart(7)} ${key.padStart(8)} ${
          run.seconds.toFixed(3).padStart(8)
        } ${run.tokensPerSecond.toFixed(0).padStart(9)} ${vs.padStart(15)}`,
      );
    }
  }
  return lines.join("\n");
}

if (import.meta.main) {
  const tokens = Array.from(
    { length: 30 },
    (_, b) => Array.from({ length: 101 }, (_, t) => (b * 7919 + t * 104729) % 49152),
  );
  const only = Deno.args[0]?.toLowerCase();
  console.log(familiesTable(await benchFamilies(tokens, console.error, only)));
}
