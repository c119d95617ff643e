// The address space a forensic lookup walks: guest-physical memory (a machine's
// RAM, a memory image, anything with `readInto`/`contains`) and a page-table
// root with the paging mode, given explicitly as libvmi's
// `vmi_pagetable_lookup(vmi, dtb, vaddr)` takes it — no vCPU state is loaded.
// x86-64: Intel SDM Vol.3A §4.5 (4- and 5-level paging); arm64: Arm ARM
// DDI 0487 D8.2–D8.4 (VMSAv8-64 stage 1, EL1&0 regime, 4 KiB granule).

import { bigintArg, boolArg, enumArg, intArg, optionsObject, own, show, u64Arg } from "../validate.js";

/**
 * Guest-physical memory as the lookups read it. `GuestMemory` (a machine's
 * RAM) and `MemoryImage` (openImage) both are one.
 */
export interface PhysicalMemory {
  /** True iff the byte at `gpa` exists (inside RAM / inside one of the image's ranges). */
  contains(gpa: bigint): boolean;
  /** Copies `out.length` bytes at `gpa` into `out`; throws a RangeError if any of them does not exist. */
  readInto(gpa: bigint, out: Uint8Array): void;
  /** The little-endian u64 at `gpa` (used instead of readInto for entries when present). */
  read64?(gpa: bigint): bigint;
  /** Copies `bytes` to `gpa` (writeVirtual needs it); throws a RangeError if any of them does not exist. */
  write?(gpa: bigint, bytes: Uint8Array): void;
}

/**
 * An x86-64 address space: `root` is a CR3 value. Its bits M−1:12 are the
 * PML4 (PML5 with `la57`) table; PCID or PWT/PCD (11:0) and bit 63 are ignored.
 */
export interface X86Space {
  arch: "x86_64";
  memory: PhysicalMemory;
  /** CR3. */
  root: bigint;
  /** CR4.LA57: 5-level paging, 57-bit canonical addresses (default false: 4-level, 48-bit). */
  la57?: boolean;
  /** EFER.NXE: the XD bit (63) takes execute rights away (default true; else bit 63 is ignored). */
  nxe?: boolean;
  /** MAXPHYADDR M: entry address bits M−1:12 (default 52, as QEMU's debugger walk masks them). */
  maxPhysAddrBits?: number;
}

/**
 * An arm64 stage-1 address space of the EL1&0 regime, 4 KiB granule: `root`
 * is a TTBR0_EL1 or TTBR1_EL1 value, `ttbr` says which. Its BADDR (47:1,
 * aligned to the start table's size) is the start table; ASID (63:48) and
 * CnP are ignored. The VA range is the half `ttbr` selects (VA[55] = 0 for
 * TTBR0, 1 for TTBR1), 64 − TnSZ bits wide.
 */
export interface Arm64Space {
  arch: "arm64";
  memory: PhysicalMemory;
  /** TTBR0_EL1 or TTBR1_EL1. */
  root: bigint;
  /** Which register `root` is. */
  ttbr: 0 | 1;
  /**
   * TCR_EL1: the walk takes TnSZ, TBIn, EPDn and HPDn of the `ttbr` half from
   * it, and TCR.HA+HD (dirty-bit management: a DBM page is writable). TGn
   * must select the 4 KiB granule. Exclusive with `tsz`/`tbi`.
   */
  tcr?: bigint;
  /** TnSZ without `tcr`: 16..39 (default 16: a 48-bit VA range). */
  tsz?: number;
  /** TBIn without `tcr`: the top byte of a VA is ignored (tagged addresses; default false). */
  tbi?: boolean;
}

/** Where a lookup finds its page tables and how it reads them. */
export type AddressSpace = X86Space | Arm64Space;

/**
 * Effective rights of a mapping, folded over every level of its walk, as
 * three-letter strings `rwx` with `-` for a right not granted:
 * `kernel` for CPL 0 / EL1, `user` for CPL 3 / EL0.
 * x86-64 (QEMU `info mem`): R/W and U/S ANDed over the levels, XD ORed
 * (with `nxe`); a supervisor-only page is `---` to the user. CR0.WP is taken
 * as 1; SMEP, SMAP and protection keys depend on registers and are not folded.
 * arm64 (Arm ARM D8.4, QEMU get_S1prot): AP[2:1] with APTable, UXN/PXN with
 * UXNTable/PXNTable (none of them under HPDn); a page writable at EL0 is never
 * executable at EL1; with TCR.HA+HD a DBM page counts as writable. PSTATE.PAN
 * and SCTLR.WXN are not folded.
 */
export interface PageRights {
  kernel: string;
  user: string;
}

/** @internal PageRights as 6 bits: kernel r w x (bits 0–2), user r w x (bits 3–5). */
export const R_KR = 1, R_KW = 2, R_KX = 4, R_UR = 8, R_UW = 16, R_UX = 32;

const RIGHTS_TABLE: readonly PageRights[] = Array.from({ length: 64 }, (_, m) => Object.freeze({
  kernel: (m & R_KR ? "r" : "-") + (m & R_KW ? "w" : "-") + (m & R_KX ? "x" : "-"),
  user: (m & R_UR ? "r" : "-") + (m & R_UW ? "w" : "-") + (m & R_UX ? "x" : "-"),
}));

/** @internal The (shared, frozen) PageRights object of a 6-bit mask. */
export function rightsOf(mask: number): PageRights {
  return RIGHTS_TABLE[mask]!;
}

/** @internal A checked space with its mode decoded once. */
export type Walk = X86Walk | Arm64Walk;

/** @internal */
export interface X86Walk {
  arch: "x86_64";
  memory: PhysicalMemory;
  /** Root table gpa. */
  table: bigint;
  levels: 4 | 5;
  /** Canonical width: 48 or 57. */
  vaBits: number;
  nxe: boolean;
  /** Entry address mask, bits M−1:12. */
  addrMask: bigint;
  maxPhysAddrBits: number;
}

/** @internal */
export interface Arm64Walk {
  arch: "arm64";
  memory: PhysicalMemory;
  ttbr: 0 | 1;
  /** Start table gpa. */
  table: bigint;
  /** 64 − TnSZ. */
  vaBits: number;
  startLevel: number;
  tbi: boolean;
  /** EPDn: walks of this half are disabled. */
  epd: boolean;
  /** HPDn: APTable/XNTable are ignored. */
  hpd: boolean;
  /** TCR.HA and HD: DBM pages are writable. */
  dirtyBitManagement: boolean;
}

/** Stage-1 start level for a VA size (4 KiB granule): 4 − ceil((bits − 12) / 9). */
function startLevelOf(vaBits: number): number {
  return 4 - Math.ceil((vaBits - 12) / 9);
}

/** @internal Checks `space` (naming `who` and the field in errors) and decodes its mode. */
export function walkOf(space: unknown, who: string): Walk {
  const s = optionsObject(space, `${who}: space`);
  const memory = own(s, "memory") as PhysicalMemory | undefined;
  if (typeof memory !== "object" || memory === null || typeof memory.readInto !== "function" || typeof memory.contains !== "function") {
    throw new TypeError(`vmmu: ${who}: space.memory must be guest memory (readInto and contains, e.g. machine.memory or openImage(…)), got ${show(memory)}`);
  }
  const arch = enumArg(own(s, "arch"), `${who}: space.arch`, ["x86_64", "arm64"] as const);
  const root = u64Arg(own(s, "root"), `${who}: space.root`);
  if (arch === "x86_64") {
    for (const k of ["ttbr", "tcr", "tsz", "tbi"]) {
      if (own(s, k) !== undefined) throw new TypeError(`vmmu: ${who}: space.${k} is an arm64 field, not x86_64`);
    }
    const la57 = optBool(s, "la57", who, false);
    const nxe = optBool(s, "nxe", who, true);
    const m = own(s, "maxPhysAddrBits");
    const maxPhysAddrBits = m === undefined ? 52 : intArg(m, `${who}: space.maxPhysAddrBits`, 32, 52);
    const addrMask = ((1n << BigInt(maxPhysAddrBits)) - 1n) & ~0xfffn;
    return { arch, memory, table: root & addrMask, levels: la57 ? 5 : 4, vaBits: la57 ? 57 : 48, nxe, addrMask, maxPhysAddrBits };
  }

  for (const k of ["la57", "nxe", "maxPhysAddrBits"]) {
    if (own(s, k) !== undefined) throw new TypeError(`vmmu: ${who}: space.${k} is an x86_64 field, not arm64`);
  }
  const ttbrField = own(s, "ttbr");
  if (ttbrField !== 0 && ttbrField !== 1) {
    throw new TypeError(`vmmu: ${who}: space.ttbr must be 0 or 1 (which TTBRn_EL1 space.root is), got ${show(ttbrField)}`);
  }
  const ttbr = ttbrField;
  const tcrField = own(s, "tcr");
  let tsz: number, tbi: boolean, epd = false, hpd = false, dbm = false;
  if (tcrField !== undefined) {
    if (own(s, "tsz") !== undefined || own(s, "tbi") !== undefined) {
      throw new TypeError(`vmmu: ${who}: space.tsz and space.tbi come from space.tcr when it is given; pass one or the other`);
    }
    const tcr = u64Arg(tcrField, `${who}: space.tcr`);
    const f = (shift: number, bits: number): number => Number((tcr >> BigInt(shift)) & ((1n << BigInt(bits)) - 1n));
    const tg = ttbr === 0 ? f(14, 2) : f(30, 2);
    if (tg !== (ttbr === 0 ? 0 : 2)) {
      throw new RangeError(`vmmu: ${who}: space.tcr TG${ttbr} = ${tg} does not select the 4 KiB granule (the only one modelled)`);
    }
    tsz = Math.min(39, Math.max(16, ttbr === 0 ? f(0, 6) : f(16, 6)));
    tbi = f(ttbr === 0 ? 37 : 38, 1) === 1;
    epd = f(ttbr === 0 ? 7 : 23, 1) === 1;
    hpd = f(ttbr === 0 ? 41 : 42, 1) === 1;
    dbm = f(39, 1) === 1 && f(40, 1) === 1;
  } else {
    const t = own(s, "tsz");
    tsz = t === undefined ? 16 : intArg(t, `${who}: space.tsz`, 16, 39);
    tbi = optBool(s, "tbi", who, false);
  }
  const vaBits = 64 - tsz;
  const startLevel = startLevelOf(vaBits);
  const tableLog2 = Math.max(1, vaBits - (12 + 9 * (3 - startLevel)) + 3);
  const table = root & ((1n << 48n) - 1n) & ~((1n << BigInt(tableLog2)) - 1n);
  return { arch, memory, ttbr, table, vaBits, startLevel, tbi, epd, hpd, dirtyBitManagement: dbm };
}

function optBool(s: Record<string, unknown>, key: string, who: string, dflt: boolean): boolean {
  const v = own(s, key);
  return v === undefined ? dflt : boolArg(v, `${who}: space.${key}`);
}

/** @internal A va argument: a bigint, taken modulo 2^64. */
export function vaArg(v: unknown, who: string, name = "va"): bigint {
  return BigInt.asUintN(64, bigintArg(v, `${who}: ${name}`));
}

/** @internal Reads the u64 at `gpa`, or undefined when it is not in memory. */
export function readEntry(memory: PhysicalMemory, gpa: bigint): bigint | undefined {
  if (!memory.contains(gpa) || !memory.contains(gpa + 7n)) return undefined;
  if (memory.read64 !== undefined) return memory.read64(gpa);
  memory.readInto(gpa, ENTRY);
  return ENTRY_VIEW.getBigUint64(0, true);
}

const ENTRY = new Uint8Array(8);
const ENTRY_VIEW = new DataView(ENTRY.buffer);
