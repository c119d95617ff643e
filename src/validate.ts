// Argument checks for the public API edge: each entry point checks its
// arguments once, here, and a bad one is a `vmmu: <param> must be …, got …`
// error naming the parameter — a TypeError for a wrong type, a RangeError for
// a value of the right type out of range — never an engine error from deeper
// down or a silent coercion. Names are looked up as own properties only, so
// `__proto__`, `constructor` or `toString` never select anything.

const U64_END = 1n << 64n;

/** How `v` reads in an error message: its type, and its value for short primitives. */
export function show(v: unknown): string {
  switch (typeof v) {
    case "bigint": return v >= -(1n << 20n) && v < 1n << 20n ? `${v}n` : `${v < 0n ? "-0x" + (-v).toString(16) : "0x" + v.toString(16)}n`;
    case "number": return String(v);
    case "string": return v.length > 40 ? `${JSON.stringify(v.slice(0, 40))}…` : JSON.stringify(v);
    case "boolean": return String(v);
    case "undefined": return "undefined";
    case "symbol": return "a symbol";
    case "function": return "a function";
    default: return v === null ? "null" : Array.isArray(v) ? "an array" : ArrayBuffer.isView(v) ? `a ${v.constructor.name}` : "an object";
  }
}

function typeError(name: string, what: string, v: unknown): TypeError {
  return new TypeError(`vmmu: ${name} must be ${what}, got ${show(v)}`);
}

function rangeError(name: string, what: string, v: unknown): RangeError {
  return new RangeError(`vmmu: ${name} must be ${what}, got ${show(v)}`);
}

/** A bigint of any value (callers that take it modulo 2^64, like a register operand). */
export function bigintArg(v: unknown, name: string): bigint {
  if (typeof v !== "bigint") throw typeError(name, "a bigint", v);
  return v;
}

/** A bigint in 0..2^64−1: a 64-bit register value or address. */
export function u64Arg(v: unknown, name: string): bigint {
  if (typeof v !== "bigint") throw typeError(name, "a bigint", v);
  if (v < 0n || v >= U64_END) throw rangeError(name, "a 64-bit value (0..2^64−1)", v);
  return v;
}

/**
 * A 64-bit register value or memory word, given unsigned (..2^64−1) or signed
 * (−2^63..): both name the same 64 bits, and no bit is silently dropped.
 * Returned as is; callers take BigInt.asUintN(64, …).
 */
export function reg64Arg(v: unknown, name: string): bigint {
  if (typeof v !== "bigint") throw typeError(name, "a bigint", v);
  if (v < -(1n << 63n) || v >= U64_END) throw rangeError(name, "a 64-bit value (−2^63..2^64−1)", v);
  return v;
}

/** A bigint in [min, max]; `what` describes the range in the message. */
export function bigintRangeArg(v: unknown, name: string, min: bigint, max: bigint, what = `${min}..${max}`): bigint {
  if (typeof v !== "bigint") throw typeError(name, "a bigint", v);
  if (v < min || v > max) throw rangeError(name, what, v);
  return v;
}

/** An integer number in [min, max] (NaN, ±Infinity and fractions are out of range). */
export function intArg(v: unknown, name: string, min: number, max: number): number {
  if (typeof v !== "number") throw typeError(name, `an integer ${min}..${max}`, v);
  if (!Number.isInteger(v) || v < min || v > max) throw rangeError(name, `an integer ${min}..${max}`, v);
  return v;
}

/** An integer number of any size (the caller decides what an out-of-range one means, e.g. #GP). */
export function integerArg(v: unknown, name: string): number {
  if (typeof v !== "number") throw typeError(name, "an integer", v);
  if (!Number.isInteger(v)) throw rangeError(name, "an integer", v);
  return v;
}

/** A byte count or address given as a safe-integer number or a bigint, in [min, max]; returned as a bigint. */
export function sizeArg(v: unknown, name: string, min: bigint, max: bigint, what = `${min}..${max}`): bigint {
  if (typeof v === "number") {
    if (!Number.isSafeInteger(v)) throw rangeError(name, `an integer (${what})`, v);
    v = BigInt(v);
  } else if (typeof v !== "bigint") {
    throw typeError(name, `a number or bigint (${what})`, v);
  }
  const b = v as bigint;
  if (b < min || b > max) throw rangeError(name, what, v);
  return b;
}

/** A boolean (no truthiness: the string "false" is not false). */
export function boolArg(v: unknown, name: string): boolean {
  if (typeof v !== "boolean") throw typeError(name, "a boolean", v);
  return v;
}

/** A boolean or undefined (then `dflt`). */
export function optBoolArg(v: unknown, name: string, dflt: boolean): boolean {
  return v === undefined ? dflt : boolArg(v, name);
}

/** One of `allowed` (own keys of a record, or a list), compared as strings without coercion. */
export function enumArg<T extends string>(v: unknown, name: string, allowed: readonly T[] | Readonly<Record<T, unknown>>): T {
  const list = (Array.isArray(allowed) ? allowed : Object.keys(allowed)) as readonly T[];
  if (typeof v === "string" && (Array.isArray(allowed) ? list.includes(v as T) : Object.hasOwn(allowed, v))) return v as T;
  const what = `one of ${list.map((s) => `'${s}'`).join(", ")}`;
  if (typeof v !== "string") throw typeError(name, what, v);
  throw rangeError(name, what, v);
}

/** A function, or undefined when `optional`. */
export function fnArg<F extends (...args: never[]) => unknown>(v: unknown, name: string, optional = false): F | undefined {
  if (v === undefined && optional) return undefined;
  if (typeof v !== "function") throw typeError(name, optional ? "a function or undefined" : "a function", v);
  return v as F;
}

/**
 * An options object (a non-null, non-array object; undefined gives `{}` when
 * `optional`). Only its own properties are read by the caller's lookups.
 */
export function optionsObject(v: unknown, name: string, optional = false): Record<string, unknown> {
  if (v === undefined && optional) return {};
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw typeError(name, optional ? "an options object or undefined" : "an options object", v);
  return v as Record<string, unknown>;
}

/** An own property of an options object (inherited ones, e.g. from a polluted prototype, are ignored). */
export function own(o: Record<string, unknown>, key: string): unknown {
  return Object.hasOwn(o, key) ? o[key] : undefined;
}

/** A BigUint64Array (batch input). */
export function u64ArrayArg(v: unknown, name: string): BigUint64Array {
  if (!(v instanceof BigUint64Array)) throw typeError(name, "a BigUint64Array", v);
  return v;
}

/** A Uint8Array (bytes to write, or per-entry access codes). */
export function u8ArrayArg(v: unknown, name: string): Uint8Array {
  if (!(v instanceof Uint8Array)) throw typeError(name, "a Uint8Array", v);
  return v;
}
