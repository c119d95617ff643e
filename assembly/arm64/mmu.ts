// arm64 address translation for the EL1&0 regime, 4 KiB granule: stage 1
// (VA → IPA), stage 2 (IPA → PA) and the combined walk in which every
// stage-1 table access is itself translated by stage 2; the TLB-first
// translate paths (single and batch).
//
// Follows the Arm ARM (DDI 0487) AArch64.S1Translate, AArch64.S2Translate,
// AArch64.S1CheckPermissions and the hardware AF/DBM updates of
// FEAT_HAFDBS, as pinned down in docs/arm64-walk-contract.md (which names
// every choice the Arm ARM leaves open; QEMU target/arm/ptw.c breaks ties).
// The walker shape is the x86 one: one loop over levels, one chokepoint for
// descriptor loads and compare-exchange (assembly/phys.ts).
//
// Not modelled: 16K/64K granules (a TGn selecting one walks as 4 KiB, as a
// PE without them does), LPA/LPA2 (52-bit), FEAT_TTST, the Contiguous hint
// (entries are cached per 4 KiB piece anyway), PAN3/EPAN, FEAT_HAFT, stage-2
// FWB memory-type combination.

import {
  S_TTBR0, S_TTBR1, S_TCR, S_SCTLR, S_VTTBR, S_VTCR, S_HCR, S_PAN, S_TLB_ON,
  R_PA, R_IPA, R_STATUS, R_LEVEL, R_SHIFT, R_FSC, R_STAGE, R_FFLAGS, R_KIND, R_RIGHTS,
  RIGHTS_RS, RIGHTS_WS, RIGHTS_XS, RIGHTS_RU, RIGHTS_WU, RIGHTS_XU, RIGHTS_GLOBAL, RIGHTS_DIRTY, RIGHTS_CACHED,
  RIGHTS_LEVEL_SHIFT, RIGHTS_PSHIFT_SHIFT,
  STATUS_OK, STATUS_ARM_FAULT, STATUS_EACCESS, FK_TRANSLATION, FK_ADDRESS_SIZE, FK_ACCESS_FLAG, FK_PERMISSION, FK_EXTERNAL,
  C_LOOKUPS, C_HITS, C_MISSES, C_WALKS, C_PT_REFS, C_AD_WRITES, C_WALK_RETRIES, C_FAULTS,
  VCPU_BATCH_VA, VCPU_BATCH_PA, VCPU_BATCH_STATUS, VCPU_BATCH_ACCESS, BATCH_MAX,
  BS_STATUS_SHIFT, BS_PSHIFT_SHIFT, BS_LEVEL_SHIFT, E_KEY, E_PA, E_ATTR, E_STATUS,
} from "../layout";
import { hostForLoadLazy, loadEntry, casEntry, slotBase, eagerBytes, ramHost } from "../phys";
import {
  vcpuBase, tlbBase, tlbMask, curKeyHi, curSalt, globKeyHi, globSalt, globLive, slotAddr, counterAdd,
  tlbFillReport, tlbFillIn, tlbLookupIn, tlbDrop, selectCtx, selectGlobal, VPN_MASK, A_GLOBAL, A_LEVEL_SHIFT, A_PSHIFT_SHIFT,
  invalidated,
} from "../tlb";
import {
  D_VALID, D_TABLE, D_AP1, D_AP2, D_S2AP_R, D_S2AP_W, D_AF, D_NG, D_DBM, D_PXN, D_UXN, D_S2XN_SHIFT,
  D_PXNTABLE, D_UXNTABLE, D_APTABLE0, D_APTABLE1, D_MEMATTR_SHIFT, D_ADDR_MASK,
  TCR_EPD0, TCR_EPD1, TCR_IPS_SHIFT, TCR_TBI0, TCR_TBI1, TCR_HA, TCR_HD, TCR_HPD0, TCR_HPD1,
  TCR_TBID0, TCR_TBID1, TCR_E0PD0, TCR_E0PD1, SCTLR_M, SCTLR_WXN, HCR_VM, HCR_PTW, VTCR_PS_SHIFT, VTCR_HA, VTCR_HD,
  AL_EL0_R, AL_EL0_W, AL_EL0_X, AL_EL1_R, AL_EL1_W, AL_EL1_X, AL_EL1P_R, AL_EL1P_W,
  S2AL_R, S2AL_W, S2AL_X0, S2AL_X1, S2AL_DEVICE, paBitsOf, levelShift,
} from "./desc";

export const ARM_READ: u32 = 0;
export const ARM_WRITE: u32 = 1;
export const ARM_FETCH: u32 = 2;

/** Walk flags for armWalk. */
export const AWALK_UPDATE: u32 = 1; //  hardware AF/DBM updates
export const AWALK_DEBUG: u32 = 2; //   stage 1 only, no updates, table addresses are PAs
export const AWALK_NOTLB: u32 = 4; //   bypass the stage-2-only TLB too (armWalk)

export const REGS_OK: i32 = 0;

/** TnSZ bounds of the 4 KiB granule without FEAT_LVA/LPA2 (min) and FEAT_TTST (max). */
const TSZ_MIN: u32 = 16;
const TSZ_MAX: u32 = 39;

// Mode derived from the registers by armLoadRegs().
let ttbr0: u64 = 0, ttbr1: u64 = 0, tcr: u64 = 0, vttbr: u64 = 0;
let s1On: bool = false, s2On: bool = false, pan: bool = false, wxn: bool = false, ptwDevice: bool = false;
let ha: bool = false, hd: bool = false, s2ha: bool = false, s2hd: bool = false;
let oaBits: u32 = 48, s2OaBits: u32 = 48;
let s1Tsz0: u32 = 16, s1Tsz1: u32 = 16;
let s2IpaBits: u32 = 48, s2Start: u32 = 0, s2TopBits: u32 = 9;
/** VTCR_EL2.SL0 invalid or inconsistent with T0SZ: every stage-2 walk is a translation fault at level 0. */
let s2Bad: bool = false;
let tlbOn: bool = true;
/** Context slot of stage-2-only entries for the current VMID (set by TS). */
let s2Slot: u32 = 0;

// Result of the last walk / slow translate.
let aPa: u64 = 0, aIpa: u64 = 0;
let aLevel: u32 = 0, aShift: u32 = 0;
let aFsc: u32 = 0, aStage: u32 = 0, aFlags: u32 = 0, aKind: u32 = 0;
let aAttr: u32 = 0;
/** Stage-1 leaf shift of the last translation: the invalidation granule of its TLB entry. */
let aS1Shift: u32 = 12;
// Result of the last stage-2 translation.
let s2Pa: u64 = 0, s2Shift: u32 = 0, s2Allow: u32 = 0, s2Level: u32 = 0;

const RETRY: u32 = 0xff;
const FF_S1PTW: u32 = 1;
const FF_WRITE: u32 = 2;

/** TnSZ as the walk uses it: clamped to TSZ_MIN..TSZ_MAX (docs/arm64-walk-contract.md, "Registers"). */
// @ts-ignore: decorator
@inline function effectiveTsz(field: u32): u32 {
  return field < TSZ_MIN ? TSZ_MIN : field > TSZ_MAX ? TSZ_MAX : field;
}

/**
 * Derives the translation mode from the arm64 registers in the STATE record
 * (written by TS). Performs no TLB maintenance. Every register value is
 * accepted, as a PE accepts it (docs/arm64-walk-contract.md, "Registers"):
 * TG0/TG1/VTCR.TG0 always select the 4 KiB granule, TnSZ is clamped to
 * 16..39, and an invalid or inconsistent VTCR.SL0 makes every stage-2 walk a
 * level-0 translation fault (Arm ARM AArch64.S2InvalidSL /
 * AArch64.S2InconsistentSL). Returns REGS_OK.
 */
export function armLoadRegs(): i32 {
  const b = vcpuBase;
  invalidated();
  ttbr0 = load<u64>(b + S_TTBR0);
  ttbr1 = load<u64>(b + S_TTBR1);
  tcr = load<u64>(b + S_TCR);
  const sctlr = load<u64>(b + S_SCTLR);
  vttbr = load<u64>(b + S_VTTBR);
  const vtcr = load<u64>(b + S_VTCR);
  const hcr = load<u64>(b + S_HCR);
  pan = load<u32>(b + S_PAN) != 0;
  tlbOn = load<u32>(b + S_TLB_ON) != 0;
  s1On = (sctlr & SCTLR_M) != 0;
  s2On = (hcr & HCR_VM) != 0;
  wxn = (sctlr & SCTLR_WXN) != 0;
  ptwDevice = (hcr & HCR_PTW) != 0;
  ha = (tcr & TCR_HA) != 0;
  hd = ha && (tcr & TCR_HD) != 0;
  oaBits = paBitsOf(<u32>(tcr >> TCR_IPS_SHIFT));
  s1Tsz0 = effectiveTsz(<u32>(tcr & 63));
  s1Tsz1 = effectiveTsz(<u32>((tcr >> 16) & 63));
  s2IpaBits = 64 - effectiveTsz(<u32>(vtcr & 63));
  const sl0 = <u32>((vtcr >> 6) & 3);
  s2Start = sl0 == 3 ? 0 : 2 - sl0;
  const top = <i32>s2IpaBits - <i32>levelShift(s2Start);
  s2Bad = sl0 == 3 || top < 1 || top > 13;
  s2TopBits = s2Bad ? 1 : <u32>top;
  s2OaBits = paBitsOf(<u32>(vtcr >> VTCR_PS_SHIFT));
  s2ha = (vtcr & VTCR_HA) != 0;
  s2hd = s2ha && (vtcr & VTCR_HD) != 0;
  return REGS_OK;
}

/**
 * Selects the TLB contexts TS allocated for the current VMID/ASID: `cur` for
 * non-global stage-1 entries, `glob` for global ones, `s2` for stage-2-only
 * entries. No flush.
 */
export function armSelectContexts(cur: u32, glob: u32, s2: u32): void {
  s2Slot = s2;
  selectGlobal(glob);
  selectCtx(cur);
}

// @ts-ignore: decorator
@inline function hostOf(pa: u64): usize {
  const off = pa - slotBase;
  return off < eagerBytes ? ramHost + <usize>off : hostForLoadLazy(off);
}

function fault(stage: u32, kind: u32, level: u32, flags: u32): u32 {
  aStage = stage;
  aKind = kind;
  aLevel = level;
  aFlags = flags;
  let base: u32 = 0x04;
  if (kind == FK_ADDRESS_SIZE) base = 0x00;
  else if (kind == FK_ACCESS_FLAG) base = 0x08;
  else if (kind == FK_PERMISSION) base = 0x0c;
  else if (kind == FK_EXTERNAL) base = 0x14;
  aFsc = base + level;
  return STATUS_ARM_FAULT;
}

// ---- stage 2 ---------------------------------------------------------------

/**
 * Stage-2 walk of `ipa` for an access (ARM_*) at EL0 if `el0`; `ptw` marks a
 * stage-1 descriptor access (S2-PTW rules). On success sets s2Pa, s2Shift,
 * s2Allow, s2Level; on a fault sets the fault globals (stage 2, aIpa).
 *
 * 1. Invalid or inconsistent SL0, or IPA beyond the configured size →
 *    translation fault, level 0.
 * 2. Walk from SL0's level over up to 16 concatenated start tables.
 * 3. Leaf: address size, then AF (or hardware AF when VTCR.HA), then S2AP/XN
 *    (a write through DBM with VTCR.HD sets S2AP[1]), then the updates.
 */
function s2Walk(ipa: u64, access: u32, el0: bool, ptw: bool, update: bool): u32 {
  const ff = (ptw ? FF_S1PTW : 0) | (access == ARM_WRITE ? FF_WRITE : 0);
  aIpa = ipa;
  if (s2Bad || (ipa >> s2IpaBits) != 0) return fault(2, FK_TRANSLATION, 0, ff);
  counterAdd(C_WALKS, 1);
  let level = s2Start;
  let idxBits = s2TopBits;
  let table = (vttbr & 0x0000_ffff_ffff_fffe) & ~((<u64>1 << (idxBits + 3)) - 1);
  if ((table >> s2OaBits) != 0) return fault(2, FK_ADDRESS_SIZE, level, ff);
  let refs: u64 = 0;
  while (true) {
    const shift = <u64>levelShift(level);
    const gpa = table + (((ipa >> shift) & ((<u64>1 << idxBits) - 1)) << 3);
    const host = hostOf(gpa);
    if (host == 0) { counterAdd(C_PT_REFS, refs); return fault(2, FK_EXTERNAL, level, ff); }
    const desc = loadEntry(host);
    refs++;
    if ((desc & D_VALID) == 0 || (level == 0 && (desc & D_TABLE) == 0) || (level == 3 && (desc & D_TABLE) == 0)) {
      counterAdd(C_PT_REFS, refs);
      return fault(2, FK_TRANSLATION, level, ff);
    }
    if (level < 3 && (desc & D_TABLE) != 0) {
      table = desc & D_ADDR_MASK;
      if ((table >> s2OaBits) != 0) { counterAdd(C_PT_REFS, refs); return fault(2, FK_ADDRESS_SIZE, level, ff); }
      level++;
      idxBits = 9;
      continue;
    }
    counterAdd(C_PT_REFS, refs);
    const pmask = (<u64>1 << shift) - 1;
    const oa = desc & D_ADDR_MASK & ~pmask;
    if ((oa >> s2OaBits) != 0) return fault(2, FK_ADDRESS_SIZE, level, ff);
    let want = desc;
    if ((desc & D_AF) == 0) {
      if (!s2ha) return fault(2, FK_ACCESS_FLAG, level, ff);
      want |= D_AF;
    }
    if (access == ARM_WRITE && s2hd && (desc & D_DBM) != 0) want |= D_S2AP_W;
    const xn = <u32>(desc >> D_S2XN_SHIFT) & 3;
    const device = ((desc >> D_MEMATTR_SHIFT) & 0xc) == 0;
    let ok: bool;
    if (access == ARM_READ) ok = (want & D_S2AP_R) != 0;
    else if (access == ARM_WRITE) ok = (want & D_S2AP_W) != 0;
    else ok = el0 ? (xn == 0 || xn == 1) : (xn == 0 || xn == 3);
    if (!ok) return fault(2, FK_PERMISSION, level, ff);
    if (update && want != desc) {
      if (!casEntry(host, desc, want)) return RETRY;
      counterAdd(C_AD_WRITES, 1);
    } else if (!update) {
      want = desc;
    }
    // HCR_EL2.PTW: a stage-1 table in Device memory is a stage-2 permission
    // fault, raised after the stage-2 walk completed (as QEMU's S1_ptw_translate).
    if (ptw && ptwDevice && device) return fault(2, FK_PERMISSION, level, ff);
    s2Pa = oa | (ipa & pmask);
    s2Shift = <u32>shift;
    s2Level = level;
    let allow: u32 = 0;
    if ((want & D_S2AP_R) != 0) allow |= S2AL_R;
    if ((want & D_S2AP_W) != 0 && (want & D_AF) != 0) allow |= S2AL_W;
    if (xn == 0 || xn == 1) allow |= S2AL_X0;
    if (xn == 0 || xn == 3) allow |= S2AL_X1;
    if (device) allow |= S2AL_DEVICE;
    if ((want & D_AF) == 0) allow = 0;
    s2Allow = allow;
    return STATUS_OK;
  }
}

/** Whether stage-2 allow bits `allow` grant `access` at EL0 if `el0` (S2-PTW rules if `ptw`). */
function s2Grants(allow: u32, access: u32, el0: bool, ptw: bool): bool {
  if (ptw && ptwDevice && (allow & S2AL_DEVICE) != 0) return false;
  if (access == ARM_READ) return (allow & S2AL_R) != 0;
  if (access == ARM_WRITE) return (allow & S2AL_W) != 0;
  return (allow & (el0 ? S2AL_X0 : S2AL_X1)) != 0;
}

/**
 * Stage-2 translation of `ipa` through the stage-2-only TLB context, walking
 * on a miss or when the cached entry does not grant the access. Restarts the
 * stage-2 walk on a lost compare-exchange.
 */
function s2Translate(ipa: u64, access: u32, el0: bool, ptw: bool, flags: u32): u32 {
  const vpn = (ipa >> 12) & VPN_MASK;
  const useTlb = tlbOn && (flags & AWALK_NOTLB) == 0;
  const update = (flags & AWALK_UPDATE) != 0;
  if (useTlb) {
    const e = tlbLookupIn(s2Slot, vpn);
    if (e != 0) {
      const attr = load<u32>(e + E_ATTR);
      if (s2Grants(attr & 0xff, access, el0, ptw)) {
        s2Pa = load<u64>(e + E_PA) | (ipa & 0xfff);
        s2Shift = (attr >> A_PSHIFT_SHIFT) & 31;
        s2Level = (attr >> A_LEVEL_SHIFT) & 7;
        s2Allow = attr & 0xff;
        return STATUS_OK;
      }
      tlbDrop(e);
    }
  }
  while (true) {
    const s = s2Walk(ipa, access, el0, ptw, update);
    if (s == RETRY) { counterAdd(C_WALK_RETRIES, 1); continue; }
    if (s == STATUS_OK && useTlb && update) {
      tlbFillIn(s2Slot, vpn, s2Pa & ~<u64>0xfff, s2Allow | (s2Shift << A_PSHIFT_SHIFT) | (s2Level << A_LEVEL_SHIFT));
    }
    return s;
  }
}

// ---- stage 1 ---------------------------------------------------------------

/** EL0 data permissions of an effective AP[2:1]: 0 none, 1 read, 3 read/write. */
// @ts-ignore: decorator
@inline function el0Rw(ap1: bool, ap2: bool): u32 {
  return ap1 ? (ap2 ? 1 : 3) : 0;
}

/** Stage-1 allow bits (AL_*) for effective AP bits and execute-never flags. */
function s1AllowBits(ap1: bool, ap2: bool, uxn: bool, pxn: bool): u32 {
  const u = el0Rw(ap1, ap2);
  const k: u32 = ap2 ? 1 : 3;
  let al: u32 = 0;
  if (u & 1) al |= AL_EL0_R;
  if (u & 2) al |= AL_EL0_W;
  if (!uxn && !(wxn && (u & 2) != 0)) al |= AL_EL0_X;
  al |= AL_EL1_R;
  if (k & 2) al |= AL_EL1_W;
  if (!pxn && (u & 2) == 0 && !(wxn && (k & 2) != 0)) al |= AL_EL1_X;
  // PAN: EL1 data accesses to pages EL0 can access fault; fetches unaffected.
  if (u == 0) {
    al |= AL_EL1P_R;
    if (k & 2) al |= AL_EL1P_W;
  }
  return al;
}

// @ts-ignore: decorator
@inline function allowBit(access: u32, el0: bool, panOn: bool): u32 {
  if (el0) return AL_EL0_R << access;
  if (access == ARM_FETCH) return AL_EL1_X;
  return panOn ? AL_EL1P_R << access : AL_EL1_R << access;
}

/**
 * Host address of the stage-1 descriptor at `dipa` (an IPA when stage 2 is
 * on), translating it through stage 2 for a read (S2-PTW), or 0 with the
 * fault globals set.
 */
function s1DescHost(dipa: u64, level: u32, flags: u32, wr: u32): usize {
  let pa = dipa;
  if (s2On && (flags & AWALK_DEBUG) == 0) {
    if (s2Translate(dipa, ARM_READ, false, true, flags) != STATUS_OK) return 0;
    pa = s2Pa;
  }
  const host = hostOf(pa);
  if (host == 0) fault(1, FK_EXTERNAL, level, wr);
  return host;
}

/**
 * One attempt at a stage-1 (+ stage-2) translation of `va`. Returns STATUS_*
 * or RETRY when a hardware update lost a race. Steps per
 * docs/arm64-walk-contract.md, "Stage 1".
 */
function s1WalkOnce(va: u64, access: u32, el0: bool, flags: u32): u32 {
  const debug = (flags & AWALK_DEBUG) != 0;
  const update = (flags & AWALK_UPDATE) != 0 && !debug;
  const wr: u32 = access == ARM_WRITE ? FF_WRITE : 0;
  let ipa: u64;
  let s1Shift: u32 = 12, s1Level: u32 = 0;
  let al: u32 = 0xff;
  let global = false;
  if (!s1On) {
    if ((va >> 48) != 0) return fault(1, FK_ADDRESS_SIZE, 0, wr);
    ipa = va;
  } else {
    // 1. Region, top-byte ignore, range.
    const upper = ((va >> 55) & 1) != 0;
    let tbi = (tcr & (upper ? TCR_TBI1 : TCR_TBI0)) != 0;
    if (access == ARM_FETCH && (tcr & (upper ? TCR_TBID1 : TCR_TBID0)) != 0) tbi = false;
    const tsz = upper ? s1Tsz1 : s1Tsz0;
    const vaBits = 64 - tsz;
    const topEnd: u64 = tbi ? 56 : 64;
    const topMask = ((topEnd == 64 ? 0 : (<u64>1 << topEnd)) - (<u64>1 << vaBits));
    if ((va & topMask) != (upper ? topMask : 0)) return fault(1, FK_TRANSLATION, 0, wr);
    // 2. Walk disabled for this region, or EL0 access to an E0PD region.
    if ((tcr & (upper ? TCR_EPD1 : TCR_EPD0)) != 0) return fault(1, FK_TRANSLATION, 0, wr);
    if (el0 && (tcr & (upper ? TCR_E0PD1 : TCR_E0PD0)) != 0) return fault(1, FK_TRANSLATION, 0, wr);
    // 3. Start level and top table.
    let level = 4 - (vaBits - 12 + 8) / 9;
    let idxBits = vaBits - levelShift(level);
    const ttbr = upper ? ttbr1 : ttbr0;
    let table = (ttbr & 0x0000_ffff_ffff_fffe) & ~((<u64>1 << (idxBits + 3)) - 1);
    if ((table >> oaBits) != 0) return fault(1, FK_ADDRESS_SIZE, level, wr);
    const hpd = (tcr & (upper ? TCR_HPD1 : TCR_HPD0)) != 0;
    let tattr: u64 = 0;
    let refs: u64 = 0;
    let desc: u64 = 0;
    let host: usize = 0;
    let dipa: u64 = 0;
    // 4. Descriptor loop.
    while (true) {
      const shift = <u64>levelShift(level);
      dipa = table + (((va >> shift) & ((<u64>1 << idxBits) - 1)) << 3);
      host = s1DescHost(dipa, level, flags, wr);
      if (host == 0) { counterAdd(C_PT_REFS, refs); return STATUS_ARM_FAULT; }
      desc = loadEntry(host);
      refs++;
      const isTable = (desc & D_TABLE) != 0;
      if ((desc & D_VALID) == 0 || (level == 0 && !isTable) || (level == 3 && !isTable)) {
        counterAdd(C_PT_REFS, refs);
        return fault(1, FK_TRANSLATION, level, wr);
      }
      if (level < 3 && isTable) {
        table = desc & D_ADDR_MASK;
        if ((table >> oaBits) != 0) { counterAdd(C_PT_REFS, refs); return fault(1, FK_ADDRESS_SIZE, level, wr); }
        if (!hpd) tattr |= desc & (D_PXNTABLE | D_UXNTABLE | D_APTABLE0 | D_APTABLE1);
        level++;
        idxBits = 9;
        continue;
      }
      break;
    }
    counterAdd(C_PT_REFS, refs);
    // 5. Leaf: address size, access flag, permissions.
    const shift = <u64>levelShift(level);
    const pmask = (<u64>1 << shift) - 1;
    const oa = desc & D_ADDR_MASK & ~pmask;
    if ((oa >> oaBits) != 0) return fault(1, FK_ADDRESS_SIZE, level, wr);
    let want = desc;
    if ((desc & D_AF) == 0) {
      if (!ha) return fault(1, FK_ACCESS_FLAG, level, wr);
      want |= D_AF;
    }
    if (access == ARM_WRITE && hd && (desc & D_DBM) != 0) want &= ~D_AP2;
    const ap1 = (want & D_AP1) != 0 && (tattr & D_APTABLE0) == 0;
    const ap2 = (want & D_AP2) != 0 || (tattr & D_APTABLE1) != 0;
    const uxn = (desc & D_UXN) != 0 || (tattr & D_UXNTABLE) != 0;
    const pxn = (desc & D_PXN) != 0 || (tattr & D_PXNTABLE) != 0;
    const accessAl = s1AllowBits(ap1, ap2, uxn, pxn);
    if ((accessAl & allowBit(access, el0, pan)) == 0) return fault(1, FK_PERMISSION, level, wr);
    // 6. Hardware updates (AF, dirty through DBM), which need stage-2 write permission on the table page.
    if (update && want != desc) {
      if (s2On && s2Translate(dipa, ARM_WRITE, false, true, flags) != STATUS_OK) { aFlags |= FF_WRITE; return STATUS_ARM_FAULT; }
      if (!casEntry(host, desc, want)) return RETRY;
      counterAdd(C_AD_WRITES, 1);
    }
    const finalDesc = update ? want : desc;
    // Allow bits from the descriptor as it now is: a clean DBM page is not writable until a write re-walks.
    al = (finalDesc & D_AF) != 0
      ? s1AllowBits((finalDesc & D_AP1) != 0 && (tattr & D_APTABLE0) == 0,
        (finalDesc & D_AP2) != 0 || (tattr & D_APTABLE1) != 0, uxn, pxn)
      : 0;
    ipa = oa | (va & pmask);
    s1Shift = <u32>shift;
    s1Level = level;
    global = (desc & D_NG) == 0;
  }
  aIpa = ipa;
  // 7. Stage 2 of the final IPA.
  let pa = ipa;
  let shiftOut = s1Shift;
  if (s2On && !debug) {
    const s = s2Translate(ipa, access, el0, false, flags);
    if (s != STATUS_OK) return s;
    pa = s2Pa;
    if (s2Shift < shiftOut || !s1On) shiftOut = s2Shift;
    if (!s1On) s1Level = s2Level;
    const s2a = s2Allow;
    let c: u32 = 0;
    if (s2a & S2AL_R) c |= AL_EL0_R | AL_EL1_R | AL_EL1P_R;
    if (s2a & S2AL_W) c |= AL_EL0_W | AL_EL1_W | AL_EL1P_W;
    if (s2a & S2AL_X0) c |= AL_EL0_X;
    if (s2a & S2AL_X1) c |= AL_EL1_X;
    al &= c;
  }
  aPa = pa;
  aShift = shiftOut;
  aS1Shift = s1Shift;
  aLevel = s1Level;
  aAttr = al | (global ? A_GLOBAL : 0);
  return STATUS_OK;
}

/** Full translation with restarts on lost hardware-update races. */
function s1Walk(va: u64, access: u32, el0: bool, flags: u32): u32 {
  if (s1On) counterAdd(C_WALKS, 1);
  while (true) {
    const s = s1WalkOnce(va, access, el0, flags);
    if (s != RETRY) return s;
    counterAdd(C_WALK_RETRIES, 1);
  }
}

/** VA with the top byte replaced by copies of bit 55 (the TLB key of a tagged VA). */
// @ts-ignore: decorator
@inline function untag(va: u64): u64 {
  return <u64>((<i64>(va << 8)) >> 8);
}

/**
 * Translates one address: TLB (current ASID context, then the VMID's
 * global context), else the combined walk and a fill. A cached entry that
 * does not grant the access re-walks (and is dropped first), so faults and
 * hardware updates are decided by the tables in memory.
 */
function armTranslateSlow(va: u64, access: u32, el0: bool): u32 {
  // A top-byte-tagged VA uses the entry of its untagged page when TBI applies
  // to this access (TBIn, and not a fetch under TBIDn); otherwise it walks.
  let canonical = (<i64>(va << 8) >> 8) == <i64>va;
  let key = va;
  if (!canonical) {
    const upper = ((va >> 55) & 1) != 0;
    const tbi = (tcr & (upper ? TCR_TBI1 : TCR_TBI0)) != 0 && !(access == ARM_FETCH && (tcr & (upper ? TCR_TBID1 : TCR_TBID0)) != 0);
    if (tbi) { key = untag(va); canonical = true; }
  }
  if (tlbOn && s1On && canonical && !e0pdBlocks(va, el0)) {
    const vpn = (key >> 12) & VPN_MASK;
    counterAdd(C_LOOKUPS, 1);
    let e = slotAddr(vpn, curSalt);
    let hit = load<u64>(e + E_KEY) == (curKeyHi | vpn);
    if (!hit && globLive) {
      e = slotAddr(vpn, globSalt);
      hit = load<u64>(e + E_KEY) == (globKeyHi | vpn);
    }
    if (hit) {
      const attr = load<u32>(e + E_ATTR);
      if ((attr & allowBit(access, el0, pan)) != 0) {
        counterAdd(C_HITS, 1);
        aAttr = attr;
        aPa = load<u64>(e + E_PA) | (va & 0xfff);
        const st = load<u32>(e + E_STATUS);
        aLevel = (st >> BS_LEVEL_SHIFT) & 0xff;
        aShift = (st >> BS_PSHIFT_SHIFT) & 31;
        return STATUS_OK;
      }
      tlbDrop(e);
    }
    counterAdd(C_MISSES, 1);
  }
  const s = s1Walk(va, access, el0, AWALK_UPDATE);
  if (s != STATUS_OK) { counterAdd(C_FAULTS, 1); return s; }
  if (tlbOn && s1On) {
    const key = (untag(va) >> 12) & VPN_MASK;
    const attr = aAttr | (aS1Shift << A_PSHIFT_SHIFT) | (aLevel << A_LEVEL_SHIFT);
    tlbFillReport(key, aPa & ~<u64>0xfff, attr, aShift);
  }
  return STATUS_OK;
}

/** True iff `va` is an EL0 access to a region TCR.E0PDn closes (checked before the TLB, as the architecture requires). */
// @ts-ignore: decorator
@inline function e0pdBlocks(va: u64, el0: bool): bool {
  return el0 && (tcr & (((va >> 55) & 1) != 0 ? TCR_E0PD1 : TCR_E0PD0)) != 0;
}

function storeResult(s: u32): u32 {
  const b = vcpuBase;
  store<u32>(b + R_STATUS, s);
  if (s == STATUS_OK) {
    store<u64>(b + R_PA, aPa);
    store<u64>(b + R_IPA, aIpa);
    store<u32>(b + R_LEVEL, aLevel);
    store<u32>(b + R_SHIFT, aShift);
  } else {
    store<u64>(b + R_PA, 0);
    store<u64>(b + R_IPA, aStage == 2 ? aIpa : 0);
    store<u32>(b + R_LEVEL, aLevel);
    store<u32>(b + R_SHIFT, 0);
    store<u32>(b + R_FSC, aFsc);
    store<u32>(b + R_STAGE, aStage);
    store<u32>(b + R_FFLAGS, aFlags);
    store<u32>(b + R_KIND, aKind);
  }
  return s;
}

/**
 * Translates `va` for an access (0 read, 1 write, 2 fetch) at EL0 if `el0`
 * else EL1 (with PSTATE.PAN from the STATE record): TLB, combined walk,
 * hardware AF/DBM updates, fill. Result in the result record; returns
 * STATUS_OK or STATUS_ARM_FAULT.
 */
export function armTranslate(va: u64, access: u32, el0: u32): u32 {
  if (access > ARM_FETCH) return storeResult(STATUS_EACCESS);
  return storeResult(armTranslateSlow(va, access, el0 != 0));
}

/**
 * The Number fast path: armTranslate of va = vaHi:vaLo with no BigInt and no
 * object on either side. Returns the pa as an f64 (exact: pa < 2^48), or −1
 * with the fault in the result record. On success R_RIGHTS holds the
 * effective rights word (layout.ts RIGHTS_*: S = EL1 under the current PAN,
 * U = EL0, with E0PD folded in; D is always set, since the W bits already
 * exclude writable-clean DBM pages). RIGHTS_CACHED only for an untagged VA
 * whose translation is in the TLB: a tagged VA may translate differently
 * per access kind (TBID), so it always goes to the core. With stage 1 off
 * (nothing cached) only the access just made is reported.
 */
export function armTranslateFast(vaLo: u32, vaHi: u32, access: u32, el0: u32): f64 {
  if (access > ARM_FETCH) { storeResult(STATUS_EACCESS); return -1; }
  const va = (<u64>vaHi << 32) | <u64>vaLo;
  const s = armTranslateSlow(va, access, el0 != 0);
  if (s != STATUS_OK) { storeResult(s); return -1; }
  let r: u32 = RIGHTS_DIRTY | (aLevel << RIGHTS_LEVEL_SHIFT) | (aShift << RIGHTS_PSHIFT_SHIFT);
  if (!s1On) {
    r |= <u32>1 << (access + (el0 != 0 ? 3 : 0));
  } else {
    const al = aAttr;
    if ((al & (pan ? AL_EL1P_R : AL_EL1_R)) != 0) r |= RIGHTS_RS;
    if ((al & (pan ? AL_EL1P_W : AL_EL1_W)) != 0) r |= RIGHTS_WS;
    if ((al & AL_EL1_X) != 0) r |= RIGHTS_XS;
    if (!e0pdBlocks(va, true)) {
      if ((al & AL_EL0_R) != 0) r |= RIGHTS_RU;
      if ((al & AL_EL0_W) != 0) r |= RIGHTS_WU;
      if ((al & AL_EL0_X) != 0) r |= RIGHTS_XU;
    }
    if ((al & A_GLOBAL) != 0) r |= RIGHTS_GLOBAL;
    if (tlbOn && (<i64>(va << 8) >> 8) == <i64>va) r |= RIGHTS_CACHED;
  }
  store<u32>(vcpuBase + R_RIGHTS, r);
  return <f64>aPa;
}

/**
 * Walks without the TLB. AWALK_DEBUG: the debugger view (stage 1 only, table
 * addresses are PAs, permissions for the access at EL/PAN, no updates);
 * AWALK_UPDATE: hardware updates as the CPU would make them.
 */
export function armWalk(va: u64, access: u32, el0: u32, flags: u32): u32 {
  if (access > ARM_FETCH) return storeResult(STATUS_EACCESS);
  const s = s1Walk(va, access, el0 != 0, flags | AWALK_NOTLB);
  if ((flags & AWALK_DEBUG) != 0 && s == STATUS_OK) aPa = aIpa;
  return storeResult(s);
}

/** Stage-2 translation only (IPA → PA), without the TLB, with updates. */
export function armWalkStage2(ipa: u64, access: u32, el0: u32): u32 {
  if (!s2On) { aPa = ipa; aIpa = ipa; aLevel = 0; aShift = 12; return storeResult(STATUS_OK); }
  let s: u32;
  do { s = s2Walk(ipa, access, el0 != 0, false, true); } while (s == RETRY);
  if (s == STATUS_OK) { aPa = s2Pa; aIpa = ipa; aLevel = s2Level; aShift = s2Shift; }
  return storeResult(s);
}

/**
 * The TLB-hit run of an arm64 batch from index `i`: entries whose VA is
 * canonical (bits 63:55 equal), not closed by E0PD, and hit the current
 * ASID context with their allow bit set (`bitR`, `bitW`, `bitX` per access).
 * Returns the first index that is not such a hit. A call-free leaf, kept out
 * of line (exported) so its invariants stay in registers.
 */
export function armBatchHits(i: u32, count: u32, base: usize, tlb: usize, keyHi: u64, salt: u64, mask: u64,
  bits: u32, e0pdLo: bool, e0pdHi: bool): u32 {
  const vaArr = base + VCPU_BATCH_VA;
  const paArr = base + VCPU_BATCH_PA;
  const stArr = base + VCPU_BATCH_STATUS;
  const acArr = base + VCPU_BATCH_ACCESS;
  for (; i < count; i++) {
    const va = load<u64>(vaArr + (<usize>i << 3));
    if ((<i64>(va << 8) >> 8) != <i64>va || ((va >> 63) != 0 ? e0pdHi : e0pdLo)) break;
    const vpn = (va >> 12) & VPN_MASK;
    const e = tlb + (<usize>((vpn ^ salt) & mask) << 5);
    if (load<u64>(e + E_KEY) != (keyHi | vpn)) break;
    const access = <u32>load<u8>(acArr + <usize>i);
    if (access > ARM_FETCH || (load<u32>(e + E_ATTR) & ((bits >> (access << 3)) & 0xff)) == 0) break;
    store<u64>(paArr + (<usize>i << 3), load<u64>(e + E_PA) | (va & 0xfff));
    store<u32>(stArr + (<usize>i << 2), load<u32>(e + E_STATUS));
  }
  return i;
}

/**
 * Batch translation over the vCPU's batch area at EL0 if `el0`: the same
 * semantics as armTranslate per address, in order. Status words: BS_*
 * layout; for STATUS_ARM_FAULT bits 5:0 hold the FSC, bit 6 stage 2, bit 7
 * S1PTW, bit 16 WnR, and pa[i] the faulting IPA of a stage-2 fault.
 * Returns the number of faults.
 */
export function armTranslateBatch(count: u32, el0: u32): u32 {
  if (count > BATCH_MAX) count = BATCH_MAX;
  const base = vcpuBase;
  const vaArr = base + VCPU_BATCH_VA;
  const paArr = base + VCPU_BATCH_PA;
  const stArr = base + VCPU_BATCH_STATUS;
  const acArr = base + VCPU_BATCH_ACCESS;
  const isEl0 = el0 != 0;
  const fast = tlbOn && s1On;
  // Allow bit per access code, one byte each: read, write, fetch.
  const bits = allowBit(ARM_READ, isEl0, pan) | (allowBit(ARM_WRITE, isEl0, pan) << 8) | (allowBit(ARM_FETCH, isEl0, pan) << 16);
  const e0pdLo = isEl0 && (tcr & TCR_E0PD0) != 0, e0pdHi = isEl0 && (tcr & TCR_E0PD1) != 0;
  let hits: u64 = 0;
  let faults: u32 = 0;
  let i: u32 = 0;
  while (i < count) {
    if (fast) {
      const j = armBatchHits(i, count, base, tlbBase, curKeyHi, curSalt, tlbMask, bits, e0pdLo, e0pdHi);
      hits += <u64>(j - i);
      i = j;
      if (i >= count) break;
    }
    const va = load<u64>(vaArr + (<usize>i << 3));
    const access = <u32>load<u8>(acArr + <usize>i);
    i++;
    const at = i - 1;
    if (access > ARM_FETCH) {
      faults++;
      store<u64>(paArr + (<usize>at << 3), 0);
      store<u32>(stArr + (<usize>at << 2), STATUS_EACCESS << BS_STATUS_SHIFT);
      continue;
    }
    const s = armTranslateSlow(va, access, isEl0);
    if (s == STATUS_OK) {
      store<u64>(paArr + (<usize>at << 3), aPa);
      store<u32>(stArr + (<usize>at << 2), (aShift << BS_PSHIFT_SHIFT) | (aLevel << BS_LEVEL_SHIFT));
    } else {
      faults++;
      store<u64>(paArr + (<usize>at << 3), aStage == 2 ? aIpa : 0);
      store<u32>(stArr + (<usize>at << 2), (s << BS_STATUS_SHIFT) | ((aFlags & FF_WRITE) != 0 ? 1 << 16 : 0)
        | (aLevel << BS_LEVEL_SHIFT) | ((aFlags & FF_S1PTW) != 0 ? 0x80 : 0) | (aStage == 2 ? 0x40 : 0) | (aFsc & 0x3f));
    }
  }
  if (hits != 0) {
    counterAdd(C_LOOKUPS, hits);
    counterAdd(C_HITS, hits);
  }
  return faults;
}
