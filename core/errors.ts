/**
 * The library's typed errors. Every failure a user can cause (a bad file, a config that does not
 * match the weights, a token id out of range, an unknown hook name) is one of these, with a message
 * that says what was wrong and what to do.
 *
 * @example
 * ```ts
 * import { LensError } from "./errors.ts";
 * try {
 *   // ... load or run a model
 * } catch (e) {
 *   if (e instanceof LensError) console.error(`${e.name}: ${e.message}`);
 *   else throw e;
 * }
 * ```
 * @module
 */

/** Base class of every error this library throws on purpose. */
export class LensError extends Error {
  /**
   * Creates the error; `name` becomes the subclass's name.
   * @param message What was wrong and what to do about it.
   * @param options `cause`: the underlying error, when there is one.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A safetensors file is malformed, truncated or inconsistent. */
export class SafetensorsError extends LensError {}

/**
 * A PyTorch checkpoint (`pytorch_model.bin`: a zip archive holding a pickle) is malformed, or its
 * pickle asks for something other than rebuilding tensors. Such files are refused, never run.
 */
export class PickleError extends LensError {}

/** A model config is invalid, or does not match the weights. */
export class ConfigError extends LensError {}

/** An expected weight is missing or has the wrong shape. */
export class WeightsError extends LensError {}

/** Tokens or other inputs to a run are invalid (ids out of range, too long, ragged). */
export class InputError extends LensError {}

/** A hook name is unknown, or a hook returned an activation of the wrong shape. */
export class HookError extends LensError {}

/** A model could not be found, downloaded or verified. */
export class ModelNotFoundError extends LensError {}

/** A downloaded file does not match the checksum its server announced. */
export class IntegrityError extends LensError {}

/** The WebAssembly kernels could not be loaded, or ran out of memory. */
export class KernelError extends LensError {}

/** A NumPy `.npy` array or `.npz` archive is malformed, truncated or of an unsupported dtype. */
export class NpyError extends LensError {}
/**
 * No WebGPU adapter is available (no `navigator.gpu`, or it offered no adapter of the kind asked
 * for). Use the WebAssembly backend (`device: "wasm"`), or run where WebGPU is exposed.
 *
 * @example
 * ```ts
 * import { GpuUnavailableError, HookedTransformer } from "../mod.ts";
 * let model;
 * try {
 *   model = await HookedTransformer.fromPretrained("induction-toy", { device: "webgpu" });
 * } catch (e) {
 *   if (!(e instanceof GpuUnavailableError)) throw e;
 *   model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 }); // wasm
 * }
 * model.dispose();
 * ```
 */
export class GpuUnavailableError extends KernelError {}

/**
 * The WebGPU device was lost (driver reset, another process took the GPU, the page was
 * backgrounded): its buffers are gone. Load the model again, or move it to the CPU with
 * `await model.to("wasm")` (the model keeps its weights on the host), and back with
 * `model.to("webgpu")` for a fresh device.
 */
export class GpuDeviceLostError extends KernelError {}

/**
 * The GPU ran out of memory for a buffer (weights or activations), or a buffer would exceed the
 * adapter's `maxBufferSize`. Nothing of the failed allocation is kept; use a smaller batch, a
 * bf16 model, or the WebAssembly backend.
 */
export class GpuOutOfMemoryError extends KernelError {}

/**
 * A computation produced NaN (or infinities) where a number is needed to go on: logits that
 * `generate` cannot pick a token from (a hook that wrote NaN, or weights that hold it).
 */
export class NumericError extends LensError {}
