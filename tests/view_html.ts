/**
 * Reading the numbers out of a view's HTML (`viz/`) in tests: every start tag's attributes and
 * its own text, entities decoded. The views write no script and escape every attribute value,
 * so a tag ends at the first `>`.
 * @module
 */

export interface Element {
  tag: string;
  attrs: Record<string, string>;
  /** The text up to the next tag (a cell's own text), entities decoded. */
  text: string;
}

const ENTITIES: Record<string, string> = {
  "&amp;": "&",
  "&lt;": "<",
  "&gt;": ">",
  "&quot;": '"',
  "&#39;": "'",
};
const unescape = (s: string) => s.replace(/&(amp|lt|gt|quot|#39);/g, (e) => ENTITIES[e]);

/** Every start tag of `html` with its attributes (values decoded) and its leading text. */
export function elements(html: string): Element[] {
  const out: Element[] = [];
  for (const m of html.matchAll(/<([a-z]+)((?:\s+[a-z-]+(?:="[^"]*")?)*)\s*>([^<]*)/g)) {
    const attrs: Record<string, string> = {};
    for (const a of m[2].matchAll(/([a-z-]+)(?:="([^"]*)")?/g)) attrs[a[1]] = unescape(a[2] ?? "");
    out.push({ tag: m[1], attrs, text: unescape(m[3]) });
  }
  return out;
}

/** The cells of a grid (`data-row`, `data-col`) as [row][col] -> element. */
export function gridCells(html: string): Map<string, Element> {
  const cells = new Map<string, Element>();
  for (const e of elements(html)) {
    if (e.attrs["data-row"] !== undefined) {
      cells.set(`${e.attrs["data-row"]},${e.attrs["data-col"]}`, e);
    }
  }
  return cells;
}
