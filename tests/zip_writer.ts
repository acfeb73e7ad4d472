/**
 * A minimal zip writer for tests: stored entries only, optionally with ZIP64 records, so tests can
 * build PyTorch-style archives around hand-made or mutated pickles. Not part of the library (the
 * library only reads checkpoints).
 * @module
 */
import { crc32 } from "../io/zip.ts";

/** Options of {@link writeZip}. */
export interface WriteZipOptions {
  /** Write ZIP64 extra fields and end records even though nothing needs them. */
  zip64?: boolean;
  /** Compression method to record (the bytes stay stored), to test refusals. */
  method?: number;
}

/**
 * Builds a zip archive of stored entries, in the order given.
 *
 * @example
 * ```ts
 * import { writeZip } from "./zip_writer.ts";
 * const zip = writeZip([["archive/version", new TextEncoder().encode("3\n")]]);
 * ```
 */
export function writeZip(
  entries: Array<[string, Uint8Array]>,
  opts: WriteZipOptions = {},
): Uint8Array {
  const enc = new TextEncoder();
  const chunks: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let offset = 0;
  const push = (b: Uint8Array) => {
    chunks.push(b);
    offset += b.length;
  };
  const method = opts.method ?? 0;
  for (const [name, data] of entries) {
    const nameBytes = enc.encode(name);
    const crc = crc32(data);
    const local = new Uint8Array(30 + nameBytes.length);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(4, opts.zip64 ? 45 : 20, true);
    lv.setUint16(8, method, true);
    lv.setUint32(14, crc, true);
    lv.setUint32(18, data.length, true);
    lv.setUint32(22, data.length, true);
    lv.setUint16(26, nameBytes.length, true);
    local.set(nameBytes, 30);
    const localOffset = offset;
    push(local);
    push(data);

    const extra = opts.zip64 ? new Uint8Array(28) : new Uint8Array(0);
    if (opts.zip64) {
      const ev = new DataView(extra.buffer);
      ev.setUint16(0, 1, true);
      ev.setUint16(2, 24, true);
      ev.setBigUint64(4, BigInt(data.length), true);
      ev.setBigUint64(12, BigInt(data.length), true);
      ev.setBigUint64(20, BigInt(localOffset), true);
    }
    const record = new Uint8Array(46 + nameBytes.length + extra.length);
    const cv = new DataView(record.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(4, 45, true);
    cv.setUint16(6, opts.zip64 ? 45 : 20, true);
    cv.setUint16(10, method, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, opts.zip64 ? 0xffffffff : data.length, true);
    cv.setUint32(24, opts.zip64 ? 0xffffffff : data.length, true);
    cv.setUint16(28, nameBytes.length, true);
    cv.setUint16(30, extra.length, true);
    cv.setUint32(42, opts.zip64 ? 0xffffffff : localOffset, true);
    record.set(nameBytes, 46);
    record.set(extra, 46 + nameBytes.length);
    central.push(record);
  }
  const cdOffset = offset;
  for (const r of central) push(r);
  const cdSize = offset - cdOffset;
  if (opts.zip64) {
    const z = new Uint8Array(56 + 20);
    const zv = new DataView(z.buffer);
    zv.setUint32(0, 0x06064b50, true);
    zv.setBigUint64(4, 44n, true);
    zv.setUint16(12, 45, true);
    zv.setUint16(14, 45, true);
    zv.setBigUint64(24, BigInt(entries.length), true);
    zv.setBigUint64(32, BigInt(entries.length), true);
    zv.setBigUint64(40, BigInt(cdSize), true);
    zv.setBigUint64(48, BigInt(cdOffset), true);
    zv.setUint32(56, 0x07064b50, true);
    zv.setBigUint64(64, BigInt(offset), true);
    zv.setUint32(72, 1, true);
    push(z);
  }
  const end = new Uint8Array(22);
  const dv = new DataView(end.buffer);
  dv.setUint32(0, 0x06054b50, true);
  dv.setUint16(8, opts.zip64 ? 0xffff : entries.length, true);
  dv.setUint16(10, opts.zip64 ? 0xffff : entries.length, true);
  dv.setUint32(12, opts.zip64 ? 0xffffffff : cdSize, true);
  dv.setUint32(16, opts.zip64 ? 0xffffffff : cdOffset, true);
  push(end);
  const out = new Uint8Array(offset);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** The entries of an archive the library's reader accepts, as [name, bytes] (copies). */
export function zipEntries(
  zip: { names(): string[]; read(name: string): Uint8Array },
): Array<[string, Uint8Array]> {
  return zip.names().map((n) => [n, zip.read(n).slice()]);
}
