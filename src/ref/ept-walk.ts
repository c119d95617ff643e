/**
 * Reference EPT translation of guest-physical addresses and the two-dimensional walk
 * (guest x86-64 paging × EPT), written from Intel SDM Vol.3C chapter "VMX Support for Address
 * Translation": §29.3.2 EPT translation mechanism and entry formats, §29.3.3.1 EPT
 * misconfigurations, §29.3.3.2 EPT violations, §29.3.3.3 prioritization of misconfigurations
 * and violations, §29.3.4 accessed and dirty flags for EPT (§28.2.2–28.2.4 in older
 * editions); the "Exit Qualification for EPT Violations" table of the "VM Exits" chapter; and
 * the VM-entry checks on the EPTP ("Checks on VMX Controls"). The guest half reuses the §4.5–4.8 rules of ./x86-walk.ts. It is the oracle for
 * differential tests of the WebAssembly walker: slow on purpose, bigint throughout, one entry
 * load per level, no caches (no TLB, no paging-structure or EPT caches).
 *
 * Not modelled: PAE guests (their PDPTE loads by MOV CR3), the EPT-violation #VE (bit 63 is
 * ignored), sub-page write permissions, HLAT and the paging-write / verify-guest-paging bits
 * (57, 58), supervisor shadow stacks (EPTP bit 7 and entry bit 60), page-modification logging,
 * MTRR/PAT memory-type combination (the EPT memory type and IPAT are reported, not combined),
 * advanced VM-exit information for EPT violations (qualification bits 9–11 are 0), the
 * IA32_VMX_EPT_VPID_CAP switch for 1 GiB pages (always available) and for UC/WB EPTP memory
 * types (both available). Capabilities that change results are options (RefEptOptions).
 *
 * M = MAXPHYADDR of the processor (36..52). Levels use KVM numbering (5 = PML5E … 1 = PTE).
 *
 * EPT pointer (EPTP), a VM-execution control field:
 *
 *    63       M  M-1                    12  11        7    6      5     3   2      0
 *  ┌───────────┬──────────────────────────┬─────────────┬──────┬─────────┬──────────┐
 *  │ reserved  │ root: PML4 or PML5 table │  reserved   │  AD  │  PWL−1  │    MT    │
 *  └───────────┴──────────────────────────┴─────────────┴──────┴─────────┴──────────┘
 *  MT    memory type of the EPT paging structures: 0 UC or 6 WB; anything else fails VM entry
 *  PWL−1 page-walk length minus 1: 3 = 4-level EPT (gpa bits 47:0), 4 = 5-level (bits 56:0)
 *  AD    enables the EPT accessed and dirty flags (bits 8 and 9 of the entries)
 *  11:7  reserved here (bit 7 is the supervisor-shadow-stack control, not modelled)
 *
 * EPT PML5E and PML4E (always reference a table; bit 7 is reserved, no 512 GiB pages):
 *
 *    63  52   51   M  M-1          12   11    10    9     8     7        3    2   1   0
 *  ┌────────┬────────┬───────────────┬─────┬─────┬─────┬─────┬────────────┬───┬───┬───┐
 *  │ ignored│reserved│ next table    │ ign │ UX  │ ign │  A  │  reserved  │ X │ W │ R │
 *  └────────┴────────┴───────────────┴─────┴─────┴─────┴─────┴────────────┴───┴───┴───┘
 *
 * EPT PDPTE (level 3) and PDE (level 2) referencing a table (bit 7 = 0):
 *
 *    63  52   51   M  M-1          12   11    10    9     8     7    6        3    2   1   0
 *  ┌────────┬────────┬───────────────┬─────┬─────┬─────┬─────┬─────┬───────────┬───┬───┬───┐
 *  │ ignored│reserved│ next table    │ ign │ UX  │ ign │  A  │  0  │ reserved  │ X │ W │ R │
 *  └────────┴────────┴───────────────┴─────┴─────┴─────┴─────┴─────┴───────────┴───┴───┴───┘
 *
 * EPT PDPTE mapping a 1 GiB page / PDE mapping a 2 MiB page (bit 7 = 1), PTE mapping 4 KiB:
 *
 *    63  52   51   M  M-1     S   S-1   12   11    10    9     8     7     6      5    3   2   1   0
 *  ┌────────┬────────┬──────────┬─────────┬─────┬─────┬─────┬─────┬─────┬──────┬────────┬───┬───┬───┐
 *  │ ignored│reserved│  frame   │reserved │ ign │ UX  │  D  │  A  │PS/ig│ IPAT │   MT   │ X │ W │ R │
 *  └────────┴────────┴──────────┴─────────┴─────┴─────┴─────┴─────┴─────┴──────┴────────┴───┴───┴───┘
 *  S = 30 (1 GiB: bits 29:12 reserved), 21 (2 MiB: bits 20:12 reserved), 12 (PTE: bit 7 ignored)
 *
 *  R, W, X  read / write / execute (supervisor-mode execute with MBEC); ANDed over the walk
 *  UX       user-mode execute with mode-based execute control (MBEC); ignored without it
 *  A, D     accessed (every level) and dirty (leaf), written only when EPTP.AD = 1
 *  MT       leaf memory type: 0 UC, 1 WC, 4 WT, 5 WP, 6 WB; 2, 3, 7 are misconfigurations
 *  IPAT     ignore the guest PAT memory type
 *  present  bits 2:0 not all 0 (or, with MBEC, bit 10 set); a not-present entry ignores every
 *           other bit, so reserved bits in it give an EPT violation, never a misconfiguration
 */
import {
  bitRange,
  has,
  levelShift,
  pageFault,
  PAGE_SHIFT,
  refIsCanonical,
  reservedMask,
  tableIndex,
  violatesProtectionKey,
  violatesRights,
  type RefAccess,
  type RefMemory,
  type RefX86State,
} from './x86-walk.js';

/** Processor capabilities and VM-execution controls the EPT translation depends on. */
export interface RefEptOptions {
  /** MAXPHYADDR of the processor (host physical-address width), an integer in 36..52. */
  maxPhysAddrBits: number;
  /** Execute-only translations supported (IA32_VMX_EPT_VPID_CAP bit 0). Default true. */
  executeOnly?: boolean;
  /** The "mode-based execute control for EPT" VM-execution control. Default false. */
  mbec?: boolean;
  /** EPT accessed and dirty flags supported (IA32_VMX_EPT_VPID_CAP bit 21). Default true. */
  adSupported?: boolean;
  /** 5-level EPT supported (IA32_VMX_EPT_VPID_CAP bit 7). Default true. */
  fiveLevel?: boolean;
  /** Incremented by the walk: entry loads per table kind, and A/D stores. */
  stats?: RefEptStats;
}

/** Memory-reference counters; a cold n-level guest × m-level EPT walk loads (n+1)(m+1) − 1 entries. */
export interface RefEptStats {
  /** Loads of guest paging-structure entries. */
  guestLoads: number;
  /** Loads of EPT paging-structure entries (including those for guest table addresses). */
  eptLoads: number;
  /** Successful compare-exchange stores of A/D flags, guest and EPT. */
  adWrites: number;
}

/** A fresh zeroed counter set for RefEptOptions.stats. */
export function refEptStats(): RefEptStats {
  return { guestLoads: 0, eptLoads: 0, adWrites: 0 };
}

/** A decoded, valid EPTP. */
export interface RefEptp {
  /** Memory type of accesses to the EPT paging structures: 0 (UC) or 6 (WB). */
  memType: number;
  /** Page-walk length. */
  levels: 4 | 5;
  /** EPTP bit 6: accessed and dirty flags for EPT enabled. */
  ad: boolean;
  /** Host-physical address of the top EPT table (bits M-1:12). */
  root: bigint;
}

/** Why VM entry would fail on this EPTP (a VMfail for the caller). */
export type RefEptpError = 'memory-type' | 'walk-length' | 'accessed-dirty' | 'reserved';

/** Result of refDecodeEptp. */
export type RefEptpDecode =
  | ({ ok: true } & RefEptp)
  | { ok: false; kind: 'invalid-eptp'; reason: RefEptpError };

/** One guest-physical access to translate through EPT. */
export interface RefEptAccess {
  /**
   * Data read, data write or instruction fetch. A guest paging-structure load is a 'read',
   * the update of an accessed or dirty flag in a guest paging-structure entry a 'write'.
   */
  type: RefAccess;
  /** The access is to a guest paging-structure entry (a load or an A/D update by the guest walk). */
  pagingStructure?: boolean;
  /** With MBEC, a fetch from a user-mode linear address (U/S = 1 at every guest level). */
  userLinear?: boolean;
  /** The guest linear address the access belongs to; absent for accesses with none (qualification bit 7 = 0). */
  gva?: bigint;
}

/**
 * EPT violation (exit reason 48). `level` is the EPT level of the not-present entry, or of the
 * leaf when the rights of a complete walk refuse the access. `qualification` as the SDM's
 * "Exit Qualification for EPT Violations": bit 0 data read, 1 data write, 2 fetch; bits 3, 4,
 * 5 the AND of bits 0, 1, 2 over the EPT entries used (0 when one is not present); bit 6 the
 * AND of bit 10 (UX) with MBEC, else 0; bit 7 guest linear address valid; bit 8 (only with
 * bit 7) 1 for the access to the translation of the linear address, 0 for an access to a guest
 * paging-structure entry; every higher bit 0.
 */
export interface RefEptViolation {
  ok: false;
  kind: 'ept-violation';
  gpa: bigint;
  gva?: bigint;
  level: number;
  qualification: number;
}

/** EPT misconfiguration (exit reason 49) at the EPT entry of level `level`; no qualification. */
export interface RefEptMisconfig {
  ok: false;
  kind: 'ept-misconfig';
  gpa: bigint;
  level: number;
}

/**
 * A paging-structure entry outside RAM ("outside every memslot", as refTranslateX86's abort).
 * stage 'ept': the EPT entry of level `level` for guest-physical `gpa` lies at `hpa`.
 * stage 'guest': the guest entry of level `level` at guest-physical `gpa` translates to `hpa`.
 */
export interface RefEptAbort {
  ok: false;
  kind: 'abort';
  vector: -1;
  errorCode: 0;
  stage: 'ept' | 'guest';
  level: number;
  gpa: bigint;
  hpa: bigint;
}

/**
 * Outcome of refWalkEpt. ok: `hpa` the host-physical address, `pageSize`/`level` the EPT leaf,
 * `memType` (bits 5:3) and `ipat` (bit 6) of the leaf, `rwx` the AND over the entries used of
 * bits 0, 1, 2 and, with MBEC, bit 10 (at their entry positions).
 */
export type RefEptResult =
  | {
      ok: true;
      hpa: bigint;
      pageSize: number;
      level: number;
      memType: number;
      ipat: boolean;
      rwx: number;
    }
  | RefEptViolation
  | RefEptMisconfig
  | RefEptAbort;

/**
 * Outcome of refTranslateX86Ept. ok: `pa` host-physical, `gpa` guest-physical, `pageSize` and
 * `level` the guest leaf (level 0 and 4096 with guest paging off), `eptPageSize`/`eptLevel` the
 * EPT leaf of the final gpa; a TLB may cache the combined translation only for
 * min(pageSize, eptPageSize). Faults: the guest's #PF and #GP exactly as refTranslateX86, EPT
 * violations (with `gva`), misconfigurations and aborts.
 */
export type RefX86EptResult =
  | {
      ok: true;
      pa: bigint;
      gpa: bigint;
      pageSize: number;
      level: number;
      eptPageSize: number;
      eptLevel: number;
    }
  | { ok: false; kind: 'page-fault'; vector: 14; errorCode: number; level: number }
  | { ok: false; kind: 'general-protection'; vector: 13; errorCode: 0; level: 0 }
  | (RefEptViolation & { gva: bigint })
  | RefEptMisconfig
  | RefEptAbort;

const EPT_READ = 1n << 0n;
const EPT_WRITE = 1n << 1n;
const EPT_EXEC = 1n << 2n;
const EPT_MT_SHIFT = 3n;
const EPT_MT_MASK = 7n;
const EPT_IPAT = 1n << 6n;
const EPT_PAGE_SIZE = 1n << 7n;
const EPT_ACCESSED = 1n << 8n;
const EPT_DIRTY = 1n << 9n;
const EPT_USER_EXEC = 1n << 10n;
const EPT_RWX = EPT_READ | EPT_WRITE | EPT_EXEC;

const EPTP_MT_MASK = 7n;
const EPTP_PWL_SHIFT = 3n;
const EPTP_PWL_MASK = 7n;
const EPTP_AD = 1n << 6n;
const EPTP_MT_UC = 0n;
const EPTP_MT_WB = 6n;

const QUAL_READ = 1 << 0;
const QUAL_WRITE = 1 << 1;
const QUAL_FETCH = 1 << 2;
const QUAL_RWX_SHIFT = 3;
const QUAL_USER_EXEC = 1 << 6;
const QUAL_GVA_VALID = 1 << 7;
const QUAL_GVA_TRANSLATED = 1 << 8;

const X86_PTE_PRESENT_BIT = 1n << 0n;
const X86_PTE_WRITABLE_BIT = 1n << 1n;
const X86_PTE_USER_BIT = 1n << 2n;
const X86_PTE_ACCESSED_BIT = 1n << 5n;
const X86_PTE_DIRTY_BIT = 1n << 6n;
const X86_PTE_PS_BIT = 1n << 7n;
const X86_PTE_XD_BIT = 1n << 63n;
const X86_CR0_PG = 1n << 31n;
const X86_CR4_PAE = 1n << 5n;
const X86_CR4_LA57 = 1n << 12n;
const X86_EFER_LME = 1n << 8n;
const X86_EFER_LMA = 1n << 10n;
const X86_EFER_NXE = 1n << 11n;
const PFERR_PRESENT = 1 << 0;
const PFERR_RSVD = 1 << 3;
const PFERR_PK = 1 << 5;

const MAX_RESTARTS = 100;

const RESTART = Symbol('restart');

function checkPhysAddrBits(m: number, what: string): void {
  if (!Number.isInteger(m) || m < 36 || m > 52) {
    throw new RangeError(`${what} must be an integer in 36..52, got ${m}`);
  }
}

/**
 * Decodes an EPTP as VM entry checks it: memory type 0 or 6; page-walk length − 1 of 3, or 4
 * when 5-level EPT is supported; bit 6 only when EPT A/D flags are supported; bits 11:7 and
 * 63:M zero. An invalid EPTP makes VM entry fail (VMfail), so no translation ever runs under
 * it: the error names the first failing check in that order.
 *
 * @param eptp the 64-bit EPTP (read modulo 2^64)
 * @param opts maxPhysAddrBits (36..52, else RangeError), adSupported, fiveLevel
 */
export function refDecodeEptp(eptp: bigint, opts: RefEptOptions): RefEptpDecode {
  checkPhysAddrBits(opts.maxPhysAddrBits, 'maxPhysAddrBits');
  const value = BigInt.asUintN(64, eptp);
  const memType = value & EPTP_MT_MASK;
  if (memType !== EPTP_MT_UC && memType !== EPTP_MT_WB) {
    return { ok: false, kind: 'invalid-eptp', reason: 'memory-type' };
  }
  const pwl = (value >> EPTP_PWL_SHIFT) & EPTP_PWL_MASK;
  if (pwl !== 3n && !(pwl === 4n && opts.fiveLevel !== false)) {
    return { ok: false, kind: 'invalid-eptp', reason: 'walk-length' };
  }
  const ad = has(value, EPTP_AD);
  if (ad && opts.adSupported === false) {
    return { ok: false, kind: 'invalid-eptp', reason: 'accessed-dirty' };
  }
  if (has(value, bitRange(11, 7) | bitRange(63, opts.maxPhysAddrBits))) {
    return { ok: false, kind: 'invalid-eptp', reason: 'reserved' };
  }
  return {
    ok: true,
    memType: Number(memType),
    levels: pwl === 3n ? 4 : 5,
    ad,
    root: value & bitRange(opts.maxPhysAddrBits - 1, PAGE_SHIFT),
  };
}

interface EptContext {
  readonly mem: RefMemory;
  readonly eptp: RefEptp;
  readonly m: number;
  readonly executeOnly: boolean;
  readonly mbec: boolean;
  readonly stats: RefEptStats | undefined;
}

function eptContext(mem: RefMemory, eptp: bigint, opts: RefEptOptions): EptContext {
  const decoded = refDecodeEptp(eptp, opts);
  if (!decoded.ok) {
    const hex = BigInt.asUintN(64, eptp).toString(16);
    throw new RangeError(`invalid EPTP 0x${hex} (${decoded.reason}): VM entry fails`);
  }
  return {
    mem,
    eptp: decoded,
    m: opts.maxPhysAddrBits,
    executeOnly: opts.executeOnly !== false,
    mbec: opts.mbec === true,
    stats: opts.stats,
  };
}

/** The permission bits of an entry that take part in the walk: R, W, X, and UX with MBEC. */
function permissionBits(ctx: EptContext, entry: bigint): bigint {
  return entry & (ctx.mbec ? EPT_RWX | EPT_USER_EXEC : EPT_RWX);
}

function isEptLeaf(level: number, entry: bigint): boolean {
  return level === 1 || ((level === 2 || level === 3) && has(entry, EPT_PAGE_SIZE));
}

/**
 * Reserved bits of a present EPT entry (SDM §29.3.2 entry format tables): 51:M everywhere;
 * 7:3 in a PML5E or PML4E; 6:3 in a PDPTE or PDE that references a table; 29:12 in a
 * 1 GiB leaf; 20:12 in a 2 MiB leaf; none below M in a PTE.
 */
function eptReservedMask(level: number, entry: bigint, m: number): bigint {
  let mask = bitRange(51, m);
  if (level >= 4) mask |= bitRange(7, 3);
  else if (!isEptLeaf(level, entry)) mask |= bitRange(6, 3);
  else if (level === 3) mask |= bitRange(29, 12);
  else if (level === 2) mask |= bitRange(20, 12);
  return mask;
}

/**
 * EPT misconfiguration of a present entry (SDM §29.3.3.1): write without read (XWR 010b,
 * 110b); execute-only (R = W = 0 with X, or with UX under MBEC) when not supported; a reserved
 * bit; a leaf memory type of 2, 3 or 7.
 */
function isMisconfigured(ctx: EptContext, level: number, entry: bigint): boolean {
  const readable = has(entry, EPT_READ);
  const writable = has(entry, EPT_WRITE);
  if (writable && !readable) return true;
  if (!readable && !writable && !ctx.executeOnly) return true;
  if (has(entry, eptReservedMask(level, entry, ctx.m))) return true;
  if (isEptLeaf(level, entry)) {
    const memType = (entry >> EPT_MT_SHIFT) & EPT_MT_MASK;
    if (memType === 2n || memType === 3n || memType === 7n) return true;
  }
  return false;
}

/** Whether every treated-as access type is allowed by the ANDed rights (SDM §29.3.3.2). */
function rightsAllow(ctx: EptContext, access: RefEptAccess, rights: bigint): boolean {
  if (access.pagingStructure === true && ctx.eptp.ad) {
    return has(rights, EPT_WRITE) && has(rights, EPT_READ);
  }
  switch (access.type) {
    case 'read':
      return has(rights, EPT_READ);
    case 'write':
      return has(rights, EPT_WRITE);
    case 'fetch':
      return has(rights, ctx.mbec && access.userLinear === true ? EPT_USER_EXEC : EPT_EXEC);
  }
}

/**
 * Exit qualification for an EPT violation. Access-type bits: with EPT A/D enabled every guest
 * paging-structure access is treated as a write and reports bits 0 and 1 (SDM footnote to the
 * qualification table); otherwise the access's own type (an A/D update of a guest entry is a
 * data write: bit 1 alone, the implementation-specific read bit of read-modify-writes clear).
 */
function qualification(ctx: EptContext, access: RefEptAccess, rights: bigint): number {
  let q: number;
  if (access.pagingStructure === true && ctx.eptp.ad) q = QUAL_READ | QUAL_WRITE;
  else if (access.type === 'read') q = QUAL_READ;
  else if (access.type === 'write') q = QUAL_WRITE;
  else q = QUAL_FETCH;
  q |= Number(rights & EPT_RWX) << QUAL_RWX_SHIFT;
  if (ctx.mbec && has(rights, EPT_USER_EXEC)) q |= QUAL_USER_EXEC;
  if (access.gva !== undefined) {
    q |= QUAL_GVA_VALID;
    if (access.pagingStructure !== true) q |= QUAL_GVA_TRANSLATED;
  }
  return q;
}

function violation(
  ctx: EptContext,
  gpa: bigint,
  access: RefEptAccess,
  level: number,
  rights: bigint,
): RefEptViolation {
  const result: RefEptViolation = {
    ok: false,
    kind: 'ept-violation',
    gpa,
    level,
    qualification: qualification(ctx, access, rights),
  };
  if (access.gva !== undefined) result.gva = access.gva;
  return result;
}

/** Sets `bits` in the entry at hpa last seen as `seen`; false when it changed meanwhile. */
function setBits(
  mem: RefMemory,
  stats: RefEptStats | undefined,
  hpa: bigint,
  seen: bigint,
  bits: bigint,
): boolean {
  if ((seen & bits) === bits) return true;
  if (!mem.cmpxchg64(hpa, seen, seen | bits)) return false;
  if (stats) stats.adWrites++;
  return true;
}

/**
 * One EPT walk (SDM §29.3.3.3 order): for each level, load the entry (abort outside RAM); not
 * present → violation; misconfigured → misconfiguration; AND its rights; set A in a non-leaf
 * entry (EPTP.AD) and descend. At the leaf, check the ANDed rights (violation), then set A,
 * and D for a write or a guest paging-structure access, and return the translation.
 */
function eptWalkOnce(ctx: EptContext, gpa: bigint, access: RefEptAccess): RefEptResult | typeof RESTART {
  const { mem, eptp, stats } = ctx;
  const addrMask = bitRange(ctx.m - 1, PAGE_SHIFT);
  let table = eptp.root;
  let rights = ctx.mbec ? EPT_RWX | EPT_USER_EXEC : EPT_RWX;

  for (let level = eptp.levels; level >= 1; level--) {
    const hpa = table + tableIndex(gpa, level) * 8n;
    const entry = mem.read64(hpa);
    if (stats) stats.eptLoads++;
    if (entry === undefined) {
      return { ok: false, kind: 'abort', vector: -1, errorCode: 0, stage: 'ept', level, gpa, hpa };
    }
    const perms = permissionBits(ctx, entry);
    rights &= perms;
    if (perms === 0n) return violation(ctx, gpa, access, level, rights);
    if (isMisconfigured(ctx, level, entry)) return { ok: false, kind: 'ept-misconfig', gpa, level };

    if (!isEptLeaf(level, entry)) {
      if (eptp.ad && !setBits(mem, stats, hpa, entry, EPT_ACCESSED)) return RESTART;
      table = entry & addrMask;
      continue;
    }

    if (!rightsAllow(ctx, access, rights)) return violation(ctx, gpa, access, level, rights);
    const writes = access.type === 'write' || access.pagingStructure === true;
    if (eptp.ad && !setBits(mem, stats, hpa, entry, writes ? EPT_ACCESSED | EPT_DIRTY : EPT_ACCESSED)) {
      return RESTART;
    }
    const shift = levelShift(level);
    return {
      ok: true,
      hpa: (entry & bitRange(ctx.m - 1, shift)) | (gpa & bitRange(shift - 1, 0)),
      pageSize: 2 ** shift,
      level,
      memType: Number((entry >> EPT_MT_SHIFT) & EPT_MT_MASK),
      ipat: has(entry, EPT_IPAT),
      rwx: Number(rights),
    };
  }
  throw new Error('unreachable: EPT level 1 is always a leaf');
}

function eptTranslate(ctx: EptContext, gpa: bigint, access: RefEptAccess): RefEptResult {
  for (let restarts = 0; restarts <= MAX_RESTARTS; restarts++) {
    const result = eptWalkOnce(ctx, gpa, access);
    if (result !== RESTART) return result;
  }
  throw new Error(`EPT walk for gpa 0x${gpa.toString(16)} restarted more than ${MAX_RESTARTS} times`);
}

/**
 * Translates guest-physical `gpa` through the EPT paging structures named by `eptp` for one
 * access, as the processor does in VMX non-root operation.
 *
 * - The walk indexes bits 47:0 (4-level) or 56:0 (5-level) of the gpa; higher bits are
 *   ignored. Entries are loaded from `mem` at host-physical addresses, one load per level.
 * - Per entry, in order: not present → violation; misconfigured → misconfiguration; so a
 *   misconfiguration anywhere in the walk wins over rights refused by an upper entry, and an
 *   entry with bits 2:0 = 0 is a violation whatever its other bits. Rights are checked once the
 *   leaf is reached, against the AND over all entries used.
 * - Guest paging-structure accesses (`access.pagingStructure`) with EPTP.AD = 1 are treated as
 *   writes: they need R and W and set D in the leaf (SDM §29.3.3.2, §29.3.4).
 * - Side effects only with EPTP.AD = 1, through `mem.cmpxchg64`: A in each non-leaf entry as the
 *   walk passes it, even if the access then fails; A (and D for a write) in the leaf only when
 *   the access is allowed. A lost cmpxchg restarts the walk from the root; after 100, throws.
 * - The translated address need not lie in RAM; an entry outside RAM is an abort.
 *
 * @param mem host-physical memory holding the EPT paging structures
 * @param eptp the EPTP; throws RangeError if refDecodeEptp rejects it (VM entry would fail)
 * @param gpa guest-physical address (read modulo 2^64)
 * @param access type, guest paging-structure access or not, MBEC user-mode flag, linear address
 * @param opts processor capabilities and controls (maxPhysAddrBits required), counters
 */
export function refWalkEpt(
  mem: RefMemory,
  eptp: bigint,
  gpa: bigint,
  access: RefEptAccess,
  opts: RefEptOptions,
): RefEptResult {
  const ctx = eptContext(mem, eptp, opts);
  const normalized =
    access.gva === undefined ? access : { ...access, gva: BigInt.asUintN(64, access.gva) };
  return eptTranslate(ctx, BigInt.asUintN(64, gpa), normalized);
}

type GuestWalkContext = Parameters<typeof violatesRights>[0];

function guestPageFault(ctx: GuestWalkContext, cause: number, level: number): RefX86EptResult {
  const fault = pageFault(ctx, cause, level);
  return { ok: false, kind: 'page-fault', vector: 14, errorCode: fault.ok ? 0 : fault.errorCode, level };
}

/** An EPT failure of a guest-physical access made on behalf of linear address `gva`. */
function eptFault(result: Exclude<RefEptResult, { ok: true }>, gva: bigint): RefX86EptResult {
  if (result.kind === 'ept-violation') return { ...result, gva };
  return result;
}

/**
 * The EPT check of an A/D update of a guest paging-structure entry, made through the
 * translation its load produced (no second EPT walk): a data write, refused unless W is set in
 * every EPT entry used. With EPTP.AD = 1 the load was already treated as a write, so this
 * always passes and sets nothing more.
 */
function guestEntryWriteAllowed(
  ctx: EptContext,
  entryGpa: bigint,
  loaded: Extract<RefEptResult, { ok: true }>,
  gva: bigint,
): RefX86EptResult | null {
  if (has(BigInt(loaded.rwx), EPT_WRITE)) return null;
  const access: RefEptAccess = { type: 'write', pagingStructure: true, gva };
  return eptFault(violation(ctx, entryGpa, access, loaded.level, BigInt(loaded.rwx)), gva);
}

function walk2dOnce(
  ept: EptContext,
  guest: GuestWalkContext,
  finalAccess: RefAccess,
): RefX86EptResult | typeof RESTART {
  const { mem, stats } = ept;
  const { s, va } = guest;
  const addrMask = bitRange(s.maxPhysAddrBits - 1, PAGE_SHIFT);
  const nxe = has(s.efer, X86_EFER_NXE);
  let tableBase = s.cr3 & addrMask;
  let writable = true;
  let userPage = true;
  let executeDisabled = false;

  for (let level = guest.rootLevel; level >= 1; level--) {
    const entryGpa = tableBase + tableIndex(va, level) * 8n;
    const loaded = eptTranslate(ept, entryGpa, { type: 'read', pagingStructure: true, gva: va });
    if (!loaded.ok) return eptFault(loaded, va);
    const entry = mem.read64(loaded.hpa);
    if (stats) stats.guestLoads++;
    if (entry === undefined) {
      const hpa = loaded.hpa;
      return { ok: false, kind: 'abort', vector: -1, errorCode: 0, stage: 'guest', level, gpa: entryGpa, hpa };
    }
    if (!has(entry, X86_PTE_PRESENT_BIT)) return guestPageFault(guest, 0, level);
    if (has(entry, reservedMask(level, entry, s.maxPhysAddrBits, nxe))) {
      return guestPageFault(guest, PFERR_PRESENT | PFERR_RSVD, level);
    }

    writable &&= has(entry, X86_PTE_WRITABLE_BIT);
    userPage &&= has(entry, X86_PTE_USER_BIT);
    executeDisabled ||= has(entry, X86_PTE_XD_BIT);

    const leaf = level === 1 || ((level === 2 || level === 3) && has(entry, X86_PTE_PS_BIT));
    if (!leaf) {
      if (!has(entry, X86_PTE_ACCESSED_BIT)) {
        const refused = guestEntryWriteAllowed(ept, entryGpa, loaded, va);
        if (refused) return refused;
        if (!setBits(mem, stats, loaded.hpa, entry, X86_PTE_ACCESSED_BIT)) return RESTART;
      }
      tableBase = entry & addrMask;
      continue;
    }

    const keyFault = violatesProtectionKey(guest, entry, userPage);
    if (keyFault || violatesRights(guest, writable, userPage, executeDisabled)) {
      return guestPageFault(guest, PFERR_PRESENT | (keyFault ? PFERR_PK : 0), level);
    }
    const leafBits =
      finalAccess === 'write' ? X86_PTE_ACCESSED_BIT | X86_PTE_DIRTY_BIT : X86_PTE_ACCESSED_BIT;
    if ((entry & leafBits) !== leafBits) {
      const refused = guestEntryWriteAllowed(ept, entryGpa, loaded, va);
      if (refused) return refused;
      if (!setBits(mem, stats, loaded.hpa, entry, leafBits)) return RESTART;
    }

    const shift = levelShift(level);
    const gpa = (entry & bitRange(s.maxPhysAddrBits - 1, shift)) | (va & bitRange(shift - 1, 0));
    const data = eptTranslate(ept, gpa, { type: finalAccess, userLinear: userPage, gva: va });
    if (!data.ok) return eptFault(data, va);
    const pageSize = 2 ** shift;
    return { ok: true, pa: data.hpa, gpa, pageSize, level, eptPageSize: data.pageSize, eptLevel: data.level };
  }
  throw new Error('unreachable: level 1 is always a leaf');
}

/**
 * Translates linear address `gva` of a VMX non-root guest with EPT: guest x86-64 paging
 * (refTranslateX86's rules) whose every paging-structure access is a guest-physical access
 * translated through EPT first, then the final guest-physical address translated through EPT
 * with the instruction's access type (SDM §29.3.3.3: "each guest-physical address is itself
 * translated using EPT").
 *
 * Order per guest level: EPT translation of the entry's gpa (a guest paging-structure read,
 * treated as a write with EPTP.AD = 1) → load → guest present and reserved checks (#PF) → for
 * a non-leaf entry without A, the A update: an EPT-checked data write through the same
 * translation, then cmpxchg → descend. At the leaf: guest rights and keys (#PF), the A/D
 * update (EPT-checked write), then the EPT translation of the final gpa. So an EPT fault on a
 * guest table comes before any guest fault below it, and the guest leaf's A/D flags are set
 * before the final access's EPT check, even if that check then fails.
 *
 * - CR0.PG=0: `gva` is the gpa (level 0, pageSize 4096), translated through EPT as the
 *   translation of a linear address; with MBEC it is a supervisor-mode address.
 * - CR0.PG=1 requires long mode (else Error('unsupported paging mode')); CR4.LA57 selects
 *   5-level guest paging; a non-canonical gva is #GP(0) before any load.
 * - MBEC: a fetch's linear address is user-mode iff U/S = 1 in every guest entry.
 * - Violations carry `gva`; qualification bit 7 is always set, bit 8 only for the final access.
 * - A lost guest cmpxchg restarts the whole walk from CR3; a lost EPT cmpxchg restarts that EPT
 *   walk; after 100 restarts of either, throws. `opts.stats` counts loads: a cold walk with
 *   n guest and m EPT levels loads (n+1)(m+1) − 1 entries (24 for 4×4, 35 for 5×5).
 *
 * @param mem host-physical memory holding the EPT and (at their translations) the guest tables
 * @param guest guest control registers, PKRU, RFLAGS and guest MAXPHYADDR (36..52)
 * @param eptp the EPTP; throws RangeError if refDecodeEptp rejects it
 * @param gva linear address (read modulo 2^64)
 * @param access the instruction's access: read, write or fetch
 * @param user true for a CPL 3 access
 * @param opts processor capabilities and controls for EPT (maxPhysAddrBits: host MAXPHYADDR)
 */
export function refTranslateX86Ept(
  mem: RefMemory,
  guest: RefX86State,
  eptp: bigint,
  gva: bigint,
  access: RefAccess,
  user: boolean,
  opts: RefEptOptions,
): RefX86EptResult {
  const ept = eptContext(mem, eptp, opts);
  const va = BigInt.asUintN(64, gva);
  if (!has(guest.cr0, X86_CR0_PG)) {
    const data = eptTranslate(ept, va, { type: access, userLinear: false, gva: va });
    if (!data.ok) return eptFault(data, va);
    const { hpa: pa, pageSize: eptPageSize, level: eptLevel } = data;
    return { ok: true, pa, gpa: va, pageSize: 4096, level: 0, eptPageSize, eptLevel };
  }
  const longMode = has(guest.efer, X86_EFER_LME | X86_EFER_LMA) && has(guest.cr4, X86_CR4_PAE);
  if (!longMode) throw new Error('unsupported paging mode');
  checkPhysAddrBits(guest.maxPhysAddrBits, 'maxPhysAddrBits');

  const la57 = has(guest.cr4, X86_CR4_LA57);
  if (!refIsCanonical(va, la57)) {
    return { ok: false, kind: 'general-protection', vector: 13, errorCode: 0, level: 0 };
  }
  const guestCtx: GuestWalkContext = { mem, s: guest, va, access, user, rootLevel: la57 ? 5 : 4 };
  for (let restarts = 0; restarts <= MAX_RESTARTS; restarts++) {
    const result = walk2dOnce(ept, guestCtx, access);
    if (result !== RESTART) return result;
  }
  throw new Error(`2D walk for va 0x${va.toString(16)} restarted more than ${MAX_RESTARTS} times`);
}
