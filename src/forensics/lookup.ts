// Lookup by explicit root, as a debugger or memory-forensics tool does it
// (libvmi vmi_pagetable_lookup / vmi_pagetable_lookup_extended and its
// page_info_t; QEMU's x86_cpu_get_phys_page_attrs_debug and
// arm_cpu_get_phys_page_attrs_debug): walk the guest's own tables from the
// given root, reporting every entry read. x86-64: Intel SDM Vol.3A §4.5,
// Table 4-14..4-20 (entry formats), §4.6 (rights folded over levels); arm64:
// Arm ARM DDI 0487 D8.2 (VA ranges, TnSZ, TBI), D8.3 (descriptor formats),
// D8.4 (AP, APTable, XN). Plain TS over PhysicalMemory: works on a live
// machine's RAM and on memory images alike, in Node and in browsers.

import { hex } from "../addr.js";
import {
  R_KR, R_KW, R_KX, R_UR, R_UW, R_UX, readEntry, rightsOf, vaArg, walkOf,
  type AddressSpace, type Arm64Walk, type PageRights, type X86Walk,
} from "./space.js";

/** One paging-structure entry the walk read (libvmi page_info_t's `*_location` / `*_value`). */
export interface LookupEntry {
  /**
   * x86-64: KVM numbering, 5 = PML5E, 4 = PML4E, 3 = PDPTE, 2 = PDE, 1 = PTE.
   * arm64: the Arm ARM lookup level, 0..3.
   */
  level: number;
  /** Guest-physical address of the entry. */
  entryAddress: bigint;
  /** The entry as read (nothing is written). */
  value: bigint;
}

/** Why a lookup found no mapping. */
export type LookupStop =
  /** x86-64: bits 63:48 (63:57) are not copies of bit 47 (56). arm64: the bits above TnSZ (below 56 with TBI) are not all 0 (TTBR0) / all 1 (TTBR1). */
  | "non-canonical"
  /** arm64: VA[55] selects the other TTBR. */
  | "other-half"
  /** arm64: TCR.EPDn disables walks of this half. */
  | "disabled"
  /** The entry at `level` is not present (x86 P=0) or not valid (arm64: invalid, or a block where none may be). */
  | "not-present"
  /** The entry at `level` would be read at `entryAddress`, which is not in the memory (outside RAM, a hole in the image). */
  | "outside-memory";

/** A translation: the pa, the page it lies in, the leaf level, the effective rights, and every entry read. */
export interface LookupMapped {
  va: bigint;
  mapped: true;
  pa: bigint;
  /** Bytes: 4 KiB, 2 MiB, 1 GiB. */
  pageSize: number;
  /** Level of the leaf entry (numbering as in LookupEntry). */
  level: number;
  rights: PageRights;
  /** x86 G / arm64 not nG: the translation is global (not tagged by PCID / ASID). */
  global: boolean;
  /** From the root down to the leaf. */
  entries: LookupEntry[];
}

/** No translation: why, where the walk stopped, and the entries read before it. */
export interface LookupUnmapped {
  va: bigint;
  mapped: false;
  reason: LookupStop;
  /** The level whose entry was not present or not readable (undefined for the range checks). */
  level?: number;
  /** For "outside-memory": the gpa of the entry that could not be read. */
  entryAddress?: bigint;
  entries: LookupEntry[];
}

export type LookupResult = LookupMapped | LookupUnmapped;

/**
 * Walks `space`'s tables for `va` (a bigint, modulo 2^64) without any vCPU:
 * the debugger view — present/valid and page-size bits decide, no rights are
 * checked, no reserved bits, no A/D or Access flag is read or written. The
 * result lists every entry read, from the root down, and either the
 * translation with its folded rights or why and where the walk stopped.
 * Throws a `vmmu: lookup: …` error naming a bad argument.
 */
export function lookup(space: AddressSpace, va: bigint): LookupResult {
  const w = walkOf(space, "lookup");
  const v = vaArg(va, "lookup");
  return w.arch === "x86_64" ? lookupX86(w, v) : lookupArm64(w, v);
}

/** @internal lookup() for a decoded space (readVirtual/writeVirtual decode it once). */
export function lookupWalk(w: X86Walk | Arm64Walk, va: bigint): LookupResult {
  return w.arch === "x86_64" ? lookupX86(w, va) : lookupArm64(w, va);
}

const TWO32 = 2 ** 32;

/** Bits `shift`+8:`shift` of a VA given as 32-bit halves. */
function index9(hi: number, lo: number, shift: number): number {
  return shift >= 32 ? (hi >>> (shift - 32)) & 511 : ((lo >>> shift) | (hi << (32 - shift))) & 511;
}

// Indices, table addresses and flags are Numbers (addresses < 2^52 are exact);
// BigInts are made only for what the result reports.
function lookupX86(w: X86Walk, va: bigint): LookupResult {
  const entries: LookupEntry[] = [];
  const hi = Number(va >> 32n), lo = Number(va & 0xffff_ffffn);
  const topBits = 65 - w.vaBits;
  const top = hi >>> (32 - topBits);
  if (top !== 0 && top !== 2 ** topBits - 1) return { va, mapped: false, reason: "non-canonical", entries };
  const hiMask = 2 ** (w.maxPhysAddrBits - 32) - 1;
  let table = Number(w.table);
  let write = true, user = true, exec = true;
  for (let level: number = w.levels; level >= 1; level--) {
    const shift = 12 + 9 * (level - 1);
    const entryAddress = BigInt(table + index9(hi, lo, shift) * 8);
    const value = readEntry(w.memory, entryAddress);
    if (value === undefined) return { va, mapped: false, reason: "outside-memory", level, entryAddress, entries };
    entries.push({ level, entryAddress, value });
    const vlo = Number(value & 0xffff_ffffn), vhi = Number(value >> 32n);
    if ((vlo & 1) === 0) return { va, mapped: false, reason: "not-present", level, entries };
    write &&= (vlo & 2) !== 0;
    user &&= (vlo & 4) !== 0;
    if (w.nxe) exec &&= vhi >>> 31 === 0;
    const frame = (vhi & hiMask) * TWO32 + ((vlo & 0xffff_f000) >>> 0);
    if (level === 1 || (level <= 3 && (vlo & 0x80) !== 0)) {
      const size = 2 ** shift;
      const pa = BigInt(frame - (frame % size) + (lo & (size - 1)));
      const k = R_KR | (write ? R_KW : 0) | (exec ? R_KX : 0);
      const rights = rightsOf(user ? k | (k << 3) : k);
      return { va, mapped: true, pa, pageSize: size, level, rights, global: (vlo & 0x100) !== 0, entries };
    }
    table = frame;
  }
  throw new Error("vmmu: unreachable: level 1 is always a leaf");
}

/**
 * @internal arm64 leaf rights (QEMU get_S1prot, PAN and WXN off) from the
 * effective AP[2] (`readOnly`, APTable[1] folded in), DBM making a read-only
 * page writable (`dirtyWritable`), AP[1] (`el0`, APTable[0] folded in) and
 * the folded UXN/PXN. The implied PXN of an EL0-writable page follows AP[2]
 * as it stands, as a fetch sees it.
 */
export function arm64Rights(readOnly: boolean, dirtyWritable: boolean, el0: boolean, uxn: boolean, pxn: boolean): number {
  const w = !readOnly || dirtyWritable;
  let m = R_KR | (w ? R_KW : 0) | (uxn ? 0 : R_UX);
  if (el0) m |= R_UR | (w ? R_UW : 0);
  if (!pxn && !(el0 && !readOnly)) m |= R_KX;
  return m;
}

function lookupArm64(w: Arm64Walk, va: bigint): LookupResult {
  const entries: LookupEntry[] = [];
  const upper = (va >> 55n) & 1n;
  if (Number(upper) !== w.ttbr) return { va, mapped: false, reason: "other-half", entries };
  const checkedTop = w.tbi ? 55 : 63;
  const checked = (va >> BigInt(w.vaBits)) & ((1n << BigInt(checkedTop + 1 - w.vaBits)) - 1n);
  if (checked !== (upper === 1n ? (1n << BigInt(checkedTop + 1 - w.vaBits)) - 1n : 0n)) {
    return { va, mapped: false, reason: "non-canonical", entries };
  }
  if (w.epd) return { va, mapped: false, reason: "disabled", entries };
  const hi = Number((va >> 32n) & 0xffffn), lo = Number(va & 0xffff_ffffn);
  let table = Number(w.table);
  let apTable0 = false, apTable1 = false, uxnTable = false, pxnTable = false;
  for (let level = w.startLevel; level <= 3; level++) {
    const shift = 12 + 9 * (3 - level);
    const width = level === w.startLevel ? w.vaBits - shift : 9;
    const entryAddress = BigInt(table + (index9(hi, lo, shift) & (2 ** width - 1)) * 8);
    const value = readEntry(w.memory, entryAddress);
    if (value === undefined) return { va, mapped: false, reason: "outside-memory", level, entryAddress, entries };
    entries.push({ level, entryAddress, value });
    const vlo = Number(value & 0xffff_ffffn), vhi = Number(value >> 32n);
    const typeBit = (vlo & 2) !== 0;
    if ((vlo & 1) === 0 || (level === 3 && !typeBit) || (level === 0 && !typeBit)) {
      return { va, mapped: false, reason: "not-present", level, entries };
    }
    const frame = (vhi & 0xffff) * TWO32 + ((vlo & 0xffff_f000) >>> 0);
    if (level < 3 && typeBit) {
      if (!w.hpd) {
        apTable0 ||= (vhi & (1 << 29)) !== 0;
        apTable1 ||= (vhi & (1 << 30)) !== 0;
        uxnTable ||= (vhi & (1 << 28)) !== 0;
        pxnTable ||= (vhi & (1 << 27)) !== 0;
      }
      table = frame;
      continue;
    }
    const size = 2 ** shift;
    const pa = BigInt(frame - (frame % size) + (lo & (size - 1)));
    const readOnly = apTable1 || (vlo & 0x80) !== 0;
    const dirtyWritable = !apTable1 && w.dirtyBitManagement && (vhi & (1 << 19)) !== 0;
    const el0 = !apTable0 && (vlo & 0x40) !== 0;
    const rights = rightsOf(arm64Rights(readOnly, dirtyWritable, el0, uxnTable || (vhi & (1 << 22)) !== 0, pxnTable || (vhi & (1 << 21)) !== 0));
    return { va, mapped: true, pa, pageSize: size, level, rights, global: (vlo & 0x800) === 0, entries };
  }
  throw new Error(`vmmu: unreachable: level 3 is always a page or invalid (va ${hex(va)})`);
}
