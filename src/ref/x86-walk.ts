/**
 * Reference x86-64 linear-address translation for 4-level and 5-level (LA57) paging with
 * 4 KiB, 2 MiB and 1 GiB pages, written from Intel SDM Vol.3A §4.5 (4-level and 5-level
 * paging), §4.6 (access rights, including §4.6.2 protection keys), §4.7 (page-fault error
 * code) and §4.8 (accessed and dirty flags). It is the oracle for differential tests of the
 * WebAssembly walker: slow on purpose, bigint throughout, one entry load per level, no caches.
 *
 * Not modelled: 32-bit and PAE paging (rejected with an Error), the TLB and PCID tagging,
 * CR3 reserved bits, PKS (supervisor keys), shadow-stack and implicit supervisor accesses,
 * LAM, HLAT, AMD's reserved bit 8 in PML5E/PML4E, and the CPUID switch for 1 GiB pages
 * (1 GiB pages are always available).
 *
 * Paging-structure entry, every level (M = MAXPHYADDR, 36..52):
 *
 *    63   62 59   58   52   51     M   M-1           12   11  9   8   7    6   5    4     3     2     1    0
 *  ┌────┬───────┬─────────┬──────────┬──────────────────┬───────┬───┬────┬───┬───┬─────┬─────┬─────┬─────┬───┐
 *  │ XD │  PKEY │ ignored │ reserved │ physical address │ avail │ G │ PS │ D │ A │ PCD │ PWT │ U/S │ R/W │ P │
 *  └────┴───────┴─────────┴──────────┴──────────────────┴───────┴───┴────┴───┴───┴─────┴─────┴─────┴─────┴───┘
 *
 *  P     present; when 0 every other bit is ignored
 *  R/W   writable; ANDed over the walk            U/S  user; ANDed over the walk
 *  A     accessed; set in every entry used        D    dirty; leaf only, set on writes
 *  PS    level 3/2: leaf (1 GiB / 2 MiB page); level 5/4: reserved; level 1: PAT
 *  G     global (leaf only; no effect here)       PKEY protection key (leaf only)
 *  XD    execute-disable, ORed over the walk, when EFER.NXE=1; reserved when EFER.NXE=0
 *  Large leaves: bit 12 is PAT; the frame is bits M-1:21 (2 MiB, bits 20:13 reserved) or
 *  bits M-1:30 (1 GiB, bits 29:13 reserved).
 */

/** Kind of memory access being translated. */
export type RefAccess = 'read' | 'write' | 'fetch';

/** Guest-physical memory as seen by the walker: paging-structure loads and locked updates. */
export interface RefMemory {
  /** Reads the 8-byte little-endian entry at guest-physical gpa (8-aligned). Returns undefined if gpa is outside guest RAM ("outside every memslot"). */
  read64(gpa: bigint): bigint | undefined;
  /** Atomic compare-exchange of the 8-byte entry at gpa: if current === expected, store desired and return true; else return false. */
  cmpxchg64(gpa: bigint, expected: bigint, desired: bigint): boolean;
}

/** The architectural state a translation depends on. Registers are unsigned 64-bit values. */
export interface RefX86State {
  cr0: bigint;
  cr3: bigint;
  cr4: bigint;
  efer: bigint;
  pkru: bigint;
  rflags: bigint;
  /** MAXPHYADDR, 36..52. */
  maxPhysAddrBits: number;
}

/** Options that change what the walk checks and writes. */
export interface RefWalkOptions {
  /** Debugger view (QEMU gva2gpa): canonical check, then only P and PS bits matter; address mask is bits 51:12 regardless of MAXPHYADDR; no reserved-bit checks, no access-rights checks, no A/D writes. PS is honoured only at PDPT (level 3) and PD (level 2). */
  debug?: boolean;
}

/**
 * Outcome of one translation.
 * - ok: pa is the physical address, pageSize the leaf size in bytes, level the leaf level
 *   (1 = PTE, 2 = PDE, 3 = PDPTE; 0 when paging is off).
 * - page-fault: vector 14, errorCode as pushed by the CPU, level of the faulting entry.
 * - general-protection: vector 13, errorCode 0, level 0 (non-canonical address).
 * - abort: vector -1, errorCode 0; the entry at gpa (level `level`) lies outside guest RAM.
 */
export type RefResult =
  | { ok: true; pa: bigint; pageSize: number; level: number }
  | {
      ok: false;
      vector: number;
      errorCode: number;
      level: number;
      kind: 'page-fault' | 'general-protection' | 'abort';
      gpa?: bigint;
    };

const X86_PTE_PRESENT_BIT = 1n << 0n;
const X86_PTE_WRITABLE_BIT = 1n << 1n;
const X86_PTE_USER_BIT = 1n << 2n;
const X86_PTE_ACCESSED_BIT = 1n << 5n;
const X86_PTE_DIRTY_BIT = 1n << 6n;
const X86_PTE_PS_BIT = 1n << 7n;
const X86_PTE_XD_BIT = 1n << 63n;
const X86_PTE_PKEY_SHIFT = 59n;
const X86_PTE_PKEY_MASK = 0xfn;

const X86_CR0_WP = 1n << 16n;
const X86_CR0_PG = 1n << 31n;
const X86_CR4_PAE = 1n << 5n;
const X86_CR4_LA57 = 1n << 12n;
const X86_CR4_SMEP = 1n << 20n;
const X86_CR4_SMAP = 1n << 21n;
const X86_CR4_PKE = 1n << 22n;
const X86_EFER_LME = 1n << 8n;
const X86_EFER_LMA = 1n << 10n;
const X86_EFER_NXE = 1n << 11n;
const X86_RFLAGS_AC = 1n << 18n;

const PFERR_PRESENT = 1 << 0;
const PFERR_WRITE = 1 << 1;
const PFERR_USER = 1 << 2;
const PFERR_RSVD = 1 << 3;
const PFERR_FETCH = 1 << 4;
const PFERR_PK = 1 << 5;

const VECTOR_GP = 13;
const VECTOR_PF = 14;
const VECTOR_ABORT = -1;

const PAGE_SHIFT = 12;
const LEVEL_BITS = 9;
const INDEX_MASK = 0x1ffn;
const DEBUG_PHYS_ADDR_BITS = 52;
const MAX_RESTARTS = 100;

const RESTART = Symbol('restart');

/** Bits hi..lo inclusive; 0n when hi < lo. */
function bitRange(hi: number, lo: number): bigint {
  if (hi < lo) return 0n;
  return ((1n << BigInt(hi - lo + 1)) - 1n) << BigInt(lo);
}

function has(value: bigint, bit: bigint): boolean {
  return (value & bit) !== 0n;
}

function levelShift(level: number): number {
  return PAGE_SHIFT + LEVEL_BITS * (level - 1);
}

function tableIndex(va: bigint, level: number): bigint {
  return (va >> BigInt(levelShift(level))) & INDEX_MASK;
}

function isLeaf(level: number, entry: bigint): boolean {
  return level === 1 || ((level === 2 || level === 3) && has(entry, X86_PTE_PS_BIT));
}

function leafPhysAddr(entry: bigint, va: bigint, level: number, physAddrBits: number): bigint {
  const shift = levelShift(level);
  return (entry & bitRange(physAddrBits - 1, shift)) | (va & bitRange(shift - 1, 0));
}

/**
 * Reserved bits of a present entry at `level` (SDM §4.5, tables 4-15..4-20): 51:M everywhere;
 * 63 when EFER.NXE=0; PS at levels 5 and 4; 29:13 in a 1 GiB leaf; 20:13 in a 2 MiB leaf.
 */
function reservedMask(level: number, entry: bigint, maxPhysAddrBits: number, nxe: boolean): bigint {
  let mask = bitRange(51, maxPhysAddrBits);
  if (!nxe) mask |= X86_PTE_XD_BIT;
  if (level >= 4) mask |= X86_PTE_PS_BIT;
  else if (level === 3 && has(entry, X86_PTE_PS_BIT)) mask |= bitRange(29, 13);
  else if (level === 2 && has(entry, X86_PTE_PS_BIT)) mask |= bitRange(20, 13);
  return mask;
}

/**
 * Whether `va` is canonical: bits 63:47 all equal (4-level) or bits 63:56 all equal (5-level).
 * @param va linear address, read as an unsigned 64-bit value (taken modulo 2^64)
 * @param la57 true for 5-level paging
 */
export function refIsCanonical(va: bigint, la57: boolean): boolean {
  const topBit = la57 ? 56 : 47;
  const upper = BigInt.asUintN(64, va) >> BigInt(topBit);
  return upper === 0n || upper === bitRange(63 - topBit, 0);
}

interface WalkContext {
  readonly mem: RefMemory;
  readonly s: RefX86State;
  readonly va: bigint;
  readonly access: RefAccess;
  readonly user: boolean;
  readonly rootLevel: number;
}

function pageFault(ctx: WalkContext, cause: number, level: number): RefResult {
  let errorCode = cause;
  if (ctx.access === 'write') errorCode |= PFERR_WRITE;
  if (ctx.user) errorCode |= PFERR_USER;
  if (ctx.access === 'fetch' && (has(ctx.s.efer, X86_EFER_NXE) || has(ctx.s.cr4, X86_CR4_SMEP))) {
    errorCode |= PFERR_FETCH;
  }
  return { ok: false, vector: VECTOR_PF, errorCode, level, kind: 'page-fault' };
}

function abort(level: number, gpa: bigint): RefResult {
  return { ok: false, vector: VECTOR_ABORT, errorCode: 0, level, kind: 'abort', gpa };
}

/**
 * Ordinary access-rights violation per SDM §4.6.1, given the effective rights of the walk:
 * `writable` (R/W ANDed), `userPage` (U/S ANDed) and `executeDisabled` (XD ORed).
 */
function violatesRights(
  ctx: WalkContext,
  writable: boolean,
  userPage: boolean,
  executeDisabled: boolean,
): boolean {
  const { s, access } = ctx;
  const noExecute = has(s.efer, X86_EFER_NXE) && executeDisabled;
  if (ctx.user) {
    if (!userPage) return true;
    if (access === 'write') return !writable;
    if (access === 'fetch') return noExecute;
    return false;
  }
  const smapDenies = userPage && has(s.cr4, X86_CR4_SMAP) && !has(s.rflags, X86_RFLAGS_AC);
  switch (access) {
    case 'read':
      return smapDenies;
    case 'write':
      return (has(s.cr0, X86_CR0_WP) && !writable) || smapDenies;
    case 'fetch':
      return (userPage && has(s.cr4, X86_CR4_SMEP)) || noExecute;
  }
}

/**
 * Protection-key violation per SDM §4.6.2: data accesses to user pages, key from leaf bits
 * 62:59, PKRU bit 2k = access-disable, bit 2k+1 = write-disable (user writes always, supervisor
 * writes only with CR0.WP=1). Only called in long mode.
 */
function violatesProtectionKey(ctx: WalkContext, leaf: bigint, userPage: boolean): boolean {
  const { s, access } = ctx;
  if (!has(s.cr4, X86_CR4_PKE) || access === 'fetch' || !userPage) return false;
  const key = (leaf >> X86_PTE_PKEY_SHIFT) & X86_PTE_PKEY_MASK;
  const accessDisable = has(s.pkru, 1n << (2n * key));
  const writeDisable = has(s.pkru, 1n << (2n * key + 1n));
  if (accessDisable) return true;
  return access === 'write' && writeDisable && (ctx.user || has(s.cr0, X86_CR0_WP));
}

/**
 * Sets `bits` in the entry at gpa whose value was `seen` when the walk used it.
 * Returns false if the entry changed since (the walk must restart), true otherwise.
 */
function setEntryBits(mem: RefMemory, gpa: bigint, seen: bigint, bits: bigint): boolean {
  if ((seen & bits) === bits) return true;
  return mem.cmpxchg64(gpa, seen, seen | bits);
}

/**
 * One architectural walk with checks and A/D updates:
 *  1. load the entry (abort if outside RAM), fault if not present, fault if a reserved bit is set;
 *  2. fold R/W, U/S, XD into the effective rights;
 *  3. at a non-leaf entry set A and descend;
 *  4. at the leaf check rights and keys, then set A (and D on a write) and return the address.
 * Returns RESTART when a cmpxchg lost a race with a concurrent writer.
 */
function walkOnce(ctx: WalkContext): RefResult | typeof RESTART {
  const { mem, s, va } = ctx;
  const maxPhysAddrBits = s.maxPhysAddrBits;
  const addrMask = bitRange(maxPhysAddrBits - 1, PAGE_SHIFT);
  const nxe = has(s.efer, X86_EFER_NXE);
  let tableBase = s.cr3 & addrMask;
  let writable = true;
  let userPage = true;
  let executeDisabled = false;

  for (let level = ctx.rootLevel; level >= 1; level--) {
    const gpa = tableBase + tableIndex(va, level) * 8n;
    const entry = mem.read64(gpa);
    if (entry === undefined) return abort(level, gpa);
    if (!has(entry, X86_PTE_PRESENT_BIT)) return pageFault(ctx, 0, level);
    if ((entry & reservedMask(level, entry, maxPhysAddrBits, nxe)) !== 0n) {
      return pageFault(ctx, PFERR_PRESENT | PFERR_RSVD, level);
    }

    writable &&= has(entry, X86_PTE_WRITABLE_BIT);
    userPage &&= has(entry, X86_PTE_USER_BIT);
    executeDisabled ||= has(entry, X86_PTE_XD_BIT);

    if (!isLeaf(level, entry)) {
      if (!setEntryBits(mem, gpa, entry, X86_PTE_ACCESSED_BIT)) return RESTART;
      tableBase = entry & addrMask;
      continue;
    }

    const keyFault = violatesProtectionKey(ctx, entry, userPage);
    if (keyFault || violatesRights(ctx, writable, userPage, executeDisabled)) {
      return pageFault(ctx, PFERR_PRESENT | (keyFault ? PFERR_PK : 0), level);
    }
    const leafBits =
      ctx.access === 'write' ? X86_PTE_ACCESSED_BIT | X86_PTE_DIRTY_BIT : X86_PTE_ACCESSED_BIT;
    if (!setEntryBits(mem, gpa, entry, leafBits)) return RESTART;
    return {
      ok: true,
      pa: leafPhysAddr(entry, va, level, maxPhysAddrBits),
      pageSize: 2 ** levelShift(level),
      level,
    };
  }
  throw new Error('unreachable: level 1 is always a leaf');
}

/** Debugger walk: only P and PS (levels 3 and 2) matter, addresses are bits 51:12, no writes. */
function walkDebug(ctx: WalkContext): RefResult {
  const { mem, s, va } = ctx;
  const addrMask = bitRange(DEBUG_PHYS_ADDR_BITS - 1, PAGE_SHIFT);
  let tableBase = s.cr3 & addrMask;
  for (let level = ctx.rootLevel; level >= 1; level--) {
    const gpa = tableBase + tableIndex(va, level) * 8n;
    const entry = mem.read64(gpa);
    if (entry === undefined) return abort(level, gpa);
    if (!has(entry, X86_PTE_PRESENT_BIT)) {
      return { ok: false, vector: VECTOR_PF, errorCode: 0, level, kind: 'page-fault' };
    }
    if (isLeaf(level, entry)) {
      return {
        ok: true,
        pa: leafPhysAddr(entry, va, level, DEBUG_PHYS_ADDR_BITS),
        pageSize: 2 ** levelShift(level),
        level,
      };
    }
    tableBase = entry & addrMask;
  }
  throw new Error('unreachable: level 1 is always a leaf');
}

/**
 * Translates linear address `va` for one access, as the CPU would (or as a debugger would,
 * with `opts.debug`).
 *
 * - CR0.PG=0: `va` is returned unchanged as the physical address (level 0, pageSize 4096).
 * - CR0.PG=1 requires long mode (EFER.LME or EFER.LMA, and CR4.PAE); otherwise throws
 *   Error('unsupported paging mode'). CR4.LA57 selects 5-level paging.
 * - `va` is read modulo 2^64; a non-canonical `va` gives #GP(0) before any memory access.
 * - Side effects (not in debug mode), all through `mem.cmpxchg64`: A is set in every non-leaf
 *   entry as the walk descends through it, even if the access faults further down; A (and D
 *   for a write) is set in the leaf only when the access succeeds. A lost cmpxchg restarts the
 *   walk from the root; after 100 restarts this throws.
 *
 * @param mem guest-physical memory holding the paging structures
 * @param s control registers, PKRU, RFLAGS and MAXPHYADDR (must be an integer in 36..52)
 * @param va linear address
 * @param access read, write or instruction fetch
 * @param user true for a user-mode (CPL 3) access, false for supervisor mode
 * @param opts `debug` for the side-effect-free debugger view
 */
export function refTranslateX86(
  mem: RefMemory,
  s: RefX86State,
  va: bigint,
  access: RefAccess,
  user: boolean,
  opts: RefWalkOptions = {},
): RefResult {
  if (!has(s.cr0, X86_CR0_PG)) return { ok: true, pa: va, pageSize: 4096, level: 0 };
  const longMode = has(s.efer, X86_EFER_LME | X86_EFER_LMA) && has(s.cr4, X86_CR4_PAE);
  if (!longMode) throw new Error('unsupported paging mode');
  const m = s.maxPhysAddrBits;
  if (!Number.isInteger(m) || m < 36 || m > 52) {
    throw new RangeError(`maxPhysAddrBits must be an integer in 36..52, got ${m}`);
  }

  const la57 = has(s.cr4, X86_CR4_LA57);
  const gva = BigInt.asUintN(64, va);
  if (!refIsCanonical(gva, la57)) {
    return { ok: false, vector: VECTOR_GP, errorCode: 0, level: 0, kind: 'general-protection' };
  }
  const ctx: WalkContext = { mem, s, va: gva, access, user, rootLevel: la57 ? 5 : 4 };
  if (opts.debug === true) return walkDebug(ctx);

  for (let restarts = 0; restarts <= MAX_RESTARTS; restarts++) {
    const result = walkOnce(ctx);
    if (result !== RESTART) return result;
  }
  throw new Error(`page walk for va 0x${gva.toString(16)} restarted more than ${MAX_RESTARTS} times`);
}

/**
 * Sparse guest RAM of `ramBytes` bytes over a Map of 8-byte words; absent words read as 0.
 * Addresses must be 8-aligned (throws otherwise). Reads at or beyond `ramBytes` return
 * undefined; writes and cmpxchg there throw, since the walker must never update such an entry.
 * Single-threaded, so cmpxchg64 fails only when `expected` is stale.
 */
export class MapMemory implements RefMemory {
  readonly ramBytes: bigint;
  private readonly words = new Map<bigint, bigint>();

  /** @param ramBytes guest RAM size in bytes, a non-negative multiple of 8 */
  constructor(ramBytes: bigint) {
    if (ramBytes < 0n || ramBytes % 8n !== 0n) {
      throw new RangeError(`ramBytes must be a non-negative multiple of 8, got ${ramBytes}`);
    }
    this.ramBytes = ramBytes;
  }

  /** Returns the word at gpa, 0n if never written, undefined if gpa is outside RAM. */
  read64(gpa: bigint): bigint | undefined {
    this.checkAligned(gpa);
    if (!this.inRam(gpa)) return undefined;
    return this.words.get(gpa) ?? 0n;
  }

  /** Stores `value` modulo 2^64 at gpa; throws if gpa is outside RAM. */
  write64(gpa: bigint, value: bigint): void {
    this.checkAligned(gpa);
    if (!this.inRam(gpa)) throw new Error(`write64 outside RAM at 0x${gpa.toString(16)}`);
    const word = BigInt.asUintN(64, value);
    if (word === 0n) this.words.delete(gpa);
    else this.words.set(gpa, word);
  }

  /** Stores `desired` and returns true iff the word at gpa equals `expected`; throws outside RAM. */
  cmpxchg64(gpa: bigint, expected: bigint, desired: bigint): boolean {
    this.checkAligned(gpa);
    if (!this.inRam(gpa)) throw new Error(`cmpxchg64 outside RAM at 0x${gpa.toString(16)}`);
    if ((this.words.get(gpa) ?? 0n) !== expected) return false;
    this.write64(gpa, desired);
    return true;
  }

  private inRam(gpa: bigint): boolean {
    return gpa >= 0n && gpa < this.ramBytes;
  }

  private checkAligned(gpa: bigint): void {
    if (gpa % 8n !== 0n) throw new RangeError(`unaligned entry address 0x${gpa.toString(16)}`);
  }
}

/** The §4.5–4.7 rules above, for the two-dimensional walk in ept-walk.ts (no behaviour change here). */
export { reservedMask, violatesRights, violatesProtectionKey, pageFault, bitRange, has, levelShift, tableIndex, PAGE_SHIFT };
