/**
 * Progress reporting for long analysis steps (patching sweeps, streamed circuits).
 * @module
 */

/**
 * Called as work advances: `done` units of `total` finished (`done` ends equal to `total`).
 * Units are whatever the step counts (layers patched, rows of a circuit streamed). Calls are
 * synchronous and in order; keep the callback cheap (redraw a bar at most a few times a second).
 *
 * @example
 * ```ts
 * import type { ProgressCallback } from "./progress.ts";
 * const onProgress: ProgressCallback = (done, total) => {
 *   console.log(`${done}/${total} (${((100 * done) / total).toFixed(0)}%)`);
 * };
 * onProgress(3, 12); // "3/12 (25%)"
 * ```
 */
export type ProgressCallback = (done: number, total: number) => void;
