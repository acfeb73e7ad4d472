/**
 * The backends the conformance and golden tests run on, from one list: `wasm` always, `webgpu`
 * where `navigator.gpu` offers an adapter (Mesa's software one on these machines). Where there is
 * none, the WebGPU tests are skipped with the reason in their name, except under `CI`, where they
 * run and fail (CI must test WebGPU).
 * @module
 */
import type { Device } from "../backend/select.ts";

/** Whether an adapter exists here, and if not, why the WebGPU tests skip. */
async function probe(): Promise<string | null> {
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) return "no navigator.gpu";
  try {
    return (await gpu.requestAdapter()) ? null : "navigator.gpu offered no adapter";
  } catch (e) {
    return `requestAdapter failed: ${e}`;
  }
}

const missing = await probe();

/** One device the tests run on. */
export interface TestDevice {
  /** The device name `fromPretrained` takes. */
  device: Device;
  /** Set where the device's tests are skipped (why). */
  skip: string | null;
}

/** `wasm`, then `webgpu` (skipped without an adapter unless `CI` is set). */
export const TEST_DEVICES: TestDevice[] = [
  { device: "wasm", skip: null },
  { device: "webgpu", skip: missing && !Deno.env.get("CI") ? missing : null },
];

/**
 * `Deno.test` options for a test on `d`: named with the device (and the skip reason), ignored
 * where skipped, without the resource and op sanitizers for WebGPU (its device and mapping
 * promises outlive a test by design).
 */
export function deviceTest(
  d: TestDevice,
  name: string,
  fn: () => Promise<void> | void,
): Deno.TestDefinition {
  return {
    name: `${name} [${d.device}]` + (d.skip ? ` (skipped: ${d.skip})` : ""),
    ignore: d.skip !== null,
    sanitizeResources: d.device === "wasm",
    sanitizeOps: d.device === "wasm",
    fn,
  };
}
