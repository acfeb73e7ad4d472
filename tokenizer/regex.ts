/**
 * Translates the regular expressions of `tokenizer.json` (written for Oniguruma, the engine of
 * HF's Rust tokenizers) into JavaScript `u`-mode RegExps with the same meaning, for the constructs
 * tokenizer patterns use:
 *
 * - `\s` / `\S` are Unicode White_Space in Oniguruma; JavaScript's `\s` also takes U+FEFF and
 *   misses U+0085, so they become `\p{White_Space}` / `\P{White_Space}`;
 * - `\d`, `\w` are Unicode classes in Oniguruma (ASCII in JavaScript): `\p{Nd}`, and
 *   letters, marks, decimal digits and connector punctuation;
 * - `(?i:...)` becomes explicit case alternatives (`[sSſ]`), so the result needs no RegExp
 *   modifiers, which older browsers lack;
 * - `.` matches anything but `\n` (JavaScript's also stops at `\r`, U+2028 and U+2029);
 * - `\x{HHHH}` becomes `\u{HHHH}`.
 *
 * Anything else Oniguruma-specific (possessive quantifiers, atomic groups, `\b`, `\h`, `\G`, ...) is a
 * ConfigError naming it, so a pattern is never silently given another meaning.
 * @module
 */
import { ConfigError } from "../core/errors.ts";

const WORD = "\\p{L}\\p{M}\\p{Nd}\\p{Pc}";

/** Extra characters that Unicode simple case folding maps onto an ASCII letter. */
const FOLDS: Readonly<Record<string, string>> = { s: "\u017f", k: "\u212a" };

function caseClass(ch: string): string {
  const lower = ch.toLowerCase();
  if (!/^[a-z]$/.test(lower)) return ch;
  return `[${lower}${lower.toUpperCase()}${FOLDS[lower] ?? ""}]`;
}

/**
 * The JavaScript source (for flags `gu`) of an Oniguruma pattern.
 *
 * @example
 * ```ts
 * import { onigToJs } from "./regex.ts";
 * onigToJs("(?i:'s)|\\s+(?!\\S)"); // "(?:'[sSſ])|\\p{White_Space}+(?!\\P{White_Space})"
 * ```
 */
export function onigToJs(pattern: string, target: "js" | "re2" = "js"): string {
  let out = "";
  let inClass = false;
  let caseless = 0; // depth inside (?i: ... ) groups
  const groups: boolean[] = []; // for each open group: whether it opened a (?i:
  const fail = (what: string): never => {
    throw new ConfigError(
      `tokenizer.json pattern ${JSON.stringify(pattern)} uses ${what}, which cannot be ` +
        `translated to JavaScript exactly`,
    );
  };
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "\\") {
      const e = pattern[++i];
      if (e === undefined) fail("a trailing backslash");
      switch (e) {
        case "s":
          out += "\\p{White_Space}";
          break;
        case "S":
          out += "\\P{White_Space}";
          break;
        case "d":
          out += "\\p{Nd}";
          break;
        case "D":
          out += "\\P{Nd}";
          break;
        case "w":
          out += inClass ? WORD : `[${WORD}]`;
          break;
        case "W":
          if (inClass) fail("\\W inside a character class");
          out += `[^${WORD}]`;
          break;
        case "p":
        case "P": {
          const end = pattern.indexOf("}", i);
          if (pattern[i + 1] !== "{" || end < 0) fail(`\\${e} without {...}`);
          out += pattern.slice(i - 1, end + 1);
          i = end;
          break;
        }
        case "x": {
          // \x{H...} (1 to 8 hex digits, at most U+10FFFF) or \xHH; anything else, an
          // unterminated brace included, is refused rather than read past.
          if (pattern[i + 1] === "{") {
            const end = pattern.indexOf("}", i);
            const hex = end < 0 ? "" : pattern.slice(i + 2, end);
            if (!/^[0-9A-Fa-f]{1,8}$/.test(hex) || parseInt(hex, 16) > 0x10ffff) {
              fail(
                `the escape \\x{${end < 0 ? pattern.slice(i + 2, i + 12) : hex}${
                  end < 0 ? " (no closing brace)" : "}"
                }`,
              );
            }
            out += target === "js" ? `\\u{${hex}}` : `\\x{${hex}}`;
            i = end;
          } else {
            const hex = pattern.slice(i + 1, i + 3);
            if (!/^[0-9A-Fa-f]{2}$/.test(hex)) {
              fail(`the escape \\x${hex} (two hex digits expected)`);
            }
            out += `\\x${hex}`;
            i += 2;
          }
          break;
        }
        case "r":
        case "n":
        case "t":
        case "f":
        case "v":
          out += `\\${e}`;
          break;
        default:
          if (/[A-Za-z0-9]/.test(e)) fail(`the escape \\${e}`);
          // A literal: escape it only if JavaScript's u mode allows (syntax characters).
          out += /[\\^$.*+?()[\]{}|/-]/.test(e) ? `\\${e}` : e;
      }
      continue;
    }
    if (inClass) {
      if (c === "]") inClass = false;
      if (c === "[" && pattern[i + 1] === ":") fail("a POSIX bracket expression");
      if (c === "&" && pattern[i + 1] === "&") fail("a class intersection (&&)");
      out += caseless > 0 && /[A-Za-z]/.test(c) ? caseClass(c).slice(1, -1) : c;
      continue;
    }
    if (c === "[") {
      inClass = true;
      out += c;
      if (pattern[i + 1] === "^") out += pattern[++i];
      if (pattern[i + 1] === "]") out += `\\${pattern[++i]}`; // a leading ] is literal
      continue;
    }
    if (c === "(") {
      if (pattern.startsWith("(?i:", i)) {
        groups.push(true);
        caseless++;
        out += "(?:";
        i += 3;
        continue;
      }
      if (pattern.startsWith("(?>", i)) fail("an atomic group (?>...)");
      if (pattern[i + 1] === "?" && /[imx-]/.test(pattern[i + 2] ?? "")) {
        fail("an inline option group other than (?i:...)");
      }
      groups.push(false);
      out += c;
      continue;
    }
    if (c === ")") {
      if (groups.pop()) caseless--;
      out += c;
      continue;
    }
    if ((c === "+" || c === "*" || c === "?" || c === "}") && pattern[i + 1] === "+") {
      fail("a possessive quantifier");
    }
    if (c === ".") {
      out += "[^\\n]"; // Oniguruma's dot stops only at \n; JavaScript's also at \r, U+2028/9
      continue;
    }
    out += caseless > 0 ? caseClass(c) : c;
  }
  return out;
}

/**
 * The global Unicode RegExp of an Oniguruma pattern (see {@link onigToJs}); ConfigError if it does
 * not compile.
 *
 * @example
 * ```ts
 * import { onigRegExp } from "./regex.ts";
 * "a\u0085b".split(onigRegExp("\\s")); // ["a", "b"]
 * ```
 */
export function onigRegExp(pattern: string): RegExp {
  const source = onigToJs(pattern);
  try {
    return new RegExp(source, "gu");
  } catch (e) {
    throw new ConfigError(
      `tokenizer.json pattern ${JSON.stringify(pattern)} does not compile as ${source}: ` +
        (e as Error).message,
    );
  }
}
