// Valgrind lackey memory traces (`valgrind --tool=lackey --trace-mem=yes`)
// as compact access streams a guest process can replay. Lackey prints one
// record per access:
//
//   I  04016b28,3     instruction fetch of 3 bytes
//    L 04222cac,8     load
//    S 7ff000398,8    store
//    M 0421e2d0,4     modify (load then store of the same bytes)
//
// and `==pid==` commentary, which is skipped like any other line. Parsing is
// byte-level and streaming: a file is read in blocks and yielded in chunks of
// at most `chunkSize` accesses, never loaded whole.
//
// Kinds are the x86 access codes (0 read, 1 write, 2 fetch); M becomes a read
// followed by a write. An access whose bytes cross a 4 KiB boundary is
// followed by one of the same kind at the next page (the CPU translates
// both). Addresses are numbers (exact below 2^53); records at or above
// 2^47 (not user addresses) are dropped and counted.

import { openSync, readSync, closeSync } from "node:fs";

export const ACCESS_READ = 0;
export const ACCESS_WRITE = 1;
export const ACCESS_FETCH = 2;

/** A run of accesses: addr[i], kind[i] for i < length. */
export interface AccessChunk {
  addr: Float64Array;
  kind: Uint8Array;
  length: number;
}

/** A whole access stream in memory (what a process replays). */
export type AccessTrace = AccessChunk;

export interface LackeyOptions {
  /** Accesses per chunk (default 65536). */
  chunkSize?: number;
  /** Add the second page's access for records that cross a page boundary (default true). */
  splitPages?: boolean;
  /** Bytes per file read (default 1 MiB). */
  blockBytes?: number;
}

/** Counters of a parse. */
export interface LackeyCounts {
  lines: number;
  /** Records parsed (I/L/S/M lines). */
  records: number;
  /** Accesses emitted (M counts twice, page-crossing records once more). */
  accesses: number;
  /** Lines that are not records (==pid== headers, program output). */
  skipped: number;
  /** Records with an address at or above 2^47. */
  dropped: number;
}

const USER_TOP = 2 ** 47;
const SP = 0x20, COMMA = 0x2c, NL = 0x0a, CR = 0x0d;

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

/**
 * Incremental parser: push() blocks of bytes, end() at the end of input.
 * Each returns the chunks completed meanwhile.
 */
export class LackeyParser {
  readonly counts: LackeyCounts = { lines: 0, records: 0, accesses: 0, skipped: 0, dropped: 0 };
  private readonly size: number;
  private readonly split: boolean;
  private addr: Float64Array;
  private kind: Uint8Array;
  private n = 0;
  private carry: Uint8Array = new Uint8Array(0);
  private out: AccessChunk[] = [];

  constructor(opts: LackeyOptions = {}) {
    this.size = opts.chunkSize ?? 65536;
    if (!Number.isInteger(this.size) || this.size < 4) throw new RangeError("vmmu: chunkSize must be an integer ≥ 4");
    this.split = opts.splitPages ?? true;
    this.addr = new Float64Array(this.size);
    this.kind = new Uint8Array(this.size);
  }

  /** Parses `bytes` (any split of the input); returns the chunks that filled up. */
  push(bytes: Uint8Array): AccessChunk[] {
    let buf = bytes;
    if (this.carry.length > 0) {
      buf = new Uint8Array(this.carry.length + bytes.length);
      buf.set(this.carry);
      buf.set(bytes, this.carry.length);
    }
    let start = 0;
    for (let i = 0; i < buf.length; i++) {
      if (buf[i] !== NL) continue;
      this.line(buf, start, i);
      start = i + 1;
    }
    this.carry = buf.slice(start);
    return this.take();
  }

  /** Parses what is left (a last line without a newline); returns the final chunks. */
  end(): AccessChunk[] {
    if (this.carry.length > 0) this.line(this.carry, 0, this.carry.length);
    this.carry = new Uint8Array(0);
    if (this.n > 0) this.flush();
    return this.take();
  }

  private take(): AccessChunk[] {
    const o = this.out;
    this.out = [];
    return o;
  }

  private line(b: Uint8Array, i: number, end: number): void {
    this.counts.lines++;
    if (end > i && b[end - 1] === CR) end--;
    while (i < end && b[i] === SP) i++;
    const op = b[i];
    if (i + 1 >= end || b[i + 1] !== SP || (op !== 0x49 && op !== 0x4c && op !== 0x53 && op !== 0x4d)) {
      this.counts.skipped++;
      return;
    }
    i += 2;
    while (i < end && b[i] === SP) i++;
    let a = 0, digits = 0;
    for (let v; i < end && (v = hexValue(b[i]!)) >= 0; i++, digits++) a = a * 16 + v;
    if (digits === 0 || i >= end || b[i] !== COMMA) {
      this.counts.skipped++;
      return;
    }
    let size = 0;
    for (i++; i < end && b[i]! >= 0x30 && b[i]! <= 0x39; i++) size = size * 10 + b[i]! - 0x30;
    this.counts.records++;
    if (a >= USER_TOP) {
      this.counts.dropped++;
      return;
    }
    const cross = this.split && size > 0 && (a % 4096) + size > 4096;
    const next = a - (a % 4096) + 4096;
    if (op === 0x4d) {
      this.emit(a, ACCESS_READ);
      if (cross) this.emit(next, ACCESS_READ);
      this.emit(a, ACCESS_WRITE);
      if (cross) this.emit(next, ACCESS_WRITE);
      return;
    }
    const k = op === 0x49 ? ACCESS_FETCH : op === 0x4c ? ACCESS_READ : ACCESS_WRITE;
    this.emit(a, k);
    if (cross) this.emit(next, k);
  }

  private emit(a: number, k: number): void {
    this.addr[this.n] = a;
    this.kind[this.n] = k;
    this.counts.accesses++;
    if (++this.n === this.size) this.flush();
  }

  private flush(): void {
    this.out.push({ addr: this.addr.subarray(0, this.n), kind: this.kind.subarray(0, this.n), length: this.n });
    this.addr = new Float64Array(this.size);
    this.kind = new Uint8Array(this.size);
    this.n = 0;
  }
}

/**
 * Streams a lackey trace file as chunks (read `blockBytes` at a time).
 * The generator's return value is the parse counts.
 */
export function* readLackey(path: string, opts: LackeyOptions = {}): Generator<AccessChunk, LackeyCounts, void> {
  const p = new LackeyParser(opts);
  const fd = openSync(path, "r");
  try {
    const block = new Uint8Array(opts.blockBytes ?? 1 << 20);
    for (;;) {
      const got = readSync(fd, block, 0, block.length, null);
      if (got === 0) break;
      yield* p.push(block.subarray(0, got));
    }
  } finally {
    closeSync(fd);
  }
  yield* p.end();
  return p.counts;
}

/** Parses a whole trace held in a string. */
export function parseLackey(text: string, opts: LackeyOptions = {}): AccessTrace {
  const p = new LackeyParser(opts);
  return collectTrace([...p.push(new TextEncoder().encode(text)), ...p.end()]);
}

/** Concatenates chunks into one trace, keeping at most `limit` accesses. */
export function collectTrace(chunks: Iterable<AccessChunk>, limit = Infinity): AccessTrace {
  const parts: AccessChunk[] = [];
  let n = 0;
  for (const c of chunks) {
    const take = Math.min(c.length, limit - n);
    if (take <= 0) break;
    parts.push({ addr: c.addr.subarray(0, take), kind: c.kind.subarray(0, take), length: take });
    n += take;
  }
  const addr = new Float64Array(n), kind = new Uint8Array(n);
  let at = 0;
  for (const c of parts) {
    addr.set(c.addr, at);
    kind.set(c.kind, at);
    at += c.length;
  }
  return { addr, kind, length: n };
}

/** A contiguous page range a trace touches, with the kinds of access it saw. */
export interface TraceRegion {
  start: number;
  end: number;
  read: boolean;
  write: boolean;
  exec: boolean;
}

/**
 * The page ranges `trace` touches, merged across gaps of at most `gapBytes`
 * (default 1 MiB): the VMAs a process needs to replay it.
 */
export function traceRegions(trace: AccessTrace, gapBytes = 1 << 20): TraceRegion[] {
  const flags = new Map<number, number>();
  for (let i = 0; i < trace.length; i++) {
    const page = Math.floor(trace.addr[i]! / 4096);
    flags.set(page, (flags.get(page) ?? 0) | (1 << trace.kind[i]!));
  }
  const pages = [...flags.keys()].sort((a, b) => a - b);
  const out: TraceRegion[] = [];
  const gap = Math.ceil(gapBytes / 4096);
  let cur: TraceRegion | undefined;
  for (const p of pages) {
    const f = flags.get(p)!;
    if (!cur || p - cur.end / 4096 > gap) {
      cur = { start: p * 4096, end: p * 4096 + 4096, read: false, write: false, exec: false };
      out.push(cur);
    }
    cur.end = p * 4096 + 4096;
    cur.read ||= (f & (1 << ACCESS_READ)) !== 0;
    cur.write ||= (f & (1 << ACCESS_WRITE)) !== 0;
    cur.exec ||= (f & (1 << ACCESS_FETCH)) !== 0;
  }
  return out;
}
