/**
 * Range checks of layer and head indices, with the same messages everywhere.
 * @module
 */
import { InputError } from "../core/errors.ts";

/**
 * Throws an {@link InputError} unless `layer` is an integer in [0, nLayers).
 *
 * @example
 * ```ts
 * import { checkLayer } from "./checks.ts";
 * checkLayer(1, 2, "ovCircuit"); // fine
 * ```
 */
export function checkLayer(layer: number, nLayers: number, what: string): void {
  if (!Number.isInteger(layer) || layer < 0 || layer >= nLayers) {
    throw new InputError(`${what}: layer ${layer} is outside [0, ${nLayers})`);
  }
}

/**
 * Throws an {@link InputError} unless `[layer, head]` names a head of a model with `nLayers`
 * blocks of `nHeads` heads.
 *
 * @example
 * ```ts
 * import { checkHead } from "./checks.ts";
 * checkHead([1, 3], { nLayers: 2, nHeads: 4 }, "ovCircuit"); // fine
 * ```
 */
export function checkHead(
  [layer, head]: readonly [number, number],
  cfg: { nLayers: number; nHeads: number },
  what: string,
): void {
  checkLayer(layer, cfg.nLayers, what);
  if (!Number.isInteger(head) || head < 0 || head >= cfg.nHeads) {
    throw new InputError(`${what}: head ${head} is outside [0, ${cfg.nHeads})`);
  }
}
