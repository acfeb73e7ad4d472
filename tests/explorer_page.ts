/**
 * What the explorer's page tests read from the page and compare with the library: a grid view's
 * cells, a softmax row of the library's logits in float64, and a closeness assertion that names
 * both sides.
 */
import assert from "node:assert/strict";
import type { Tensor } from "../mod.ts";
import type { Page } from "puppeteer-core";

/** The numbers of a grid view's cells: `[row][col]` from `data-row`, `data-col`, `data-value`. */
export async function gridValues(page: Page, selector: string): Promise<number[][]> {
  return await page.evaluate(`(() => {
    const out = [];
    for (const c of document.querySelectorAll(${JSON.stringify(`${selector} td.c[data-row]`)})) {
      (out[Number(c.dataset.row)] ??= [])[Number(c.dataset.col)] = Number(c.dataset.value);
    }
    return out;
  })()`) as number[][];
}

/** The probabilities at position `t` of logits [1, pos, d_vocab], in float64. */
export function softmaxRow(logits: Tensor, t: number): Float64Array {
  const V = logits.shape[2];
  const row = logits.data.subarray(t * V, (t + 1) * V);
  let max = -Infinity;
  for (const x of row) max = Math.max(max, x);
  let sum = 0;
  for (const x of row) sum += Math.exp(x - max);
  return Float64Array.from(row, (x) => Math.exp(x - max) / sum);
}

/** Asserts |a - b| <= tol, `a` being what the page shows and `b` the library's value. */
export function close(a: number, b: number, tol: number, what: string): void {
  assert.ok(Math.abs(a - b) <= tol, `${what}: page ${a}, library ${b} (tolerance ${tol})`);
}

/**
 * Reads the tokens view's top-k table and asserts, at each of the T positions, that it lists the
 * library's `k` most probable ids of `logits` [1, T, d_vocab] in order (ties by id). Returns each
 * shown probability beside the library's, with its name, for the caller's tolerance.
 */
export async function checkTopK(
  page: Page,
  logits: Tensor,
  T: number,
  k: number,
): Promise<{ shown: number; library: number; what: string }[]> {
  const topk = await page.evaluate(`[...document.querySelectorAll("#view-tokens table.topk tr")]
    .slice(1).map((r) => [...r.querySelectorAll("td[data-id]")]
      .map((c) => [Number(c.dataset.id), Number(c.dataset.value)]))`) as [number, number][][];
  assert.equal(topk.length, T, "one row per token");
  const out: { shown: number; library: number; what: string }[] = [];
  for (let t = 0; t < T; t++) {
    const p = softmaxRow(logits, t);
    const order = [...p.keys()].sort((i, j) => p[j] - p[i] || i - j).slice(0, k);
    assert.deepEqual(topk[t].map(([id]) => id), order, `top-${k} ids at position ${t}`);
    for (const [id, prob] of topk[t]) {
      out.push({ shown: prob, library: p[id], what: `p(${id}) at ${t}` });
    }
  }
  return out;
}

/** Where the explorer tests save their screenshots. */
export const ARTIFACTS = new URL("../out/test-artifacts/", import.meta.url);

/**
 * After a failed page test: saves the page as `out/test-artifacts/explorer-<name>.png` and prints
 * where, with the page's console errors, the explorer's own error and `extra` (e.g. failed
 * requests).
 */
export async function screenshotOnFailure(
  page: Page,
  name: string,
  errors: string[],
  extra = "",
): Promise<void> {
  await Deno.mkdir(ARTIFACTS, { recursive: true });
  await Deno.writeFile(new URL(`explorer-${name}.png`, ARTIFACTS), await page.screenshot());
  console.error(
    `explorer test failed: screenshot in out/test-artifacts/explorer-${name}.png; page errors: ${
      JSON.stringify(errors)
    }; page error: ${await page.evaluate("globalThis.__explorer?.error").catch(() => "?")}` +
      (extra ? `; ${extra}` : ""),
  );
}
