/** Converts a file: URL to a path (tests only; the library itself never needs paths). */
export function fromFileUrl(url: URL): string {
  if (url.protocol !== "file:") throw new Error(`not a file URL: ${url}`);
  return decodeURIComponent(url.pathname);
}

/** Every file under `dir`, relative, sorted (empty when `dir` is missing). */
export function fileTree(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(rel ? `${dir}/${rel}` : dir)];
    } catch {
      return;
    }
    for (const e of entries) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory) walk(p);
      else out.push(p);
    }
  };
  walk("");
  return out.sort();
}
