/**
 * Choosing a backend by device name: the one place that knows both implementations, so the
 * model asks for `"wasm"`, `"webgpu"` or `"auto"` and never imports either.
 * @module
 */
import type { Backend } from "./backend.ts";
import { InputError } from "../core/errors.ts";
import { WasmBackend } from "./wasm/wasm_backend.ts";
import { WebGpuBackend } from "./webgpu/webgpu_backend.ts";

/**
 * Where a model computes: `"wasm"` (WebAssembly on the CPU, the default), `"webgpu"` (any WebGPU
 * adapter, a software one included), or `"auto"` (a hardware WebGPU adapter when there is one,
 * else WebAssembly). TransformerLens's `device`.
 */
export type Device = "wasm" | "webgpu" | "auto";

/** The devices {@linkcode loadBackend} takes. */
export const DEVICES: readonly Device[] = ["wasm", "webgpu", "auto"];

/** Options of {@linkcode loadBackend}. */
export interface BackendOptions {
  /**
   * Threads of the WebAssembly backend (default: one per core); on `"webgpu"`, of its host
   * companion (default 1).
   */
  threads?: number;
}

/**
 * Loads the backend for `device`; resolves to the backend and the device that runs it
 * (`"auto"` resolves to `"webgpu"` or `"wasm"`). A WebGPU backend comes with a WebAssembly one
 * as its {@linkcode Backend.host} (on `opts.threads` threads, default 1) for the synchronous
 * helpers' products of host arrays, closed with it.
 *
 * @example
 * ```ts
 * import { loadBackend } from "./select.ts";
 * const { backend, device } = await loadBackend("wasm", { threads: 1 });
 * device; // "wasm"
 * backend.close();
 * ```
 * @throws {InputError} an unknown device name.
 * @throws {GpuUnavailableError} `"webgpu"` where no adapter exists.
 */
export async function loadBackend(
  device: Device = "wasm",
  opts: BackendOptions = {},
): Promise<{ backend: Backend; device: "wasm" | "webgpu" }> {
  if (!DEVICES.includes(device)) {
    throw new InputError(
      `unknown device ${JSON.stringify(device)}: use "wasm", "webgpu" or "auto"`,
    );
  }
  // As the GPU's companion the WebAssembly backend runs only the helpers' host products, so it
  // starts no worker threads unless asked (a WebGPU page or process keeps no idle kernel threads).
  const gpuWanted = device === "webgpu" || device === "auto";
  const cpu = await WasmBackend.load({ threads: opts.threads ?? (gpuWanted ? 1 : undefined) });
  if (gpuWanted) {
    try {
      // The WebAssembly backend becomes the GPU's host companion (Backend.host): the synchronous
      // helpers' products of host arrays run on it rather than in plain JavaScript.
      const backend = await WebGpuBackend.load({ requireHardware: device === "auto", host: cpu });
      return { backend, device: "webgpu" };
    } catch (e) {
      if (device === "webgpu") {
        cpu.close();
        throw e;
      }
      // auto: no hardware adapter, WebAssembly it is (on the default threads unless given)
      if (opts.threads === undefined) {
        cpu.close();
        return { backend: await WasmBackend.load(), device: "wasm" };
      }
    }
  }
  return { backend: cpu, device: "wasm" };
}

/**
 * Which device runs `backend`: `"webgpu"` for a {@linkcode WebGpuBackend}, else `"wasm"`.
 *
 * @example
 * ```ts
 * import { deviceOf, loadBackend } from "./select.ts";
 * const { backend } = await loadBackend("wasm", { threads: 1 });
 * deviceOf(backend); // "wasm"
 * backend.close();
 * ```
 */
export function deviceOf(backend: Backend): "wasm" | "webgpu" {
  return backend instanceof WebGpuBackend ? "webgpu" : "wasm";
}
