/**
 * js-tiktoken's modules for GPT-2's tokenizer (r50k_base), imported statically so that the
 * bundler includes them: the library loads them with `import("npm:...")` at run time, which a
 * browser cannot resolve. The model worker imports this bundle (about 0.6 MB) by URL when it
 * loads a model and hands the modules to `r50kTokenizer` (see `explorer_worker.ts`).
 * @module
 */
import * as lite from "js-tiktoken/lite";
import ranks from "js-tiktoken/ranks/r50k_base";

/** `js-tiktoken/lite`. */
export { lite };
/** `js-tiktoken/ranks/r50k_base`, as a module (its default export is the ranks). */
export const ranksModule: { default: typeof ranks } = { default: ranks };
