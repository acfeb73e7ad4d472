/**
 * Reads the zip archives PyTorch checkpoints are (`torch.save` since PyTorch 1.6): the central
 * directory, ZIP64 records for archives or entries past 4 GiB, and stored (uncompressed) entries,
 * returned as views into the archive's bytes with their CRC-32 checked on first read. PyTorch
 * never compresses entries, so a compressed one (a checkpoint re-zipped by another tool) is refused
 * with a message saying so rather than inflated. Every offset and size is checked against the
 * archive's length before use, so a corrupt or hostile archive costs no more memory than its own
 * bytes. Failures are {@link PickleError}s, the error of PyTorch checkpoints.
 *
 * A hand-written reader because `pytorch_model.bin` files reach 5 GB: the npm zip libraries
 * (fflate, JSZip) copy or inflate every entry up front, where a checkpoint needs zero-copy views
 * of a few of them.
 *
 * @example
 * ```ts ignore
 * import { readZip } from "./zip.ts";
 * const zip = readZip(await Deno.readFile("pytorch_model.bin"), "pytorch_model.bin");
 * zip.names(); // ["archive/data.pkl", "archive/data/0", ..., "archive/version"]
 * const pickle = zip.read("archive/data.pkl");
 * ```
 * @module
 */
import { PickleError } from "../core/errors.ts";

/** One entry of the central directory. */
export interface ZipEntry {
  /** Path inside the archive, e.g. `archive/data/0`. */
  name: string;
  /** 0: stored; 8: deflated (refused by {@link ZipArchive.read}). */
  method: number;
  /** Uncompressed size in bytes. */
  size: number;
  /** Bytes the entry occupies in the archive. */
  compressedSize: number;
  /** CRC-32 of the uncompressed bytes, as the directory records it. */
  crc32: number;
  /** Offset of the entry's local header from the start of the archive. */
  localHeaderOffset: number;
}

/** A parsed archive: its directory, and its stored entries as zero-copy views. */
export interface ZipArchive {
  /** The name used in messages. */
  readonly fileName: string;
  /** Entry names, in directory order. */
  names(): string[];
  /** Whether an entry of this name exists. */
  has(name: string): boolean;
  /** The directory record of an entry; throws {@link PickleError} if absent. */
  entry(name: string): ZipEntry;
  /**
   * The bytes of a stored entry: a view into the archive (not a copy), CRC-checked the first time.
   * Throws {@link PickleError} for an absent, compressed, encrypted or corrupt entry.
   */
  read(name: string): Uint8Array;
}

const EOCD = 0x06054b50;
const ZIP64_LOCATOR = 0x07064b50;
const ZIP64_EOCD = 0x06064b50;
const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;

let crcTable: Int32Array | undefined;

/** Slice-by-8 tables for the CRC-32 of zip (polynomial 0xEDB88320), built on first use. */
function crcTables(): Int32Array {
  if (crcTable) return crcTable;
  const t = new Int32Array(256 * 8);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  for (let n = 0; n < 256; n++) {
    for (let k = 1; k < 8; k++) {
      t[k * 256 + n] = t[(k - 1) * 256 + n] >>> 8 ^ t[t[(k - 1) * 256 + n] & 0xff];
    }
  }
  crcTable = t;
  return t;
}

/**
 * The CRC-32 zip uses (the same as zlib's `crc32`), as an unsigned number.
 *
 * @example
 * ```ts
 * import { crc32 } from "./zip.ts";
 * crc32(new TextEncoder().encode("123456789")).toString(16); // "cbf43926"
 * ```
 */
export function crc32(bytes: Uint8Array): number {
  const t = crcTables();
  let c = -1;
  let i = 0;
  const n8 = bytes.length - (bytes.length % 8);
  for (; i < n8; i += 8) {
    const a = c ^ (bytes[i] | bytes[i + 1] << 8 | bytes[i + 2] << 16 | bytes[i + 3] << 24);
    c = t[1792 + (a & 0xff)] ^ t[1536 + (a >>> 8 & 0xff)] ^ t[1280 + (a >>> 16 & 0xff)] ^
      t[1024 + (a >>> 24)] ^ t[768 + bytes[i + 4]] ^ t[512 + bytes[i + 5]] ^
      t[256 + bytes[i + 6]] ^ t[bytes[i + 7]];
  }
  for (; i < bytes.length; i++) c = t[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

class ParsedZip implements ZipArchive {
  readonly fileName: string;
  #bytes: Uint8Array;
  #entries: Map<string, ZipEntry>;
  #checked = new Set<string>();

  constructor(fileName: string, bytes: Uint8Array, entries: Map<string, ZipEntry>) {
    this.fileName = fileName;
    this.#bytes = bytes;
    this.#entries = entries;
  }

  names(): string[] {
    return [...this.#entries.keys()];
  }

  has(name: string): boolean {
    return this.#entries.has(name);
  }

  entry(name: string): ZipEntry {
    const e = this.#entries.get(name);
    if (e === undefined) {
      throw new PickleError(`${this.fileName}: the archive has no entry ${JSON.stringify(name)}`);
    }
    return { ...e };
  }

  read(name: string): Uint8Array {
    const e = this.entry(name);
    const fail = (what: string): never => {
      throw new PickleError(`${this.fileName}: entry ${JSON.stringify(name)} ${what}`);
    };
    if (e.method !== 0) {
      fail(
        `is compressed (method ${e.method}); PyTorch writes checkpoints uncompressed, so this one ` +
          `was re-zipped by another tool: load it in PyTorch and save it again with torch.save, or ` +
          `convert it to safetensors`,
      );
    }
    const view = new DataView(this.#bytes.buffer, this.#bytes.byteOffset, this.#bytes.byteLength);
    const at = e.localHeaderOffset;
    if (at + 30 > this.#bytes.length || view.getUint32(at, true) !== LOCAL) {
      fail(`has no local header at offset ${at}: the archive is corrupt: re-download it`);
    }
    const start = at + 30 + view.getUint16(at + 26, true) + view.getUint16(at + 28, true);
    if (start + e.size > this.#bytes.length) {
      fail(
        `claims ${e.size} bytes at offset ${start}, past the end of the ${this.#bytes.length}-byte ` +
          `archive: it is truncated or corrupt: re-download it`,
      );
    }
    const data = this.#bytes.subarray(start, start + e.size);
    if (!this.#checked.has(name)) {
      const actual = crc32(data);
      if (actual !== e.crc32) {
        fail(
          `fails its CRC-32 check (recorded ${hex(e.crc32)}, computed ${hex(actual)}): the file ` +
            `is corrupt: re-download it`,
        );
      }
      this.#checked.add(name);
    }
    return data;
  }
}

function hex(n: number): string {
  return n.toString(16).padStart(8, "0");
}

/**
 * Parses a zip archive held in memory (referenced, not copied). Reads only the end records and
 * the central directory; entries are checked when read.
 *
 * @param bytes The whole archive.
 * @param fileName Used in messages.
 *
 * @example
 * ```ts ignore
 * import { readZip } from "./zip.ts";
 * const zip = readZip(await Deno.readFile("pytorch_model.bin"), "pytorch_model.bin");
 * zip.entry("archive/data/0").size; // bytes of the first storage
 * ```
 */
export function readZip(bytes: Uint8Array, fileName = "archive.zip"): ZipArchive {
  const fail = (what: string): never => {
    throw new PickleError(`${fileName}: ${what}`);
  };
  const total = bytes.length;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u16 = (at: number) => view.getUint16(at, true);
  const u32 = (at: number) => view.getUint32(at, true);
  const u64 = (at: number, what: string): number => {
    const v = view.getBigUint64(at, true);
    if (v > BigInt(total)) fail(`${what} is ${v}, beyond the archive's ${total} bytes`);
    return Number(v);
  };

  // End of central directory: 22 bytes, then a comment of up to 65535 bytes ending the file.
  let eocd = -1;
  for (let at = total - 22; at >= Math.max(0, total - 22 - 0xffff); at--) {
    if (u32(at) === EOCD && at + 22 + u16(at + 20) === total) {
      eocd = at;
      break;
    }
  }
  if (eocd < 0) {
    fail(
      `not a zip archive (no end-of-central-directory record): it is truncated, or not a ` +
        `checkpoint written by torch.save`,
    );
  }
  if (u16(eocd + 4) !== 0 || u16(eocd + 6) !== 0) fail("multi-part zip archives are not supported");
  let count = u16(eocd + 10);
  let cdSize = u32(eocd + 12);
  let cdOffset = u32(eocd + 16);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    const loc = eocd - 20;
    if (loc < 0 || u32(loc) !== ZIP64_LOCATOR) fail("a ZIP64 archive without its ZIP64 locator");
    const z = u64(loc + 8, "the ZIP64 end record's offset");
    if (z + 56 > loc || u32(z) !== ZIP64_EOCD) fail("the ZIP64 end record is missing or corrupt");
    count = u64(z + 32, "the ZIP64 entry count");
    cdSize = u64(z + 40, "the ZIP64 central directory size");
    cdOffset = u64(z + 48, "the ZIP64 central directory offset");
  }
  if (cdOffset + cdSize > total || count * 46 > cdSize) {
    fail(
      `the central directory (${count} entries, ${cdSize} bytes at offset ${cdOffset}) does not ` +
        `fit in the ${total}-byte archive: it is truncated or corrupt: re-download it`,
    );
  }

  const entries = new Map<string, ZipEntry>();
  const names = new TextDecoder("utf-8", { fatal: true });
  let at = cdOffset;
  const end = cdOffset + cdSize;
  for (let i = 0; i < count; i++) {
    if (at + 46 > end || u32(at) !== CENTRAL) {
      fail(`central directory record ${i} is missing or corrupt: re-download the file`);
    }
    const flags = u16(at + 8);
    const nameLength = u16(at + 28);
    const extraLength = u16(at + 30);
    const next = at + 46 + nameLength + extraLength + u16(at + 32);
    if (next > end) fail(`central directory record ${i} runs past the directory's end`);
    let name: string;
    try {
      name = names.decode(bytes.subarray(at + 46, at + 46 + nameLength));
    } catch {
      return fail(`entry ${i}'s name is not valid UTF-8`);
    }
    if (flags & 1) fail(`entry ${JSON.stringify(name)} is encrypted, which is not supported`);
    const entry: ZipEntry = {
      name,
      method: u16(at + 10),
      crc32: u32(at + 16),
      compressedSize: u32(at + 20),
      size: u32(at + 24),
      localHeaderOffset: u32(at + 42),
    };
    readZip64Extra(view, at + 46 + nameLength, extraLength, entry, u64, fail);
    if (entry.method === 0 && entry.compressedSize !== entry.size) {
      fail(
        `stored entry ${
          JSON.stringify(name)
        } records ${entry.compressedSize} bytes in the archive ` +
          `but ${entry.size} bytes of content: the archive is corrupt`,
      );
    }
    if (entry.localHeaderOffset + 30 + entry.compressedSize > cdOffset) {
      fail(
        `entry ${JSON.stringify(name)} (${entry.compressedSize} bytes at offset ` +
          `${entry.localHeaderOffset}) overlaps the central directory: the archive is corrupt`,
      );
    }
    if (entries.has(name)) fail(`the archive has two entries named ${JSON.stringify(name)}`);
    entries.set(name, entry);
    at = next;
  }
  return new ParsedZip(fileName, bytes, entries);
}

/** Fills the fields a ZIP64 extra field (id 1) carries, for those saturated at 0xFFFFFFFF. */
function readZip64Extra(
  view: DataView,
  start: number,
  length: number,
  entry: ZipEntry,
  u64: (at: number, what: string) => number,
  fail: (what: string) => never,
): void {
  const needed = [entry.size, entry.compressedSize, entry.localHeaderOffset].some((v) =>
    v === 0xffffffff
  );
  if (!needed) return;
  for (let at = start; at + 4 <= start + length;) {
    const id = view.getUint16(at, true);
    const size = view.getUint16(at + 2, true);
    if (at + 4 + size > start + length) break;
    if (id === 1) {
      let p = at + 4;
      const take = (what: string): number => {
        if (p + 8 > at + 4 + size) {
          fail(`entry ${JSON.stringify(entry.name)}: its ZIP64 field is short`);
        }
        const v = u64(p, `entry ${JSON.stringify(entry.name)}'s ${what}`);
        p += 8;
        return v;
      };
      if (entry.size === 0xffffffff) entry.size = take("size");
      if (entry.compressedSize === 0xffffffff) entry.compressedSize = take("compressed size");
      if (entry.localHeaderOffset === 0xffffffff) entry.localHeaderOffset = take("offset");
      return;
    }
    at += 4 + size;
  }
  fail(
    `entry ${JSON.stringify(entry.name)} needs a ZIP64 field for its sizes but has none: the ` +
      `archive is corrupt`,
  );
}
