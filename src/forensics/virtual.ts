// Reads and writes by virtual address through an explicit root, as a debugger
// does (QEMU cpu_memory_rw_debug, libvmi vmi_read_va / vmi_write_va): each
// page is translated by lookup() (the debugger view: no rights checked, no A/D
// written), so accesses cross page boundaries, and an unmapped page fails the
// whole access before any byte is written.

import { hex } from "../addr.js";
import { intArg, u8ArrayArg } from "../validate.js";
import { lookupWalk, type LookupUnmapped } from "./lookup.js";
import { vaArg, walkOf, type AddressSpace, type Walk } from "./space.js";

/** A piece of a virtual access: `length` bytes at `pa`, from byte `at` of the access. */
interface Piece { pa: bigint; at: number; length: number }

function pieces(w: Walk, who: string, va: bigint, length: number): Piece[] {
  const out: Piece[] = [];
  let at = 0;
  while (at < length) {
    const v = BigInt.asUintN(64, va + BigInt(at));
    const r = lookupWalk(w, v);
    if (!r.mapped) throw new RangeError(`vmmu: ${who}: va ${hex(v)} is not mapped (${why(r)})${at > 0 ? `, ${at} bytes into the access at ${hex(va)}` : ""}`);
    const n = Math.min(length - at, 4096 - Number(v & 0xfffn));
    out.push({ pa: r.pa, at, length: n });
    at += n;
  }
  return out;
}

function why(r: LookupUnmapped): string {
  switch (r.reason) {
    case "not-present": return `entry at level ${r.level} not present`;
    case "outside-memory": return `level-${r.level} entry at gpa ${hex(r.entryAddress!)} is outside the memory`;
    case "other-half": return "the other TTBR's half";
    default: return r.reason;
  }
}

/**
 * Reads `length` bytes at virtual address `va` of `space`. Throws a
 * RangeError `vmmu: readVirtual: va … is not mapped (…)` naming the first
 * unmapped byte, or the memory's RangeError if a page maps outside it.
 */
export function readVirtual(space: AddressSpace, va: bigint, length: number): Uint8Array {
  const w = walkOf(space, "readVirtual");
  const v = vaArg(va, "readVirtual");
  const out = new Uint8Array(intArg(length, "readVirtual: length", 0, 0x7fff_ffff));
  for (const p of pieces(w, "readVirtual", v, length)) w.memory.readInto(p.pa, out.subarray(p.at, p.at + p.length));
  return out;
}

/**
 * Writes `bytes` at virtual address `va` of `space` (a debugger's write: no
 * rights are checked, no dirty bit is set). Every page is translated first:
 * an unmapped one throws `vmmu: writeVirtual: va … is not mapped (…)` and
 * nothing is written. `space.memory` must have `write` (machine RAM, or an
 * image's overlay).
 */
export function writeVirtual(space: AddressSpace, va: bigint, bytes: Uint8Array): void {
  const w = walkOf(space, "writeVirtual");
  const v = vaArg(va, "writeVirtual");
  u8ArrayArg(bytes, "writeVirtual: bytes");
  const write = w.memory.write;
  if (typeof write !== "function") throw new TypeError("vmmu: writeVirtual: space.memory has no write(gpa, bytes)");
  const ps = pieces(w, "writeVirtual", v, bytes.length);
  for (const p of ps) {
    const last = p.pa + BigInt(p.length - 1);
    if (!w.memory.contains(p.pa) || !w.memory.contains(last)) {
      throw new RangeError(`vmmu: writeVirtual: va ${hex(BigInt.asUintN(64, v + BigInt(p.at)))} maps to gpa ${hex(p.pa)}, which is outside the memory`);
    }
  }
  for (const p of ps) write.call(w.memory, p.pa, bytes.subarray(p.at, p.at + p.length));
}
