// The one walk loop for every translation format, its descriptor-load
// chokepoint, and the TLB-hit loop of every batch path.
//
// Shape: KVM's paging_tmpl.h (one walker source instantiated per format:
// FNAME(walk_addr_generic)), arch/arm64/kvm/hyp/pgtable.c (a table walk with
// per-format visitors), and QEMU target/arm/ptw.c S1_ptw_translate (a
// first-stage table read is itself translated by the second stage). Each
// format supplies hooks: start (root, level, index bits — in its entry
// points), classify (invalid / reserved / table / leaf), fold (rights over the
// walk), the table-entry A/D update, the next-table check, and the fault
// encoding; the leaf (rights, A/D, output) is the format's own step after the
// loop. `descend` is @inline and every caller passes a constant format, so the
// compiler specialises the loop per format as the C preprocessor does
// paging_tmpl.h.
//
// Levels are counted from the leaf: 1 is the 4 KiB level, shift = 12 + 9 ×
// (level − 1) (x86 and EPT levels as KVM numbers them; arm64 level = 4 − this).
//
// Chokepoint: every descriptor load goes through `descHost`: when the record
// has a second stage (MC_PTW), the entry address is translated through it as
// a paging-structure read first (EPT: SDM Vol.3C §29.3.3.3; arm64: stage-2
// translation of S1 table walks, AArch64.S1Translate → S2 with s1ptw). Loads
// and A/D compare-exchange are assembly/phys.ts loadEntry / casEntry.

import {
  MMU_NONE, MMU_STRIDE, VCPU_MMU, MC_CTRS, MC_OABITS, MC_PTW, MC_ADDR, MC_FLAGS, MC_RSVD, MF_AD, MF_MBEC, MC_VCPU, MC_FORMAT,
  FMT_X86, FMT_EPT, FMT_ARM_S1, FMT_ARM_S2, STATUS_OK, STATUS_ABORT, STATUS_ARM_FAULT, R_WALK, R_WALK_TOP,
  FK_TRANSLATION, FK_ADDRESS_SIZE, FK_EXTERNAL,
  C_PT_REFS, C_S2_REFS, C_AD_WRITES, E_KEY, E_PA, E_ATTR, E_STATUS,
  VCPU_BATCH_VA, VCPU_BATCH_PA, VCPU_BATCH_STATUS, VCPU_BATCH_ACCESS,
} from "./layout";
import { hostForLoadLazy, loadEntry, casEntry, slotBase, eagerBytes, ramHost } from "./phys";
import { counterAdd, VPN_MASK } from "./tlb";
import { x86Reserved, x86Fold, x86TableAd, x86Fault, x86Leaf } from "./x86/mmu";
import { eptPresent, eptMisconfigured, eptFold, eptTableAd, eptFault, eptTranslate, eptLeaf } from "./x86/ept";
import { armValid, armFoldMask, armNextTableOk, armFault, s2Translate, s2Leaf } from "./arm64/mmu";

/** Walk flags (every format). */
export const WALK_AD: u32 = 1; //     hardware A/D (arm64 AF/DBM) updates
export const WALK_CHECK: u32 = 2; //  x86: reserved-bit and access-rights checks (always on for EPT and arm64)
export const WALK_DEBUG: u32 = 4; //  debugger view: no updates; x86 address bits 51:12; arm64 stage 1 only
export const WALK_RECORD: u32 = 8; // x86: record each level's entry gpa and value (R_WALK)
export const WALK_NOTLB: u32 = 16; // bypass the second-stage TLB too

/** Why a walk stopped at an entry, for the fault hooks. */
export const K_INVALID: u32 = 0; //   not present / invalid descriptor
export const K_RSVD: u32 = 1; //      reserved bits or misconfiguration

/** A lost A/D compare-exchange: the caller restarts the walk (as KVM's walker does). */
export const RETRY: u32 = 0xff;

// ---- the translation in progress (per call; entry points copy it to the result record) ----

/** Output address (pa / hpa) and intermediate address (x86 gpa under EPT, arm64 IPA). */
export let rPa: u64 = 0;
export let rIpa: u64 = 0;
export let rLevel: u32 = 0;
/** Page shift reported (12, 21, 30). */
export let rShift: u32 = 0;
/** TLB attr of the leaf (format bits 22:0 + A_GLOBAL). */
export let rAttr: u32 = 0;
/** x86 #PF error code, or EPT exit qualification. */
export let rErr: u32 = 0;
/** Abort: address of the unreadable entry; EPT violation/misconfig: the gpa. */
export let rGpa: u64 = 0;
export let rGva: u64 = 0;
export let rHpa: u64 = 0;
/** Abort under EPT: 1 a guest table entry, 2 an EPT entry. */
export let rAStage: u32 = 0;
// arm64 fault details.
export let rFsc: u32 = 0;
export let rStage: u32 = 0;
export let rFlags: u32 = 0;
export let rKind: u32 = 0;

// Output of the last second-stage translation (stageTranslate).
export let sPa: u64 = 0;
export let sShift: u32 = 12;
export let sLevel: u32 = 0;
/** Rights of the second-stage translation (EPT: R W X UX DKNOWN; arm64: S2AL_*). */
export let sAllow: u32 = 0;

// Walk state handed from the loop to the format's leaf step.
export let wDesc: u64 = 0;
export let wHost: usize = 0;
export let wEa: u64 = 0;
export let wLevel: u32 = 0;
export let wFold: u64 = 0;

// @ts-ignore: decorator
@inline export function setResult(pa: u64, ipa: u64, level: u32, shift: u32, attr: u32): void {
  rPa = pa; rIpa = ipa; rLevel = level; rShift = shift; rAttr = attr; rErr = 0;
}
// @ts-ignore: decorator
@inline export function setX86Fault(level: u32, err: u32): void { rLevel = level; rErr = err; }
// @ts-ignore: decorator
@inline export function setAbort(level: u32, gpa: u64, hpa: u64, stage: u32): void {
  rLevel = level; rGpa = gpa; rHpa = hpa; rAStage = stage; rErr = 0;
}
// @ts-ignore: decorator
@inline export function setEptFault(level: u32, gpa: u64, qual: u32): void { rLevel = level; rGpa = gpa; rErr = qual; }
// @ts-ignore: decorator
@inline export function setArmFault(stage: u32, kind: u32, level: u32, flags: u32, fsc: u32): void {
  rStage = stage; rKind = kind; rLevel = level; rFlags = flags; rFsc = fsc;
}
// @ts-ignore: decorator
@inline export function setIpa(ipa: u64): void { rIpa = ipa; }
// @ts-ignore: decorator
@inline export function setGva(gva: u64): void { rGva = gva; }
// @ts-ignore: decorator
@inline export function setStage(pa: u64, shift: u32, level: u32, allow: u32): void {
  sPa = pa; sShift = shift; sLevel = level; sAllow = allow;
}
// @ts-ignore: decorator
@inline export function orFlags(f: u32): void { rFlags |= f; }

/** Address of MMU context record `index` of the vCPU owning record `c`. */
// @ts-ignore: decorator
@inline export function ctxOf(c: usize, index: u32): usize {
  return <usize>load<u32>(c, MC_VCPU) + VCPU_MMU + <usize>index * MMU_STRIDE;
}

/** The vCPU block of record `c`. */
// @ts-ignore: decorator
@inline export function vcpuOf(c: usize): usize {
  return <usize>load<u32>(c, MC_VCPU);
}

/** Host linear address of host-physical `pa`, or 0 outside every memslot and the pool. */
// @ts-ignore: decorator
@inline export function hostOf(pa: u64): usize {
  const off = pa - slotBase;
  return off < eagerBytes ? ramHost + <usize>off : hostForLoadLazy(off);
}

/**
 * The second-stage translation of `addr` through record `p` for an access of
 * kind `access` (0 read, 1 write, 2 fetch) at EL0/CPL3 if `priv`; `ptw` marks a
 * paging-structure access of the first stage. Sets sPa/sShift/sLevel/sAllow,
 * or the fault details; returns STATUS_*.
 */
export function stageTranslate(p: usize, addr: u64, access: u32, priv: u32, ptw: bool, flags: u32): u32 {
  const fmt = load<u32>(p, MC_FORMAT);
  if (fmt == FMT_EPT) return eptTranslate(p, addr, access, priv, ptw, flags);
  if (fmt == FMT_ARM_S2) return s2Translate(p, addr, access, priv != 0, ptw, flags);
  setStage(addr, 12, 0, 0xff);
  return STATUS_OK;
}

/**
 * Host address of the descriptor at `ea` (an address in the space record `c`
 * sees its tables in), translated through the second stage when there is one
 * and the walk is not the debugger's arm64 stage-1 view; 0 with the fault set.
 *
 * The arm64 stage-2 walk is reached through stageTranslate, not a direct
 * s2Translate call: asc compiles a callee when it first meets the call, and
 * a call met inside an inlined `descend` compiles s2Translate with `descend`
 * on its inline stack, so the stage-2 loop would be emitted out of line
 * (warning AS217 "cannot be inlined into itself"; binaryen does not inline
 * functions with loops) — a call more per stage-2 walk. The x86 call to
 * eptTranslate is direct (the `if` on a constant format folds before asc
 * compiles the callee). A build with an AS217 warning has broken this.
 */
// @ts-ignore: decorator
@inline function descHost(fmt: u32, two: bool, c: usize, ptw: u32, addr: u64, ea: u64, level: u32, access: u32, flags: u32,
  sb: u64, eb: u64, rh: usize): usize {
  let pa = ea;
  if (two && ptw != MMU_NONE && !(fmt == FMT_ARM_S1 && (flags & WALK_DEBUG) != 0)) {
    const p = ctxOf(c, ptw);
    let s: u32;
    if (fmt == FMT_X86) s = eptTranslate(p, ea, 0, 0, true, flags);
    else s = stageTranslate(p, ea, 0, 0, true, flags);
    if (s != STATUS_OK) { lastStageStatus = s; return 0; }
    pa = sPa;
  }
  const off = pa - sb;
  const host = off < eb ? rh + <usize>off : hostForLoadLazy(off);
  if (host == 0) {
    lastStageStatus = fmt == FMT_ARM_S1 || fmt == FMT_ARM_S2 ? STATUS_ARM_FAULT : STATUS_ABORT;
    if (fmt == FMT_X86) setAbort(level, ea, pa, ptw != MMU_NONE ? 1 : 0);
    else if (fmt == FMT_EPT) setAbort(level, addr, ea, 2);
    else armFault(fmt == FMT_ARM_S2 ? 2 : 1, FK_EXTERNAL, 4 - level, access);
  }
  return host;
}

/**
 * The walk loop. From table `table` at `level` with `idxBits` index bits at
 * the top, for each level down (`two`: the record may have a second stage —
 * a compile-time constant at each call site, so a one-stage walk carries no
 * second-stage code):
 *
 * 1. ea = table + index(addr, level) × 8; host = descHost(ea) (second stage,
 *    memslot); failure → that fault (or an abort).
 * 2. Load the entry; record it (WALK_RECORD).
 * 3. format hooks present / reserved (x86 reserved bits, EPT
 *    misconfiguration) / leaf: not present → the format's not-present fault;
 *    reserved → its reserved fault.
 * 4. fold the entry's rights into the walk's (`fold`).
 * 5. A leaf → the format's leaf hook (x86Leaf, eptLeaf, s2Leaf: rights,
 *    A/D, output), or for arm64 stage 1 a hand-over to its leaf step (wDesc, wHost, wEa,
 *    wLevel, wFold) with STATUS_OK.
 * 6. A table → if its accessed flag is clear (x86 A; EPT A under EPTP.AD),
 *    the format's table A/D update (RETRY if the compare-exchange lost);
 *    the next-table check; descend.
 * Entries read are counted at the exit (top level − level), not per level;
 * per-walk fields (masks, arm64 HPD) are read once, before the loop.
 * Returns STATUS_OK (translated, or an arm64 leaf handed over), a fault status, or RETRY.
 */
// @ts-ignore: decorator
@inline export function descend(fmt: u32, two: bool, c: usize, vb: usize, addr: u64, table: u64, level: u32, idxBits: u32,
  fold: u64, access: u32, priv: u32, flags: u32): u32 {
  const ptw = two ? load<u32>(c, MC_PTW) : MMU_NONE;
  const mask = fmt == FMT_X86 && (flags & WALK_DEBUG) != 0 ? <u64>0x000f_ffff_ffff_f000 : load<u64>(c, MC_ADDR);
  const rsvdBase = fmt == FMT_X86 || fmt == FMT_EPT ? load<u64>(c, MC_RSVD) : 0;
  const mbec = fmt == FMT_EPT && (load<u32>(c, MC_FLAGS) & MF_MBEC) != 0;
  const sb = slotBase, eb = eagerBytes, rh = ramHost;
  const oaBits = fmt == FMT_ARM_S1 || fmt == FMT_ARM_S2 ? load<u32>(c, MC_OABITS) : 0;
  const foldMask = fmt == FMT_ARM_S1 ? armFoldMask(c, addr) : 0;
  // Entries read = top − level (+ 1 once the entry at `level` is loaded): no counter in the loop.
  const top = level;
  if (fmt == FMT_X86 && (flags & WALK_RECORD) != 0) store<u32>(vb + R_WALK_TOP, level);
  let shift = <u64>(12 + 9 * (level - 1));
  let idxMask = (<u64>1 << idxBits) - 1;
  while (true) {
    const ea = table + (((addr >> shift) & idxMask) << 3);
    const host = descHost(fmt, two, c, ptw, addr, ea, level, access, flags, sb, eb, rh);
    if (host == 0) { countRefs(fmt, <usize>load<u32>(c, MC_CTRS), top - level); return lastStageStatus; }
    const d = loadEntry(host);
    if (fmt == FMT_X86 && (flags & WALK_RECORD) != 0) {
      const r = vb + R_WALK + ((level - 1) << 4);
      store<u64>(r, ea);
      store<u64>(r, d, 8);
    }
    let present: bool;
    if (fmt == FMT_X86) present = (d & 1) != 0;
    else if (fmt == FMT_EPT) present = eptPresent(mbec, d);
    else present = armValid(d, level);
    if (!present) {
      countRefs(fmt, <usize>load<u32>(c, MC_CTRS), top - level + 1);
      if (fmt == FMT_X86) return x86Fault(c, K_INVALID, level, access, priv, flags);
      if (fmt == FMT_EPT) return eptFault(c, K_INVALID, addr, level, fold & eptFold(mbec, d));
      return armFault(fmt == FMT_ARM_S2 ? 2 : 1, FK_TRANSLATION, 4 - level, access);
    }
    if ((fmt == FMT_X86 && x86Reserved(rsvdBase, d, level, flags)) || (fmt == FMT_EPT && eptMisconfigured(rsvdBase, d, level))) {
      countRefs(fmt, <usize>load<u32>(c, MC_CTRS), top - level + 1);
      if (fmt == FMT_X86) return x86Fault(c, K_RSVD, level, access, priv, flags);
      return eptFault(c, K_RSVD, addr, level, 0);
    }
    let leaf: bool;
    if (fmt == FMT_X86) leaf = level == 1 || ((d & 0x80) != 0 && (level == 2 || level == 3));
    else if (fmt == FMT_EPT) leaf = level == 1 || ((d & 0x80) != 0 && (level == 2 || level == 3));
    else leaf = level == 1 || (d & 2) == 0;
    if (fmt == FMT_X86) fold &= x86Fold(d);
    else if (fmt == FMT_EPT) fold &= eptFold(mbec, d);
    else if (fmt == FMT_ARM_S1 && !leaf) fold |= d & foldMask;
    if (leaf) {
      const cb = <usize>load<u32>(c, MC_CTRS);
      countRefs(fmt, cb, top - level + 1);
      if (fmt == FMT_X86) return x86Leaf(c, cb, addr, access, priv, flags, d, host, ea, level, <u32>fold, ptw, mask);
      if (fmt == FMT_EPT) return eptLeaf(c, cb, addr, access, flags, d, host, level, <u32>fold);
      if (fmt == FMT_ARM_S2) return s2Leaf(c, cb, addr, access, priv != 0, flags, d, host, level);
      wDesc = d; wHost = host; wEa = ea; wLevel = level; wFold = fold;
      return STATUS_OK;
    }
    // Table A/D (the accessed flag of a non-leaf entry): only when it is clear.
    if (fmt == FMT_X86 && (d & X86_A) == 0 && (flags & WALK_DEBUG) == 0) {
      const s = x86TableAd(c, <usize>load<u32>(c, MC_CTRS), host, d, ea, ptw, level, (flags & WALK_AD) != 0);
      if (s != STATUS_OK) { countRefs(fmt, <usize>load<u32>(c, MC_CTRS), top - level + 1); return s; }
    } else if (fmt == FMT_EPT && (d & EPT_A) == 0 && (flags & WALK_AD) != 0 && (flags & WALK_DEBUG) == 0
      && (load<u32>(c, MC_FLAGS) & MF_AD) != 0) {
      const s = eptTableAd(<usize>load<u32>(c, MC_CTRS), host, d);
      if (s != STATUS_OK) { countRefs(fmt, <usize>load<u32>(c, MC_CTRS), top - level + 1); return s; }
    }
    table = d & mask;
    if ((fmt == FMT_ARM_S1 || fmt == FMT_ARM_S2) && !armNextTableOk(oaBits, table)) {
      countRefs(fmt, <usize>load<u32>(c, MC_CTRS), top - level + 1);
      return armFault(fmt == FMT_ARM_S2 ? 2 : 1, FK_ADDRESS_SIZE, 4 - level, access);
    }
    level--;
    shift -= 9;
    idxMask = 511;
  }
}

/** The accessed flag of a non-leaf entry: x86 A (bit 5), EPT A (bit 8, with EPTP.AD). */
const X86_A: u64 = 1 << 5;
const EPT_A: u64 = 1 << 8;

/** Counts `refs` entry reads in counter block `cb` (and, for a second-stage format, as second-stage reads). */
// @ts-ignore: decorator
@inline function countRefs(fmt: u32, cb: usize, refs: u32): void {
  counterAdd(cb, C_PT_REFS, <u64>refs);
  if (fmt == FMT_EPT || fmt == FMT_ARM_S2) counterAdd(cb, C_S2_REFS, <u64>refs);
}

/** Status of the last descriptor fetch that failed in descHost: a second-stage fault, or an abort. */
let lastStageStatus: u32 = STATUS_OK;

/** A successful A/D compare-exchange of the entry at `host`, counted; false if it lost. */
// @ts-ignore: decorator
@inline export function casCounted(vb: usize, host: usize, expected: u64, desired: u64): bool {
  if (!casEntry(host, expected, desired)) return false;
  counterAdd(vb, C_AD_WRITES, 1);
  return true;
}

/**
 * The TLB-hit run of a batch, for every format: from index `i`, serves each
 * entry whose address is in range and hits the slot (key `keyHi | vpn`) with
 * the access granted, writing pa and the entry's status word; returns the
 * index of the first entry that is not such a hit (or `count`).
 *
 * The grant test is the format's: x86 — bit (16·access + attr[3:0]) of
 * `grant` clear (rights table and clean-write check folded in); arm64 —
 * attr & byte `access` of `grant` non-zero (the allow bit). The range test:
 * x86 — canonical for `cs` (64 − width); arm64 — bits 63:55 equal and the
 * half not closed by E0PD (`e0pd` bit 0 low half, bit 1 high half).
 * A leaf with no calls, kept out of line so V8 keeps its invariants in
 * registers.
 */
// @ts-ignore: decorator
@inline export function batchHits(arm: bool, i: u32, count: u32, base: usize, tlb: usize, keyHi: u64, salt: u64, mask: u64,
  grant: u64, cs: u64, e0pd: u32): u32 {
  const vaArr = base + VCPU_BATCH_VA;
  const paArr = base + VCPU_BATCH_PA;
  const stArr = base + VCPU_BATCH_STATUS;
  const acArr = base + VCPU_BATCH_ACCESS;
  for (; i < count; i++) {
    const va = load<u64>(vaArr + (<usize>i << 3));
    if ((<i64>(va << cs) >> cs) != <i64>va) break;
    if (arm && e0pd != 0 && ((e0pd >> <u32>(va >> 63)) & 1) != 0) break;
    const vpn = (va >> 12) & VPN_MASK;
    const e = tlb + (<usize>((vpn ^ salt) & mask) << 5);
    if (load<u64>(e, E_KEY) != (keyHi | vpn)) break;
    const access = <u32>load<u8>(acArr + <usize>i);
    if (access > 2) break;
    if (arm) {
      if ((load<u32>(e, E_ATTR) & <u32>((grant >> (access << 3)) & 0xff)) == 0) break;
    } else if (((grant >> ((access << 4) + (load<u32>(e, E_ATTR) & 15))) & 1) != 0) break;
    store<u64>(paArr + (<usize>i << 3), load<u64>(e, E_PA) | (va & 0xfff));
    store<u32>(stArr + (<usize>i << 2), load<u32>(e, E_STATUS));
  }
  return i;
}
