/**
 * The SAE section of `deno task bench`: a 24576-wide standard SAE (seeded random weights) spliced
 * at one layer of the GPT-2-small-shape model at 30 x 101, its cost beside its two matrix products
 * alone (the bar: at most 1.3x), and the top-activating contexts of every feature over 100
 * texts of 128 tokens.
 * @module
 */
import type { HookedTransformer } from "../mod.ts";
import { SAE, topActivatingContexts } from "../mod.ts";
import { SeededRng } from "../core/rng.ts";
import { median } from "./peers/common.ts";

/** The SAE's width (gpt2-small-res-jb's). */
export const SAE_WIDTH = 24576;

/** What the SAE section measured (median seconds). */
export interface SaeBenchResult {
  /** Batch x positions of the spliced runs. */
  shape: string;
  /** The model alone. */
  clean: number;
  /** The model with the SAE spliced (no error term). */
  spliced: number;
  /** The encoder and decoder products alone, on the same backend. */
  matmuls: number;
  /** (spliced - clean) / matmuls. */
  spliceOverMatmuls: number;
  /** Top-activating contexts of every feature over `texts` x `textLen`. */
  topContexts: { texts: number; textLen: number; seconds: number; positions: number };
}

function randn(n: number, rng: SeededRng, scale: number): Float32Array {
  return Float32Array.from({ length: n }, () => rng.normal() * scale);
}

/** Runs the section on `model` (GPT-2-small shape) with the bench's tokens. */
export async function saeBench(
  model: HookedTransformer,
  tokens: number[][],
  log: (line: string) => void,
): Promise<SaeBenchResult> {
  const d = model.cfg.dModel, n = SAE_WIDTH;
  const rng = new SeededRng(18, "sae-bench");
  const sae = await SAE.fromTensors(
    { d_in: d, d_sae: n, hook_name: "blocks.6.hook_resid_pre", architecture: "standard" },
    {
      W_enc: { data: randn(d * n, rng, 1 / Math.sqrt(d)), shape: [d, n] },
      W_dec: { data: randn(n * d, rng, 1 / Math.sqrt(n)), shape: [n, d] },
      b_enc: { data: randn(n, rng, 0.1).map((v) => v - 0.3), shape: [n] },
      b_dec: { data: randn(d, rng, 0.1), shape: [d] },
    },
    { backend: model.backend },
  );
  const rows = tokens.slice(0, 30);
  const m = rows.length * rows[0].length;
  log(`sae: clean and spliced forward at ${rows.length}x${rows[0].length} ...`);
  // interleaved, so both see the same load
  const clean: number[] = [], spliced: number[] = [];
  await model.run(rows);
  await model.runWithSaes(rows, { saes: [sae] });
  for (let i = 0; i < 3; i++) {
    let t0 = performance.now();
    await model.run(rows);
    clean.push((performance.now() - t0) / 1000);
    t0 = performance.now();
    await model.runWithSaes(rows, { saes: [sae] });
    spliced.push((performance.now() - t0) / 1000);
  }
  log("sae: the two products alone ...");
  const be = model.backend;
  let matmuls: number;
  {
    // the products alone, on the SAE's own packed weights and buffers of the same sizes
    using scope = be.scope();
    const enc = scope.uploadMatrix(sae.W_enc.data, d, n);
    const dec = scope.uploadMatrix(sae.W_dec.data, n, d);
    const x = scope.upload(new Float32Array(m * d).fill(0.5));
    const h = scope.alloc(m * n), y = scope.alloc(m * d);
    const t: number[] = [];
    for (let i = 0; i < 4; i++) {
      const t0 = performance.now();
      be.matmul(x, enc, h, m);
      be.matmul(h, dec, y, m);
      await be.read(y.at(0, 1)); // on a device that enqueues, wait for the products
      t.push((performance.now() - t0) / 1000);
    }
    matmuls = median(t.slice(1));
  }
  const texts = 100, textLen = 128;
  log(`sae: top-activating contexts of ${n} features over ${texts} texts of ${textLen} tokens ...`);
  const trng = new SeededRng(7, "sae-bench-texts");
  const corpus = Array.from(
    { length: texts },
    () => Array.from({ length: textLen }, () => trng.int(model.cfg.dVocab)),
  );
  const t0 = performance.now();
  const top = await topActivatingContexts(model, sae, corpus, { k: 10, batchSize: 8 });
  const topSeconds = (performance.now() - t0) / 1000;
  const c = median(clean), s = median(spliced);
  return {
    shape: `${rows.length}x${rows[0].length}`,
    clean: c,
    spliced: s,
    matmuls,
    spliceOverMatmuls: (s - c) / matmuls,
    topContexts: { texts, textLen, seconds: topSeconds, positions: top.positions },
  };
}

/** The section's table. */
export function saeTable(r: SaeBenchResult): string {
  const f = (x: number) => x.toFixed(3);
  return [
    `\nSAE (d_sae ${SAE_WIDTH}) spliced at one layer, ${r.shape} (median seconds)`,
    `clean forward ${f(r.clean)}  spliced ${f(r.spliced)}  splice cost ${f(r.spliced - r.clean)}` +
    `  two products alone ${f(r.matmuls)}  splice / products ${r.spliceOverMatmuls.toFixed(2)}x`,
    `top-activating contexts of every feature over ${r.topContexts.texts} texts x ` +
    `${r.topContexts.textLen} tokens: ${r.topContexts.seconds.toFixed(1)} s`,
  ].join("\n");
}
