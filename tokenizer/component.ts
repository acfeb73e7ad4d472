/**
 * Shared by the readers of `tokenizer.json`'s components (normalizer, pre-tokenizer, model,
 * post-processor, decoder): how a component looks once parsed, and the one error for a component
 * this library does not implement.
 * @module
 */
import { ConfigError } from "../core/errors.ts";

/**
 * How deep `Sequence` components may nest (real files nest one level): deeper is a ConfigError,
 * not a stack overflow.
 */
export const MAX_NESTING = 32;

/** One component object of `tokenizer.json`: `{ "type": "...", ...fields }`. */
export type Component = Record<string, unknown> & { type?: unknown };

/**
 * The component as an object with a string `type`, or a ConfigError saying where it was.
 *
 * @example
 * ```ts
 * import { component } from "./component.ts";
 * component({ type: "NFC" }, "normalizer").type; // "NFC"
 * ```
 */
export function component(value: unknown, where: string): Component & { type: string } {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ConfigError(
      `tokenizer.json ${where} must be an object, not ${JSON.stringify(value)}`,
    );
  }
  const c = value as Component;
  if (typeof c.type !== "string") {
    throw new ConfigError(`tokenizer.json ${where} has no "type"`);
  }
  return c as Component & { type: string };
}

/**
 * The ConfigError for a component type this library does not implement.
 *
 * @example
 * ```ts
 * import { unsupported } from "./component.ts";
 * const error = unsupported("normalizer", "Precompiled", ["NFC", "Prepend"]);
 * ```
 */
export function unsupported(where: string, type: string, known: readonly string[]): ConfigError {
  return new ConfigError(
    `tokenizer.json uses the ${where} ${JSON.stringify(type)}, which this library does not ` +
      `implement (it reads ${known.join(", ")}: those of GPT-2, GPT-NeoX, Llama, Qwen2 and ` +
      `SentencePiece-style tokenizers)`,
  );
}

/**
 * The `{ "String": s }` or `{ "Regex": r }` pattern object components use.
 *
 * @example
 * ```ts
 * import { patternOf } from "./component.ts";
 * patternOf({ String: " " }, "Replace"); // { kind: "string", source: " " }
 * ```
 */
export function patternOf(
  value: unknown,
  where: string,
): { kind: "string" | "regex"; source: string } {
  const p = value as Record<string, unknown> | null;
  if (p && typeof p.String === "string") return { kind: "string", source: p.String };
  if (p && typeof p.Regex === "string") return { kind: "regex", source: p.Regex };
  throw new ConfigError(
    `tokenizer.json ${where} needs a pattern {"String": ...} or {"Regex": ...}, not ` +
      JSON.stringify(value),
  );
}
