/**
 * A binary min-heap of numbers in a plain array, for byte-pair merges: both BPE tokenizers push
 * `rank * 2^32 + position` so that the lowest rank, then the leftmost position, pops first, in
 * O(log n) a merge instead of a rescan of the word.
 * @module
 */

/**
 * Adds `v` to the heap.
 *
 * @example
 * ```ts
 * import { heapPop, heapPush } from "./min_heap.ts";
 * const heap: number[] = [];
 * for (const v of [5, 1, 3]) heapPush(heap, v);
 * heapPop(heap); // 1
 * ```
 */
export function heapPush(heap: number[], v: number): void {
  let i = heap.push(v) - 1;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (heap[parent] <= v) break;
    heap[i] = heap[parent];
    i = parent;
  }
  heap[i] = v;
}

/**
 * Removes and returns the smallest value (the heap must not be empty).
 *
 * @example
 * ```ts
 * import { heapPop, heapPush } from "./min_heap.ts";
 * const heap: number[] = [];
 * for (const v of [4, 2, 8]) heapPush(heap, v);
 * [heapPop(heap), heapPop(heap), heapPop(heap)]; // [2, 4, 8]
 * ```
 */
export function heapPop(heap: number[]): number {
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
