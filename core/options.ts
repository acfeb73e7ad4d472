/**
 * Run-time checking of option objects: `deno run` does not type check, so a misspelt option
 * (or TransformerLens's snake_case spelling of it) must be an error, not silently ignored.
 * @module
 */
import { InputError } from "./errors.ts";
import { closestName } from "./suggest.ts";

/** snake_case -> camelCase (`return_type` -> `returnType`). */
function camel(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/**
 * Throws an {@link InputError} when `opts` is not an object or has a key outside `allowed`,
 * suggesting the camelCase option for a snake_case spelling (`fold_ln` -> `foldLn`) and the
 * closest allowed name otherwise. `where` names the function in the message.
 *
 * @example
 * ```ts
 * import { checkOptions } from "./options.ts";
 * checkOptions({ returnType: "logits" }, ["returnType"], "run"); // fine
 * try {
 *   checkOptions({ return_type: "loss" }, ["returnType"], "run");
 * } catch (e) {
 *   (e as Error).message; // 'run: unknown option "return_type"; did you mean returnType?'
 * }
 * ```
 */
export function checkOptions(opts: unknown, allowed: readonly string[], where: string): void {
  if (opts === undefined) return;
  if (typeof opts !== "object" || opts === null || Array.isArray(opts)) {
    throw new InputError(`${where}: options must be an object, got ${JSON.stringify(opts)}`);
  }
  for (const key of Object.keys(opts)) {
    if (allowed.includes(key)) continue;
    const asCamel = camel(key);
    const near = allowed.includes(asCamel) ? asCamel : closestName(key, allowed, 2);
    const hint = near ? `; did you mean ${near}?` : "";
    throw new InputError(
      `${where}: unknown option "${key}"${hint} (options: ${allowed.join(", ") || "none"})`,
    );
  }
}
