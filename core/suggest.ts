/**
 * "Did you mean ...?": the closest known name to a misspelt one, for error messages.
 * @module
 */

/**
 * Levenshtein distance between two strings (insertions, deletions, substitutions).
 *
 * @example
 * ```ts
 * import { editDistance } from "./suggest.ts";
 * editDistance("hook_z", "hook_q"); // 1
 * ```
 */
export function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0];
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j];
      prev[j] = Math.min(prev[j] + 1, prev[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length];
}

/**
 * The candidate closest to `name` (case-insensitive), if it is within `maxDistance` edits.
 *
 * @example
 * ```ts
 * import { closestName } from "./suggest.ts";
 * closestName("retrunType", ["returnType", "namesFilter"], 2); // "returnType"
 * ```
 */
export function closestName(
  name: string,
  candidates: Iterable<string>,
  maxDistance = Infinity,
): string | undefined {
  let best: string | undefined;
  let bestScore = Infinity;
  for (const c of candidates) {
    const s = editDistance(name.toLowerCase(), c.toLowerCase());
    if (s < bestScore) [best, bestScore] = [c, s];
  }
  return bestScore <= maxDistance ? best : undefined;
}
