/**
 * Sharded checkpoints: `model.safetensors.index.json` or `pytorch_model.bin.index.json`, whose
 * `weight_map` names the shard file of each tensor, over the parsed shard files. Both index files
 * have the same layout, so one reader serves both formats:
 *
 * ```json
 * { "metadata": { "total_size": 497774208 },
 *   "weight_map": { "model.embed_tokens.weight": "model-00001-of-00002.safetensors", ... } }
 * ```
 *
 * @example
 * ```ts ignore
 * import { parseShardIndex, shardedTensorSource } from "./sharded.ts";
 * import { parseSafetensors } from "./safetensors.ts";
 * const index = parseShardIndex(await Deno.readTextFile("model.safetensors.index.json"));
 * const shards = new Map();
 * for (const file of index.shardFiles) shards.set(file, parseSafetensors(await Deno.readFile(file), file));
 * const source = shardedTensorSource(index, shards);
 * ```
 * @module
 */
import { WeightsError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";
import type { TensorMeta, TensorSource } from "./tensor_source.ts";

/** A parsed shard index. */
export interface ShardIndex {
  /** The index's own name, for messages (e.g. `model.safetensors.index.json`). */
  fileName: string;
  /** Tensor name -> shard file name, as the index lists them. */
  weightMap: ReadonlyMap<string, string>;
  /** The distinct shard files, sorted (as transformers loads them: `-00001-of-…` first). */
  shardFiles: string[];
  /** The index's `metadata` object (`{}` when absent), e.g. `{ total_size: 497774208 }`. */
  metadata: Readonly<Record<string, unknown>>;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function quote(s: string): string {
  return JSON.stringify(s.length > 200 ? `${s.slice(0, 200)}…` : s);
}

/**
 * Parses a shard index. Shard names must be plain file names beside the index (no folders, so a
 * hostile index cannot point outside the model's folder). Every failure is a {@link WeightsError}
 * that names the index and what is wrong.
 *
 * @param text The index file's text.
 * @param fileName Used in messages.
 *
 * @example
 * ```ts
 * import { parseShardIndex } from "./sharded.ts";
 * const index = parseShardIndex(JSON.stringify({
 *   weight_map: { "a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors" },
 * }));
 * index.shardFiles; // ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
 * ```
 */
export function parseShardIndex(
  text: string,
  fileName = "model.safetensors.index.json",
): ShardIndex {
  const fail = (what: string): never => {
    throw new WeightsError(`${fileName}: ${what}`);
  };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail(`not valid JSON (${(e as Error).message}): the file is corrupt: re-download it`);
  }
  if (!isPlainObject(json)) return fail("must hold a JSON object with a weight_map");
  const { weight_map: map, metadata = {} } = json;
  if (!isPlainObject(map)) {
    return fail(`weight_map must be an object of tensor name -> shard file, not ${typeof map}`);
  }
  if (!isPlainObject(metadata) && metadata !== null) fail("metadata must be an object");
  const weightMap = new Map<string, string>();
  const shardFiles = new Set<string>();
  for (const [name, file] of Object.entries(map)) {
    if (typeof file !== "string") {
      fail(`weight_map entry ${quote(name)} must name a shard file, not ${JSON.stringify(file)}`);
    }
    const shard = file as string;
    // A URL folder's server decodes percent escapes ("%2e%2e" is ".."): check the name both as
    // written and decoded, so a shard is a plain file name beside the index for folders, URLs
    // and the hub alike.
    let decoded = shard;
    try {
      decoded = decodeURIComponent(shard);
    } catch {
      fail(`weight_map entry ${quote(name)} names ${quote(shard)}, whose % escapes are malformed`);
    }
    const plain = (n: string) => n !== "" && n !== "." && n !== ".." && !/[\\/\0]/.test(n);
    if (!plain(shard) || !plain(decoded)) {
      fail(
        `weight_map entry ${quote(name)} names ${quote(shard)}: shards must be plain file names ` +
          `in the index's own folder`,
      );
    }
    weightMap.set(name, shard);
    shardFiles.add(shard);
  }
  if (weightMap.size === 0) fail("weight_map is empty: the index names no tensors");
  return {
    fileName,
    weightMap,
    shardFiles: [...shardFiles].sort(),
    metadata: { ...(metadata ?? {}) },
  };
}

class ShardedSource implements TensorSource {
  #where = new Map<string, TensorSource>();
  #order: string[] = [];

  constructor(index: ShardIndex, shards: ReadonlyMap<string, TensorSource>) {
    const owner = new Map<string, string>();
    for (const file of index.shardFiles) {
      const shard = shards.get(file);
      if (shard === undefined) {
        throw new WeightsError(
          `${index.fileName} lists shard ${quote(file)}, which was not loaded (the download or ` +
            `the folder is incomplete): fetch that file too`,
        );
      }
      // Every tensor of every shard is served, as transformers loads whole shards; the index is
      // checked against them so that a stale or mismatched index is caught here.
      for (const name of shard.names()) {
        const first = owner.get(name);
        if (first !== undefined) {
          throw new WeightsError(
            `tensor ${quote(name)} is stored in two shards, ${quote(first)} and ${quote(file)}: ` +
              `the checkpoint is inconsistent`,
          );
        }
        owner.set(name, file);
        this.#where.set(name, shard);
        this.#order.push(name);
      }
    }
    for (const [name, file] of index.weightMap) {
      const actual = owner.get(name);
      if (actual !== file) {
        throw new WeightsError(
          `${index.fileName} maps tensor ${quote(name)} to ${quote(file)}, but ` +
            (actual === undefined ? "no shard holds it" : `it is in ${quote(actual)}`) +
            `: the index does not belong to these shards: re-download them together`,
        );
      }
    }
  }

  names(): string[] {
    return [...this.#order];
  }

  has(name: string): boolean {
    return this.#where.has(name);
  }

  #shard(name: string): TensorSource {
    const shard = this.#where.get(name);
    if (shard === undefined) {
      throw new WeightsError(
        `no tensor named ${quote(name)} in this sharded checkpoint (${this.#order.length} ` +
          `tensors, e.g. ${this.#order.slice(0, 3).map(quote).join(", ")})`,
      );
    }
    return shard;
  }

  info(name: string): TensorMeta {
    const { dtype, shape } = this.#shard(name).info(name);
    return { dtype, shape };
  }

  tensor(name: string): Tensor {
    return this.#shard(name).tensor(name);
  }
}

/**
 * One {@link TensorSource} over the shards an index lists. Throws {@link WeightsError} when a
 * listed shard is missing from `shards`, a tensor is in two shards, or the index maps a name to a
 * shard that does not hold it.
 *
 * @param index From {@link parseShardIndex}.
 * @param shards Each shard file name -> its parsed source (safetensors or PyTorch).
 *
 * @example
 * ```ts
 * import { parseShardIndex, shardedTensorSource } from "./sharded.ts";
 * import { parseSafetensors, writeSafetensors } from "./safetensors.ts";
 * const one = (v: number) => ({ data: new Float32Array([v]), shape: [1] });
 * const index = parseShardIndex(JSON.stringify({ weight_map: { a: "1.safetensors", b: "2.safetensors" } }));
 * const source = shardedTensorSource(index, new Map([
 *   ["1.safetensors", parseSafetensors(writeSafetensors({ a: one(1) }))],
 *   ["2.safetensors", parseSafetensors(writeSafetensors({ b: one(2) }))],
 * ]));
 * source.tensor("b").data; // Float32Array [2]
 * ```
 */
export function shardedTensorSource(
  index: ShardIndex,
  shards: ReadonlyMap<string, TensorSource>,
): TensorSource {
  return new ShardedSource(index, shards);
}
