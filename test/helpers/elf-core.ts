// Writes ELF64 cores in the layout QEMU's dump-guest-memory uses (dump/dump.c:
// ELF header, program headers — PT_NOTE first, then one PT_LOAD per RAM block
// with p_paddr = the block's gpa —, the notes, then the blocks' bytes), as a
// sparse ImageSource so a 512 MiB guest costs only its non-zero pages.
// PN_XNUM (e_phnum 0xffff, the count in section header 0's sh_info) on request.

import type { ImageSource } from "../../src/index.js";

export interface CoreSegment {
  gpa: bigint;
  size: number;
  /** Non-zero pages: gpa (4 KiB aligned, inside the segment) → 4096 bytes. */
  pages?: { pa: bigint; bytes: Uint8Array }[];
  /** Stored bytes (p_filesz) if fewer than size: the rest reads as zero (p_memsz > p_filesz). */
  stored?: number;
}

export interface CoreOptions {
  machine: number;
  segments: CoreSegment[];
  /** Raw PT_NOTE contents. */
  notes?: Uint8Array;
  /** Encode e_phnum as PN_XNUM with the count in section header 0. */
  xnum?: boolean;
  class?: number;
  data?: number;
  type?: number;
}

export const EM_X86_64 = 62;
export const EM_AARCH64 = 183;

/** One ELF note: namesz, descsz, type, name (NUL-terminated, 4-aligned), desc (4-aligned). */
export function elfNote(name: string, type: number, desc: Uint8Array): Uint8Array {
  const nameBytes = new TextEncoder().encode(name + "\0");
  const nlen = (nameBytes.length + 3) & ~3, dlen = (desc.length + 3) & ~3;
  const out = new Uint8Array(12 + nlen + dlen);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, nameBytes.length, true);
  dv.setUint32(4, desc.length, true);
  dv.setUint32(8, type, true);
  out.set(nameBytes, 12);
  out.set(desc, 12 + nlen);
  return out;
}

/** The core as an ImageSource (and its header bytes, for tests that corrupt them). */
export function elfCore(o: CoreOptions): ImageSource & { header: Uint8Array } {
  const phnum = o.segments.length + 1;
  const notes = o.notes ?? new Uint8Array(0);
  const phoff = 64;
  const shoff = o.xnum ? phoff + 56 * phnum : 0;
  const notesOff = phoff + 56 * phnum + (o.xnum ? 64 : 0);
  let dataOff = notesOff + notes.length;
  const header = new Uint8Array(dataOff);
  const dv = new DataView(header.buffer);
  header.set([0x7f, 0x45, 0x4c, 0x46, o.class ?? 2, o.data ?? 1, 1]);
  dv.setUint16(16, o.type ?? 4, true);
  dv.setUint16(18, o.machine, true);
  dv.setUint32(20, 1, true);
  dv.setBigUint64(32, BigInt(phoff), true);
  dv.setBigUint64(40, BigInt(shoff), true);
  dv.setUint16(52, 64, true);
  dv.setUint16(54, 56, true);
  dv.setUint16(56, o.xnum ? 0xffff : phnum, true);
  dv.setUint16(58, o.xnum ? 64 : 0, true);
  dv.setUint16(60, o.xnum ? 1 : 0, true);
  const ph = (i: number, type: number, offset: number, paddr: bigint, filesz: number, memsz: number) => {
    const b = phoff + 56 * i;
    dv.setUint32(b, type, true);
    dv.setUint32(b + 4, 0, true);
    dv.setBigUint64(b + 8, BigInt(offset), true);
    dv.setBigUint64(b + 24, paddr, true);
    dv.setBigUint64(b + 32, BigInt(filesz), true);
    dv.setBigUint64(b + 40, BigInt(memsz), true);
  };
  ph(0, 4, notesOff, 0n, notes.length, notes.length);
  if (o.xnum) dv.setUint32(shoff + 44, phnum, true);
  header.set(notes, notesOff);
  const placed: { offset: number; bytes: Uint8Array }[] = [];
  o.segments.forEach((s, i) => {
    const stored = s.stored ?? s.size;
    ph(i + 1, 1, dataOff, s.gpa, stored, s.size);
    for (const p of s.pages ?? []) placed.push({ offset: dataOff + Number(p.pa - s.gpa), bytes: p.bytes });
    dataOff += stored;
  });
  placed.sort((a, b) => a.offset - b.offset);
  const size = dataOff;
  return {
    header, size,
    read(offset, out) {
      const n = Math.max(0, Math.min(out.length, size - offset));
      out.fill(0, 0, n);
      if (offset < header.length) out.set(header.subarray(offset, Math.min(header.length, offset + n)));
      for (const p of placed) {
        if (p.offset + p.bytes.length <= offset || p.offset >= offset + n) continue;
        const from = Math.max(p.offset, offset), to = Math.min(p.offset + p.bytes.length, offset + n);
        out.set(p.bytes.subarray(from - p.offset, to - p.offset), from - offset);
      }
      return n;
    },
  };
}
