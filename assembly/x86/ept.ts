// EPT: the format hooks of the extended-page-table walk for the walk loop
// (assembly/walk.ts), the EPTP decoder, the guest-physical translation used
// as the second stage of every guest paging-structure access and final
// access (the 2D walk), and INVEPT / INVVPID on the TLB.
//
// Follows Intel SDM Vol.3C chapter "VMX Support for Address Translation":
// §29.3.2 (EPT translation mechanism, entry formats), §29.3.3.1
// (misconfigurations), §29.3.3.2 (violations), §29.3.3.3 (prioritisation),
// §29.3.4 (accessed and dirty flags), §29.4 (caching: guest-physical and
// combined mappings, INVEPT, INVVPID); exit qualification for EPT violations
// from the "VM Exits" chapter. Capabilities assumed (IA32_VMX_EPT_VPID_CAP):
// execute-only, EPT A/D, 4- and 5-level walks, 2 MiB and 1 GiB pages.
//
// EPT entry (every level; bits the level does not define are reserved):
//
//    63  52 51   M M-1         12 11  10   9   8   7    6   5   3   2   1   0
//  ┌───────┬──────┬─────────────┬───┬───┬───┬───┬────┬────┬──────┬───┬───┬───┐
//  │ ign.  │ rsvd │ address     │ign│ UX│ D │ A │ PS │IPAT│  MT  │ X │ W │ R │
//  └───────┴──────┴─────────────┴───┴───┴───┴───┴────┴────┴──────┴───┴───┴───┘
//   PML5E/PML4E: 7:3 reserved; PDPTE/PDE to a table: 6:3 reserved; 1 GiB
//   leaf: 29:12 reserved; 2 MiB leaf: 20:12 reserved. UX only with MBEC.
//
// Not modelled: #VE (bit 63), sub-page permissions, HLAT, PML, supervisor
// shadow stacks, MTRR/PAT memory-type combination, advanced VM-exit
// information (qualification bits 9–12).

import {
  S_EPTP, S_MBEC, S_MAXPHY, S_TLB_ON, MC_FORMAT, MC_TOP, MC_PTW, MC_FLAGS, MC_ROOT, MC_ADDR, MC_RSVD, MC_KEY, MC_GKEY,
  MC_SLOT, MC_VCPU, MC_CTRS, MC_OABITS, MMU_NONE, FMT_EPT, MF_TLB, MF_AD, MF_MBEC, KEY_VALID, KEY_S2, KEY_EPT_SHIFT, KEY_EPT_MASK,
  KEY_SPACE_MASK, KEY_SPACE_SHIFT, KEY_GLOBAL, STATUS_OK, STATUS_EPT_VIOLATION, STATUS_EPT_MISCONFIG, T_EP4TA, T_EP4TA_STAMP,
  T_STAMP, EP4TA_COUNT, E_ATTR, E_PA, C_WALKS, C_WALK_RETRIES, C_FLUSH_PAGE,
  VCPU_SLOTLIST, T_SLOTS_USED, VCPU_CTX, CTX_STRIDE, CTX_KEY,
} from "../layout";
import {
  counterAdd, tlbLookup, tlbFill, tlbDrop, slotCached, invalidated, tlbFlushMatch, tlbFlushAll,
  tlbInvalidateRangeMatch, VPN_MASK, A_LEVEL_SHIFT, A_PSHIFT_SHIFT,
} from "../tlb";
import {
  descend, casCounted, setEptFault, setStage, K_INVALID, RETRY, WALK_AD, WALK_DEBUG, WALK_NOTLB,
  wDesc, wHost, wLevel, wFold, sPa, sShift, sLevel, sAllow,
} from "../walk";

// EPT entry bits.
const EPT_READ: u64 = 1 << 0;
const EPT_WRITE: u64 = 1 << 1;
const EPT_EXEC: u64 = 1 << 2;
const EPT_MT_SHIFT: u64 = 3;
const EPT_PS: u64 = 1 << 7;
const EPT_A: u64 = 1 << 8;
const EPT_D: u64 = 1 << 9;
const EPT_USER_EXEC: u64 = 1 << 10;

// Rights of a guest-physical translation (fold of the walk, sAllow, attr of guest-physical TLB entries).
export const EPT_R: u32 = 1;
export const EPT_W: u32 = 2;
export const EPT_X: u32 = 4;
export const EPT_UX: u32 = 8; //      user-mode execute (MBEC)
export const EPT_DKNOWN: u32 = 16; // a write needs no D update (D set, or EPT A/D off)

// Exit qualification for EPT violations.
const Q_READ: u32 = 1 << 0;
const Q_WRITE: u32 = 1 << 1;
const Q_FETCH: u32 = 1 << 2;
const Q_RWX_SHIFT: u32 = 3;
const Q_UX: u32 = 1 << 6;
const Q_GVA_VALID: u32 = 1 << 7;
const Q_GVA_TRANSLATED: u32 = 1 << 8;

export const EPTP_OK: i32 = 0;
export const EPTP_EMEMTYPE: i32 = 1;
export const EPTP_EWALK: i32 = 2;
export const EPTP_ERESERVED: i32 = 3;

/**
 * VM-entry checks on an EPTP (SDM "Checks on VMX Controls"): memory type 0
 * (UC) or 6 (WB); page-walk length − 1 of 3 or 4; bits 11:7 and 63:M zero
 * (bit 6, A/D, is supported). Returns EPTP_*.
 */
export function eptpCheck(eptp: u64, maxPhy: u32): i32 {
  const mt = eptp & 7;
  if (mt != 0 && mt != 6) return EPTP_EMEMTYPE;
  const pwl = (eptp >> 3) & 7;
  if (pwl != 3 && pwl != 4) return EPTP_EWALK;
  if ((eptp & 0xf80) != 0 || (maxPhy < 64 && (eptp >> maxPhy) != 0)) return EPTP_ERESERVED;
  return EPTP_OK;
}

/**
 * Builds EPT record `c` (of vCPU `vb`) from S_EPTP, S_MBEC, S_MAXPHY and
 * S_TLB_ON at `regs`: root, walk length, A/D enable, masks, and the key of
 * its guest-physical TLB entries (its EP4TA's index). Returns EPTP_*; on an
 * invalid EPTP the record is left unchanged.
 */
export function eptDecodeContext(c: usize, vb: usize, regs: usize): i32 {
  const eptp = load<u64>(regs, S_EPTP);
  const m = load<u32>(regs, S_MAXPHY);
  const rc = eptpCheck(eptp, m);
  if (rc != EPTP_OK) return rc;
  invalidated(vb);
  const addrMask = ((<u64>1 << m) - 1) & ~<u64>0xfff;
  store<u32>(c + MC_VCPU, <u32>vb);
  store<u32>(c + MC_CTRS, <u32>vb);
  store<u32>(c + MC_FORMAT, FMT_EPT);
  store<u32>(c + MC_TOP, ((eptp >> 3) & 7) == 4 ? 5 : 4);
  store<u32>(c + MC_PTW, MMU_NONE);
  store<u64>(c + MC_ROOT, eptp & addrMask);
  store<u64>(c + MC_ADDR, addrMask);
  store<u64>(c + MC_RSVD, 0x000f_ffff_ffff_f000 & ~addrMask);
  store<u32>(c + MC_OABITS, m);
  store<u32>(c + MC_FLAGS, (load<u32>(regs, S_TLB_ON) != 0 ? MF_TLB : 0) | ((eptp & 0x40) != 0 ? MF_AD : 0)
    | (load<u32>(regs, S_MBEC) != 0 ? MF_MBEC : 0));
  const idx = ep4taAcquire(vb, eptp & 0x000f_ffff_ffff_f000);
  store<u64>(c + MC_KEY, KEY_VALID | KEY_S2 | (<u64>idx << KEY_EPT_SHIFT));
  store<u64>(c + MC_GKEY, 0);
  store<u32>(c + MC_SLOT, 0xffff_ffff);
  return EPTP_OK;
}

/** EP4TA index (1..EP4TA_COUNT) of EPT record `p`, as its keys carry it. */
export function ep4taIndexOf(p: usize): u32 {
  return <u32>((load<u64>(p, MC_KEY) & KEY_EPT_MASK) >> KEY_EPT_SHIFT);
}

/**
 * Index of EP4TA `root` in the vCPU's EP4TA table, allocating one: a free
 * entry, else the least recently used — whose mappings (guest-physical and
 * combined) are flushed first, so a reused index never names stale entries.
 */
function ep4taAcquire(vb: usize, root: u64): u32 {
  const stamp = load<u32>(vb, T_STAMP) + 1;
  store<u32>(vb + T_STAMP, stamp);
  let free: u32 = 0, lru: u32 = 0, oldest: u32 = 0xffff_ffff;
  for (let i: u32 = 1; i <= EP4TA_COUNT; i++) {
    const v = load<u64>(vb + T_EP4TA + (<usize>i << 3));
    if (v == (root | 1)) { store<u32>(vb + T_EP4TA_STAMP + (<usize>i << 2), stamp); return i; }
    if (v == 0) { if (free == 0) free = i; continue; }
    const st = load<u32>(vb + T_EP4TA_STAMP + (<usize>i << 2));
    if (st < oldest) { oldest = st; lru = i; }
  }
  const i = free != 0 ? free : lru;
  if (free == 0) tlbFlushMatch(vb, KEY_EPT_MASK, <u64>i << KEY_EPT_SHIFT);
  store<u64>(vb + T_EP4TA + (<usize>i << 3), root | 1);
  store<u32>(vb + T_EP4TA_STAMP + (<usize>i << 2), stamp);
  return i;
}

/** Index of EP4TA `root` if the vCPU has one, else 0. */
function ep4taFind(vb: usize, root: u64): u32 {
  for (let i: u32 = 1; i <= EP4TA_COUNT; i++) {
    if (load<u64>(vb + T_EP4TA + (<usize>i << 3)) == (root | 1)) return i;
  }
  return 0;
}

// ---- format hooks -------------------------------------------------------------------------

// @ts-ignore: decorator
@inline function isLeaf(d: u64, level: u32): bool {
  return level == 1 || ((d & EPT_PS) != 0 && (level == 2 || level == 3));
}

/** Present hook: R, W, X or (with MBEC) UX set. */
// @ts-ignore: decorator
@inline export function eptPresent(mbec: bool, d: u64): bool {
  return (d & (mbec ? EPT_READ | EPT_WRITE | EPT_EXEC | EPT_USER_EXEC : EPT_READ | EPT_WRITE | EPT_EXEC)) != 0;
}

/**
 * Reserved hook (checked after presence, §29.3.3.3 order): misconfigured —
 * W without R, a reserved bit, a leaf memory type 2, 3 or 7.
 */
// @ts-ignore: decorator
@inline export function eptMisconfigured(rsvdBase: u64, d: u64, level: u32): bool {
  if ((d & (EPT_READ | EPT_WRITE)) == EPT_WRITE) return true;
  const leaf = isLeaf(d, level);
  let rsvd = rsvdBase;
  if (level >= 4) rsvd |= 0xf8;
  else if (!leaf) rsvd |= 0x78;
  else if (level == 3) rsvd |= 0x3fff_f000;
  else if (level == 2) rsvd |= 0x1f_f000;
  if ((d & rsvd) != 0) return true;
  if (leaf) {
    const mt = (d >> EPT_MT_SHIFT) & 7;
    if (mt == 2 || mt == 3 || mt == 7) return true;
  }
  return false;
}

/** Fold hook: R W X (and UX with MBEC) of one entry, as EPT_R/W/X/UX, ANDed over the walk. */
// @ts-ignore: decorator
@inline export function eptFold(mbec: bool, d: u64): u64 {
  return (d & 7) | (mbec && (d & EPT_USER_EXEC) != 0 ? <u64>EPT_UX : 0);
}

/** Table A/D hook, called for a non-leaf entry whose A is clear under EPTP.AD (the loop tests both): sets A. */
// @ts-ignore: decorator
@inline export function eptTableAd(vb: usize, host: usize, d: u64): u32 {
  return casCounted(vb, host, d, d | EPT_A) ? STATUS_OK : RETRY;
}

// The access being translated through EPT (set by eptTranslate for the hooks).
let eAccess: u32 = 0;
let ePtw: bool = false;
let eUser: bool = false;

/** Fault hook: a not-present entry is a violation (rights so far AND this entry's: 0 for R/W/X), a misconfiguration otherwise. */
// @ts-ignore: decorator
@inline export function eptFault(c: usize, k: u32, gpa: u64, level: u32, rights: u64): u32 {
  if (k == K_INVALID) return eptViolation(c, gpa, eAccess, ePtw, eUser, level, <u32>rights);
  setEptFault(level, gpa, 0);
  return STATUS_EPT_MISCONFIG;
}

/**
 * Records an EPT violation of an access to `gpa` through EPT record `p`
 * (exit qualification per the SDM table): access bits — with EPTP.AD a guest
 * paging-structure access is a write and reports R and W; bits 5:3 the AND
 * of R/W/X over the entries used; bit 6 the AND of UX (MBEC); bit 7 (a
 * linear address exists: every access here translates one); bit 8 set for
 * the final access, clear for a guest paging-structure access.
 */
export function eptViolation(p: usize, gpa: u64, access: u32, ptw: bool, user: bool, level: u32, rights: u32): u32 {
  const f = load<u32>(p, MC_FLAGS);
  let q: u32;
  if (ptw && (f & MF_AD) != 0) q = Q_READ | Q_WRITE;
  else if (access == 0) q = Q_READ;
  else if (access == 1) q = Q_WRITE;
  else q = Q_FETCH;
  q |= (rights & 7) << Q_RWX_SHIFT;
  if ((f & MF_MBEC) != 0 && (rights & EPT_UX) != 0) q |= Q_UX;
  q |= Q_GVA_VALID;
  if (!ptw) q |= Q_GVA_TRANSLATED;
  setEptFault(level, gpa, q);
  return STATUS_EPT_VIOLATION;
}

/** Whether rights `r` (EPT_*) allow the access (§29.3.3.2; a paging-structure access under EPTP.AD is a write). */
// @ts-ignore: decorator
@inline function allows(r: u32, f: u32, access: u32, ptw: bool, user: bool, needD: bool): bool {
  if (ptw && (f & MF_AD) != 0) return (r & (EPT_R | EPT_W)) == (EPT_R | EPT_W) && (!needD || (r & EPT_DKNOWN) != 0);
  if (access == 0) return (r & EPT_R) != 0;
  if (access == 1) return (r & EPT_W) != 0 && (!needD || (r & EPT_DKNOWN) != 0);
  return (r & ((f & MF_MBEC) != 0 && user ? EPT_UX : EPT_X)) != 0;
}

/** One attempt at an EPT walk of `gpa`: the walk loop, which ends in eptLeaf. */
// @ts-ignore: decorator
@inline function eptWalkOnce(p: usize, vb: usize, gpa: u64, access: u32, flags: u32): u32 {
  return descend(FMT_EPT, false, p, vb, gpa, load<u64>(p, MC_ROOT), load<u32>(p, MC_TOP), 9, 0xf, access, 0, flags);
}

/** Leaf hook: rights over the walk (violation), then A and D (EPTP.AD; D for a write or a paging-structure access), then the output (setStage). */
// @ts-ignore: decorator
@inline export function eptLeaf(p: usize, cb: usize, gpa: u64, access: u32, flags: u32, d: u64, host: usize, level: u32, rights: u32): u32 {
  const f = load<u32>(p, MC_FLAGS);
  if (!allows(rights, f, access, ePtw, eUser, false)) return eptViolation(p, gpa, access, ePtw, eUser, level, rights);
  const ad = (f & MF_AD) != 0;
  let dknown = !ad || (d & EPT_D) != 0;
  if (ad && (flags & WALK_AD) != 0 && (flags & WALK_DEBUG) == 0) {
    const writes = access == 1 || ePtw;
    const want = d | EPT_A | (writes ? EPT_D : 0);
    if (want != d && !casCounted(cb, host, d, want)) return RETRY;
    if (writes) dknown = true;
  }
  const shift = 12 + 9 * (level - 1);
  const pmask = (<u64>1 << shift) - 1;
  setStage((d & load<u64>(p, MC_ADDR) & ~pmask) | (gpa & pmask), shift, level, rights | (dknown ? EPT_DKNOWN : 0));
  return STATUS_OK;
}

/**
 * Translates guest-physical `gpa` through EPT record `p` for an access of
 * kind `access` (0 read, 1 write, 2 fetch); `ptw`: a guest paging-structure
 * access (treated as a write under EPTP.AD); `user`: with MBEC, a fetch from
 * a user-mode linear address. Uses the guest-physical TLB entries of the
 * EP4TA (unless WALK_NOTLB), walks on a miss or when the cached rights do not
 * allow the access, fills after a walk. Sets sPa/sShift/sLevel/sAllow, or the
 * violation / misconfiguration / abort. Returns STATUS_*.
 */
export function eptTranslate(p: usize, gpa: u64, access: u32, user: u32, ptw: bool, flags: u32): u32 {
  const vb = <usize>load<u32>(p, MC_VCPU);
  const f = load<u32>(p, MC_FLAGS);
  eAccess = access; ePtw = ptw; eUser = user != 0;
  const vpn = (gpa >> 12) & VPN_MASK;
  const useTlb = (f & MF_TLB) != 0 && (flags & WALK_NOTLB) == 0 && (flags & WALK_AD) != 0;
  let slot: u32 = 0;
  if (useTlb) {
    slot = slotCached(vb, p + MC_SLOT, load<u64>(p, MC_KEY));
    const e = tlbLookup(vb, slot, vpn);
    if (e != 0) {
      const attr = load<u32>(e, E_ATTR);
      if (allows(attr & 0x1f, f, access, ptw, user != 0, true)) {
        setStage(load<u64>(e, E_PA) | (gpa & 0xfff), (attr >> A_PSHIFT_SHIFT) & 31, (attr >> A_LEVEL_SHIFT) & 7, attr & 0x1f);
        return STATUS_OK;
      }
      tlbDrop(vb, e);
    }
  }
  counterAdd(vb, C_WALKS, 1);
  while (true) {
    const s = eptWalkOnce(p, vb, gpa, access, flags);
    if (s == RETRY) { counterAdd(vb, C_WALK_RETRIES, 1); eAccess = access; ePtw = ptw; eUser = user != 0; continue; }
    if (s == STATUS_OK && useTlb) {
      tlbFill(vb, slot, vpn, sPa & ~<u64>0xfff, sAllow | (sShift << A_PSHIFT_SHIFT) | (sLevel << A_LEVEL_SHIFT), sShift, 0);
    }
    return s;
  }
}

// ---- INVEPT / INVVPID on the TLB --------------------------------------------------------------

/**
 * INVEPT (SDM Vol.3C §29.4.3.3): type 1 drops the guest-physical and
 * combined mappings of EP4TA `root` (every VPID and PCID), type 2 those of
 * every EP4TA. Linear mappings (no EPT) are not touched. The caller checked
 * the VMfail conditions.
 */
export function vmxInvept(vb: usize, type: u32, root: u64): void {
  if (type == 2) {
    tlbFlushNonEpt(vb);
    return;
  }
  const i = ep4taFind(vb, root & 0x000f_ffff_ffff_f000);
  if (i != 0) tlbFlushMatch(vb, KEY_EPT_MASK, <u64>i << KEY_EPT_SHIFT);
  invalidated(vb);
}

/** Every slot whose key carries an EP4TA index (flushMatch cannot say "field ≠ 0" in one pattern: one pass per index). */
function tlbFlushNonEpt(vb: usize): void {
  for (let i: u32 = 1; i <= EP4TA_COUNT; i++) {
    if (load<u64>(vb + T_EP4TA + (<usize>i << 3)) != 0) tlbFlushMatch(vb, KEY_EPT_MASK, <u64>i << KEY_EPT_SHIFT);
  }
  invalidated(vb);
}

/**
 * INVVPID (SDM Vol.3C §29.4.3.3) on linear and combined mappings (every
 * EP4TA): type 0 those of `vpid` for the page of `va` (every PCID, globals
 * too); 1 every mapping of `vpid`; 2 every VPID but 0; 3 every mapping of
 * `vpid` but globals. The caller checked the VMfail conditions.
 */
export function vmxInvvpid(vb: usize, type: u32, vpid: u32, va: u64): void {
  const space = KEY_VALID | (<u64>(vpid & 0xffff) << KEY_SPACE_SHIFT);
  const m = KEY_VALID | KEY_SPACE_MASK | KEY_S2;
  if (type == 0) {
    counterAdd(vb, C_FLUSH_PAGE, 1);
    tlbInvalidateRangeMatch(vb, m, space, (va >> 12) & VPN_MASK, 1, 0);
  } else if (type == 1) {
    tlbFlushMatch(vb, m, space);
  } else if (type == 3) {
    tlbFlushMatch(vb, m | KEY_GLOBAL, space);
  } else {
    for (let v: u32 = 1; v <= 0xffff; v = nextVpid(vb, v)) tlbFlushMatch(vb, m, KEY_VALID | (<u64>v << KEY_SPACE_SHIFT));
  }
  invalidated(vb);
}

/** The smallest VPID > `after` that some slot in use carries, or 0x10000. */
function nextVpid(vb: usize, after: u32): u32 {
  let best: u32 = 0x10000;
  const n = load<u32>(vb, T_SLOTS_USED);
  for (let i: u32 = 0; i < n; i++) {
    const s = <u32>load<u16>(vb + VCPU_SLOTLIST + (<usize>i << 1));
    const k = load<u64>(vb + VCPU_CTX + <usize>s * CTX_STRIDE + CTX_KEY);
    const v = <u32>((k & KEY_SPACE_MASK) >> KEY_SPACE_SHIFT);
    if ((k & KEY_S2) == 0 && v > after && v < best) best = v;
  }
  return best;
}
