/**
 * A restricted unpickler: it reads the Python pickle opcodes a PyTorch state dict is made of
 * (protocols 2 to 5: numbers, strings, tuples, lists, dicts, the memo, globals, REDUCE, BUILD and
 * persistent ids) and nothing else. It never executes anything: a global resolves only to what
 * the caller's `findGlobal` hands back (a {@link PickleFunction} it wrote itself, or a marker
 * value), and every other global or opcode is a {@link PickleError} naming it. Work and memory are
 * linear in the input: every length is checked against the bytes left before anything is read or
 * allocated, and the stack and memo can only hold what the input spelt out.
 *
 * Values: `None` -> null, bools, ints -> number (or bigint past 2^53), floats -> number,
 * str -> string, list -> array, tuple -> frozen array, dict -> Map.
 *
 * @example
 * ```ts
 * import { PickleFunction, unpickle } from "./pickle.ts";
 * // pickle.dumps({"a": (1, 2)}, protocol=2)
 * const bytes = new Uint8Array([0x80, 2, 0x7d, 0x71, 0, 0x58, 1, 0, 0, 0, 0x61, 0x71, 1,
 *   0x4b, 1, 0x4b, 2, 0x86, 0x71, 2, 0x73, 0x2e]);
 * const value = unpickle(bytes, { findGlobal: () => undefined, persistentLoad: () => null });
 * (value as Map<string, unknown>).get("a"); // [1, 2]
 * ```
 * @module
 */
import { PickleError } from "../core/errors.ts";

/**
 * A Python callable the caller allows a pickle to name (through `findGlobal`) and call (REDUCE),
 * implemented in TypeScript. Anything it returns becomes a value of the unpickled object.
 *
 * @example
 * ```ts
 * import { PickleFunction } from "./pickle.ts";
 * const orderedDict = new PickleFunction("collections.OrderedDict", () => new Map());
 * ```
 */
export class PickleFunction {
  /**
   * @param qualifiedName `module.name`, for messages.
   * @param call Receives REDUCE's argument tuple; throw a {@link PickleError} to refuse it.
   */
  constructor(
    readonly qualifiedName: string,
    readonly call: (args: readonly unknown[]) => unknown,
  ) {}
}

/** What {@link unpickle} asks its caller. */
export interface UnpickleOptions {
  /** Name used in messages. */
  fileName?: string;
  /**
   * The value a GLOBAL `module name` stands for, or undefined to refuse it (the usual answer).
   */
  findGlobal(module: string, name: string): unknown;
  /** The object a persistent id (BINPERSID) refers to; throw {@link PickleError} to refuse. */
  persistentLoad(pid: unknown): unknown;
  /**
   * How many values the pickle may put on its stack or in its memo, all together (default
   * {@link DEFAULT_MAX_PICKLE_VALUES}); past it, a PickleError. Each costs up to a few hundred
   * bytes of heap (an empty dict about 230), so this bounds the unpickler's memory whatever the
   * file: a flood of one-byte EMPTY_DICT opcodes would otherwise turn 25 MB into 4.6 GB.
   */
  maxValues?: number;
}

/**
 * The default budget of values a pickle may create (see {@link UnpickleOptions.maxValues}): a
 * state dict takes about 25 per tensor (key, storage reference, sizes, strides, arguments), so
 * 1M serves checkpoints of 40,000 tensors, and caps the unpickler's heap near 250 MB.
 */
export const DEFAULT_MAX_PICKLE_VALUES = 1_000_000;

/** Opcode names, for messages about refused opcodes. */
const OPCODE_NAMES: Record<number, string> = {
  0x28: "MARK",
  0x2e: "STOP",
  0x30: "POP",
  0x31: "POP_MARK",
  0x32: "DUP",
  0x46: "FLOAT",
  0x49: "INT",
  0x4a: "BININT",
  0x4b: "BININT1",
  0x4c: "LONG",
  0x4d: "BININT2",
  0x4e: "NONE",
  0x50: "PERSID",
  0x51: "BINPERSID",
  0x52: "REDUCE",
  0x53: "STRING",
  0x54: "BINSTRING",
  0x55: "SHORT_BINSTRING",
  0x56: "UNICODE",
  0x58: "BINUNICODE",
  0x61: "APPEND",
  0x62: "BUILD",
  0x63: "GLOBAL",
  0x64: "DICT",
  0x7d: "EMPTY_DICT",
  0x65: "APPENDS",
  0x67: "GET",
  0x68: "BINGET",
  0x69: "INST",
  0x6a: "LONG_BINGET",
  0x6c: "LIST",
  0x5d: "EMPTY_LIST",
  0x6f: "OBJ",
  0x70: "PUT",
  0x71: "BINPUT",
  0x72: "LONG_BINPUT",
  0x73: "SETITEM",
  0x74: "TUPLE",
  0x29: "EMPTY_TUPLE",
  0x75: "SETITEMS",
  0x47: "BINFLOAT",
  0x80: "PROTO",
  0x81: "NEWOBJ",
  0x82: "EXT1",
  0x83: "EXT2",
  0x84: "EXT4",
  0x85: "TUPLE1",
  0x86: "TUPLE2",
  0x87: "TUPLE3",
  0x88: "NEWTRUE",
  0x89: "NEWFALSE",
  0x8a: "LONG1",
  0x8b: "LONG4",
  0x42: "BINBYTES",
  0x43: "SHORT_BINBYTES",
  0x8c: "SHORT_BINUNICODE",
  0x8d: "BINUNICODE8",
  0x8e: "BINBYTES8",
  0x8f: "EMPTY_SET",
  0x90: "ADDITEMS",
  0x91: "FROZENSET",
  0x92: "NEWOBJ_EX",
  0x93: "STACK_GLOBAL",
  0x94: "MEMOIZE",
  0x95: "FRAME",
  0x96: "BYTEARRAY8",
  0x97: "NEXT_BUFFER",
  0x98: "READONLY_BUFFER",
};

/** A short description of a value for messages (no recursion into containers). */
export function describePickleValue(v: unknown): string {
  if (v === null) return "None";
  if (v instanceof PickleFunction) return v.qualifiedName;
  if (v instanceof Map) return `a dict of ${v.size}`;
  if (Array.isArray(v)) return `${Object.isFrozen(v) ? "a tuple" : "a list"} of ${v.length}`;
  if (typeof v === "string") return JSON.stringify(v.length > 60 ? `${v.slice(0, 60)}…` : v);
  if (typeof v === "object") return "an object";
  return String(v);
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Unpickles `bytes` under the restrictions described in the module doc. Returns the value STOP
 * leaves on the stack.
 *
 * @example
 * ```ts
 * import { unpickle } from "./pickle.ts";
 * const evil = new TextEncoder().encode("\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85R.");
 * try {
 *   unpickle(evil, { findGlobal: () => undefined, persistentLoad: () => null });
 * } catch (e) {
 *   (e as Error).message; // "pickle: refuses global posix.system: ..."
 * }
 * ```
 */
export function unpickle(bytes: Uint8Array, opts: UnpickleOptions): unknown {
  const where = opts.fileName ?? "pickle";
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;
  let opAt = 0;
  const fail = (what: string): never => {
    throw new PickleError(`${where}: ${what} (at byte ${opAt})`);
  };
  const need = (n: number, what: string): number => {
    if (n > bytes.length - pos) {
      fail(
        `${what} needs ${n} bytes but only ${bytes.length - pos} remain: the pickle is truncated`,
      );
    }
    const at = pos;
    pos += n;
    return at;
  };
  const text = (n: number, what: string): string => {
    const at = need(n, what);
    try {
      return utf8.decode(bytes.subarray(at, at + n));
    } catch {
      return fail(`${what} is not valid UTF-8`);
    }
  };
  const line = (what: string): string => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0 || end - pos > 1000) fail(`${what} has no newline within 1000 bytes`);
    const s = text(end - pos, what);
    pos++;
    return s;
  };
  const length8 = (what: string): number => {
    const at = need(8, what);
    const n = view.getBigUint64(at, true);
    if (n > BigInt(bytes.length - pos)) {
      fail(`${what} says ${n} bytes but only ${bytes.length - pos} remain: the pickle is corrupt`);
    }
    return Number(n);
  };

  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();
  const maxValues = opts.maxValues ?? DEFAULT_MAX_PICKLE_VALUES;
  let values = 0;
  const spend = () => {
    if (++values > maxValues) {
      fail(
        `creates more than ${maxValues} values, more than a state dict of tens of thousands of ` +
          `tensors needs: the pickle is corrupt or hostile (a legitimate one can be read with a ` +
          `larger maxPickleValues)`,
      );
    }
  };
  const push = (v: unknown) => {
    spend();
    stack.push(v);
  };
  const remember = (key: number, v: unknown) => {
    spend();
    memo.set(key, v);
  };
  const pop = (): unknown => {
    if (stack.length === (marks.at(-1) ?? 0)) fail("pops an empty stack");
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === (marks.at(-1) ?? 0)) fail("reads an empty stack");
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const m = marks.pop();
    if (m === undefined) return fail("closes a MARK that was never opened");
    return stack.splice(m);
  };
  const list = (v: unknown, op: string): unknown[] => {
    if (!Array.isArray(v) || Object.isFrozen(v)) {
      fail(`${op} needs a list, not ${describePickleValue(v)}`);
    }
    return v as unknown[];
  };
  const dict = (v: unknown, op: string): Map<unknown, unknown> => {
    if (!(v instanceof Map)) fail(`${op} needs a dict, not ${describePickleValue(v)}`);
    return v as Map<unknown, unknown>;
  };
  const setItems = (target: Map<unknown, unknown>, items: unknown[]) => {
    if (items.length % 2 !== 0) fail("SETITEMS has a key without a value");
    for (let i = 0; i < items.length; i += 2) target.set(items[i], items[i + 1]);
  };
  const tuple = (items: unknown[]): readonly unknown[] => Object.freeze(items);
  const global = (module: string, name: string) => {
    const found = opts.findGlobal(module, name);
    if (found === undefined) {
      fail(
        `refuses global ${module}.${name}: this reader only rebuilds tensors, and a pickle that ` +
          `names anything else is not a plain state dict (it may be malicious); nothing was run`,
      );
    }
    push(found);
  };

  while (true) {
    opAt = pos;
    const op = bytes[need(1, "an opcode")];
    switch (op) {
      case 0x80: { // PROTO
        const v = bytes[need(1, "PROTO")];
        if (v > 5) fail(`pickle protocol ${v} is newer than 5`);
        break;
      }
      case 0x95: // FRAME: a length hint around a run of opcodes, which are read as usual
        length8("FRAME");
        break;
      case 0x2e: { // STOP
        if (stack.length !== 1 || marks.length !== 0) {
          fail(`STOP leaves ${stack.length} values and ${marks.length} open MARKs, not one value`);
        }
        return stack[0];
      }
      case 0x28: // MARK
        spend();
        marks.push(stack.length);
        break;
      case 0x30: // POP
        pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        push(top());
        break;
      case 0x4a: // BININT
        push(view.getInt32(need(4, "BININT"), true));
        break;
      case 0x4b: // BININT1
        push(bytes[need(1, "BININT1")]);
        break;
      case 0x4d: // BININT2
        push(view.getUint16(need(2, "BININT2"), true));
        break;
      case 0x8a: { // LONG1: little-endian two's complement
        const n = bytes[need(1, "LONG1")];
        if (n > 8) fail(`LONG1 of ${n} bytes: integers in a state dict fit in 64 bits`);
        const at = need(n, "LONG1");
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[at + i]);
        if (n > 0 && bytes[at + n - 1] & 0x80) v -= 1n << BigInt(8 * n);
        const small = v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER);
        push(small ? Number(v) : v);
        break;
      }
      case 0x47: // BINFLOAT: big-endian double
        push(view.getFloat64(need(8, "BINFLOAT"), false));
        break;
      case 0x4e: // NONE
        push(null);
        break;
      case 0x88: // NEWTRUE
        push(true);
        break;
      case 0x89: // NEWFALSE
        push(false);
        break;
      case 0x58: // BINUNICODE
        push(text(view.getUint32(need(4, "BINUNICODE"), true), "BINUNICODE"));
        break;
      case 0x8c: // SHORT_BINUNICODE
        push(text(bytes[need(1, "SHORT_BINUNICODE")], "SHORT_BINUNICODE"));
        break;
      case 0x8d: // BINUNICODE8
        push(text(length8("BINUNICODE8"), "BINUNICODE8"));
        break;
      case 0x7d: // EMPTY_DICT
        push(new Map());
        break;
      case 0x5d: // EMPTY_LIST
        push([]);
        break;
      case 0x29: // EMPTY_TUPLE
        push(tuple([]));
        break;
      case 0x74: // TUPLE
        push(tuple(popMark()));
        break;
      case 0x85: // TUPLE1
        push(tuple([pop()]));
        break;
      case 0x86: { // TUPLE2
        const b = pop();
        push(tuple([pop(), b]));
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop();
        const b = pop();
        push(tuple([pop(), b, c]));
        break;
      }
      case 0x6c: // LIST
        push(popMark());
        break;
      case 0x64: { // DICT
        const d = new Map();
        setItems(d, popMark());
        push(d);
        break;
      }
      case 0x61: { // APPEND
        const v = pop();
        list(top(), "APPEND").push(v);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        const target = list(top(), "APPENDS");
        for (const v of items) target.push(v);
        break;
      }
      case 0x73: { // SETITEM
        const v = pop();
        const k = pop();
        dict(top(), "SETITEM").set(k, v);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        setItems(dict(top(), "SETITEMS"), items);
        break;
      }
      case 0x71: // BINPUT
        remember(bytes[need(1, "BINPUT")], top());
        break;
      case 0x72: // LONG_BINPUT
        remember(view.getUint32(need(4, "LONG_BINPUT"), true), top());
        break;
      case 0x94: // MEMOIZE
        remember(memo.size, top());
        break;
      case 0x68: // BINGET
      case 0x6a: { // LONG_BINGET
        const key = op === 0x68
          ? bytes[need(1, "BINGET")]
          : view.getUint32(need(4, "LONG_BINGET"), true);
        if (!memo.has(key)) fail(`reads memo slot ${key}, which was never stored`);
        push(memo.get(key));
        break;
      }
      case 0x63: { // GLOBAL
        const module = line("GLOBAL's module");
        global(module, line("GLOBAL's name"));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== "string" || typeof name !== "string") {
          fail("STACK_GLOBAL needs two strings");
        }
        global(module as string, name as string);
        break;
      }
      case 0x52: { // REDUCE
        const args = pop();
        const fn = pop();
        if (!(fn instanceof PickleFunction)) {
          return fail(`REDUCE calls ${describePickleValue(fn)}, which is not callable`);
        }
        if (!Array.isArray(args) || !Object.isFrozen(args)) {
          return fail(`REDUCE of ${fn.qualifiedName} needs an argument tuple`);
        }
        push(fn.call(args));
        break;
      }
      case 0x62: { // BUILD
        const state = pop();
        const target = top();
        // Module.state_dict() carries a `_metadata` attribute (layer versions), which pickles as
        // BUILD on the OrderedDict. Attributes of dicts hold no tensors: they are dropped.
        if (!(target instanceof Map) || !(state instanceof Map || state === null)) {
          fail(
            `BUILD sets state on ${describePickleValue(target)}: only a dict's attributes can be ` +
              `set in a state dict`,
          );
        }
        break;
      }
      case 0x51: // BINPERSID
        push(opts.persistentLoad(pop()));
        break;
      default: {
        const name = OPCODE_NAMES[op];
        fail(
          name === undefined
            ? `unknown opcode 0x${op.toString(16)}: this is not a pickle, or it is corrupt`
            : `opcode ${name} is not allowed: state dicts do not use it, so this reader refuses it`,
        );
      }
    }
  }
}
