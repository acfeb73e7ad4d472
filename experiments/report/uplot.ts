/**
 * uPlot's minified script, stylesheet and licence, inlined into `report.html` by `render.ts`, read
 * from the pinned npm package when the module loads (Deno's text imports of npm files, resolved
 * through Deno's own npm cache and checked against the lockfile's integrity hash: no
 * `node_modules`, nothing generated or committed).
 *
 * The report must be one file that opens from disk with no network, hence inlining. The renderer
 * runs in Deno (`deno task experiments`); text imports need a Deno with them stable (2.9, the one
 * this repository is tested with, has them), and browsers or edge bundlers, which lack them,
 * would need their own copy.
 *
 * To move to another uPlot version, change the three `npm:uplot@...` specifiers and
 * {@linkcode UPLOT_VERSION} together (loading this module fails when they disagree).
 * @module
 */

// Full specifiers: deno.json's import map is not ours to extend, and the pin must be visible here.
// deno-lint-ignore no-import-prefix
import uplotJs from "npm:uplot@1.6.32/dist/uPlot.iife.min.js" with { type: "text" };
// deno-lint-ignore no-import-prefix
import uplotCss from "npm:uplot@1.6.32/dist/uPlot.min.css" with { type: "text" };
// deno-lint-ignore no-import-prefix
import uplotLicense from "npm:uplot@1.6.32/LICENSE" with { type: "text" };

/** The pinned uPlot version (keep in step with the `npm:uplot@...` specifiers above). */
export const UPLOT_VERSION = "1.6.32";

if (!uplotJs.includes(`(v${UPLOT_VERSION})`)) {
  throw new Error(`uPlot's script is not version ${UPLOT_VERSION}: update the specifiers`);
}
if (/<\/script/i.test(uplotJs) || /<\/style/i.test(uplotCss)) {
  throw new Error("uPlot's files contain a closing tag; they cannot be inlined as they are");
}

/** uPlot's browser build (`dist/uPlot.iife.min.js`), defining the global `uPlot`. */
export const UPLOT_JS: string = uplotJs;
/** uPlot's stylesheet (`dist/uPlot.min.css`). */
export const UPLOT_CSS: string = uplotCss;
/** uPlot's licence text (MIT), kept with the inlined copy. */
export const UPLOT_LICENSE: string = uplotLicense;
