/**
 * The object every view returns: an HTML fragment that renders inline in `deno jupyter` (through
 * `Symbol.for("Jupyter.display")`), and a standalone page (`toHTML()`, `save(path)`). The
 * fragment carries its own stylesheet, scoped to the `.tlv` class, and no script: notebook
 * front ends that refuse scripts in outputs still show it whole, and hovering or focusing (Tab)
 * any cell shows its number.
 * @module
 */
import { InputError } from "../core/errors.ts";

/** The MIME bundle a Jupyter front end receives. */
export interface MimeBundle {
  /** The view, as an HTML fragment. */
  "text/html": string;
  /** A one-line description for plain-text front ends. */
  "text/plain": string;
}

/** The key Deno's Jupyter kernel looks for on a cell's result. */
export const JUPYTER_DISPLAY: unique symbol = Symbol.for("Jupyter.display") as never;

/**
 * Escapes text for HTML content and attribute values.
 *
 * @example
 * ```ts
 * import { escapeHtml } from "./html.ts";
 * escapeHtml(`<b title="x">&</b>`); // "&lt;b title=&quot;x&quot;&gt;&amp;&lt;/b&gt;"
 * ```
 */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ENTITIES[c]);
}

const ENTITIES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

/**
 * A token as it is drawn: spaces kept (the cell uses `white-space: pre`), newlines and tabs made
 * visible, the empty string as `∅`.
 *
 * @example
 * ```ts
 * import { showToken } from "./html.ts";
 * showToken(" God\n"); // " God↵"
 * ```
 */
export function showToken(token: string): string {
  if (token === "") return "∅";
  return token.replaceAll("\n", "↵").replaceAll("\t", "⇥").replaceAll("\r", "␍");
}

/**
 * A number as the views print it: 4 significant digits, or scientific notation for very large
 * or very small magnitudes.
 *
 * @example
 * ```ts
 * import { formatNumber } from "./html.ts";
 * [formatNumber(0.123456), formatNumber(-12345.6), formatNumber(1e-7), formatNumber(0)];
 * // ["0.1235", "-1.235e+4", "1.000e-7", "0"]
 * ```
 */
export function formatNumber(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (!Number.isFinite(v)) return v > 0 ? "inf" : "-inf";
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(3);
  return String(Number(v.toPrecision(4)));
}

/** The stylesheet every fragment carries (scoped to `.tlv`). */
export const STYLE = `
.tlv{font:13px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;color:#111;background:#fff;
  padding:4px;max-width:100%;overflow-x:auto}
.tlv .title{font-weight:600;margin:2px 0 6px}
.tlv .note{color:#444;font-size:12px;margin:4px 0}
.tlv table{border-collapse:collapse}
.tlv .grid td.c{width:var(--cell,18px);min-width:var(--cell,18px);height:var(--cell,18px);
  padding:0;position:relative;border:1px solid #fff;font:10px/1 monospace;text-align:center;
  overflow:visible;white-space:pre}
.tlv .grid td.c.wide{width:auto;min-width:3.5em;padding:1px 3px;font-size:11px}
.tlv .grid td.m{background:repeating-linear-gradient(45deg,#eee 0 2px,#fff 2px 4px)}
.tlv .grid th{font:11px/1.1 monospace;font-weight:normal;white-space:pre;padding:0 4px;
  text-align:right;color:#222}
.tlv .grid thead th{writing-mode:vertical-rl;transform:rotate(180deg);text-align:left;
  padding:4px 0;vertical-align:bottom}
.tlv .tok{font:13px/1.9 monospace;white-space:pre;padding:1px 0;border-radius:2px;
  position:relative;margin:0 1px}
.tlv [data-tip]:hover::after,.tlv [data-tip]:focus::after{content:attr(data-tip);
  position:absolute;left:50%;top:100%;z-index:20;background:#111;color:#fff;padding:3px 6px;
  border-radius:3px;white-space:pre;font:12px/1.3 monospace;pointer-events:none;
  writing-mode:horizontal-tb;transform:none}
.tlv [tabindex]:focus{outline:2px solid #000;outline-offset:-1px;z-index:10}
.tlv .scale{display:flex;align-items:center;gap:6px;margin:8px 0 2px;font-size:12px}
.tlv .scale .bar{width:180px;height:12px;border:1px solid #999}
.tlv .heads{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
.tlv .heads details{border:1px solid #ddd;border-radius:3px;padding:3px}
.tlv .heads details[open]{flex-basis:100%}
.tlv .heads summary{cursor:pointer;list-style:none;font:12px monospace}
.tlv .heads summary::-webkit-details-marker{display:none}
.tlv .heads summary:focus{outline:2px solid #000}
.tlv .mini{display:grid;gap:0;margin-top:2px}
.tlv .mini i{display:block;width:var(--px);height:var(--px)}
.tlv .vals td{font:12px monospace;padding:1px 6px;text-align:right;border-bottom:1px solid #eee}
.tlv .vals td.e{color:#888;text-align:center}
.tlv .vals th{font:11px monospace;color:#666;padding:1px 6px;font-weight:normal}
.tlv .kv td{padding:1px 8px;font:12px monospace;border-bottom:1px solid #eee}
.tlv .topk td{padding:2px 4px;font:12px monospace;white-space:pre;position:relative}
.tlv .topk th{font:11px monospace;color:#444;font-weight:normal;text-align:left;padding:2px 4px}
`.trim();

/**
 * A rendered view. In `deno jupyter` a cell whose value is a view shows it as HTML; elsewhere
 * `toHTML()` gives a standalone page and `save(path)` writes one.
 *
 * @example
 * ```ts
 * import { HtmlView, JUPYTER_DISPLAY } from "./html.ts";
 * const view = new HtmlView("greeting", "<b>hello</b>", "a greeting");
 * view.toHTML().startsWith("<!doctype html>"); // true
 * view[JUPYTER_DISPLAY]()["text/plain"]; // "a greeting": JUPYTER_DISPLAY is Symbol.for("Jupyter.display")
 * ```
 */
export class HtmlView {
  /** What the view is, for the page title and `data-view` (e.g. `"attention-pattern"`). */
  readonly kind: string;
  /** The body of the view, without the stylesheet. */
  readonly body: string;
  /** One line for plain-text front ends. */
  readonly text: string;

  /** A view of kind `kind` whose HTML is `body` (trusted: callers escape what they insert). */
  constructor(kind: string, body: string, text: string) {
    this.kind = kind;
    this.body = body;
    this.text = text;
  }

  /** The fragment Jupyter shows: the stylesheet and the view in one `.tlv` element. */
  get html(): string {
    return `<div class="tlv" data-view="${escapeHtml(this.kind)}"><style>${STYLE}</style>` +
      `${this.body}</div>`;
  }

  /** A standalone HTML page holding the view (opens from disk, no network). */
  toHTML(): string {
    return `<!doctype html>\n<html lang="en"><head><meta charset="utf-8">` +
      `<meta name="viewport" content="width=device-width, initial-scale=1">` +
      `<title>${escapeHtml(this.text)}</title></head><body>${this.html}</body></html>\n`;
  }

  /**
   * Writes the standalone page to `path` (needs `--allow-write` for it).
   *
   * @example
   * ```ts
   * import { HtmlView } from "./html.ts";
   * const path = await Deno.makeTempFile({ suffix: ".html" });
   * await new HtmlView("note", "<p>hi</p>", "a note").save(path);
   * (await Deno.readTextFile(path)).includes("<p>hi</p>"); // true
   * ```
   */
  async save(path: string | URL): Promise<void> {
    if (typeof path !== "string" && !(path instanceof URL)) {
      throw new InputError(`save: path must be a string or a file URL, got ${typeof path}`);
    }
    if (path === "") throw new InputError("save: path is empty");
    await Deno.writeTextFile(path, this.toHTML());
  }

  /** The MIME bundle for Deno's Jupyter kernel. */
  [JUPYTER_DISPLAY](): MimeBundle {
    return { "text/html": this.html, "text/plain": this.text };
  }

  /** The plain-text line. */
  toString(): string {
    return this.text;
  }
}
