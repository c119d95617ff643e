// Guest memory images, read as guest-physical memory for lookup(), mappings()
// and readVirtual(): a raw image (QEMU `pmemsave`, `dump-guest-memory` of
// nothing but RAM: byte i is gpa base + i) or an ELF core as QEMU's
// `dump-guest-memory` writes it (dump/dump.c: ELF64 ET_CORE, one PT_NOTE,
// one PT_LOAD per guest RAM block whose p_paddr is the block's gpa;
// e_phnum = PN_XNUM with the count in section header 0's sh_info when there
// are many blocks). The format is detected by the ELF magic; EM_X86_64 and
// EM_AARCH64 cores are read (System V gABI ch. 4 "ELF Header", "Program
// Header"). Pages are read from the source on demand, so a multi-GiB image
// costs what is looked at. Platform-neutral: a source is a Uint8Array or
// any synchronous `read(offset, out)` (a file in Node: src/forensics/file.ts).

import { hex } from "../addr.js";
import { enumArg, intArg, optionsObject, own, show, u64Arg, u8ArrayArg } from "../validate.js";
import type { PhysicalMemory } from "./space.js";

/** Random access to an image's bytes. */
export interface ImageSource {
  /** Bytes in the image. */
  readonly size: number;
  /** Reads up to `out.length` bytes at byte `offset` into `out`; returns how many (fewer only at the end). */
  read(offset: number, out: Uint8Array): number;
}

/** One guest-physical range of an image: `size` bytes from `gpa`, stored from byte `offset` of the image. */
export interface ImageRange {
  gpa: bigint;
  size: bigint;
  offset: number;
  /** Bytes stored; the rest of the range (ELF p_memsz beyond p_filesz) reads as zero. */
  stored: number;
}

/** Registers of one CPU as the ELF core's QEMU note carries them (x86-64: QEMUCPUState, target/i386/arch_dump.c). */
export interface ImageCpu {
  cr0: bigint;
  cr2: bigint;
  cr3: bigint;
  cr4: bigint;
  rip: bigint;
  rsp: bigint;
}

/** Options of openImage(). */
export interface OpenImageOptions {
  /** "auto" (default): ELF if the image starts with the ELF magic, else raw. */
  format?: "auto" | "raw" | "elf";
  /** gpa of a raw image's first byte (default 0; arm64 `-M virt` RAM starts at 0x40000000). Not for ELF. */
  base?: bigint;
  /** Pages kept in memory after reading them from a non-Uint8Array source (default 1024: 4 MiB). */
  cachePages?: number;
}

const PAGE = 4096;
const EM_X86_64 = 62;
const EM_AARCH64 = 183;
const ET_CORE = 4;
const PT_LOAD = 1;
const PT_NOTE = 4;
const PN_XNUM = 0xffff;

/**
 * Guest-physical memory backed by an image: contains/readInto as
 * PhysicalMemory, plus `write`, which goes to an in-memory overlay (the image
 * itself is never modified).
 */
export class MemoryImage implements PhysicalMemory {
  /** "raw" or "elf". */
  readonly format: "raw" | "elf";
  /** ELF: from e_machine. Raw: undefined (the caller says). */
  readonly arch: "x86_64" | "arm64" | undefined;
  /** The guest-physical ranges, sorted by gpa, disjoint. */
  readonly ranges: readonly ImageRange[];
  /** ELF x86-64 cores from QEMU: each CPU's registers from its "QEMU" note; else empty. */
  readonly cpus: readonly ImageCpu[];
  /** Pages read from the source so far. */
  pagesRead = 0;
  private readonly cache = new Map<number, Uint8Array>();
  private readonly overlay = new Map<number, Uint8Array>();
  private readonly cachePages: number;

  /** @internal openImage() builds it. */
  constructor(private readonly source: ImageSource, format: "raw" | "elf", arch: MemoryImage["arch"], ranges: ImageRange[], cpus: ImageCpu[], cachePages: number) {
    this.format = format;
    this.arch = arch;
    this.ranges = ranges;
    this.cpus = cpus;
    this.cachePages = cachePages;
  }

  /** Lowest gpa of any range (4 KiB aligned down). */
  get lowGpa(): bigint {
    return this.ranges.length === 0 ? 0n : this.ranges[0]!.gpa & ~0xfffn;
  }

  /** One past the highest gpa of any range (4 KiB aligned up). */
  get highGpa(): bigint {
    const last = this.ranges[this.ranges.length - 1];
    return last === undefined ? 0n : (last.gpa + last.size + 0xfffn) & ~0xfffn;
  }

  /** True iff `gpa` lies in one of the ranges. */
  contains(gpa: bigint): boolean {
    return this.rangeAt(gpa) !== undefined;
  }

  private rangeAt(gpa: bigint): ImageRange | undefined {
    const r = this.ranges;
    let lo = 0, hi = r.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const m = r[mid]!;
      if (gpa < m.gpa) hi = mid - 1;
      else if (gpa >= m.gpa + m.size) lo = mid + 1;
      else return m;
    }
    return undefined;
  }

  /** Copies `out.length` bytes at `gpa` into `out`. Throws a RangeError naming the first gpa not in the image. */
  readInto(gpa: bigint, out: Uint8Array): void {
    u8ArrayArg(out, "out");
    this.check(gpa, out.length);
    let done = 0;
    while (done < out.length) {
      const a = gpa + BigInt(done);
      const pageOff = Number(a & 0xfffn);
      const n = Math.min(out.length - done, PAGE - pageOff);
      const dst = out.subarray(done, done + n);
      if (!this.direct(a, dst)) dst.set(this.page(a >> 12n).subarray(pageOff, pageOff + n));
      done += n;
    }
  }

  /**
   * Without a cache, a piece inside one range's stored bytes (and not
   * overwritten) is read from the source straight into `dst`: no page is
   * materialised for an 8-byte entry.
   */
  private direct(gpa: bigint, dst: Uint8Array): boolean {
    if (this.cachePages !== 0 || this.overlay.has(Number(gpa >> 12n))) return false;
    const r = this.rangeAt(gpa)!;
    const at = Number(gpa - r.gpa);
    if (at + dst.length > r.stored) return false;
    return readFully(this.source, r.offset + at, dst) === dst.length;
  }

  /** Copies `length` bytes at `gpa` out of the image. */
  read(gpa: bigint, length: number): Uint8Array {
    const out = new Uint8Array(intArg(length, "length", 0, 0x7fff_ffff));
    this.readInto(gpa, out);
    return out;
  }

  /** The little-endian u64 at `gpa`. */
  read64(gpa: bigint): bigint {
    const b = this.word;
    this.readInto(gpa, b);
    return this.wordView.getBigUint64(0, true);
  }

  private readonly word = new Uint8Array(8);
  private readonly wordView = new DataView(this.word.buffer);

  /** Writes `bytes` at `gpa` into the overlay (later reads see them; the image is untouched). */
  write(gpa: bigint, bytes: Uint8Array): void {
    u8ArrayArg(bytes, "bytes");
    this.check(gpa, bytes.length);
    let done = 0;
    while (done < bytes.length) {
      const a = gpa + BigInt(done);
      const pageOff = Number(a & 0xfffn);
      const n = Math.min(bytes.length - done, PAGE - pageOff);
      const gfn = Number(a >> 12n);
      let page = this.overlay.get(gfn);
      if (page === undefined) {
        page = this.page(a >> 12n).slice();
        this.overlay.set(gfn, page);
      }
      page.set(bytes.subarray(done, done + n), pageOff);
      done += n;
    }
  }

  /** Throws unless every byte of [gpa, gpa + length) is in a range. */
  private check(gpa: bigint, length: number): void {
    if (typeof gpa !== "bigint") throw new TypeError(`vmmu: gpa must be a bigint, got ${show(gpa)}`);
    let a = gpa;
    const end = gpa + BigInt(length);
    while (a < end) {
      const r = this.rangeAt(a);
      if (r === undefined) throw new RangeError(`vmmu: gpa ${hex(a)} is not in the image (${this.describe()})`);
      a = r.gpa + r.size;
    }
  }

  /** The ranges, for messages: `[0x0, 0x9fc00), …`. */
  describe(): string {
    const parts = this.ranges.slice(0, 4).map((r) => `[${hex(r.gpa)}, ${hex(r.gpa + r.size)})`);
    if (this.ranges.length > 4) parts.push(`… ${this.ranges.length} ranges`);
    return parts.length === 0 ? "no ranges" : parts.join(", ");
  }

  /** The 4 KiB page of frame `gfn` as the image holds it: overlay, cache, or read now (bytes outside every range are zero). */
  page(gfn: bigint): Uint8Array {
    const key = Number(gfn);
    const o = this.overlay.get(key);
    if (o !== undefined) return o;
    const c = this.cache.get(key);
    if (c !== undefined) {
      this.cache.delete(key);
      this.cache.set(key, c);
      return c;
    }
    const page = new Uint8Array(PAGE);
    const start = gfn << 12n;
    const end = start + BigInt(PAGE);
    for (const r of this.overlapping(start, end)) {
      const from = r.gpa > start ? r.gpa : start;
      const to = r.gpa + r.size < end ? r.gpa + r.size : end;
      const inRange = Number(from - r.gpa);
      const stored = Math.max(0, Math.min(Number(to - from), r.stored - inRange));
      if (stored > 0) {
        const dst = page.subarray(Number(from - start), Number(from - start) + stored);
        const got = readFully(this.source, r.offset + inRange, dst);
        dst.fill(0, got);
      }
    }
    this.pagesRead++;
    if (this.cachePages > 0) {
      if (this.cache.size >= this.cachePages) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(key, page);
    }
    return page;
  }

  private *overlapping(start: bigint, end: bigint): Generator<ImageRange> {
    const r = this.ranges;
    let lo = 0, hi = r.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (r[mid]!.gpa + r[mid]!.size <= start) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < r.length && r[i]!.gpa < end; i++) yield r[i]!;
  }
}

function readFully(source: ImageSource, offset: number, out: Uint8Array): number {
  let got = 0;
  while (got < out.length) {
    const n = source.read(offset + got, out.subarray(got));
    if (n <= 0) break;
    got += n;
  }
  return got;
}

/** A Uint8Array as an ImageSource. */
function bytesSource(bytes: Uint8Array): ImageSource {
  return {
    size: bytes.length,
    read(offset, out) {
      const n = Math.max(0, Math.min(out.length, bytes.length - offset));
      out.set(bytes.subarray(offset, offset + n));
      return n;
    },
  };
}

/**
 * Opens a memory image: `source` is its bytes (a Uint8Array, used in place)
 * or an ImageSource reading them on demand. The format is detected (the ELF
 * magic) unless `opts.format` says it. A raw image is one range from
 * `opts.base`; an ELF core must be a little-endian ELF64 ET_CORE for
 * EM_X86_64 or EM_AARCH64, and its ranges are its PT_LOAD segments at their
 * p_paddr. Throws a `vmmu: openImage: …` error for anything else.
 */
export function openImage(source: Uint8Array | ImageSource, opts: OpenImageOptions = {}): MemoryImage {
  const o = optionsObject(opts, "openImage: opts");
  const format = own(o, "format") === undefined ? "auto" : enumArg(own(o, "format"), "openImage: opts.format", ["auto", "raw", "elf"] as const);
  const cacheOpt = own(o, "cachePages");
  let src: ImageSource;
  let cachePages: number;
  if (source instanceof Uint8Array) {
    src = bytesSource(source);
    cachePages = 0;
  } else {
    const s = optionsObject(source, "openImage: source");
    if (typeof s.read !== "function" || typeof s.size !== "number" || !Number.isSafeInteger(s.size) || s.size < 0) {
      throw new TypeError(`vmmu: openImage: source must be a Uint8Array or { size, read(offset, out) }, got ${show(source)}`);
    }
    src = source;
    cachePages = 1024;
  }
  if (cacheOpt !== undefined) cachePages = intArg(cacheOpt, "openImage: opts.cachePages", 0, 1 << 20);

  const head = new Uint8Array(64);
  const headBytes = readFully(src, 0, head);
  const isElf = headBytes >= 4 && head[0] === 0x7f && head[1] === 0x45 && head[2] === 0x4c && head[3] === 0x46;
  if (format === "elf" || (format === "auto" && isElf)) {
    if (own(o, "base") !== undefined) throw new TypeError("vmmu: openImage: opts.base is for raw images; an ELF core's segments carry their physical addresses");
    if (!isElf) throw new RangeError("vmmu: openImage: not an ELF file (no \\x7fELF magic)");
    return openElf(src, head, headBytes, cachePages);
  }
  const baseOpt = own(o, "base");
  const base = baseOpt === undefined ? 0n : u64Arg(baseOpt, "openImage: opts.base");
  if ((base & 0xfffn) !== 0n) throw new RangeError(`vmmu: openImage: opts.base must be 4 KiB aligned, got ${hex(base)}`);
  if (src.size === 0) throw new RangeError("vmmu: openImage: the image is empty");
  const ranges = [{ gpa: base, size: BigInt(src.size), offset: 0, stored: src.size }];
  return new MemoryImage(src, "raw", undefined, ranges, [], cachePages);
}

function openElf(src: ImageSource, head: Uint8Array, headBytes: number, cachePages: number): MemoryImage {
  const bad = (why: string): never => { throw new RangeError(`vmmu: openImage: ${why}`); };
  if (headBytes < 64) bad("truncated ELF header");
  if (head[4] !== 2) bad(`ELF class ${head[4]} is not supported (only ELF64 cores; QEMU writes ELF64 for a 64-bit guest)`);
  if (head[5] !== 1) bad("big-endian ELF is not supported (x86_64 and aarch64 cores are little-endian)");
  const h = new DataView(head.buffer);
  const type = h.getUint16(16, true);
  const machine = h.getUint16(18, true);
  if (type !== ET_CORE) bad(`ELF type ${type} is not ET_CORE (4): not a memory dump`);
  const arch = machine === EM_X86_64 ? "x86_64" : machine === EM_AARCH64 ? "arm64" : bad(`ELF machine ${machine} is not EM_X86_64 (62) or EM_AARCH64 (183)`);
  const phoff = Number(h.getBigUint64(32, true));
  const shoff = Number(h.getBigUint64(40, true));
  const phentsize = h.getUint16(54, true);
  let phnum = h.getUint16(56, true);
  if (phentsize < 56) bad(`e_phentsize ${phentsize} is smaller than an Elf64_Phdr`);
  if (phnum === PN_XNUM) {
    const sh = new Uint8Array(64);
    if (readFully(src, shoff, sh) < 64) bad("e_phnum is PN_XNUM but section header 0 is missing");
    phnum = new DataView(sh.buffer).getUint32(44, true);
  }
  const ph = new Uint8Array(phentsize * phnum);
  if (readFully(src, phoff, ph) < ph.length) bad(`truncated program headers (${phnum} at offset ${phoff})`);
  const p = new DataView(ph.buffer);
  const ranges: ImageRange[] = [];
  const cpus: ImageCpu[] = [];
  for (let i = 0; i < phnum; i++) {
    const o = i * phentsize;
    const ptype = p.getUint32(o, true);
    const offset = Number(p.getBigUint64(o + 8, true));
    const paddr = p.getBigUint64(o + 24, true);
    const filesz = Number(p.getBigUint64(o + 32, true));
    const memsz = p.getBigUint64(o + 40, true);
    if (ptype === PT_NOTE && arch === "x86_64") cpus.push(...qemuNotes(src, offset, filesz));
    if (ptype !== PT_LOAD || memsz === 0n) continue;
    if (offset + filesz > src.size) bad(`PT_LOAD ${i} (gpa ${hex(paddr)}) extends past the end of the file: truncated core`);
    ranges.push({ gpa: paddr, size: memsz, offset, stored: Math.min(filesz, Number(memsz)) });
  }
  if (ranges.length === 0) bad("no PT_LOAD segment: the core holds no memory");
  ranges.sort((a, b) => (a.gpa < b.gpa ? -1 : a.gpa > b.gpa ? 1 : 0));
  for (let i = 1; i < ranges.length; i++) {
    const a = ranges[i - 1]!, b = ranges[i]!;
    if (a.gpa + a.size > b.gpa) bad(`PT_LOAD segments overlap at gpa ${hex(b.gpa)}`);
  }
  return new MemoryImage(src, "elf", arch, ranges, cpus, cachePages);
}

/** QEMUCPUState offsets (target/i386/arch_dump.c): 16 GPRs, rip, rflags, 10 segments of 24 bytes, then cr[5]. */
const QS_RSP = 8 + 6 * 8, QS_RIP = 8 + 16 * 8, QS_CR = 8 + 18 * 8 + 10 * 24;

/** The x86-64 "QEMU" notes of a PT_NOTE segment, one per CPU in order. */
function qemuNotes(src: ImageSource, offset: number, size: number): ImageCpu[] {
  if (size <= 0 || size > 1 << 24) return [];
  const b = new Uint8Array(size);
  const got = readFully(src, offset, b);
  const dv = new DataView(b.buffer, 0, got);
  const out: ImageCpu[] = [];
  let o = 0;
  while (o + 12 <= got) {
    const namesz = dv.getUint32(o, true), descsz = dv.getUint32(o + 4, true);
    const name = String.fromCharCode(...b.subarray(o + 12, o + 12 + Math.max(0, namesz - 1)));
    const desc = o + 12 + ((namesz + 3) & ~3);
    if (desc + descsz > got) break;
    if (name === "QEMU" && descsz >= QS_CR + 40) {
      const q = (off: number): bigint => dv.getBigUint64(desc + off, true);
      out.push({ cr0: q(QS_CR), cr2: q(QS_CR + 16), cr3: q(QS_CR + 24), cr4: q(QS_CR + 32), rip: q(QS_RIP), rsp: q(QS_RSP) });
    }
    o = desc + ((descsz + 3) & ~3);
  }
  return out;
}
