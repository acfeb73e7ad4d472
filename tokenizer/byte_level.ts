/**
 * The two pieces every GPT-2 byte-level BPE shares: the pre-tokenizer regex that cuts text into
 * words, and the reversible map from bytes to printable characters that vocabularies are written
 * in (`Ġ` is the byte 0x20, a space).
 * @module
 */

/**
 * GPT-2's pre-tokenizer pattern (flags `gu`), with `\s` spelled `\p{White_Space}` so it means what
 * it means in the Python `regex` module, in Rust's tiktoken and in HF tokenizers (JavaScript's `\s`
 * would also take U+FEFF and miss U+0085).
 *
 * @example
 * ```ts
 * import { GPT2_PATTERN } from "./byte_level.ts";
 * "Hello  world".match(new RegExp(GPT2_PATTERN, "gu")); // ["Hello", " ", " world"]
 * ```
 */
export const GPT2_PATTERN =
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\p{White_Space}\\p{L}\\p{N}]+" +
  "|\\p{White_Space}+(?!\\P{White_Space})|\\p{White_Space}+";

/**
 * Cuts text into GPT-2's pre-tokens (the words BPE then works on one at a time).
 *
 * @example
 * ```ts
 * import { preTokenize } from "./byte_level.ts";
 * preTokenize("I'm here!"); // ["I", "'m", " here", "!"]
 * ```
 */
export function preTokenize(text: string): string[] {
  return text.match(new RegExp(GPT2_PATTERN, "gu")) ?? [];
}

function buildByteToUnicode(): string[] {
  const printable: number[] = [];
  const add = (from: number, to: number) => {
    for (let b = from; b <= to; b++) printable.push(b);
  };
  add(0x21, 0x7e); // "!" .. "~"
  add(0xa1, 0xac); // "¡" .. "¬"
  add(0xae, 0xff); // "®" .. "ÿ"
  const table = new Array<string>(256);
  const isPrintable = new Set(printable);
  let next = 0;
  for (let b = 0; b < 256; b++) {
    if (isPrintable.has(b)) table[b] = String.fromCodePoint(b);
    else table[b] = String.fromCodePoint(256 + next++);
  }
  return table;
}

/**
 * GPT-2's `bytes_to_unicode` table: `BYTE_TO_UNICODE[b]` is the one-character string that stands
 * for byte `b` in `vocab.json`, `merges.txt` and `tokenizer.json`.
 *
 * @example
 * ```ts
 * import { BYTE_TO_UNICODE } from "./byte_level.ts";
 * BYTE_TO_UNICODE[0x20]; // "Ġ"
 * BYTE_TO_UNICODE[0x41]; // "A"
 * ```
 */
export const BYTE_TO_UNICODE: readonly string[] = buildByteToUnicode();

/**
 * The inverse of {@link BYTE_TO_UNICODE}: character -> byte.
 *
 * @example
 * ```ts
 * import { UNICODE_TO_BYTE } from "./byte_level.ts";
 * UNICODE_TO_BYTE.get("Ġ"); // 32
 * ```
 */
export const UNICODE_TO_BYTE: ReadonlyMap<string, number> = new Map(
  BYTE_TO_UNICODE.map((ch, b) => [ch, b]),
);

const encoder = new TextEncoder();

/**
 * Writes text's UTF-8 bytes in the byte-level alphabet.
 *
 * @example
 * ```ts
 * import { toByteLevel } from "./byte_level.ts";
 * toByteLevel(" é"); // "ĠÃ©"
 * ```
 */
export function toByteLevel(text: string): string {
  let out = "";
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    // ASCII maps char by char; anything else goes through UTF-8 (a native call, so only then).
    if (c >= 0x80) {
      out = "";
      for (const b of encoder.encode(text)) out += BYTE_TO_UNICODE[b];
      return out;
    }
    out += BYTE_TO_UNICODE[c];
  }
  return out;
}

/**
 * Reads a byte-level string back into bytes; `undefined` when a character is outside the
 * alphabet (the string was not byte-level text).
 *
 * @example
 * ```ts
 * import { fromByteLevel } from "./byte_level.ts";
 * new TextDecoder().decode(fromByteLevel("ĠÃ©")!); // " é"
 * ```
 */
export function fromByteLevel(s: string): Uint8Array | undefined {
  const out: number[] = [];
  for (const ch of s) {
    const b = UNICODE_TO_BYTE.get(ch);
    if (b === undefined) return undefined;
    out.push(b);
  }
  return new Uint8Array(out);
}
