/**
 * The one interface model families read weights through, whatever the checkpoint format: a
 * parsed `model.safetensors` ({@link SafetensorsFile} satisfies it as is), a sharded checkpoint
 * (`*.index.json` over several files) or a PyTorch `pytorch_model.bin`.
 *
 * @example
 * ```ts
 * import type { TensorSource } from "./tensor_source.ts";
 * import { parseSafetensors, writeSafetensors } from "./safetensors.ts";
 * const source: TensorSource = parseSafetensors(
 *   writeSafetensors({ w: { data: new Float32Array([1, 2]), shape: [2] } }),
 * );
 * source.info("w"); // { dtype: "F32", shape: [2], ... }
 * ```
 * @module
 */
import type { Tensor } from "../core/tensor.ts";
import type { Dtype } from "./safetensors.ts";

export type { Dtype } from "./safetensors.ts";

/** Dtype and shape of one stored tensor. */
export interface TensorMeta {
  /** The stored dtype, spelt as safetensors does (`"F32"`, `"BF16"`, `"I64"`, `"BOOL"`, ...). */
  dtype: Dtype;
  /** The shape, outermost first (`[]` for a scalar). */
  shape: number[];
}

/**
 * Named tensors of a checkpoint. Reading is on demand: `tensor()` decodes one tensor when asked.
 *
 * @example
 * ```ts
 * import type { TensorSource } from "./tensor_source.ts";
 * function totalParameters(source: TensorSource): number {
 *   let n = 0;
 *   for (const name of source.names()) n += source.info(name).shape.reduce((a, b) => a * b, 1);
 *   return n;
 * }
 * ```
 */
export interface TensorSource {
  /** Every tensor name, in storage order. */
  names(): string[];
  /** Whether a tensor of this name exists. */
  has(name: string): boolean;
  /** Dtype and shape; throws the source's typed error for an unknown name. */
  info(name: string): TensorMeta;
  /**
   * The tensor as a fresh float32 tensor (F16 and BF16 widened exactly); throws the source's
   * typed error for an unknown name or a dtype that is not F32, F16 or BF16.
   */
  tensor(name: string): Tensor;
}
