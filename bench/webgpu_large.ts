/**
 * A model whose weights exceed WebAssembly's 4 GiB, loaded and run on WebGPU: a seeded synthetic
 * f32 checkpoint of Pythia-1.4B's shape (GPT-NeoX, 24 layers, d_model 2048, d_mlp 8192, vocabulary
 * 50304: 1.41B parameters, 5.26 GiB of f32), written to disk as an HF sharded checkpoint
 * (`model-0000i-of-0000n.safetensors` + `model.safetensors.index.json`) one chunk at a time, so
 * writing holds one 16 MiB chunk, whatever the model's size. Then `fromPretrained(dir, { device:
 * "webgpu" })` and two forwards of 1 x 8 tokens (full logits).
 *
 *   deno run -A bench/webgpu_large.ts [dir]          dir default $TL_BENCH_DIR/pythia-1.4b-f32
 *   deno run -A bench/webgpu_large.ts --write-only   just write (or find) the checkpoint
 *   deno run -A bench/webgpu_large.ts --force        run even when MemAvailable looks too small
 *
 * Memory: loading reads every shard into memory (the library's loader), converts them into the
 * float32 parameters in JavaScript (kept: the weight accessors read them), frees the shards'
 * bytes, then uploads the weight matrices to GPU buffers (submitting every 64 MiB, so the
 * implementation's staging copies do not pile up). The peak is the shards plus the parameters
 * while converting, or on a software adapter (whose "GPU memory" is the process's own) the
 * parameters plus the GPU copy while uploading: about twice the weights. Measured here on
 * llvmpipe: 11.04 GiB peak RSS (2.1 times the 5.27 GiB; before the loader freed the shards and
 * the staging copies, the load passed 20.2 GiB and was stopped at MemAvailable 0). So the bench
 * asks for 2.5 times the weights of RAM, plus 1 GiB, reads `MemAvailable` (/proc/meminfo) first
 * and does not start a load that would not fit (`--force` overrides). Prints one JSON object.
 * @module
 */
import { HookedTransformer } from "../mod.ts";
import { syntheticGptNeoxSpecs } from "../weights/synthetic_families.ts";
import { defaultBenchDir } from "./model_file.ts";
import { probeAdapter } from "./webgpu_bench.ts";
import { peakRssBytes } from "./process_stats.ts";

/** Pythia-1.4B's shape (EleutherAI/pythia-1.4b's config.json). */
export const PYTHIA_1_4B = {
  nLayers: 24,
  nHeads: 16,
  dModel: 2048,
  dMlp: 8192,
  dVocab: 50304,
  nCtx: 2048,
} as const;

const GIB = 2 ** 30;
/** Shards of at most this many bytes (each is read whole by the loader). */
const SHARD_BYTES = 1.5 * GIB;
/** Floats drawn and written at a time. */
const CHUNK = 1 << 22;
const FORMAT = 1;

/** What {@linkcode writeShardedCheckpoint} wrote. */
export interface WrittenCheckpoint {
  dir: string;
  /** Bytes of tensor data over all shards. */
  bytes: number;
  params: number;
  shards: number;
  seconds: number;
  reused: boolean;
}

async function writeAll(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  let done = 0;
  while (done < data.length) done += await file.write(data.subarray(done));
}

/**
 * Writes (or finds, by its stamp) a seeded synthetic f32 GPT-NeoX checkpoint of `shape` in `dir`
 * as HF shards, tensor by tensor in chunks of {@linkcode CHUNK} floats: memory stays bounded by
 * one chunk. Shards hold at most `shardBytes` (or one tensor). Files are written under temporary names and renamed; the stamp is written last.
 */
export async function writeShardedCheckpoint(
  dir: string,
  shape: typeof PYTHIA_1_4B = PYTHIA_1_4B,
  seed = 0,
  shardBytes: number = SHARD_BYTES,
): Promise<WrittenCheckpoint> {
  const t0 = performance.now();
  const { config, specs } = syntheticGptNeoxSpecs({ ...shape, seed });
  const sizeOf = (s: { shape: number[] }) => s.shape.reduce((a, b) => a * b, 1);
  const params = specs.reduce((n, s) => n + sizeOf(s), 0);
  const stampPath = `${dir}/webgpu-large.json`;
  const stamp = JSON.stringify({ format: FORMAT, seed, shape, bytes: params * 4 });
  try {
    if ((await Deno.readTextFile(stampPath)).trim() === stamp) {
      const index = JSON.parse(await Deno.readTextFile(`${dir}/model.safetensors.index.json`));
      const files = [...new Set(Object.values(index.weight_map as Record<string, string>))];
      return {
        dir,
        bytes: params * 4,
        params,
        shards: files.length,
        seconds: (performance.now() - t0) / 1000,
        reused: true,
      };
    }
  } catch {
    // no stamp (or an unreadable one): write everything
  }
  await Deno.mkdir(dir, { recursive: true });
  await Deno.remove(stampPath).catch(() => {});

  // Group the tensors into shards in order.
  const groups: (typeof specs)[] = [[]];
  let inShard = 0;
  for (const s of specs) {
    const bytes = sizeOf(s) * 4;
    if (inShard > 0 && inShard + bytes > shardBytes) {
      groups.push([]);
      inShard = 0;
    }
    groups.at(-1)!.push(s);
    inShard += bytes;
  }
  const n = groups.length;
  const pad = (i: number) => String(i).padStart(5, "0");
  const weightMap: Record<string, string> = {};
  const chunk = new Float32Array(CHUNK);
  const chunkBytes = new Uint8Array(chunk.buffer);
  for (const [g, group] of groups.entries()) {
    const name = `model-${pad(g + 1)}-of-${pad(n)}.safetensors`;
    const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
    let offset = 0;
    for (const s of group) {
      const bytes = sizeOf(s) * 4;
      header[s.name] = { dtype: "F32", shape: s.shape, data_offsets: [offset, offset + bytes] };
      offset += bytes;
      weightMap[s.name] = name;
    }
    let text = JSON.stringify(header);
    text += " ".repeat((8 - (text.length % 8)) % 8); // data starts 8-aligned
    const head = new Uint8Array(8 + text.length);
    new DataView(head.buffer).setBigUint64(0, BigInt(text.length), true);
    head.set(new TextEncoder().encode(text), 8);
    const tmp = `${dir}/${name}.tmp-${Deno.pid}`;
    const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
    try {
      await writeAll(file, head);
      for (const s of group) {
        const count = sizeOf(s);
        for (let start = 0; start < count; start += CHUNK) {
          const m = Math.min(CHUNK, count - start);
          s.fill(chunk.subarray(0, m), start);
          await writeAll(file, chunkBytes.subarray(0, m * 4));
        }
      }
    } finally {
      file.close();
    }
    await Deno.rename(tmp, `${dir}/${name}`);
  }
  const write = async (path: string, text: string) => {
    await Deno.writeTextFile(`${path}.tmp-${Deno.pid}`, text);
    await Deno.rename(`${path}.tmp-${Deno.pid}`, path);
  };
  await write(
    `${dir}/model.safetensors.index.json`,
    JSON.stringify({ metadata: { total_size: params * 4 }, weight_map: weightMap }) + "\n",
  );
  await write(`${dir}/config.json`, JSON.stringify(config, null, 2) + "\n");
  await write(stampPath, stamp + "\n");
  return {
    dir,
    bytes: params * 4,
    params,
    shards: n,
    seconds: (performance.now() - t0) / 1000,
    reused: false,
  };
}

function meminfo(key: string): number | undefined {
  try {
    const m = new RegExp(`${key}:\\s+(\\d+) kB`).exec(Deno.readTextFileSync("/proc/meminfo"));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

if (import.meta.main) {
  const args = Deno.args.filter((a) => !a.startsWith("--"));
  const dir = args[0] ?? `${defaultBenchDir()}/pythia-1.4b-f32`;
  const gib = (b: number | undefined) => b === undefined ? undefined : +(b / GIB).toFixed(2);
  const ckpt = await writeShardedCheckpoint(dir);
  const report: Record<string, unknown> = {
    shape: { name: "pythia-1.4b", ...PYTHIA_1_4B },
    checkpoint: { ...ckpt, gib: gib(ckpt.bytes) },
    rssAfterWrite: gib(peakRssBytes()),
  };
  const done = (outcome: string) => {
    report.outcome = outcome;
    console.log(JSON.stringify(report, null, 1));
  };
  if (Deno.args.includes("--write-only")) {
    done("written");
  } else {
    const probe = await probeAdapter();
    const available = meminfo("MemAvailable");
    // the shards and the f32 parameters while converting, or the parameters and (on a software
    // adapter) the "GPU" buffers while uploading, with the conversion's garbage (see the
    // module's comment for the measured peak)
    const need = ckpt.bytes * 2.5 + GIB;
    report.adapter = probe.ok ? { description: probe.description, software: probe.software } : {
      none: probe.reason,
    };
    report.memAvailableGib = gib(available);
    report.estimatedPeakGib = gib(need);
    if (!probe.ok) {
      done(`not run: ${probe.reason}`);
    } else if (available !== undefined && available < need && !Deno.args.includes("--force")) {
      done(
        `not run: the load needs about ${gib(need)} GiB of RAM, MemAvailable is ${
          gib(available)
        } GiB (--force to try anyway)`,
      );
    } else {
      let t = performance.now();
      const model = await HookedTransformer.fromPretrained(dir, { device: "webgpu" });
      report.loadSeconds = (performance.now() - t) / 1000;
      report.device = model.cfg.device;
      report.rssAfterLoadHwm = gib(peakRssBytes());
      const tokens = [[0, 510, 3158, 8516, 30013, 27287, 689, 253]];
      const times: number[] = [];
      let first: Float32Array | undefined, same = true, finite = true;
      for (let i = 0; i < 2; i++) {
        t = performance.now();
        const logits = await model.run(tokens);
        times.push((performance.now() - t) / 1000);
        for (const v of logits.data) if (!Number.isFinite(v)) finite = false;
        if (first) same = same && logits.data.every((v, j) => v === first![j]);
        else first = logits.data;
        report.logitsShape = logits.shape;
      }
      report.forwardSeconds = times;
      report.logitsFinite = finite;
      report.runsEqual = same;
      report.logits0 = Array.from(first!.subarray(0, 4));
      report.peakRssHwm = gib(peakRssBytes());
      model.dispose();
      done(finite ? "loaded and ran on WebGPU" : "ran, but some logits are not finite");
    }
  }
}
