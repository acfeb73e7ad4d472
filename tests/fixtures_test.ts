/**
 * The committed reference fixtures are the files received, byte for byte: each matches its line in
 * `tests/fixtures/SHA256SUMS` (recorded from the originals), and no file is unlisted (but those
 * in the folders the project writes itself: `torch-bin/`, `tokenizers/`, `tl-toolkit/`, `families-bf16/`).
 */
import assert from "node:assert/strict";
import { fixturePath } from "./fixtures.ts";

const ROOT = fixturePath("");
/** Fixtures this project wrote itself, with their scripts (see the folder's README). */
const MADE_HERE = ["torch-bin/", "tokenizers/", "tl-toolkit/", "families-bf16/", "grad-hooks/"];

function listed(): Map<string, string> {
  const sums = new Map<string, string>();
  for (const line of Deno.readTextFileSync(`${ROOT}/SHA256SUMS`).split("\n")) {
    if (!line) continue;
    const m = /^([0-9a-f]{64}) [ *](.+)$/.exec(line);
    assert.ok(m, `malformed SHA256SUMS line: ${line}`);
    sums.set(m[2], m[1]);
  }
  return sums;
}

function filesUnder(dir: string, prefix = ""): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(dir)) {
    const rel = prefix + e.name;
    if (e.isDirectory) out.push(...filesUnder(`${dir}/${e.name}`, `${rel}/`));
    else out.push(rel);
  }
  return out;
}

async function sha256(path: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

Deno.test("fixtures: every file matches SHA256SUMS, and every file is listed", async () => {
  const sums = listed();
  assert.ok(sums.size >= 19, `SHA256SUMS lists ${sums.size} files`);
  const present = filesUnder(ROOT)
    .filter((f) => f !== "README.md" && f !== "SHA256SUMS")
    .filter((f) => !MADE_HERE.some((dir) => f.startsWith(dir)))
    .sort();
  assert.deepEqual(present, [...sums.keys()].sort(), "files in tests/fixtures/ vs SHA256SUMS");
  for (const [file, expected] of sums) {
    assert.equal(
      await sha256(`${ROOT}/${file}`),
      expected,
      `tests/fixtures/${file} differs from the file received: restore it with ` +
        `git checkout -- tests/fixtures (never regenerate or reformat the fixtures)`,
    );
  }
});
