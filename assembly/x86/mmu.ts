// x86-64 linear-address translation: the format hooks of 4-level and 5-level
// paging for the walk loop (assembly/walk.ts), the context decoder, and the
// exported entry points (translate single / fast / batch, walk, INVLPG,
// INVPCID), with or without EPT under it (assembly/x86/ept.ts).
//
// Follows Intel SDM Vol.3A: §4.5 (4/5-level paging, Figure 4-8/4-9 address
// split), §4.6 (access rights), §4.7 (#PF error code), §4.8 (accessed and
// dirty flags), §4.10 (TLB); under EPT, Vol.3C §29.3.3 (guest-physical
// accesses of the walk) and §29.4 (combined mappings). The record of a walk
// is KVM's FNAME(walk_addr_generic) struct guest_walker.
//
// Not modelled: 32-bit and PAE paging (CR0.PG = 1 requires long mode here),
// paging-structure caches (so nothing but TLB entries can be stale), PKS,
// shadow-stack and implicit supervisor accesses, LAM.

import {
  S_CR0, S_CR3, S_CR4, S_EFER, S_PKRU, S_RFLAGS, S_MAXPHY, S_TLB_ON, S_VPID,
  R_PA, R_GPA, R_STATUS, R_ERROR, R_LEVEL, R_SHIFT, R_RIGHTS, R_IPA, R_GVA, R_HPA, R_ASTAGE,
  RIGHTS_GLOBAL, RIGHTS_DIRTY, RIGHTS_CACHED, RIGHTS_LEVEL_SHIFT, RIGHTS_PSHIFT_SHIFT,
  STATUS_OK, STATUS_PF, STATUS_GP, STATUS_ABORT, STATUS_EACCESS, STATUS_EPT_VIOLATION, STATUS_EPT_MISCONFIG,
  C_LOOKUPS, C_HITS, C_MISSES, C_WALKS, C_WALK_RETRIES, C_FAULTS, C_FLUSH_PAGE,
  VCPU_BATCH_VA, VCPU_BATCH_PA, VCPU_BATCH_STATUS, VCPU_BATCH_ACCESS, BATCH_MAX,
  BS_STATUS_SHIFT, BS_PSHIFT_SHIFT, BS_LEVEL_SHIFT, BS_QUAL_SHIFT, E_PA, E_ATTR, E_KEY, E_GFN,
  MC_FORMAT, MC_TOP, MC_PTW, MC_FLAGS, MC_ROOT, MC_ADDR, MC_RSVD, MC_PERM, MC_ERRS, MC_HITS, MC_HITU, MC_KEY, MC_GKEY,
  MC_CANON, MC_PKRU, MC_SLOT, MC_GSLOT, MC_VCPU, MC_CTRS, MC_OWN_COUNTERS, VCPU_COUNTERS, MMU_NONE, FMT_OFF, FMT_X86,
  MF_TLB, MF_PK, MF_PGE, MF_WP, MF_NXE, MF_MBEC, KEY_VALID, KEY_GLOBAL, KEY_SPACE_SHIFT, KEY_EPT_SHIFT, KEY_EPT_MASK, KEY_ASID_MASK,
  KEY_SPACE_MASK, KEY_S2,
} from "../layout";
import {
  counterAdd, slotAddr, saltOf, tlbFill, tlbDrop, tlbLookup, tlbLookupTag, slotTagCached, slotCached, acquireTag, slotHasLive, ctxLiveTag, invalidated, tlbInvalidateRangeMatch,
  tlbBaseOf, tlbEntries, VPN_MASK, A_ACC_MASK, A_DIRTY, A_GLOBAL, A_LEVEL_SHIFT, A_PSHIFT_SHIFT, A_PKEY_SHIFT,
} from "../tlb";
import {
  descend, stageTranslate, ctxOf, casCounted, batchHits, setResult, setX86Fault, setGva, K_INVALID, K_RSVD, RETRY,
  WALK_AD, WALK_CHECK, WALK_DEBUG, WALK_RECORD, WALK_NOTLB,
  rPa, rIpa, rLevel, rShift, rAttr, rErr, rGpa, rGva, rHpa, rAStage, sPa, sAllow, sLevel, wDesc, wHost, wLevel, wFold, wEa,
} from "../walk";
import { eptViolation, ep4taIndexOf, EPT_R, EPT_W, EPT_X, EPT_UX, EPT_DKNOWN } from "./ept";
import {
  PTE_P, PTE_A, PTE_D, PTE_PS, PTE_G, PTE_ADDR_MASK_52, PTE_RSVD_2M, PTE_RSVD_1G,
  PTE_PKEY_SHIFT, CR0_PG, CR0_WP, CR3_PCID_MASK, CR4_PAE, CR4_PGE, CR4_LA57, CR4_PCIDE,
  CR4_SMEP, CR4_SMAP, CR4_PKE, EFER_LME, EFER_LMA, EFER_NXE, RFLAGS_AC,
  ACC_EXEC, ACC_WRITE, ACC_USER, PFERR_P, PFERR_W, PFERR_U, PFERR_RSVD, PFERR_FETCH, PFERR_PK,
  ACCESS_WRITE, ACCESS_FETCH,
} from "./pte";

export { WALK_AD, WALK_CHECK, WALK_DEBUG, WALK_RECORD };

export const CONTROL_OK: i32 = 0;
export const CONTROL_EMODE: i32 = 1; //     CR0.PG = 1 outside long mode (not modelled)
export const CONTROL_EMAXPHY: i32 = 2; //   MAXPHYADDR outside 32..52

// ---- the context decoder ---------------------------------------------------------

/**
 * Builds x86 context record `c` (of vCPU `vb`) from the registers at `regs`
 * (S_* offsets), with record index `ptw` (or MMU_NONE) as its EPT: format,
 * root, levels, masks, the packed rights tables (KVM
 * update_permission_bitmask), flags and TLB keys. Decode the EPT record
 * first. Performs no TLB invalidation. Returns CONTROL_*.
 *
 * 1. Paging is on iff CR0.PG; then long mode (EFER.LME/LMA with CR4.PAE) is required.
 * 2. Levels: 5 if CR4.LA57 else 4; canonical width 57 or 48 bits.
 * 3. Reserved bits: 51:M everywhere, 63 unless EFER.NXE.
 * 4. Rights tables for WP/SMEP/SMAP/AC/NXE, and the batch hit filters.
 * 5. Keys: (EP4TA index, VPID, PCID) and (EP4TA index, VPID, global);
 *    VPID and EP4TA only under EPT (VMX non-root).
 */
export function x86DecodeContext(c: usize, vb: usize, regs: usize, ptw: u32): i32 {
  const cr0 = load<u64>(regs, S_CR0);
  const cr3 = load<u64>(regs, S_CR3);
  const cr4 = load<u64>(regs, S_CR4);
  const efer = load<u64>(regs, S_EFER);
  const rflags = load<u64>(regs, S_RFLAGS);
  const maxPhy = load<u32>(regs, S_MAXPHY);
  invalidated(vb);
  store<u32>(c + MC_VCPU, <u32>vb);
  if (load<u32>(c, MC_CTRS) == 0) store<u32>(c + MC_CTRS, <u32>vb);
  store<u32>(c + MC_PTW, ptw);
  if (maxPhy < 32 || maxPhy > 52) { store<u32>(c + MC_FORMAT, FMT_OFF); return CONTROL_EMAXPHY; }
  let pagingOn = (cr0 & CR0_PG) != 0;
  const longMode = (efer & (EFER_LME | EFER_LMA)) != 0 && (cr4 & CR4_PAE) != 0;
  let rc = CONTROL_OK;
  if (pagingOn && !longMode) { pagingOn = false; rc = CONTROL_EMODE; }
  const la57 = (cr4 & CR4_LA57) != 0;
  const addrMask = ((<u64>1 << maxPhy) - 1) & ~<u64>0xfff;
  const nxe = (efer & EFER_NXE) != 0;
  const pkActive = (cr4 & CR4_PKE) != 0 && longMode;
  const wp = (cr0 & CR0_WP) != 0;
  const smep = (cr4 & CR4_SMEP) != 0;
  const smapOn = (cr4 & CR4_SMAP) != 0 && (rflags & RFLAGS_AC) == 0;
  store<u32>(c + MC_FORMAT, pagingOn ? FMT_X86 : FMT_OFF);
  store<u32>(c + MC_TOP, la57 ? 5 : 4);
  store<u32>(c + MC_CANON, la57 ? 7 : 16);
  store<u64>(c + MC_ROOT, cr3 & addrMask);
  store<u64>(c + MC_ADDR, addrMask);
  store<u64>(c + MC_RSVD, (PTE_ADDR_MASK_52 & ~addrMask) | (nxe ? 0 : <u64>1 << 63));
  store<u32>(c + MC_PKRU, <u32>load<u64>(regs, S_PKRU));
  store<u32>(c + MC_FLAGS, (load<u32>(regs, S_TLB_ON) != 0 ? MF_TLB : 0) | (pkActive ? MF_PK : 0)
    | ((cr4 & CR4_PGE) != 0 ? MF_PGE : 0) | (wp ? MF_WP : 0) | (nxe ? MF_NXE : 0));

  let perm: u64 = 0;
  let errs: u64 = 0;
  for (let user: u32 = 0; user < 2; user++) {
    for (let access: u32 = 0; access < 3; access++) {
      const i = access + 3 * user;
      let mask: u32 = 0;
      for (let acc: u32 = 0; acc < 8; acc++) {
        const w = (acc & ACC_WRITE) != 0, u = (acc & ACC_USER) != 0, x = (acc & ACC_EXEC) != 0;
        let fault = false;
        if (user) {
          fault = !u || (access == ACCESS_WRITE && !w) || (access == ACCESS_FETCH && !x);
        } else if (access == ACCESS_FETCH) {
          fault = (u && smep) || !x;
        } else {
          fault = (u && smapOn) || (access == ACCESS_WRITE && wp && !w);
        }
        if (fault) mask |= 1 << acc;
      }
      perm |= <u64>mask << (i * 8);
      let e: u32 = 0;
      if (access == ACCESS_WRITE) e |= PFERR_W;
      if (user) e |= PFERR_U;
      if (access == ACCESS_FETCH && (nxe || smep)) e |= PFERR_FETCH;
      errs |= <u64>e << (i * 8);
    }
  }
  store<u64>(c + MC_PERM, perm);
  store<u64>(c + MC_ERRS, errs);
  let hs: u64 = 0, hu: u64 = 0;
  for (let access: u32 = 0; access < 3; access++) {
    for (let idx: u32 = 0; idx < 16; idx++) {
      const acc = idx & A_ACC_MASK;
      const clean = (idx & A_DIRTY) == 0 && access == ACCESS_WRITE;
      const bit = <u64>1 << (access * 16 + idx);
      if (clean || ((perm >> (access * 8 + acc)) & 1) != 0) hs |= bit;
      if (clean || ((perm >> ((access + 3) * 8 + acc)) & 1) != 0) hu |= bit;
    }
  }
  store<u64>(c + MC_HITS, hs);
  store<u64>(c + MC_HITU, hu);
  setKeys(c, vb, regs, cr3, cr4);
  return rc;
}

/**
 * Makes record `c` count its walks (walks, references, A/D writes, faults) in
 * its own counter block (MC_OWN_COUNTERS) instead of its vCPU's: for a
 * regime whose walks are not the hardware's, such as a shadow MMU's guest
 * walker (KVM's walk_mmu beside root_mmu). Returns the block's address.
 */
export function mmuOwnCounters(c: usize): usize {
  store<u32>(c + MC_CTRS, <u32>(c + MC_OWN_COUNTERS - VCPU_COUNTERS));
  return c + MC_OWN_COUNTERS;
}

/** MOV to CR3: the new root and PCID key from the registers at `regs` (CR4 unchanged, so the mode and rights tables stand). No flush. */
export function x86ReloadCr3(c: usize, vb: usize, regs: usize): void {
  const cr3 = load<u64>(regs, S_CR3);
  invalidated(vb);
  store<u64>(c + MC_ROOT, cr3 & load<u64>(c, MC_ADDR));
  setKeys(c, vb, regs, cr3, load<u64>(regs, S_CR4));
}

/** Space bits of the keys of record `c`: EP4TA index and VPID under EPT, else 0. */
function spaceOf(c: usize, vb: usize, regs: usize): u64 {
  const ptw = load<u32>(c, MC_PTW);
  if (ptw == MMU_NONE) return 0;
  const e = ep4taIndexOf(ctxOf(c, ptw));
  return (<u64>e << KEY_EPT_SHIFT) | (<u64>(load<u32>(regs, S_VPID) & 0xffff) << KEY_SPACE_SHIFT);
}

function setKeys(c: usize, vb: usize, regs: usize, cr3: u64, cr4: u64): void {
  const space = KEY_VALID | spaceOf(c, vb, regs);
  const pcid = (cr4 & CR4_PCIDE) != 0 ? cr3 & CR3_PCID_MASK : 0;
  store<u64>(c + MC_KEY, space | pcid);
  store<u64>(c + MC_GKEY, space | KEY_GLOBAL);
  store<u32>(c + MC_SLOT, 0xffff_ffff);
  store<u32>(c + MC_GSLOT, 0xffff_ffff);
  // The address space in force holds a slot and a live tag from now on (as a
  // CPU's current PCID does): later flushes of it give it a fresh tag.
  acquireTag(vb, slotCached(vb, c + MC_SLOT, space | pcid));
}

// ---- format hooks for the walk loop ---------------------------------------------------

// @ts-ignore: decorator
@inline function errBase(c: usize, ai: u32): u32 {
  return <u32>(load<u64>(c, MC_ERRS) >> (ai * 8)) & 0xff;
}

// @ts-ignore: decorator
@inline function rightsFault(perm: u64, ai: u32, acc: u32): bool {
  return ((perm >> (ai * 8 + acc)) & 1) != 0;
}

/** Protection-key violation for a data access to a user page with key `pkey` (SDM §4.6.2); `f` is record `c`'s MC_FLAGS. */
function pkFault(c: usize, f: u32, access: u32, user: u32, acc: u32, pkey: u32): bool {
  if ((f & MF_PK) == 0 || access == ACCESS_FETCH || (acc & ACC_USER) == 0) return false;
  const bits = (load<u32>(c, MC_PKRU) >> (pkey * 2)) & 3;
  if (bits & 1) return true;
  return (bits & 2) != 0 && access == ACCESS_WRITE && (user != 0 || (f & MF_WP) != 0);
}

/** Reserved hook: reserved bits of a present entry (WALK_CHECK, not the debugger view): 51:M, 63 without NXE, PS at levels 4–5, 29:13 / 20:13 in a 1 GiB / 2 MiB leaf. */
// @ts-ignore: decorator
@inline export function x86Reserved(rsvdBase: u64, pte: u64, level: u32, flags: u32): bool {
  if ((flags & (WALK_CHECK | WALK_DEBUG)) != WALK_CHECK) return false;
  const ps = (pte & PTE_PS) != 0;
  let rsvd = rsvdBase;
  if (level >= 4) rsvd |= PTE_PS;
  else if (ps && level == 3) rsvd |= PTE_RSVD_1G;
  else if (ps && level == 2) rsvd |= PTE_RSVD_2M;
  return (pte & rsvd) != 0;
}

/** Fold hook: ACC bits (X = not XD, W, U) of one entry, ANDed over the walk. */
// @ts-ignore: decorator
@inline export function x86Fold(pte: u64): u64 {
  return (pte & 6) | ((pte >> 63) ^ 1);
}

/** Fault hook: #PF with P = 0 (not present) or P = 1, RSVD (reserved bits). */
// @ts-ignore: decorator
@inline export function x86Fault(c: usize, k: u32, level: u32, access: u32, user: u32, flags: u32): u32 {
  const ai = access + (user != 0 ? 3 : 0);
  if (k == K_INVALID) setX86Fault(level, (flags & WALK_DEBUG) != 0 ? 0 : errBase(c, ai));
  else setX86Fault(level, errBase(c, ai) | PFERR_P | PFERR_RSVD);
  return STATUS_PF;
}

/**
 * Table A/D hook, called for a non-leaf entry whose A is clear (the loop
 * tests it): sets A. Under EPT the update is a
 * guest-physical write through the translation the load used (no second EPT
 * walk): refused unless W in every EPT entry of it — an EPT violation.
 */
// @ts-ignore: decorator
@inline export function x86TableAd(c: usize, cb: usize, host: usize, pte: u64, ea: u64, ptw: u32, level: u32, setAD: bool): u32 {
  if (ptw != MMU_NONE && (sAllow & EPT_W) == 0) return eptViolation(ctxOf(c, ptw), ea, ACCESS_WRITE, true, false, sLevel, sAllow);
  if (!setAD) return STATUS_OK;
  return casCounted(cb, host, pte, pte | PTE_A) ? STATUS_OK : RETRY;
}

// ---- walk, leaf step and translation -----------------------------------------------------

/**
 * One attempt at a walk of record `c` for `va` (canonical): the walk loop,
 * then the leaf step — rights and protection keys (WALK_CHECK), the A and D
 * update (WALK_AD; under EPT an EPT-checked write). Output: rPa = the
 * guest-physical address (the physical one without EPT), rLevel, rShift,
 * rAttr. Returns STATUS_* or RETRY.
 */
// @ts-ignore: decorator
@inline function walkOnce(c: usize, vb: usize, va: u64, access: u32, user: u32, flags: u32): u32 {
  if (load<u32>(c, MC_PTW) != MMU_NONE) return walkOnce2d(c, vb, va, access, user, flags);
  return descend(FMT_X86, false, c, vb, va, load<u64>(c, MC_ROOT), load<u32>(c, MC_TOP), 9, 7, access, user, flags);
}

/** walkOnce under EPT (the 2D walk), out of line so the one-stage walk carries no second-stage code. */
function walkOnce2d(c: usize, vb: usize, va: u64, access: u32, user: u32, flags: u32): u32 {
  return descend(FMT_X86, true, c, vb, va, load<u64>(c, MC_ROOT), load<u32>(c, MC_TOP), 9, 7, access, user, flags);
}

/**
 * Leaf hook (the walk loop calls it at the leaf): rights and protection keys
 * (WALK_CHECK), then the A and D update (WALK_AD; under EPT an EPT-checked
 * write, checked also without WALK_AD), then the output: rPa = the
 * guest-physical address (the physical one without EPT), rLevel, rShift,
 * rAttr; `mask` is the walk's address mask (MC_ADDR, or bits 51:12 for the
 * debugger view). Returns STATUS_* or RETRY.
 */
// @ts-ignore: decorator
@inline export function x86Leaf(c: usize, cb: usize, va: u64, access: u32, user: u32, flags: u32,
  pte: u64, host: usize, ea: u64, level: u32, acc: u32, ptw: u32, mask: u64): u32 {
  const cf = load<u32>(c, MC_FLAGS);
  const debug = (flags & WALK_DEBUG) != 0;
  const pshift = 12 + 9 * (level - 1);
  const pmask = (<u64>1 << pshift) - 1;
  const pkey = <u32>(pte >> PTE_PKEY_SHIFT) & 15;
  if ((flags & WALK_CHECK) != 0) {
    const ai = access + (user != 0 ? 3 : 0);
    const rf = rightsFault(load<u64>(c, MC_PERM), ai, acc);
    const pf = pkFault(c, cf, access, user, acc, pkey);
    if (rf || pf) {
      setX86Fault(level, errBase(c, ai) | PFERR_P | (pf ? PFERR_PK : 0));
      return STATUS_PF;
    }
  }
  let dirty = (pte & PTE_D) != 0;
  if (!debug) {
    const want = pte | PTE_A | (access == ACCESS_WRITE ? PTE_D : 0);
    if (want != pte) {
      if (ptw != MMU_NONE && (sAllow & EPT_W) == 0) return eptViolation(ctxOf(c, ptw), ea, ACCESS_WRITE, true, false, sLevel, sAllow);
      if ((flags & WALK_AD) != 0 && !casCounted(cb, host, pte, want)) return RETRY;
    }
    if ((flags & WALK_AD) != 0) dirty = (want & PTE_D) != 0;
  }
  const pge = (cf & MF_PGE) != 0;
  setResult((pte & mask & ~pmask) | (va & pmask), 0, level, pshift,
    acc | (dirty ? A_DIRTY : 0) | (pge && (pte & PTE_G) != 0 ? A_GLOBAL : 0)
    | (level << A_LEVEL_SHIFT) | (pshift << A_PSHIFT_SHIFT) | (pkey << A_PKEY_SHIFT));
  return STATUS_OK;
}

/** Walks record `c` for `va`, restarting on lost A/D races. */
// @ts-ignore: decorator
@inline function walk(c: usize, vb: usize, cb: usize, va: u64, access: u32, user: u32, flags: u32): u32 {
  counterAdd(cb, C_WALKS, 1);
  while (true) {
    const s = walkOnce(c, vb, va, access, user, flags);
    if (s != RETRY) return s;
    counterAdd(cb, C_WALK_RETRIES, 1);
  }
}

/** True iff `va` is canonical for record `c`. */
// @ts-ignore: decorator
@inline function isCanonical(c: usize, va: u64): bool {
  const cs = <u64>load<u32>(c, MC_CANON);
  return (<i64>(va << cs) >> cs) == <i64>va;
}

/**
 * The second stage of a translation whose first stage gave gpa rPa: under
 * EPT, the EPT translation of the final access (a linear-address translation:
 * qualification bits 7 and 8; with MBEC a user-mode address iff `userPage`),
 * then rIpa = gpa and rPa = hpa. Without EPT nothing.
 */
// @ts-ignore: decorator
@inline function finalStage(c: usize, va: u64, access: u32, userPage: bool, flags: u32): u32 {
  const ptw = load<u32>(c, MC_PTW);
  if (ptw == MMU_NONE) return STATUS_OK;
  const gpa = rPa;
  setGva(va);
  const s = stageTranslate(ctxOf(c, ptw), gpa, access, userPage ? 1 : 0, false, flags);
  if (s != STATUS_OK) return s;
  rIpa = gpa;
  rPa = sPa;
  return STATUS_OK;
}

/**
 * Full translation of one address through record `c`: canonical check, TLB
 * (the record's slot, then its global slot), walk on a miss, the final EPT
 * translation under EPT, fill on success. Returns STATUS_*.
 *
 * A TLB hit is used only if it grants the access: a write through an entry
 * cached with D = 0 (or, under EPT, without EPT write permission or EPT D),
 * or any access its cached rights refuse, re-walks (the stale entry is
 * dropped first), so a fault is always decided by the tables in memory and
 * A/D are set exactly as the SDM says.
 */
function translateSlow(c: usize, vb: usize, va: u64, access: u32, user: u32): u32 {
  if (load<u32>(c, MC_FORMAT) != FMT_X86) {
    setGva(va);
    setResult(va, 0, 0, 12, 0);
    const s = finalStage(c, va, access, false, WALK_AD);
    if (s != STATUS_OK) counterAdd(<usize>load<u32>(c, MC_CTRS), C_FAULTS, 1);
    return s;
  }
  if (!isCanonical(c, va)) {
    setGva(va);
    rLevel = 0; rErr = 0;
    counterAdd(<usize>load<u32>(c, MC_CTRS), C_FAULTS, 1);
    return STATUS_GP;
  }
  const vpn = (va >> 12) & VPN_MASK;
  const tlbOn = (load<u32>(c, MC_FLAGS) & MF_TLB) != 0;
  if (tlbOn && tlbHit(c, vb, va, vpn, access, user)) return STATUS_OK;
  setGva(va);
  const cb = <usize>load<u32>(c, MC_CTRS);
  let s = walk(c, vb, cb, va, access, user, WALK_AD | WALK_CHECK);
  if (s == STATUS_OK) s = finalStage(c, va, access, (rAttr & ACC_USER) != 0, WALK_AD);
  if (s != STATUS_OK) {
    counterAdd(cb, C_FAULTS, 1);
    return s;
  }
  if (tlbOn) fillCombined(c, vb, vpn);
  return STATUS_OK;
}

/**
 * The TLB step of translateSlow: looks `vpn` up in record `c`'s slot, then its
 * global slot; a hit that grants the access sets the result and returns true;
 * a hit that does not is dropped (the caller re-walks).
 */
// @ts-ignore: decorator
@inline function tlbHit(c: usize, vb: usize, va: u64, vpn: u64, access: u32, user: u32): bool {
  counterAdd(vb, C_LOOKUPS, 1);
  let e = tlbLookupTag(vb, slotTagCached(vb, c), vpn);
  if (e == 0) {
    const gslot = slotCached(vb, c + MC_GSLOT, load<u64>(c, MC_GKEY));
    if (slotHasLive(vb, gslot)) e = tlbLookup(vb, gslot, vpn);
  }
  if (e != 0) {
    const attr = load<u32>(e, E_ATTR);
    const ai = access + (user != 0 ? 3 : 0);
    const acc = attr & A_ACC_MASK;
    if (!rightsFault(load<u64>(c, MC_PERM), ai, acc) && !pkFault(c, load<u32>(c, MC_FLAGS), access, user, acc, (attr >> A_PKEY_SHIFT) & 15)
        && !(access == ACCESS_WRITE && (attr & A_DIRTY) == 0)) {
      counterAdd(vb, C_HITS, 1);
      setResult(load<u64>(e, E_PA) | (va & 0xfff), (<u64>load<u32>(e, E_GFN) << 12) | (va & 0xfff),
        (attr >> A_LEVEL_SHIFT) & 7, (attr >> A_PSHIFT_SHIFT) & 31, attr);
      return true;
    }
    tlbDrop(vb, e);
  }
  counterAdd(vb, C_MISSES, 1);
  return false;
}

/**
 * Caches the translation just made. Under EPT (a combined mapping, SDM
 * Vol.3C §29.4.1) the EPT rights of the final translation are folded in: no
 * entry without EPT read; no fetch without EPT execute (user-execute with
 * MBEC for a user page); a write only with EPT write and D known — else the
 * write re-walks. Guest frames at or above 2^44 are not cached.
 */
function fillCombined(c: usize, vb: usize, vpn: u64): void {
  let attr = rAttr;
  let gfn: u32 = 0;
  if (load<u32>(c, MC_PTW) != MMU_NONE) {
    const a = sAllow;
    if ((a & EPT_R) == 0 || (rIpa >> 44) != 0) return;
    gfn = <u32>(rIpa >> 12);
    const mbec = (load<u32>(ctxOf(c, load<u32>(c, MC_PTW)) + MC_FLAGS) & MF_MBEC) != 0;
    const xbit = mbec && (attr & ACC_USER) != 0 ? EPT_UX : EPT_X;
    if ((a & xbit) == 0) attr &= ~ACC_EXEC;
    if ((a & EPT_W) == 0 || (a & EPT_DKNOWN) == 0) attr &= ~A_DIRTY;
  }
  const global = (attr & A_GLOBAL) != 0;
  const slot = global ? slotCached(vb, c + MC_GSLOT, load<u64>(c, MC_GKEY)) : slotCached(vb, c + MC_SLOT, load<u64>(c, MC_KEY));
  tlbFill(vb, slot, vpn, rPa & ~<u64>0xfff, attr, (attr >> A_PSHIFT_SHIFT) & 31, gfn);
}

/** The result record of a successful translation (inlined into the single-call entry points). */
// @ts-ignore: decorator
@inline function storeOk(vb: usize): u32 {
  store<u32>(vb + R_STATUS, STATUS_OK);
  store<u32>(vb + R_LEVEL, rLevel);
  store<u64>(vb + R_PA, rPa);
  store<u64>(vb + R_IPA, rIpa);
  store<u32>(vb + R_SHIFT, rShift);
  return STATUS_OK;
}

function storeResult(vb: usize, s: u32): u32 {
  if (s == STATUS_OK) return storeOk(vb);
  store<u32>(vb + R_STATUS, s);
  store<u32>(vb + R_LEVEL, rLevel);
  store<u64>(vb + R_PA, 0);
  store<u64>(vb + R_IPA, 0);
  store<u32>(vb + R_SHIFT, 0);
  store<u64>(vb + R_GPA, s == STATUS_ABORT || s == STATUS_EPT_VIOLATION || s == STATUS_EPT_MISCONFIG ? rGpa : 0);
  store<u32>(vb + R_ERROR, s == STATUS_PF || s == STATUS_EPT_VIOLATION ? rErr : 0);
  store<u64>(vb + R_GVA, rGva);
  store<u64>(vb + R_HPA, s == STATUS_ABORT ? rHpa : 0);
  store<u32>(vb + R_ASTAGE, s == STATUS_ABORT ? rAStage : 0);
  return s;
}

/**
 * Translates one address through record `c` as the CPU would for an access
 * of kind `access` (0 read, 1 write, 2 fetch) at CPL 3 if `user`. Uses and
 * fills the TLB, sets A/D (guest and EPT). Result in the vCPU's result
 * record; returns STATUS_*. The single-address entry point for embedders.
 */
export function x86Translate(c: usize, va: u64, access: u32, user: u32): u32 {
  const vb = <usize>load<u32>(c, MC_VCPU);
  if (access > ACCESS_FETCH) return storeResult(vb, STATUS_EACCESS);
  const s = translateSlow(c, vb, va, access, user);
  return s == STATUS_OK ? storeOk(vb) : storeResult(vb, s);
}

/**
 * The effective rights word (layout.ts RIGHTS_*) of a translation with TLB
 * attributes `attr` under record `c`: bit access + 3·user is set iff that
 * access would be granted (the rights table, then protection keys).
 */
function rightsWord(c: usize, attr: u32, cached: bool): u32 {
  const acc = attr & A_ACC_MASK;
  const perm = load<u64>(c, MC_PERM);
  let r: u32 = ~<u32>(perm >> acc) & 1;
  r |= (~<u32>(perm >> (8 + acc)) & 1) << 1;
  r |= (~<u32>(perm >> (16 + acc)) & 1) << 2;
  r |= (~<u32>(perm >> (24 + acc)) & 1) << 3;
  r |= (~<u32>(perm >> (32 + acc)) & 1) << 4;
  r |= (~<u32>(perm >> (40 + acc)) & 1) << 5;
  if ((load<u32>(c, MC_FLAGS) & MF_PK) != 0 && (acc & ACC_USER) != 0) {
    const pkey = (attr >> A_PKEY_SHIFT) & 15;
    for (let ai: u32 = 0; ai < 6; ai++) {
      if (pkFault(c, load<u32>(c, MC_FLAGS), ai % 3, ai / 3, acc, pkey)) r &= ~(<u32>1 << ai);
    }
  }
  if ((attr & A_GLOBAL) != 0) r |= RIGHTS_GLOBAL;
  if ((attr & A_DIRTY) != 0) r |= RIGHTS_DIRTY;
  if (cached) r |= RIGHTS_CACHED;
  return r | (((attr >> A_LEVEL_SHIFT) & 7) << RIGHTS_LEVEL_SHIFT) | (((attr >> A_PSHIFT_SHIFT) & 31) << RIGHTS_PSHIFT_SHIFT);
}

/**
 * The Number fast path: x86Translate of va = vaHi:vaLo with no BigInt and no
 * object on either side. Returns the pa as an f64 (exact: pa < 2^52), or −1
 * with the fault in the result record (R_STATUS …). On success R_RIGHTS holds
 * the effective rights word; T_INV_EPOCH says when a cached copy goes stale.
 * With paging off (and no EPT) the translation is the identity, every right,
 * cacheable; under EPT a translation is cacheable only if it was cached.
 */
export function x86TranslateFast(c: usize, vaLo: u32, vaHi: u32, access: u32, user: u32): f64 {
  const vb = <usize>load<u32>(c, MC_VCPU);
  if (access > ACCESS_FETCH) { storeResult(vb, STATUS_EACCESS); return -1; }
  const va = (<u64>vaHi << 32) | <u64>vaLo;
  const s = translateSlow(c, vb, va, access, user);
  if (s != STATUS_OK) { storeResult(vb, s); return -1; }
  let r: u32;
  if (load<u32>(c, MC_FORMAT) == FMT_X86) {
    const tlbOn = (load<u32>(c, MC_FLAGS) & MF_TLB) != 0;
    r = rightsWord(c, rAttr, tlbOn && cachedNow(c, vb, va));
  } else if (load<u32>(c, MC_PTW) == MMU_NONE) {
    r = 0x3f | RIGHTS_DIRTY | RIGHTS_CACHED | (12 << RIGHTS_PSHIFT_SHIFT);
  } else {
    r = (<u32>1 << (access + (user != 0 ? 3 : 0))) | (12 << RIGHTS_PSHIFT_SHIFT);
  }
  store<u32>(vb + R_RIGHTS, r);
  store<u64>(vb + R_IPA, rIpa);
  return <f64>rPa;
}

/** Whether `va` is in the TLB of record `c` right now (after a translation). */
function cachedNow(c: usize, vb: usize, va: u64): bool {
  if (load<u32>(c, MC_PTW) == MMU_NONE) return true;
  const vpn = (va >> 12) & VPN_MASK;
  return tlbLookupTag(vb, slotTagCached(vb, c), vpn) != 0
    || tlbLookup(vb, slotCached(vb, c + MC_GSLOT, load<u64>(c, MC_GKEY)), vpn) != 0;
}

/**
 * Walks record `c` for `va` without touching any TLB, with walk `flags`
 * (WALK_*), and under EPT the final EPT translation. WALK_DEBUG alone is the
 * debugger view (QEMU gva2gpa): canonical check, then only P and PS matter
 * (under EPT, table reads and the output still go through EPT, without
 * updates). Result in the result record.
 */
export function x86Walk(c: usize, va: u64, access: u32, user: u32, flags: u32): u32 {
  const vb = <usize>load<u32>(c, MC_VCPU);
  if (access > ACCESS_FETCH) return storeResult(vb, STATUS_EACCESS);
  setGva(va);
  const f2 = (flags & ~WALK_DEBUG & ~WALK_RECORD & ~WALK_CHECK) | WALK_NOTLB;
  if (load<u32>(c, MC_FORMAT) != FMT_X86) {
    setResult(va, 0, 0, 12, 0);
    return storeResult(vb, finalStage(c, va, access, false, f2));
  }
  if (!isCanonical(c, va)) { rLevel = 0; return storeResult(vb, STATUS_GP); }
  let s = walk(c, vb, <usize>load<u32>(c, MC_CTRS), va, access, user, flags | WALK_NOTLB);
  if (s == STATUS_OK) s = finalStage(c, va, access, (rAttr & ACC_USER) != 0, f2);
  return storeResult(vb, s);
}

// @ts-ignore: decorator
@inline function statusWord(s: u32): u32 {
  if (s == STATUS_OK) return (rShift << BS_PSHIFT_SHIFT) | (rLevel << BS_LEVEL_SHIFT);
  let w = (s << BS_STATUS_SHIFT) | (rLevel << BS_LEVEL_SHIFT);
  if (s == STATUS_PF) w |= rErr;
  else if (s == STATUS_EPT_VIOLATION) w |= (rErr & 0x1ff) << BS_QUAL_SHIFT;
  return w;
}

/**
 * The TLB-hit run of an x86 batch (walk.ts batchHits, x86 grant test);
 * exported so it stays a call-free leaf V8 keeps in registers.
 */
export function x86BatchHits(i: u32, count: u32, base: usize, tlb: usize, keyHi: u64, salt: u64, mask: u64, hitPack: u64, cs: u64): u32 {
  return batchHits(false, i, count, base, tlb, keyHi, salt, mask, hitPack, cs, 0);
}

/** Faults counted by the last batchRun. */
let batchFaults: u32 = 0;

/**
 * The batch loop of a record that only walks (x86 paging, no EPT, TLB off):
 * translateSlow's steps per entry — canonical check, walk (restarting on a
 * lost A/D race), fault count — with the record's fields read once per
 * batch and no call per entry. Same results and counters as batchRun's
 * general loop; returns where it stopped, faults in batchFaults.
 */
function x86BatchWalks(c: usize, base: usize, i: u32, count: u32, user: u32, stop: bool): u32 {
  const paArr = base + VCPU_BATCH_PA;
  const stArr = base + VCPU_BATCH_STATUS;
  const vaArr = base + VCPU_BATCH_VA;
  const acArr = base + VCPU_BATCH_ACCESS;
  const cs = <u64>load<u32>(c, MC_CANON);
  const root = load<u64>(c, MC_ROOT);
  const top = load<u32>(c, MC_TOP);
  const cb = <usize>load<u32>(c, MC_CTRS);
  let faults: u32 = 0;
  for (; i < count; i++) {
    const va = load<u64>(vaArr + (<usize>i << 3));
    const access = <u32>load<u8>(acArr + <usize>i);
    let s: u32;
    if (access > ACCESS_FETCH) {
      s = STATUS_EACCESS;
    } else {
      setGva(va);
      if ((<i64>(va << cs) >> cs) != <i64>va) {
        rLevel = 0; rErr = 0;
        s = STATUS_GP;
      } else {
        counterAdd(cb, C_WALKS, 1);
        while (true) {
          s = descend(FMT_X86, false, c, base, va, root, top, 9, 7, access, user, WALK_AD | WALK_CHECK);
          if (s != RETRY) break;
          counterAdd(cb, C_WALK_RETRIES, 1);
        }
      }
      if (s != STATUS_OK) counterAdd(cb, C_FAULTS, 1);
    }
    store<u64>(paArr + (<usize>i << 3), s == STATUS_OK ? rPa : (s == STATUS_ABORT ? rGpa : 0));
    store<u32>(stArr + (<usize>i << 2), statusWord(s));
    if (s != STATUS_OK) {
      faults++;
      if (stop) break;
    }
  }
  batchFaults = faults;
  return i;
}

/**
 * The batch loop shared by x86TranslateBatch and x86TranslateUntilFault:
 *
 * 1. Serve the run of TLB hits from i in the record's slot (x86BatchHits).
 * 2. Translate entry i the slow way (global slot, walk, EPT, fill, faults).
 * 3. If it faulted and `stop`, return i; else repeat from i + 1.
 *
 * Returns where it stopped (`count` when it did not); counts faults in batchFaults.
 */
// @ts-ignore: decorator
@inline function batchRun(c: usize, start: u32, count: u32, user: u32, stop: bool): u32 {
  if (count > BATCH_MAX) count = BATCH_MAX;
  const base = <usize>load<u32>(c, MC_VCPU);
  const paArr = base + VCPU_BATCH_PA;
  const stArr = base + VCPU_BATCH_STATUS;
  const vaArr = base + VCPU_BATCH_VA;
  const acArr = base + VCPU_BATCH_ACCESS;
  const hitPack = load<u64>(c + (user != 0 ? MC_HITU : MC_HITS));
  const flags = load<u32>(c, MC_FLAGS);
  const fast = load<u32>(c, MC_FORMAT) == FMT_X86 && (flags & MF_TLB) != 0 && (flags & MF_PK) == 0;
  if (load<u32>(c, MC_FORMAT) == FMT_X86 && (flags & MF_TLB) == 0 && load<u32>(c, MC_PTW) == MMU_NONE) {
    return x86BatchWalks(c, base, start, count, user, stop);
  }
  const cs = <u64>load<u32>(c, MC_CANON);
  const tlb = tlbBaseOf(base);
  const mask = <u64>(tlbEntries() - 1);
  let hits: u64 = 0;
  let faults: u32 = 0;
  let i = start;
  while (i < count) {
    if (fast) {
      const slot = slotCached(base, c + MC_SLOT, load<u64>(c, MC_KEY));
      const tag = acquireTag(base, slot);
      const j = x86BatchHits(i, count, base, tlb, <u64>tag << 48, saltOf(tag), mask, hitPack, cs);
      hits += <u64>(j - i);
      i = j;
      if (i >= count) break;
    }
    const va = load<u64>(vaArr + (<usize>i << 3));
    const access = <u32>load<u8>(acArr + <usize>i);
    const s = access <= ACCESS_FETCH ? translateSlow(c, base, va, access, user) : STATUS_EACCESS;
    store<u64>(paArr + (<usize>i << 3), s == STATUS_OK ? rPa : (s == STATUS_ABORT || s == STATUS_EPT_VIOLATION || s == STATUS_EPT_MISCONFIG ? rGpa : 0));
    store<u32>(stArr + (<usize>i << 2), statusWord(s));
    if (s != STATUS_OK) {
      faults++;
      if (stop) break;
    }
    i++;
  }
  if (hits != 0) {
    counterAdd(base, C_LOOKUPS, hits);
    counterAdd(base, C_HITS, hits);
  }
  batchFaults = faults;
  return i;
}

/**
 * Translates the first `count` addresses of the vCPU's batch area (va[i],
 * access[i]) through record `c` at CPL 3 if `user`, writing pa[i] and
 * status[i] (BS_* layout; pa is 0 on a fault, the table gpa for an abort,
 * the gpa of an EPT violation or misconfiguration). Same semantics as
 * x86Translate, per address, in order. Returns the number of faults.
 */
export function x86TranslateBatch(c: usize, count: u32, user: u32): u32 {
  batchRun(c, 0, count, user, false);
  return batchFaults;
}

/**
 * Translates batch entries from `start` in order, as x86TranslateBatch does,
 * but stops at the first entry that does not translate: returns its index
 * (its status word says why), or `count` if every entry translated.
 */
export function x86TranslateUntilFault(c: usize, start: u32, count: u32, user: u32): u32 {
  return batchRun(c, start, count, user, true);
}

// ---- invalidation ------------------------------------------------------------------------

/** Key pattern (mask, value) of record `c`'s slots for `pcid` in every EP4TA of its VPID (ignoring the EP4TA field). */
// @ts-ignore: decorator
@inline function pcidMask(): u64 {
  return ~KEY_EPT_MASK;
}

/**
 * INVLPG semantics for linear address `va` through record `c` (SDM INVLPG;
 * §4.10.4.1; Vol.3C §29.4.3.1): removes the current PCID's entries and the
 * global entries for the page containing `va`, whatever its size — under a
 * VPID, those of that VPID in every EP4TA. A non-canonical `va` is a no-op.
 */
export function x86Invlpg(c: usize, va: u64): void {
  const vb = <usize>load<u32>(c, MC_VCPU);
  counterAdd(vb, C_FLUSH_PAGE, 1);
  if (load<u32>(c, MC_FORMAT) == FMT_X86 && !isCanonical(c, va)) return;
  const vpn = (va >> 12) & VPN_MASK;
  tlbInvalidateRangeMatch(vb, pcidMask(), load<u64>(c, MC_KEY) & pcidMask(), vpn, 1, 0);
  tlbInvalidateRangeMatch(vb, pcidMask(), load<u64>(c, MC_GKEY) & pcidMask(), vpn, 1, 0);
  invalidated(vb);
}

/**
 * INVPCID type 0 semantics: removes non-global entries of PCID `pcid` (in
 * record `c`'s VPID, every EP4TA) for the page containing `va`; global
 * entries are kept. The caller has checked the #GP conditions.
 */
export function x86InvalidatePcidAddr(c: usize, pcid: u32, va: u64): void {
  const vb = <usize>load<u32>(c, MC_VCPU);
  counterAdd(vb, C_FLUSH_PAGE, 1);
  const space = load<u64>(c, MC_KEY) & ~KEY_ASID_MASK & pcidMask();
  tlbInvalidateRangeMatch(vb, pcidMask(), space | <u64>(pcid & 0xfff), (va >> 12) & VPN_MASK, 1, 0);
  invalidated(vb);
}

/**
 * Flushes record `c`'s mappings (its VPID, every EP4TA) of PCID `pcid`
 * (MOV CR3 without NOFLUSH, INVPCID type 1); with `pcid` = 0x10000 its global
 * mappings instead.
 */
export function x86FlushPcid(c: usize, pcid: u32): void {
  flushPcidIn(<usize>load<u32>(c, MC_VCPU), c, pcid);
}

/**
 * Flushes every linear and combined mapping of record `c`'s VPID (every
 * EP4TA, every PCID), globals kept unless `globals` (INVPCID types 2 and 3:
 * inside a VPID they reach only that VPID). Counted as C_FLUSH_ALL /
 * C_FLUSH_NONGLOBAL.
 */
export function x86FlushVpid(c: usize, globals: u32): void {
  const vb = <usize>load<u32>(c, MC_VCPU);
  const space = load<u64>(c, MC_KEY) & KEY_SPACE_MASK;
  const m = KEY_VALID | KEY_SPACE_MASK | KEY_S2 | (globals != 0 ? 0 : KEY_GLOBAL);
  flushMatchCounted(vb, m, KEY_VALID | space, globals != 0 ? C_FLUSH_ALL : C_FLUSH_NONGLOBAL);
}

/** Flushes record `c`'s mappings of PCID `pcid` (or, 0x10000, its globals) in its VPID, every EP4TA. */
function flushPcidIn(vb: usize, c: usize, pcid: u32): void {
  const space = load<u64>(c, MC_KEY) & ~KEY_ASID_MASK & pcidMask();
  tlbFlushMatchExport(vb, pcidMask(), space | <u64>pcid);
}

import { tlbFlushMatch as tlbFlushMatchExport, flushMatchCounted } from "../tlb";
import { C_FLUSH_ALL, C_FLUSH_NONGLOBAL } from "../layout";
