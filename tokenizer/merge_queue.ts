/**
 * Byte-pair merges, lowest rank first and leftmost among equal ranks, through a binary heap of
 * `rank * 2^32 + position`: O(log n) a merge instead of a rescan of the word. Both BPE tokenizers
 * (`bpe_model.ts` over token ids, `r50k.ts` over byte spans) run their words through it.
 * @module
 */

/**
 * Merges the `n` parts of a word (part `i` starts at position `i`) while any adjacent pair has a
 * rank. `rankOf(i, j, end)` is the rank of merging part `i` with the part `j` after it (which ends
 * before `end`), or undefined; `merge(i, j, rank)`, when given, is told of each merge, part `j` then belonging
 * to part `i`. Returns `next`: the part after part `i` starts at `next[i]` (`n` after the last),
 * so the word's parts are `for (let i = 0; i < n; i = next[i])`. Ranks below 2^21 stay exact.
 *
 * @example
 * ```ts
 * import { mergeByRank } from "./merge_queue.ts";
 * const word = ["a", "b", "c"];
 * const ranks = new Map([["ab", 1], ["abc", 0]]);
 * const parts = [...word];
 * const next = mergeByRank(
 *   3,
 *   (i, j) => ranks.get(parts[i] + parts[j]),
 *   (i, j) => (parts[i] += parts[j]),
 * );
 * parts[0]; // "abc", and next[0] === 3: "ab" merged first, then "abc"
 * ```
 */
export function mergeByRank(
  n: number,
  rankOf: (i: number, j: number, end: number) => number | undefined,
  merge?: (i: number, j: number, rank: number) => void,
): Int32Array {
  const next = Int32Array.from({ length: n }, (_, i) => i + 1);
  const prev = Int32Array.from({ length: n }, (_, i) => i - 1);
  const alive = new Uint8Array(n).fill(1);
  const rankAt = (i: number) => (next[i] < n ? rankOf(i, next[i], next[next[i]]) : undefined);
  const heap: number[] = [];
  const push = (i: number) => {
    const r = rankAt(i);
    if (r !== undefined) heapPush(heap, r * 2 ** 32 + i);
  };
  for (let i = 0; i < n - 1; i++) push(i);
  while (heap.length > 0) {
    const top = heapPop(heap);
    const rank = Math.floor(top / 2 ** 32);
    const i = top - rank * 2 ** 32;
    // Stale entries (a part merged away since, or a pair that changed) are skipped.
    if (!alive[i] || rankAt(i) !== rank) continue;
    const j = next[i];
    merge?.(i, j, rank);
    alive[j] = 0;
    next[i] = next[j];
    if (next[i] < n) prev[next[i]] = i;
    if (prev[i] >= 0) push(prev[i]);
    push(i);
  }
  return next;
}

function heapPush(heap: number[], v: number): void {
  let i = heap.push(v) - 1;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (heap[parent] <= v) break;
    heap[i] = heap[parent];
    i = parent;
  }
  heap[i] = v;
}

function heapPop(heap: number[]): number {
  const top = heap[0];
  const last = heap.pop()!;
  if (heap.length > 0) {
    let i = 0;
    const n = heap.length;
    while (true) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && heap[r] < heap[l] ? r : l;
      if (heap[c] >= last) break;
      heap[i] = heap[c];
      i = c;
    }
    heap[i] = last;
  }
  return top;
}
