// x86-64 linear-address translation: 4-level and 5-level paging walk, access
// rights, A/D updates, and the TLB-first translate paths (single and batch).
//
// Follows Intel SDM Vol.3A: §4.5 (4/5-level paging, Figure 4-8/4-9 address
// split), §4.6 (access rights), §4.7 (#PF error code), §4.8 (accessed and
// dirty flags), §4.10 (TLB). The walker shape is TinyEMU's get_phys_addr:
// one loop for every level count, driven by the mode; its record of the walk
// is KVM's FNAME(walk_addr_generic).
//
// Not modelled: 32-bit and PAE paging (CR0.PG = 1 requires long mode here),
// paging-structure caches (so nothing but TLB entries can be stale), PKS,
// shadow-stack and implicit supervisor accesses, LAM.

import {
  S_CR0, S_CR3, S_CR4, S_EFER, S_PKRU, S_RFLAGS, S_MAXPHY, S_TLB_ON,
  R_PA, R_GPA, R_STATUS, R_ERROR, R_LEVEL, R_SHIFT, R_WALK, R_WALK_TOP, R_RIGHTS,
  RIGHTS_GLOBAL, RIGHTS_DIRTY, RIGHTS_CACHED, RIGHTS_LEVEL_SHIFT, RIGHTS_PSHIFT_SHIFT,
  STATUS_OK, STATUS_PF, STATUS_GP, STATUS_ABORT, STATUS_EACCESS,
  C_LOOKUPS, C_HITS, C_MISSES, C_WALKS, C_PT_REFS, C_AD_WRITES, C_WALK_RETRIES, C_FAULTS, C_FLUSH_PAGE,
  VCPU_BATCH_VA, VCPU_BATCH_PA, VCPU_BATCH_STATUS, VCPU_BATCH_ACCESS, BATCH_MAX,
  BS_STATUS_SHIFT, BS_PSHIFT_SHIFT, BS_LEVEL_SHIFT, E_PA, E_ATTR, E_KEY, E_STATUS, CTX_GLOBAL,
} from "../layout";
import { hostForLoadLazy, loadEntry, casEntry, slotBase, eagerBytes, ramHost } from "../phys";
import {
  vcpuBase, tlbBase, tlbMask, curKeyHi, curSalt, globKeyHi, globSalt, globLive, slotAddr, counterAdd,
  tlbFill, tlbDrop, selectCtx, VPN_MASK, A_ACC_MASK, A_DIRTY, A_GLOBAL, A_LEVEL_SHIFT,
  A_PSHIFT_SHIFT, A_PKEY_SHIFT, curCtx, tlbInvalidatePage, globSlot, selectGlobal,
} from "../tlb";
import {
  PTE_P, PTE_US, PTE_A, PTE_D, PTE_PS, PTE_G, PTE_ADDR_MASK_52, PTE_RSVD_2M, PTE_RSVD_1G,
  PTE_PKEY_SHIFT, CR0_PG, CR0_WP, CR3_PCID_MASK, CR4_PAE, CR4_PGE, CR4_LA57, CR4_PCIDE,
  CR4_SMEP, CR4_SMAP, CR4_PKE, EFER_LME, EFER_LMA, EFER_NXE, RFLAGS_AC,
  ACC_EXEC, ACC_WRITE, ACC_USER, PFERR_P, PFERR_W, PFERR_U, PFERR_RSVD, PFERR_FETCH, PFERR_PK,
  ACCESS_WRITE, ACCESS_FETCH,
} from "./pte";

/** Walk flags. */
export const WALK_AD: u32 = 1; //     set A/D bits (compare-exchange)
export const WALK_CHECK: u32 = 2; //  reserved-bit and access-rights checks
export const WALK_DEBUG: u32 = 4; //  debugger view: address bits 51:12, PS only at levels 2/3
export const WALK_RECORD: u32 = 8; // record each level's entry gpa and value (R_WALK)

export const CONTROL_OK: i32 = 0;
export const CONTROL_EMODE: i32 = 1; //     CR0.PG = 1 outside long mode (not modelled)
export const CONTROL_EMAXPHY: i32 = 2; //   MAXPHYADDR outside 32..52

// Mode derived from the control registers by x86LoadControl().
let pagingOn: bool = false;
let rootLevel: u32 = 4;
let canonShift: u64 = 16;
let cr3: u64 = 0;
let addrMask: u64 = 0;
let rsvdBase: u64 = 0;
let pkActive: bool = false;
let pkru: u32 = 0;
let wp: bool = false;
let pgeOn: bool = false;
let tlbOn: bool = true;
/** Byte i (i = access + 3·user) has bit acc set iff an access of kind i to a page with rights acc faults. */
let permPack: u64 = 0;
/** Byte i: the #PF error-code bits implied by access kind i alone (W, U, I/D). */
let errPack: u64 = 0;
/**
 * TLB-hit filter for supervisor (S) and user (U) accesses: bit (16·access +
 * (attr & 15)) is set iff a cached entry with rights/dirty bits attr & 15
 * cannot serve the access inline (a rights fault, or a write to a clean entry).
 */
let hitPackS: u64 = 0;
let hitPackU: u64 = 0;

// Result of the last walk or slow translate.
let rPa: u64 = 0;
let rGpa: u64 = 0;
let rErr: u32 = 0;
let rLevel: u32 = 0;
let rShift: u32 = 0;
let rAttr: u32 = 0;

const RETRY: u32 = 0xff;

/**
 * Derives the translation mode from the STATE record (which TS has written)
 * and selects the current TLB context (CR3 PCID when CR4.PCIDE = 1, else 0).
 * Performs no TLB invalidation. Returns CONTROL_*.
 *
 * 1. Paging is on iff CR0.PG; then long mode (EFER.LME/LMA with CR4.PAE) is required.
 * 2. Levels: 5 if CR4.LA57 else 4; canonical width 57 or 48 bits.
 * 3. Reserved bits: 51:M everywhere, 63 unless EFER.NXE.
 * 4. Rebuild the rights table (KVM update_permission_bitmask) for WP/SMEP/SMAP/AC/NXE.
 */
export function x86LoadControl(): i32 {
  const b = vcpuBase;
  const cr0 = load<u64>(b + S_CR0);
  cr3 = load<u64>(b + S_CR3);
  const cr4 = load<u64>(b + S_CR4);
  const efer = load<u64>(b + S_EFER);
  const rflags = load<u64>(b + S_RFLAGS);
  const maxPhy = load<u32>(b + S_MAXPHY);
  if (maxPhy < 32 || maxPhy > 52) return CONTROL_EMAXPHY;
  pagingOn = (cr0 & CR0_PG) != 0;
  const longMode = (efer & (EFER_LME | EFER_LMA)) != 0 && (cr4 & CR4_PAE) != 0;
  if (pagingOn && !longMode) { pagingOn = false; return CONTROL_EMODE; }
  const la57 = (cr4 & CR4_LA57) != 0;
  rootLevel = la57 ? 5 : 4;
  canonShift = la57 ? 7 : 16;
  addrMask = ((<u64>1 << maxPhy) - 1) & ~<u64>0xfff;
  const nxe = (efer & EFER_NXE) != 0;
  rsvdBase = (PTE_ADDR_MASK_52 & ~addrMask) | (nxe ? 0 : <u64>1 << 63);
  pkActive = (cr4 & CR4_PKE) != 0 && longMode;
  pkru = <u32>load<u64>(b + S_PKRU);
  wp = (cr0 & CR0_WP) != 0;
  pgeOn = (cr4 & CR4_PGE) != 0;
  tlbOn = load<u32>(b + S_TLB_ON) != 0;
  const smep = (cr4 & CR4_SMEP) != 0;
  const smapOn = (cr4 & CR4_SMAP) != 0 && (rflags & RFLAGS_AC) == 0;

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
  permPack = perm;
  errPack = errs;
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
  hitPackS = hs;
  hitPackU = hu;
  if (globSlot != CTX_GLOBAL) selectGlobal(CTX_GLOBAL);
  selectCtx((cr4 & CR4_PCIDE) != 0 ? <u32>(cr3 & CR3_PCID_MASK) : 0);
  return CONTROL_OK;
}

/**
 * Reloads CR3 alone from the STATE record (MOV to CR3: CR4 unchanged, so the
 * mode and rights tables stand) and selects its PCID's TLB context. No flush.
 */
export function x86LoadCr3(): void {
  cr3 = load<u64>(vcpuBase + S_CR3);
  const pcide = (load<u64>(vcpuBase + S_CR4) & CR4_PCIDE) != 0;
  selectCtx(pcide ? <u32>(cr3 & CR3_PCID_MASK) : 0);
}

// @ts-ignore: decorator
@inline function errBase(ai: u32): u32 {
  return <u32>(errPack >> (ai * 8)) & 0xff;
}

// @ts-ignore: decorator
@inline function rightsFault(ai: u32, acc: u32): bool {
  return ((permPack >> (ai * 8 + acc)) & 1) != 0;
}

/** Protection-key violation for a data access to a user page with key `pkey` (SDM §4.6.2). */
function pkFault(access: u32, user: u32, acc: u32, pkey: u32): bool {
  if (!pkActive || access == ACCESS_FETCH || (acc & ACC_USER) == 0) return false;
  const bits = (pkru >> (pkey * 2)) & 3;
  if (bits & 1) return true;
  return (bits & 2) != 0 && access == ACCESS_WRITE && (user != 0 || wp);
}

/** True iff `va` is canonical for the current paging mode. */
// @ts-ignore: decorator
@inline function isCanonical(va: u64): bool {
  return (<i64>(va << canonShift) >> canonShift) == <i64>va;
}

/**
 * One attempt at a walk from CR3. Returns STATUS_* or RETRY when an A/D
 * compare-exchange lost a race (the caller restarts, as KVM's walker does).
 *
 * For level L from the root down to 1:
 * 1. entry gpa = table + va[12+9(L-1)+8 : 12+9(L-1)] × 8; outside the memslot → abort.
 * 2. Not present → #PF (P = 0) at L.
 * 3. Reserved bits set (CHECK) → #PF (P = 1, RSVD) at L.
 * 4. AND the entry's rights into the walk's rights.
 * 5. Non-leaf: set A (AD) and descend. Leaf (L = 1, or PS at L = 2, 3):
 *    rights and protection-key check (CHECK), then A and, for writes, D (AD).
 */
// @ts-ignore: decorator
@inline function walkOnce(va: u64, access: u32, user: u32, flags: u32): u32 {
  const debug = (flags & WALK_DEBUG) != 0;
  const check = (flags & WALK_CHECK) != 0;
  const setAD = (flags & WALK_AD) != 0;
  const mask = debug ? PTE_ADDR_MASK_52 : addrMask;
  const ai = access + (user != 0 ? 3 : 0);
  let table = cr3 & mask;
  let acc: u32 = 7;
  let level = rootLevel;
  if ((flags & WALK_RECORD) != 0) store<u32>(vcpuBase + R_WALK_TOP, level);
  let shift = <u64>(12 + 9 * (level - 1));
  let refs: u64 = 0;
  const sb = slotBase, eb = eagerBytes, rh = ramHost, rsvdAll = rsvdBase;
  while (true) {
    const gpa = table + (((va >> shift) & 511) << 3);
    const off = gpa - sb;
    const host = off < eb ? rh + <usize>off : hostForLoadLazy(off);
    if (host == 0) {
      counterAdd(C_PT_REFS, refs);
      rGpa = gpa; rLevel = level; rErr = 0;
      return STATUS_ABORT;
    }
    const pte = loadEntry(host);
    refs++;
    if ((flags & WALK_RECORD) != 0) {
      const r = vcpuBase + R_WALK + ((level - 1) << 4);
      store<u64>(r, gpa);
      store<u64>(r, pte, 8);
    }
    if ((pte & PTE_P) == 0) {
      counterAdd(C_PT_REFS, refs);
      rLevel = level; rErr = debug ? 0 : errBase(ai);
      return STATUS_PF;
    }
    const ps = (pte & PTE_PS) != 0;
    if (check && !debug) {
      let rsvd = rsvdAll;
      if (level >= 4) rsvd |= PTE_PS;
      else if (ps && level == 3) rsvd |= PTE_RSVD_1G;
      else if (ps && level == 2) rsvd |= PTE_RSVD_2M;
      if ((pte & rsvd) != 0) {
        counterAdd(C_PT_REFS, refs);
        rLevel = level; rErr = errBase(ai) | PFERR_P | PFERR_RSVD;
        return STATUS_PF;
      }
    }
    acc &= <u32>(pte & 6) | (<u32>(pte >> 63) ^ 1);
    const leaf = level == 1 || (ps && (level == 2 || level == 3));
    if (!leaf) {
      if (setAD && (pte & PTE_A) == 0) {
        if (!casEntry(host, pte, pte | PTE_A)) { counterAdd(C_PT_REFS, refs); return RETRY; }
        counterAdd(C_AD_WRITES, 1);
      }
      table = pte & mask;
      level--;
      shift -= 9;
      continue;
    }
    counterAdd(C_PT_REFS, refs);
    const pshift = <u32>shift;
    const pmask = (<u64>1 << shift) - 1;
    const pkey = <u32>(pte >> PTE_PKEY_SHIFT) & 15;
    if (check) {
      const rf = rightsFault(ai, acc);
      const pf = pkFault(access, user, acc, pkey);
      if (rf || pf) {
        rLevel = level; rErr = errBase(ai) | PFERR_P | (pf ? PFERR_PK : 0);
        return STATUS_PF;
      }
    }
    let dirty = (pte & PTE_D) != 0;
    if (setAD) {
      const want = pte | PTE_A | (access == ACCESS_WRITE ? PTE_D : 0);
      if (want != pte) {
        if (!casEntry(host, pte, want)) return RETRY;
        counterAdd(C_AD_WRITES, 1);
      }
      dirty = (want & PTE_D) != 0;
    }
    rPa = (pte & mask & ~pmask) | (va & pmask);
    rLevel = level;
    rShift = pshift;
    rErr = 0;
    rAttr = acc | (dirty ? A_DIRTY : 0) | (pgeOn && (pte & PTE_G) != 0 ? A_GLOBAL : 0)
      | (level << A_LEVEL_SHIFT) | (pshift << A_PSHIFT_SHIFT) | (pkey << A_PKEY_SHIFT);
    return STATUS_OK;
  }
}

/** Walks the current tables for `va` (already canonical), restarting on lost A/D races. */
// @ts-ignore: decorator
@inline function walk(va: u64, access: u32, user: u32, flags: u32): u32 {
  counterAdd(C_WALKS, 1);
  while (true) {
    const s = walkOnce(va, access, user, flags);
    if (s != RETRY) return s;
    counterAdd(C_WALK_RETRIES, 1);
  }
}

/**
 * Full translation of one address: canonical check, TLB (current context,
 * then global), walk on a miss, fill on success. Writes the result globals;
 * returns STATUS_*.
 *
 * A TLB hit is used only if it grants the access: a write through an entry
 * cached with D = 0, or any access its cached rights refuse, re-walks (the
 * stale entry is dropped first), so a fault is always decided by the tables
 * in memory and A/D are set exactly as the SDM says.
 */
function translateSlow(va: u64, access: u32, user: u32): u32 {
  if (!pagingOn) {
    rPa = va; rLevel = 0; rShift = 12; rErr = 0;
    return STATUS_OK;
  }
  if (!isCanonical(va)) {
    rLevel = 0; rErr = 0;
    counterAdd(C_FAULTS, 1);
    return STATUS_GP;
  }
  const vpn = (va >> 12) & VPN_MASK;
  if (tlbOn) {
    counterAdd(C_LOOKUPS, 1);
    let e = slotAddr(vpn, curSalt);
    let hit = load<u64>(e + E_KEY) == (curKeyHi | vpn);
    if (!hit && globLive) {
      e = slotAddr(vpn, globSalt);
      hit = load<u64>(e + E_KEY) == (globKeyHi | vpn);
    }
    if (hit) {
      const attr = load<u32>(e + E_ATTR);
      const ai = access + (user != 0 ? 3 : 0);
      const acc = attr & A_ACC_MASK;
      if (!rightsFault(ai, acc) && !pkFault(access, user, acc, (attr >> A_PKEY_SHIFT) & 15)
          && !(access == ACCESS_WRITE && (attr & A_DIRTY) == 0)) {
        counterAdd(C_HITS, 1);
        rAttr = attr;
        rPa = load<u64>(e + E_PA) | (va & 0xfff);
        rLevel = (attr >> A_LEVEL_SHIFT) & 7;
        rShift = (attr >> A_PSHIFT_SHIFT) & 31;
        rErr = 0;
        return STATUS_OK;
      }
      tlbDrop(e);
    }
    counterAdd(C_MISSES, 1);
  }
  const s = walk(va, access, user, WALK_AD | WALK_CHECK);
  if (s != STATUS_OK) {
    counterAdd(C_FAULTS, 1);
    return s;
  }
  if (tlbOn) tlbFill(vpn, rPa & ~<u64>0xfff, rAttr);
  return STATUS_OK;
}

function storeResult(s: u32): u32 {
  const b = vcpuBase;
  store<u64>(b + R_PA, s == STATUS_OK ? rPa : 0);
  store<u64>(b + R_GPA, s == STATUS_ABORT ? rGpa : 0);
  store<u32>(b + R_STATUS, s);
  store<u32>(b + R_ERROR, s == STATUS_PF ? rErr : 0);
  store<u32>(b + R_LEVEL, rLevel);
  store<u32>(b + R_SHIFT, s == STATUS_OK ? rShift : 0);
  return s;
}

/**
 * Translates one address as the CPU would for an access of kind `access`
 * (0 read, 1 write, 2 fetch) at CPL 3 if `user`. Uses and fills the TLB,
 * sets A/D. Result in the STATE result record; returns STATUS_*.
 * The single-address entry point for embedders.
 */
export function x86Translate(va: u64, access: u32, user: u32): u32 {
  if (access > ACCESS_FETCH) return storeResult(STATUS_EACCESS);
  return storeResult(translateSlow(va, access, user));
}

/**
 * The effective rights word (layout.ts RIGHTS_*) of a translation with TLB
 * attributes `attr` under the current mode: bit access + 3·user is set iff
 * that access would be granted (the rights table, then protection keys).
 */
function rightsWord(attr: u32, cached: bool): u32 {
  const acc = attr & A_ACC_MASK;
  let r: u32 = ~<u32>(permPack >> acc) & 1;
  r |= (~<u32>(permPack >> (8 + acc)) & 1) << 1;
  r |= (~<u32>(permPack >> (16 + acc)) & 1) << 2;
  r |= (~<u32>(permPack >> (24 + acc)) & 1) << 3;
  r |= (~<u32>(permPack >> (32 + acc)) & 1) << 4;
  r |= (~<u32>(permPack >> (40 + acc)) & 1) << 5;
  if (pkActive && (acc & ACC_USER) != 0) {
    const pkey = (attr >> A_PKEY_SHIFT) & 15;
    for (let ai: u32 = 0; ai < 6; ai++) {
      if (pkFault(ai % 3, ai / 3, acc, pkey)) r &= ~(<u32>1 << ai);
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
 * With paging off the translation is the identity, every right, cacheable.
 */
export function x86TranslateFast(vaLo: u32, vaHi: u32, access: u32, user: u32): f64 {
  if (access > ACCESS_FETCH) { storeResult(STATUS_EACCESS); return -1; }
  const s = translateSlow((<u64>vaHi << 32) | <u64>vaLo, access, user);
  if (s != STATUS_OK) { storeResult(s); return -1; }
  store<u32>(vcpuBase + R_RIGHTS, pagingOn
    ? rightsWord(rAttr, tlbOn)
    : 0x3f | RIGHTS_DIRTY | RIGHTS_CACHED | (12 << RIGHTS_PSHIFT_SHIFT));
  return <f64>rPa;
}

/**
 * Walks the tables for `va` without touching the TLB, with walk `flags`
 * (WALK_*). WALK_DEBUG alone is the debugger view (QEMU gva2gpa): canonical
 * check, then only P and PS matter. Result in the result record.
 */
export function x86Walk(va: u64, access: u32, user: u32, flags: u32): u32 {
  if (access > ACCESS_FETCH) return storeResult(STATUS_EACCESS);
  if (!pagingOn) return storeResult(translateSlow(va, access, user));
  if (!isCanonical(va)) { rLevel = 0; return storeResult(STATUS_GP); }
  return storeResult(walk(va, access, user, flags));
}

// @ts-ignore: decorator
@inline function statusWord(s: u32): u32 {
  return (s << BS_STATUS_SHIFT) | (s == STATUS_OK ? rShift << BS_PSHIFT_SHIFT : 0)
    | (rLevel << BS_LEVEL_SHIFT) | (s == STATUS_PF ? rErr : 0);
}

/**
 * The TLB-hit run of a batch: from index `i`, serves every entry that hits
 * the current context with the access granted (and a clean-write check),
 * writing pa and the entry's status word; returns the index of the first
 * entry that is not such a hit (or `count`).
 *
 * A leaf with no calls, kept out of line (exported) so V8 keeps every
 * invariant in a register across the loop: per hit, one index, one 64-bit
 * compare, one bit test of `hitPack`. Called only from x86TranslateBatch.
 */
export function x86BatchHits(i: u32, count: u32, base: usize, tlb: usize, keyHi: u64, salt: u64, mask: u64, hitPack: u64, cs: u64): u32 {
  const vaArr = base + VCPU_BATCH_VA;
  const paArr = base + VCPU_BATCH_PA;
  const stArr = base + VCPU_BATCH_STATUS;
  const acArr = base + VCPU_BATCH_ACCESS;
  for (; i < count; i++) {
    const va = load<u64>(vaArr + (<usize>i << 3));
    if ((<i64>(va << cs) >> cs) != <i64>va) break;
    const vpn = (va >> 12) & VPN_MASK;
    const e = tlb + (<usize>((vpn ^ salt) & mask) << 5);
    if (load<u64>(e + E_KEY) != (keyHi | vpn)) break;
    const access = <u32>load<u8>(acArr + <usize>i);
    if (access > ACCESS_FETCH || ((hitPack >> ((access << 4) + (load<u32>(e + E_ATTR) & 15))) & 1) != 0) break;
    store<u64>(paArr + (<usize>i << 3), load<u64>(e + E_PA) | (va & 0xfff));
    store<u32>(stArr + (<usize>i << 2), load<u32>(e + E_STATUS));
  }
  return i;
}

/** Faults counted by the last batchRun. */
let batchFaults: u32 = 0;

/**
 * The batch loop shared by x86TranslateBatch and x86TranslateUntilFault:
 *
 * 1. Serve the run of TLB hits from i (x86BatchHits).
 * 2. Translate entry i the slow way (global context, walk, fill, faults).
 * 3. If it faulted and `stop`, return i; else repeat from i + 1.
 *
 * Returns where it stopped (`count` when it did not); counts faults in batchFaults.
 */
// @ts-ignore: decorator
@inline function batchRun(start: u32, count: u32, user: u32, stop: bool): u32 {
  if (count > BATCH_MAX) count = BATCH_MAX;
  const base = vcpuBase;
  const vaArr = base + VCPU_BATCH_VA;
  const paArr = base + VCPU_BATCH_PA;
  const stArr = base + VCPU_BATCH_STATUS;
  const acArr = base + VCPU_BATCH_ACCESS;
  const hitPack = user != 0 ? hitPackU : hitPackS;
  const fast = pagingOn && tlbOn && !pkActive;
  let hits: u64 = 0;
  let faults: u32 = 0;
  let i = start;
  while (i < count) {
    if (fast) {
      const j = x86BatchHits(i, count, base, tlbBase, curKeyHi, curSalt, tlbMask, hitPack, canonShift);
      hits += <u64>(j - i);
      i = j;
      if (i >= count) break;
    }
    const va = load<u64>(vaArr + (<usize>i << 3));
    const access = <u32>load<u8>(acArr + <usize>i);
    const s = access <= ACCESS_FETCH ? translateSlow(va, access, user) : STATUS_EACCESS;
    store<u64>(paArr + (<usize>i << 3), s == STATUS_OK ? rPa : (s == STATUS_ABORT ? rGpa : 0));
    store<u32>(stArr + (<usize>i << 2), statusWord(s));
    if (s != STATUS_OK) {
      faults++;
      if (stop) break;
    }
    i++;
  }
  if (hits != 0) {
    counterAdd(C_LOOKUPS, hits);
    counterAdd(C_HITS, hits);
  }
  batchFaults = faults;
  return i;
}

/**
 * Translates the first `count` addresses of the vCPU's batch area (va[i],
 * access[i]) at CPL 3 if `user`, writing pa[i] and status[i] (BS_* layout;
 * pa is 0 on a fault, or the table gpa for an abort). Same semantics as
 * x86Translate, per address, in order. Returns the number of faults.
 */
export function x86TranslateBatch(count: u32, user: u32): u32 {
  batchRun(0, count, user, false);
  return batchFaults;
}

/**
 * Translates batch entries from `start` in order, as x86TranslateBatch does,
 * but stops at the first entry that does not translate: returns its index
 * (its status word says why), or `count` if every entry translated. For
 * callers that must handle a fault before the accesses after it happen (a
 * guest access stream under a hypervisor).
 */
export function x86TranslateUntilFault(start: u32, count: u32, user: u32): u32 {
  return batchRun(start, count, user, true);
}

/**
 * INVLPG semantics for linear address `va` on this vCPU (SDM INVLPG; §4.10.4.1):
 * removes the current context's entries and the global entries for the page
 * containing `va`, whatever its size. A non-canonical `va` is a no-op.
 */
export function x86Invlpg(va: u64): void {
  counterAdd(C_FLUSH_PAGE, 1);
  if (!isCanonical(va)) return;
  const vpn = (va >> 12) & VPN_MASK;
  tlbInvalidatePage(curCtx, vpn);
  tlbInvalidatePage(globSlot, vpn);
}

/**
 * INVPCID type 0 semantics: removes non-global entries of PCID `pcid` for the
 * page containing `va`; global entries are kept. The caller has checked the
 * #GP conditions.
 */
export function x86InvalidatePcidAddr(pcid: u32, va: u64): void {
  counterAdd(C_FLUSH_PAGE, 1);
  tlbInvalidatePage(pcid & 0xfff, (va >> 12) & VPN_MASK);
}
