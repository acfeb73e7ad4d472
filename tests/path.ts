/** Converts a file: URL to a path (tests only; the library itself never needs paths). */
export function fromFileUrl(url: URL): string {
  if (url.protocol !== "file:") throw new Error(`not a file URL: ${url}`);
  return decodeURIComponent(url.pathname);
}
