// Every mapped range of an address space, as QEMU's HMP `info mem` /
// `info tlb` (target/i386/monitor.c mem_info_la48/la57, tlb_info_la48) and
// Volatility 3's `Intel.mapping()` list them: the tables are enumerated once,
// depth first, each table page read once as 4 KiB; each leaf gives a range
// (va, pa, size) and the rights folded over its walk (space.ts `PageRights`), and
// adjacent leaves with equal rights and contiguous physical addresses are
// coalesced. Entry formats: Intel SDM Vol.3A §4.5 Tables 4-14..4-20; Arm ARM
// DDI 0487 D8.3. Entries are read as two u32 halves and addresses carried
// as page numbers (exact in a double), so BigInts are made per range, not per entry.

import { optBoolArg, optionsObject, own } from "../validate.js";
import { R_KR, R_KW, R_KX, R_UR, R_UW, R_UX, rightsOf, walkOf, type AddressSpace, type Arm64Walk, type PageRights, type X86Walk } from "./space.js";
import { arm64Rights } from "./lookup.js";

/** One mapped range: `size` bytes from `va` map to `pa` onwards. */
export interface Mapping {
  va: bigint;
  pa: bigint;
  /** Bytes. */
  size: bigint;
  rights: PageRights;
  /** With `coalesce: false` only: the leaf's level (as LookupEntry.level), its gpa and value. */
  leaf?: { level: number; entryAddress: bigint; value: bigint };
}

/** Options of mappings(). */
export interface MappingsOptions {
  /** Merge adjacent leaves with equal rights and contiguous pa (default true); false lists every leaf, with its entry. */
  coalesce?: boolean;
}

/** What mappings() read besides the ranges. */
export interface MappingsStats {
  /** Table pages read. */
  tables: number;
  /** Leaf entries found. */
  leaves: number;
  /** Table pointers whose table is not in the memory (skipped). */
  unreadable: number;
}

const PAGE = 4096;
const TWO32 = 2 ** 32;

/**
 * Lists every mapping of `space` in ascending VA order (as unsigned 64-bit
 * numbers: the user half first on x86). The debugger view, as lookup(): a
 * present/valid entry and its page-size bit decide; no rights are checked,
 * nothing is written. A table pointer into memory that does not exist is
 * skipped and counted in `stats.unreadable` (pass a `stats` object to get
 * the counts). Throws a `vmmu: mappings: …` error naming a bad argument.
 */
export function mappings(space: AddressSpace, opts: MappingsOptions = {}, stats?: MappingsStats): Mapping[] {
  const w = walkOf(space, "mappings");
  const o = optionsObject(opts, "mappings: opts");
  const coalesce = optBoolArg(own(o, "coalesce"), "mappings: opts.coalesce", true);
  const e = new Enumerator(coalesce);
  if (w.arch === "x86_64") enumerateX86(w, e);
  else enumerateArm64(w, e);
  e.flush();
  if (stats !== undefined) {
    const s = optionsObject(stats, "mappings: stats");
    s.tables = e.tables; s.leaves = e.leaves; s.unreadable = e.unreadable;
  }
  return e.out;
}

/** Collects leaves into ranges; vpn/pfn are page numbers (Numbers, exact below 2^53). */
class Enumerator {
  readonly out: Mapping[] = [];
  tables = 0;
  leaves = 0;
  unreadable = 0;
  /** VA of page number 0 of this space, and where the VA sign-extends (x86 canonical halves). */
  vaOf: (vpn: number) => bigint = (vpn) => BigInt(vpn * PAGE);
  /** First page number of the upper canonical half: no range crosses it. */
  halfVpn = -1;
  private vpn = -1;
  private pfn = 0;
  private pages = 0;
  private rights = 0;
  private readonly bufs: Uint8Array[] = [];

  constructor(private readonly coalesce: boolean) {}

  /** A 4 KiB scratch buffer per depth, reused across tables. */
  buffer(depth: number): Uint8Array {
    return this.bufs[depth] ??= new Uint8Array(PAGE);
  }

  leaf(vpn: number, pfn: number, pages: number, rights: number, level: number, entryAddress: number, lo: number, hi: number): void {
    this.leaves++;
    if (!this.coalesce) {
      this.out.push({
        va: this.vaOf(vpn), pa: BigInt(pfn * PAGE), size: BigInt(pages * PAGE), rights: rightsOf(rights),
        leaf: { level, entryAddress: BigInt(entryAddress), value: (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0) },
      });
      return;
    }
    if (this.vpn >= 0 && vpn === this.vpn + this.pages && pfn === this.pfn + this.pages && rights === this.rights && vpn !== this.halfVpn) {
      this.pages += pages;
      return;
    }
    this.flush();
    this.vpn = vpn; this.pfn = pfn; this.pages = pages; this.rights = rights;
  }

  flush(): void {
    if (this.vpn < 0) return;
    this.out.push({ va: this.vaOf(this.vpn), pa: BigInt(this.pfn * PAGE), size: BigInt(this.pages * PAGE), rights: rightsOf(this.rights) });
    this.vpn = -1;
  }

  /** Reads `bytes` of the table at `gpa` into the depth's buffer; null (counted) when it is not in memory. */
  read(w: X86Walk | Arm64Walk, gpa: number, bytes: number, depth: number): DataView | null {
    const g = BigInt(gpa);
    const buf = this.buffer(depth);
    if (!w.memory.contains(g) || !w.memory.contains(g + BigInt(bytes - 1))) {
      this.unreadable++;
      return null;
    }
    w.memory.readInto(g, bytes === PAGE ? buf : buf.subarray(0, bytes));
    this.tables++;
    return new DataView(buf.buffer, 0, bytes);
  }
}

function enumerateX86(w: X86Walk, e: Enumerator): void {
  const vaBits = w.vaBits;
  const ext = ((1n << 64n) - 1n) ^ ((1n << BigInt(vaBits)) - 1n);
  const halfVpn = 2 ** (vaBits - 13);
  // vpn * 4096 is exact in a double (a power-of-two scale); the upper half sign-extends.
  e.vaOf = (vpn) => (vpn >= halfVpn ? ext + BigInt(vpn * PAGE) : BigInt(vpn * PAGE));
  e.halfVpn = halfVpn;
  // Entry address bits M−1:12 as (hi, lo) masks.
  const hiMask = w.maxPhysAddrBits >= 32 ? 2 ** (w.maxPhysAddrBits - 32) - 1 : 0;
  const nxe = w.nxe;

  const walk = (table: number, level: number, vpnBase: number, rights: number): void => {
    const dv = e.read(w, table, PAGE, level);
    if (dv === null) return;
    const pagesPer = 512 ** (level - 1);
    for (let i = 0; i < 512; i++) {
      const lo = dv.getUint32(i * 8, true);
      if ((lo & 1) === 0) continue;
      const hi = dv.getUint32(i * 8 + 4, true);
      let r = rights;
      if ((lo & 2) === 0) r &= ~(R_KW | R_UW);
      if ((lo & 4) === 0) r &= ~(R_UR | R_UW | R_UX);
      if (nxe && hi >>> 31 !== 0) r &= ~(R_KX | R_UX);
      const frame = (hi & hiMask) * TWO32 + ((lo & 0xffff_f000) >>> 0);
      const vpn = vpnBase + i * pagesPer;
      if (level === 1 || (level <= 3 && (lo & 0x80) !== 0)) {
        const pfn = frame / PAGE;
        e.leaf(vpn, pfn - (pfn % pagesPer), pagesPer, r, level, table + i * 8, lo, hi);
      } else {
        walk(frame, level - 1, vpn, r);
      }
    }
  };
  walk(Number(w.table), w.levels, 0, R_KR | R_KW | R_KX | R_UR | R_UW | R_UX);
}

function enumerateArm64(w: Arm64Walk, e: Enumerator): void {
  const vaBits = w.vaBits;
  const upper = w.ttbr === 1 ? ((1n << 64n) - 1n) ^ ((1n << BigInt(vaBits)) - 1n) : 0n;
  e.vaOf = (vpn) => upper + BigInt(vpn * PAGE);
  if (w.epd) return;
  const hpd = w.hpd, dbm = w.dirtyBitManagement;

  // Table bits folded so far: bit 0 APTable[0], 1 APTable[1], 2 UXNTable, 3 PXNTable.
  const walk = (table: number, level: number, vpnBase: number, folded: number): void => {
    const shift = 12 + 9 * (3 - level);
    const entries = level === w.startLevel ? 2 ** (vaBits - shift) : 512;
    const dv = e.read(w, table, entries * 8, level);
    if (dv === null) return;
    const pagesPer = 512 ** (3 - level);
    for (let i = 0; i < entries; i++) {
      const lo = dv.getUint32(i * 8, true);
      if ((lo & 1) === 0) continue;
      const typeBit = (lo & 2) !== 0;
      if (level === 0 && !typeBit) continue;
      if (level === 3 && !typeBit) continue;
      const hi = dv.getUint32(i * 8 + 4, true);
      const frame = (hi & 0xffff) * TWO32 + ((lo & 0xffff_f000) >>> 0);
      const vpn = vpnBase + i * pagesPer;
      if (level < 3 && typeBit) {
        const f = hpd ? folded : folded | ((hi >>> 29) & 1) | ((hi >>> 29) & 2) | ((hi >>> 26) & 4) | ((hi >>> 24) & 8);
        walk(frame, level + 1, vpn, f);
        continue;
      }
      const readOnly = (folded & 2) !== 0 || (lo & 0x80) !== 0;
      const dirtyWritable = (folded & 2) === 0 && dbm && (hi & (1 << 19)) !== 0;
      const el0 = (folded & 1) === 0 && (lo & 0x40) !== 0;
      const uxn = (folded & 4) !== 0 || (hi & (1 << 22)) !== 0;
      const pxn = (folded & 8) !== 0 || (hi & (1 << 21)) !== 0;
      const pfn = frame / PAGE;
      e.leaf(vpn, pfn - (pfn % pagesPer), pagesPer, arm64Rights(readOnly, dirtyWritable, el0, uxn, pxn), level, table + i * 8, lo, hi);
    }
  };
  walk(Number(w.table), w.startLevel, 0, 0);
}
