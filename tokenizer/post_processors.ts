/**
 * `tokenizer.json` post-processors: what encoding "with special tokens" adds around the ids.
 * `TemplateProcessing` (Llama's BOS), `ByteLevel` (offsets only: no ids) and `Sequence`.
 * @module
 */
import { ConfigError } from "../core/errors.ts";
import { component, MAX_NESTING, unsupported } from "./component.ts";

/** Ids of one sequence -> the ids with special tokens added. */
export type PostProcessor = (ids: number[]) => number[];

const KNOWN = ["TemplateProcessing", "ByteLevel", "Sequence"];

/**
 * The post-processor a `tokenizer.json` `post_processor` object describes (null: adds nothing).
 * Only the single-sequence template matters here.
 *
 * @example
 * ```ts
 * import { buildPostProcessor } from "./post_processors.ts";
 * const add = buildPostProcessor({
 *   type: "TemplateProcessing",
 *   single: [{ SpecialToken: { id: "<s>" } }, { Sequence: { id: "A" } }],
 *   special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
 * });
 * add([15043]); // [1, 15043]
 * ```
 */
export function buildPostProcessor(value: unknown, depth = 0): PostProcessor {
  if (value === null || value === undefined) return (ids) => ids;
  const c = component(value, "post_processor");
  switch (c.type) {
    case "ByteLevel":
      return (ids) => ids;
    case "TemplateProcessing": {
      const specials = (c.special_tokens ?? {}) as Record<string, { ids?: unknown }>;
      const steps = (Array.isArray(c.single) ? c.single : []).map((piece) => {
        const p = piece as Record<string, { id?: unknown }>;
        if (p.Sequence) return null; // the input's own ids
        const name = p.SpecialToken?.id;
        const ids = typeof name === "string" ? specials[name]?.ids : undefined;
        if (!Array.isArray(ids) || !ids.every(Number.isSafeInteger)) {
          throw new ConfigError(
            `tokenizer.json TemplateProcessing names special token ${JSON.stringify(name)} ` +
              `without its ids`,
          );
        }
        return ids as number[];
      });
      return (ids) => steps.flatMap((s) => s ?? ids);
    }
    case "Sequence": {
      if (depth >= MAX_NESTING) {
        throw new ConfigError(
          `tokenizer.json nests post-processor Sequences over ${MAX_NESTING} deep`,
        );
      }
      const steps = (Array.isArray(c.processors) ? c.processors : [])
        .map((p) => buildPostProcessor(p, depth + 1));
      return (ids) => steps.reduce((acc, step) => step(acc), ids);
    }
    default:
      throw unsupported("post-processor", c.type, KNOWN);
  }
}
