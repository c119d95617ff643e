// arm64 address translation for the EL1&0 regime, 4 KiB granule: the format
// hooks of stage 1 (VA → IPA) and stage 2 (IPA → PA) for the walk loop
// (assembly/walk.ts), in which every stage-1 table access is itself
// translated by stage 2; the context decoders; the exported entry points
// (translate single / fast / batch, walks, TLB maintenance by VMID/ASID).
//
// Follows the Arm ARM (DDI 0487) AArch64.S1Translate, AArch64.S2Translate,
// AArch64.S1CheckPermissions and the hardware AF/DBM updates of
// FEAT_HAFDBS, as pinned down in docs/arm64-walk-contract.md (which names
// every choice the Arm ARM leaves open; QEMU target/arm/ptw.c breaks ties).
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
  C_LOOKUPS, C_HITS, C_MISSES, C_WALKS, C_WALK_RETRIES, C_FAULTS, C_FLUSH_PAGE,
  VCPU_BATCH_VA, VCPU_BATCH_PA, VCPU_BATCH_STATUS, VCPU_BATCH_ACCESS, BATCH_MAX,
  BS_STATUS_SHIFT, BS_PSHIFT_SHIFT, BS_LEVEL_SHIFT, E_KEY, E_PA, E_ATTR, E_STATUS,
  MC_FORMAT, MC_TOP, MC_PTW, MC_FLAGS, MC_ROOT, MC_ROOT1, MC_ADDR, MC_KEY, MC_GKEY, MC_SLOT, MC_GSLOT, MC_VCPU, MC_CTRS,
  MC_OABITS, MC_TOPBITS, MC_TSZ0, MC_TSZ1, MC_TCR, MC_HITS, MC_HITU, MMU_NONE, MMU_STAGE2,
  FMT_OFF, FMT_ARM_S1, FMT_ARM_S2, MF_TLB, MF_AD, MF_HD, MF_PAN, MF_WXN, MF_PTWDEV, MF_BAD,
  KEY_VALID, KEY_GLOBAL, KEY_S2, KEY_SPACE_SHIFT, KEY_SPACE_MASK, KEY_ASID_MASK,
} from "../layout";
import {
  counterAdd, slotAddr, saltOf, tlbFill, tlbDrop, tlbLookup, slotCached, acquireTag, slotHasLive, ctxLiveTag, invalidated,
  tlbFlushMatch, tlbFlushKey, tlbInvalidateRange, tlbInvalidateRangeMatch, slotFind, tlbBaseOf, tlbEntries,
  VPN_MASK, A_GLOBAL, A_LEVEL_SHIFT, A_PSHIFT_SHIFT,
} from "../tlb";
import {
  descend, ctxOf, casCounted, batchHits, setArmFault, setIpa, setStage, orFlags, RETRY, WALK_AD, WALK_DEBUG, WALK_NOTLB,
  rPa, rIpa, rLevel, rShift, rAttr, rFsc, rStage, rFlags, rKind, sPa, sShift, sLevel, sAllow, wDesc, wHost, wLevel, wFold, wEa,
  stageTranslate,
} from "../walk";
import {
  D_VALID, D_TABLE, D_AP1, D_AP2, D_S2AP_R, D_S2AP_W, D_AF, D_NG, D_DBM, D_PXN, D_UXN, D_S2XN_SHIFT,
  D_PXNTABLE, D_UXNTABLE, D_APTABLE0, D_APTABLE1, D_MEMATTR_SHIFT, D_ADDR_MASK,
  TCR_EPD0, TCR_EPD1, TCR_IPS_SHIFT, TCR_TBI0, TCR_TBI1, TCR_HA, TCR_HD, TCR_HPD0, TCR_HPD1, TCR_A1, TCR_AS,
  TCR_TBID0, TCR_TBID1, TCR_E0PD0, TCR_E0PD1, SCTLR_M, SCTLR_WXN, HCR_VM, HCR_PTW, VTCR_PS_SHIFT, VTCR_HA, VTCR_HD, VTCR_VS,
  AL_EL0_R, AL_EL0_W, AL_EL0_X, AL_EL1_R, AL_EL1_W, AL_EL1_X, AL_EL1P_R, AL_EL1P_W,
  S2AL_R, S2AL_W, S2AL_X0, S2AL_X1, S2AL_DEVICE, paBitsOf, levelShift,
} from "./desc";

export const ARM_READ: u32 = 0;
export const ARM_WRITE: u32 = 1;
export const ARM_FETCH: u32 = 2;

/** Walk flags for armWalk (the walk loop's WALK_* bits). */
export const AWALK_UPDATE: u32 = 1; //  hardware AF/DBM updates (= WALK_AD)
export const AWALK_DEBUG: u32 = 4; //   stage 1 only, no updates, table addresses are PAs (= WALK_DEBUG)
export const AWALK_NOTLB: u32 = 16; //  bypass the stage-2-only TLB too (= WALK_NOTLB)

export const REGS_OK: i32 = 0;

/** TnSZ bounds of the 4 KiB granule without FEAT_LVA/LPA2 (min) and FEAT_TTST (max). */
const TSZ_MIN: u32 = 16;
const TSZ_MAX: u32 = 39;

const FF_S1PTW: u32 = 1;
const FF_WRITE: u32 = 2;

/** TnSZ as the walk uses it: clamped to TSZ_MIN..TSZ_MAX (docs/arm64-walk-contract.md, "Registers"). */
// @ts-ignore: decorator
@inline function effectiveTsz(field: u32): u32 {
  return field < TSZ_MIN ? TSZ_MIN : field > TSZ_MAX ? TSZ_MAX : field;
}

// ---- decoders -------------------------------------------------------------------------------

/** VMID in force: VTTBR_EL2[63:48], 16 bits if VTCR.VS else 8. */
function vmidOf(regs: usize): u64 {
  return (load<u64>(regs, S_VTTBR) >> 48) & ((load<u64>(regs, S_VTCR) & VTCR_VS) != 0 ? 0xffff : 0xff);
}

/**
 * Builds stage-2 record `c` (of vCPU `vb`) from VTTBR_EL2, VTCR_EL2 and
 * HCR_EL2 at `regs`: format (off unless HCR_EL2.VM), start level and
 * concatenated index bits from SL0/T0SZ (an invalid or inconsistent SL0 makes
 * every walk a level-0 translation fault: AArch64.S2InvalidSL /
 * AArch64.S2InconsistentSL), sizes, AF/DBM enables, and the key of its
 * stage-2-only TLB entries (the VMID). No TLB maintenance.
 */
export function armDecodeS2(c: usize, vb: usize, regs: usize): i32 {
  const vtcr = load<u64>(regs, S_VTCR);
  const hcr = load<u64>(regs, S_HCR);
  invalidated(vb);
  store<u32>(c + MC_VCPU, <u32>vb);
  store<u32>(c + MC_CTRS, <u32>vb);
  store<u32>(c + MC_PTW, MMU_NONE);
  store<u32>(c + MC_FORMAT, (hcr & HCR_VM) != 0 ? FMT_ARM_S2 : FMT_OFF);
  const ipaBits = 64 - effectiveTsz(<u32>(vtcr & 63));
  const sl0 = <u32>((vtcr >> 6) & 3);
  const start: u32 = sl0 == 3 ? 0 : 2 - sl0;
  const top = <i32>ipaBits - <i32>levelShift(start);
  const bad = sl0 == 3 || top < 1 || top > 13;
  store<u32>(c + MC_TOP, 4 - start);
  store<u32>(c + MC_TOPBITS, bad ? 1 : <u32>top);
  store<u32>(c + MC_TSZ0, ipaBits);
  store<u32>(c + MC_OABITS, paBitsOf(<u32>(vtcr >> VTCR_PS_SHIFT)));
  store<u64>(c + MC_ROOT, load<u64>(regs, S_VTTBR));
  store<u64>(c + MC_ADDR, D_ADDR_MASK);
  const ha = (vtcr & VTCR_HA) != 0;
  store<u32>(c + MC_FLAGS, (load<u32>(regs, S_TLB_ON) != 0 ? MF_TLB : 0) | (ha ? MF_AD : 0)
    | (ha && (vtcr & VTCR_HD) != 0 ? MF_HD : 0) | ((hcr & HCR_PTW) != 0 ? MF_PTWDEV : 0) | (bad ? MF_BAD : 0));
  store<u64>(c + MC_KEY, KEY_VALID | KEY_S2 | (vmidOf(regs) << KEY_SPACE_SHIFT));
  store<u64>(c + MC_GKEY, 0);
  store<u32>(c + MC_SLOT, 0xffff_ffff);
  return REGS_OK;
}

/**
 * Builds stage-1 record `c` from TTBR0/1_EL1, TCR_EL1, SCTLR_EL1, PSTATE.PAN
 * at `regs`, with record `ptw` (the stage-2 record when HCR_EL2.VM, else
 * MMU_NONE) translating its table reads and output: format (off unless
 * SCTLR.M), TnSZ clamped to 16..39, IPS, AF/DBM enables, PAN/WXN, the EL1
 * and EL0 allow bits per access for the batch path, and the keys (VMID,
 * ASID) and (VMID, global). No TLB maintenance. Decode stage 2 first.
 */
export function armDecodeS1(c: usize, vb: usize, regs: usize, ptw: u32): i32 {
  const tcr = load<u64>(regs, S_TCR);
  const sctlr = load<u64>(regs, S_SCTLR);
  const pan = load<u32>(regs, S_PAN) != 0;
  invalidated(vb);
  store<u32>(c + MC_VCPU, <u32>vb);
  store<u32>(c + MC_CTRS, <u32>vb);
  store<u32>(c + MC_PTW, ptw);
  store<u32>(c + MC_FORMAT, (sctlr & SCTLR_M) != 0 ? FMT_ARM_S1 : FMT_OFF);
  store<u64>(c + MC_TCR, tcr);
  store<u64>(c + MC_ROOT, load<u64>(regs, S_TTBR0));
  store<u64>(c + MC_ROOT1, load<u64>(regs, S_TTBR1));
  store<u64>(c + MC_ADDR, D_ADDR_MASK);
  store<u32>(c + MC_TSZ0, effectiveTsz(<u32>(tcr & 63)));
  store<u32>(c + MC_TSZ1, effectiveTsz(<u32>((tcr >> 16) & 63)));
  store<u32>(c + MC_OABITS, paBitsOf(<u32>(tcr >> TCR_IPS_SHIFT)));
  const ha = (tcr & TCR_HA) != 0;
  store<u32>(c + MC_FLAGS, (load<u32>(regs, S_TLB_ON) != 0 ? MF_TLB : 0) | (ha ? MF_AD : 0) | (ha && (tcr & TCR_HD) != 0 ? MF_HD : 0)
    | (pan ? MF_PAN : 0) | ((sctlr & SCTLR_WXN) != 0 ? MF_WXN : 0));
  store<u64>(c + MC_HITS, <u64>(allowBit(ARM_READ, false, pan) | (allowBit(ARM_WRITE, false, pan) << 8) | (allowBit(ARM_FETCH, false, pan) << 16)));
  store<u64>(c + MC_HITU, <u64>(allowBit(ARM_READ, true, pan) | (allowBit(ARM_WRITE, true, pan) << 8) | (allowBit(ARM_FETCH, true, pan) << 16)));
  const ttbr = (tcr & TCR_A1) != 0 ? load<u64>(regs, S_TTBR1) : load<u64>(regs, S_TTBR0);
  const asid = (ttbr >> 48) & ((tcr & TCR_AS) != 0 ? 0xffff : 0xff);
  const space = KEY_VALID | (vmidOf(regs) << KEY_SPACE_SHIFT);
  store<u64>(c + MC_KEY, space | asid);
  store<u64>(c + MC_GKEY, space | KEY_GLOBAL);
  store<u32>(c + MC_SLOT, 0xffff_ffff);
  store<u32>(c + MC_GSLOT, 0xffff_ffff);
  acquireTag(vb, slotCached(vb, c + MC_SLOT, space | asid));
  return REGS_OK;
}

// ---- format hooks ----------------------------------------------------------------------------

/** Whether the stage-2 walk in progress is for a stage-1 table access (ESR.S1PTW). */
let s2ForPtw: bool = false;

/**
 * Fault hook: records an abort at `stage` of `kind` (FK_*) at Arm level
 * `level` for an access of kind `access` (WnR), S1PTW for a stage-2 fault on
 * a stage-1 table access; FSC per ESR_ELx.ISS DFSC. Returns STATUS_ARM_FAULT.
 */
export function armFault(stage: u32, kind: u32, level: u32, access: u32): u32 {
  let base: u32 = 0x04;
  if (kind == FK_ADDRESS_SIZE) base = 0x00;
  else if (kind == FK_ACCESS_FLAG) base = 0x08;
  else if (kind == FK_PERMISSION) base = 0x0c;
  else if (kind == FK_EXTERNAL) base = 0x14;
  setArmFault(stage, kind, level, (stage == 2 && s2ForPtw ? FF_S1PTW : 0) | (access == ARM_WRITE ? FF_WRITE : 0), base + level);
  return STATUS_ARM_FAULT;
}

/** Present hook: a valid descriptor of a type the level allows (no block at level 0, no block type at level 3). */
// @ts-ignore: decorator
@inline export function armValid(d: u64, level: u32): bool {
  const isTable = (d & D_TABLE) != 0;
  return (d & D_VALID) != 0 && !(level == 4 && !isTable) && !(level == 1 && !isTable);
}

/** Fold hook (stage 1, table descriptors): the bits of a table descriptor folded over the walk of `va` — APTable/UXNTable/PXNTable, none under TCR.HPDn for the VA's half; read once per walk. */
// @ts-ignore: decorator
@inline export function armFoldMask(c: usize, va: u64): u64 {
  const hpd = (load<u64>(c, MC_TCR) & (((va >> 55) & 1) != 0 ? TCR_HPD1 : TCR_HPD0)) != 0;
  return hpd ? 0 : D_PXNTABLE | D_UXNTABLE | D_APTABLE0 | D_APTABLE1;
}

/** Next-table hook: the table address fits the output size `oaBits` (else an address-size fault). */
// @ts-ignore: decorator
@inline export function armNextTableOk(oaBits: u32, table: u64): bool {
  return (table >> oaBits) == 0;
}

// ---- stage 2 ---------------------------------------------------------------------------------

/**
 * One attempt at a stage-2 walk of `ipa` through record `p` for an access
 * (ARM_*) at EL0 if `el0`; `ptw` marks a stage-1 descriptor access.
 *
 * 1. Invalid or inconsistent SL0, or IPA beyond the configured size →
 *    translation fault, level 0.
 * 2. The walk loop from SL0's level over up to 16 concatenated start tables.
 * 3. Leaf: address size, then AF (or hardware AF when VTCR.HA), then S2AP/XN
 *    (a write through DBM with VTCR.HD sets S2AP[1]), then the updates.
 */
// @ts-ignore: decorator
@inline function s2WalkOnce(p: usize, vb: usize, ipa: u64, access: u32, el0: bool, ptw: bool, update: bool): u32 {
  s2ForPtw = ptw;
  setIpa(ipa);
  const f = load<u32>(p, MC_FLAGS);
  if ((f & MF_BAD) != 0 || (ipa >> load<u32>(p, MC_TSZ0)) != 0) return armFault(2, FK_TRANSLATION, 0, access);
  const top = load<u32>(p, MC_TOP);
  const idxBits = load<u32>(p, MC_TOPBITS);
  const table = (load<u64>(p, MC_ROOT) & 0x0000_ffff_ffff_fffe) & ~((<u64>1 << (idxBits + 3)) - 1);
  if ((table >> load<u32>(p, MC_OABITS)) != 0) return armFault(2, FK_ADDRESS_SIZE, 4 - top, access);
  return descend(FMT_ARM_S2, false, p, vb, ipa, table, top, idxBits, 0, access, el0 ? 1 : 0, update ? WALK_AD : 0);
}

/**
 * Leaf hook of stage 2 (the walk loop calls it): address size, then AF (or
 * hardware AF when VTCR.HA), then S2AP/XN (a write through DBM with VTCR.HD
 * sets S2AP[1]), then the updates (WALK_AD), the HCR_EL2.PTW check of a
 * stage-1 table access, and the output (setStage).
 */
// @ts-ignore: decorator
@inline export function s2Leaf(p: usize, cb: usize, ipa: u64, access: u32, el0: bool, flags: u32, desc: u64, host: usize, level: u32): u32 {
  const f = load<u32>(p, MC_FLAGS);
  const update = (flags & WALK_AD) != 0;
  const ptw = s2ForPtw;
  const armLevel = 4 - level;
  const shift = <u64>(12 + 9 * (level - 1));
  const pmask = (<u64>1 << shift) - 1;
  const oa = desc & D_ADDR_MASK & ~pmask;
  if ((oa >> load<u32>(p, MC_OABITS)) != 0) return armFault(2, FK_ADDRESS_SIZE, armLevel, access);
  let want = desc;
  if ((desc & D_AF) == 0) {
    if ((f & MF_AD) == 0) return armFault(2, FK_ACCESS_FLAG, armLevel, access);
    want |= D_AF;
  }
  if (access == ARM_WRITE && (f & MF_HD) != 0 && (desc & D_DBM) != 0) want |= D_S2AP_W;
  const xn = <u32>(desc >> D_S2XN_SHIFT) & 3;
  const device = ((desc >> D_MEMATTR_SHIFT) & 0xc) == 0;
  let ok: bool;
  if (access == ARM_READ) ok = (want & D_S2AP_R) != 0;
  else if (access == ARM_WRITE) ok = (want & D_S2AP_W) != 0;
  else ok = el0 ? (xn == 0 || xn == 1) : (xn == 0 || xn == 3);
  if (!ok) return armFault(2, FK_PERMISSION, armLevel, access);
  if (update && want != desc) {
    if (!casCounted(cb, host, desc, want)) return RETRY;
  } else if (!update) {
    want = desc;
  }
  // HCR_EL2.PTW: a stage-1 table in Device memory is a stage-2 permission
  // fault, raised after the stage-2 walk completed (as QEMU's S1_ptw_translate).
  if (ptw && (f & MF_PTWDEV) != 0 && device) return armFault(2, FK_PERMISSION, armLevel, access);
  let allow: u32 = 0;
  if ((want & D_S2AP_R) != 0) allow |= S2AL_R;
  if ((want & D_S2AP_W) != 0 && (want & D_AF) != 0) allow |= S2AL_W;
  if (xn == 0 || xn == 1) allow |= S2AL_X0;
  if (xn == 0 || xn == 3) allow |= S2AL_X1;
  if (device) allow |= S2AL_DEVICE;
  if ((want & D_AF) == 0) allow = 0;
  setStage(oa | (ipa & pmask), <u32>shift, armLevel, allow);
  return STATUS_OK;
}

/** Whether stage-2 allow bits `allow` grant `access` at EL0 if `el0` (S2-PTW rules if `ptw`). */
function s2Grants(f: u32, allow: u32, access: u32, el0: bool, ptw: bool): bool {
  if (ptw && (f & MF_PTWDEV) != 0 && (allow & S2AL_DEVICE) != 0) return false;
  if (access == ARM_READ) return (allow & S2AL_R) != 0;
  if (access == ARM_WRITE) return (allow & S2AL_W) != 0;
  return (allow & (el0 ? S2AL_X0 : S2AL_X1)) != 0;
}

/**
 * Stage-2 translation of `ipa` through record `p`, using its stage-2-only TLB
 * entries (unless WALK_NOTLB), walking on a miss or when the cached entry
 * does not grant the access. Restarts the walk on a lost compare-exchange.
 * Sets sPa/sShift/sLevel/sAllow or the fault; returns STATUS_*.
 */
export function s2Translate(p: usize, ipa: u64, access: u32, el0: bool, ptw: bool, flags: u32): u32 {
  const vb = <usize>load<u32>(p, MC_VCPU);
  const f = load<u32>(p, MC_FLAGS);
  const vpn = (ipa >> 12) & VPN_MASK;
  const useTlb = (f & MF_TLB) != 0 && (flags & WALK_NOTLB) == 0;
  const update = (flags & WALK_AD) != 0;
  let slot: u32 = 0;
  if (useTlb) {
    slot = slotCached(vb, p + MC_SLOT, load<u64>(p, MC_KEY));
    const e = tlbLookup(vb, slot, vpn);
    if (e != 0) {
      const attr = load<u32>(e, E_ATTR);
      if (s2Grants(f, attr & 0xff, access, el0, ptw)) {
        setStage(load<u64>(e, E_PA) | (ipa & 0xfff), (attr >> A_PSHIFT_SHIFT) & 31, (attr >> A_LEVEL_SHIFT) & 7, attr & 0xff);
        return STATUS_OK;
      }
      tlbDrop(vb, e);
    }
  }
  counterAdd(vb, C_WALKS, 1);
  while (true) {
    const s = s2WalkOnce(p, vb, ipa, access, el0, ptw, update);
    if (s == RETRY) { counterAdd(vb, C_WALK_RETRIES, 1); continue; }
    if (s == STATUS_OK && useTlb && update) {
      tlbFill(vb, slot, vpn, sPa & ~<u64>0xfff, sAllow | (sShift << A_PSHIFT_SHIFT) | (sLevel << A_LEVEL_SHIFT), sShift, 0);
    }
    return s;
  }
}

// ---- stage 1 ---------------------------------------------------------------------------------

/** EL0 data permissions of an effective AP[2:1]: 0 none, 1 read, 3 read/write. */
// @ts-ignore: decorator
@inline function el0Rw(ap1: bool, ap2: bool): u32 {
  return ap1 ? (ap2 ? 1 : 3) : 0;
}

/** Stage-1 allow bits (AL_*) for effective AP bits and execute-never flags. */
function s1AllowBits(wxn: bool, ap1: bool, ap2: bool, uxn: bool, pxn: bool): u32 {
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

// Result of the stage-1 walk (the invalidation granule of its TLB entry, the level).
let s1Shift: u32 = 12;
let s1Level: u32 = 0;

/**
 * One attempt at a stage-1 (+ stage-2) translation of `va` through record
 * `c`. Returns STATUS_* or RETRY when a hardware update lost a race. Steps
 * per docs/arm64-walk-contract.md, "Stage 1".
 */
function s1WalkOnce(c: usize, vb: usize, va: u64, access: u32, el0: bool, flags: u32): u32 {
  const debug = (flags & WALK_DEBUG) != 0;
  const update = (flags & WALK_AD) != 0 && !debug;
  const f = load<u32>(c, MC_FLAGS);
  const tcr = load<u64>(c, MC_TCR);
  let ipa: u64;
  s1Shift = 12; s1Level = 0;
  let al: u32 = 0xff;
  let global = false;
  s2ForPtw = false;
  if (load<u32>(c, MC_FORMAT) != FMT_ARM_S1) {
    if ((va >> 48) != 0) return armFault(1, FK_ADDRESS_SIZE, 0, access);
    ipa = va;
  } else {
    // 1. Region, top-byte ignore, range.
    const upper = ((va >> 55) & 1) != 0;
    let tbi = (tcr & (upper ? TCR_TBI1 : TCR_TBI0)) != 0;
    if (access == ARM_FETCH && (tcr & (upper ? TCR_TBID1 : TCR_TBID0)) != 0) tbi = false;
    const tsz = load<u32>(c + (upper ? MC_TSZ1 : MC_TSZ0));
    const vaBits = 64 - tsz;
    const topEnd: u64 = tbi ? 56 : 64;
    const topMask = ((topEnd == 64 ? 0 : (<u64>1 << topEnd)) - (<u64>1 << vaBits));
    if ((va & topMask) != (upper ? topMask : 0)) return armFault(1, FK_TRANSLATION, 0, access);
    // 2. Walk disabled for this region, or EL0 access to an E0PD region.
    if ((tcr & (upper ? TCR_EPD1 : TCR_EPD0)) != 0) return armFault(1, FK_TRANSLATION, 0, access);
    if (el0 && (tcr & (upper ? TCR_E0PD1 : TCR_E0PD0)) != 0) return armFault(1, FK_TRANSLATION, 0, access);
    // 3. Start level and top table.
    const startLevel = 4 - (vaBits - 12 + 8) / 9;
    const idxBits = vaBits - levelShift(startLevel);
    const ttbr = load<u64>(c + (upper ? MC_ROOT1 : MC_ROOT));
    const table = (ttbr & 0x0000_ffff_ffff_fffe) & ~((<u64>1 << (idxBits + 3)) - 1);
    if ((table >> load<u32>(c, MC_OABITS)) != 0) return armFault(1, FK_ADDRESS_SIZE, startLevel, access);
    // 4. The walk loop (descriptor reads through stage 2).
    const s = descend(FMT_ARM_S1, true, c, vb, va, table, 4 - startLevel, idxBits, 0, access, el0 ? 1 : 0, flags);
    if (s != STATUS_OK) return s;
    const desc = wDesc, level = 4 - wLevel, tattr = wFold, host = wHost, ea = wEa;
    // 5. Leaf: address size, access flag, permissions.
    const shift = <u64>levelShift(level);
    const pmask = (<u64>1 << shift) - 1;
    const oa = desc & D_ADDR_MASK & ~pmask;
    if ((oa >> load<u32>(c, MC_OABITS)) != 0) return armFault(1, FK_ADDRESS_SIZE, level, access);
    let want = desc;
    if ((desc & D_AF) == 0) {
      if ((f & MF_AD) == 0) return armFault(1, FK_ACCESS_FLAG, level, access);
      want |= D_AF;
    }
    if (access == ARM_WRITE && (f & MF_HD) != 0 && (desc & D_DBM) != 0) want &= ~D_AP2;
    const wxn = (f & MF_WXN) != 0;
    const ap1 = (want & D_AP1) != 0 && (tattr & D_APTABLE0) == 0;
    const ap2 = (want & D_AP2) != 0 || (tattr & D_APTABLE1) != 0;
    const uxn = (desc & D_UXN) != 0 || (tattr & D_UXNTABLE) != 0;
    const pxn = (desc & D_PXN) != 0 || (tattr & D_PXNTABLE) != 0;
    const accessAl = s1AllowBits(wxn, ap1, ap2, uxn, pxn);
    if ((accessAl & allowBit(access, el0, (f & MF_PAN) != 0)) == 0) return armFault(1, FK_PERMISSION, level, access);
    // 6. Hardware updates (AF, dirty through DBM), which need stage-2 write permission on the table page.
    if (update && want != desc) {
      const ptw = load<u32>(c, MC_PTW);
      if (ptw != MMU_NONE && stageTranslate(ctxOf(c, ptw), ea, ARM_WRITE, 0, true, flags) != STATUS_OK) { orFlags(FF_WRITE); return STATUS_ARM_FAULT; }
      if (!casCounted(vb, host, desc, want)) return RETRY;
    }
    const finalDesc = update ? want : desc;
    // Allow bits from the descriptor as it now is: a clean DBM page is not writable until a write re-walks
    // (the descriptor the access was checked against, `want`, unless the update was not made).
    al = (finalDesc & D_AF) == 0 ? 0
      : finalDesc == want ? accessAl
      : s1AllowBits(wxn, (finalDesc & D_AP1) != 0 && (tattr & D_APTABLE0) == 0,
        (finalDesc & D_AP2) != 0 || (tattr & D_APTABLE1) != 0, uxn, pxn);
    ipa = oa | (va & pmask);
    s1Shift = <u32>shift;
    s1Level = level;
    global = (desc & D_NG) == 0;
  }
  setIpa(ipa);
  // 7. Stage 2 of the final IPA.
  let pa = ipa;
  let shiftOut = s1Shift;
  let levelOut = s1Level;
  const ptw = load<u32>(c, MC_PTW);
  if (ptw != MMU_NONE && !debug) {
    const s = stageTranslate(ctxOf(c, ptw), ipa, access, el0 ? 1 : 0, false, flags);
    if (s != STATUS_OK) return s;
    setIpa(ipa);
    pa = sPa;
    const s1On = load<u32>(c, MC_FORMAT) == FMT_ARM_S1;
    if (sShift < shiftOut || !s1On) shiftOut = sShift;
    if (!s1On) levelOut = sLevel;
    const s2a = sAllow;
    let m: u32 = 0;
    if (s2a & S2AL_R) m |= AL_EL0_R | AL_EL1_R | AL_EL1P_R;
    if (s2a & S2AL_W) m |= AL_EL0_W | AL_EL1_W | AL_EL1P_W;
    if (s2a & S2AL_X0) m |= AL_EL0_X;
    if (s2a & S2AL_X1) m |= AL_EL1_X;
    al &= m;
  }
  const ipaOut = rIpa;
  setResultArm(pa, ipaOut, levelOut, shiftOut, al | (global ? A_GLOBAL : 0));
  return STATUS_OK;
}

import { setResult } from "../walk";
// @ts-ignore: decorator
@inline function setResultArm(pa: u64, ipa: u64, level: u32, shift: u32, attr: u32): void {
  setResult(pa, ipa, level, shift, attr);
}

/** Full translation with restarts on lost hardware-update races. */
function s1Walk(c: usize, vb: usize, va: u64, access: u32, el0: bool, flags: u32): u32 {
  if (load<u32>(c, MC_FORMAT) == FMT_ARM_S1) counterAdd(vb, C_WALKS, 1);
  while (true) {
    const s = s1WalkOnce(c, vb, va, access, el0, flags);
    if (s != RETRY) return s;
    counterAdd(vb, C_WALK_RETRIES, 1);
  }
}

/** VA with the top byte replaced by copies of bit 55 (the TLB key of a tagged VA). */
// @ts-ignore: decorator
@inline function untag(va: u64): u64 {
  return <u64>((<i64>(va << 8)) >> 8);
}

/** True iff `va` is an EL0 access to a region TCR.E0PDn closes (checked before the TLB, as the architecture requires). */
// @ts-ignore: decorator
@inline function e0pdBlocks(tcr: u64, va: u64, el0: bool): bool {
  return el0 && (tcr & (((va >> 55) & 1) != 0 ? TCR_E0PD1 : TCR_E0PD0)) != 0;
}

/**
 * Translates one address through record `c`: TLB (the ASID's slot, then the
 * VMID's global slot), else the combined walk and a fill. A cached entry that
 * does not grant the access re-walks (and is dropped first), so faults and
 * hardware updates are decided by the tables in memory.
 */
function armTranslateSlow(c: usize, vb: usize, va: u64, access: u32, el0: bool): u32 {
  const tcr = load<u64>(c, MC_TCR);
  const f = load<u32>(c, MC_FLAGS);
  const s1On = load<u32>(c, MC_FORMAT) == FMT_ARM_S1;
  const tlbOn = (f & MF_TLB) != 0;
  // A top-byte-tagged VA uses the entry of its untagged page when TBI applies
  // to this access (TBIn, and not a fetch under TBIDn); otherwise it walks.
  let canonical = (<i64>(va << 8) >> 8) == <i64>va;
  let key = va;
  if (!canonical) {
    const upper = ((va >> 55) & 1) != 0;
    const tbi = (tcr & (upper ? TCR_TBI1 : TCR_TBI0)) != 0 && !(access == ARM_FETCH && (tcr & (upper ? TCR_TBID1 : TCR_TBID0)) != 0);
    if (tbi) { key = untag(va); canonical = true; }
  }
  if (tlbOn && s1On && canonical && !e0pdBlocks(tcr, va, el0)) {
    const vpn = (key >> 12) & VPN_MASK;
    counterAdd(vb, C_LOOKUPS, 1);
    let e = tlbLookup(vb, slotCached(vb, c + MC_SLOT, load<u64>(c, MC_KEY)), vpn);
    if (e == 0) {
      const g = slotCached(vb, c + MC_GSLOT, load<u64>(c, MC_GKEY));
      if (slotHasLive(vb, g)) e = tlbLookup(vb, g, vpn);
    }
    if (e != 0) {
      const attr = load<u32>(e, E_ATTR);
      if ((attr & allowBit(access, el0, (f & MF_PAN) != 0)) != 0) {
        counterAdd(vb, C_HITS, 1);
        const st = load<u32>(e, E_STATUS);
        setResultArm(load<u64>(e, E_PA) | (va & 0xfff), rIpa, (st >> BS_LEVEL_SHIFT) & 0xff, (st >> BS_PSHIFT_SHIFT) & 31, attr);
        return STATUS_OK;
      }
      tlbDrop(vb, e);
    }
    counterAdd(vb, C_MISSES, 1);
  }
  const s = s1Walk(c, vb, va, access, el0, WALK_AD);
  if (s != STATUS_OK) { counterAdd(vb, C_FAULTS, 1); return s; }
  if (tlbOn && s1On) {
    const vpn = (untag(va) >> 12) & VPN_MASK;
    const attr = rAttr | (s1Shift << A_PSHIFT_SHIFT) | (rLevel << A_LEVEL_SHIFT);
    const global = (attr & A_GLOBAL) != 0;
    const slot = global ? slotCached(vb, c + MC_GSLOT, load<u64>(c, MC_GKEY)) : slotCached(vb, c + MC_SLOT, load<u64>(c, MC_KEY));
    tlbFill(vb, slot, vpn, rPa & ~<u64>0xfff, attr, rShift, 0);
  }
  return STATUS_OK;
}

function storeResult(vb: usize, s: u32): u32 {
  store<u32>(vb + R_STATUS, s);
  if (s == STATUS_OK) {
    store<u64>(vb + R_PA, rPa);
    store<u64>(vb + R_IPA, rIpa);
    store<u32>(vb + R_LEVEL, rLevel);
    store<u32>(vb + R_SHIFT, rShift);
  } else {
    store<u64>(vb + R_PA, 0);
    store<u64>(vb + R_IPA, rStage == 2 ? rIpa : 0);
    store<u32>(vb + R_LEVEL, rLevel);
    store<u32>(vb + R_SHIFT, 0);
    store<u32>(vb + R_FSC, rFsc);
    store<u32>(vb + R_STAGE, rStage);
    store<u32>(vb + R_FFLAGS, rFlags);
    store<u32>(vb + R_KIND, rKind);
  }
  return s;
}

/**
 * Translates `va` through stage-1 record `c` for an access (0 read, 1 write,
 * 2 fetch) at EL0 if `el0` else EL1 (with PSTATE.PAN as decoded): TLB,
 * combined walk, hardware AF/DBM updates, fill. Result in the result record;
 * returns STATUS_OK or STATUS_ARM_FAULT.
 */
export function armTranslate(c: usize, va: u64, access: u32, el0: u32): u32 {
  const vb = <usize>load<u32>(c, MC_VCPU);
  if (access > ARM_FETCH) return storeResult(vb, STATUS_EACCESS);
  return storeResult(vb, armTranslateSlow(c, vb, va, access, el0 != 0));
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
export function armTranslateFast(c: usize, vaLo: u32, vaHi: u32, access: u32, el0: u32): f64 {
  const vb = <usize>load<u32>(c, MC_VCPU);
  if (access > ARM_FETCH) { storeResult(vb, STATUS_EACCESS); return -1; }
  const va = (<u64>vaHi << 32) | <u64>vaLo;
  const s = armTranslateSlow(c, vb, va, access, el0 != 0);
  if (s != STATUS_OK) { storeResult(vb, s); return -1; }
  const f = load<u32>(c, MC_FLAGS);
  const pan = (f & MF_PAN) != 0;
  let r: u32 = RIGHTS_DIRTY | (rLevel << RIGHTS_LEVEL_SHIFT) | (rShift << RIGHTS_PSHIFT_SHIFT);
  if (load<u32>(c, MC_FORMAT) != FMT_ARM_S1) {
    r |= <u32>1 << (access + (el0 != 0 ? 3 : 0));
  } else {
    const al = rAttr;
    if ((al & (pan ? AL_EL1P_R : AL_EL1_R)) != 0) r |= RIGHTS_RS;
    if ((al & (pan ? AL_EL1P_W : AL_EL1_W)) != 0) r |= RIGHTS_WS;
    if ((al & AL_EL1_X) != 0) r |= RIGHTS_XS;
    if (!e0pdBlocks(load<u64>(c, MC_TCR), va, true)) {
      if ((al & AL_EL0_R) != 0) r |= RIGHTS_RU;
      if ((al & AL_EL0_W) != 0) r |= RIGHTS_WU;
      if ((al & AL_EL0_X) != 0) r |= RIGHTS_XU;
    }
    if ((al & A_GLOBAL) != 0) r |= RIGHTS_GLOBAL;
    if ((f & MF_TLB) != 0 && (<i64>(va << 8) >> 8) == <i64>va) r |= RIGHTS_CACHED;
  }
  store<u32>(vb + R_RIGHTS, r);
  return <f64>rPa;
}

/**
 * Walks through record `c` without the TLB. AWALK_DEBUG: the debugger view
 * (stage 1 only, table addresses are PAs, permissions for the access at
 * EL/PAN, no updates); AWALK_UPDATE: hardware updates as the CPU would make them.
 */
export function armWalk(c: usize, va: u64, access: u32, el0: u32, flags: u32): u32 {
  const vb = <usize>load<u32>(c, MC_VCPU);
  if (access > ARM_FETCH) return storeResult(vb, STATUS_EACCESS);
  const s = s1Walk(c, vb, va, access, el0 != 0, flags | AWALK_NOTLB);
  if ((flags & AWALK_DEBUG) != 0 && s == STATUS_OK) rPa = rIpa;
  return storeResult(vb, s);
}

/** Stage-2 translation only (IPA → PA) through record `p`, without the TLB, with updates. */
export function armWalkStage2(p: usize, ipa: u64, access: u32, el0: u32): u32 {
  const vb = <usize>load<u32>(p, MC_VCPU);
  if (load<u32>(p, MC_FORMAT) != FMT_ARM_S2) { setResultArm(ipa, ipa, 0, 12, 0); return storeResult(vb, STATUS_OK); }
  let s: u32;
  do { s = s2WalkOnce(p, vb, ipa, access, el0 != 0, false, true); } while (s == RETRY);
  if (s == STATUS_OK) setResultArm(sPa, ipa, sLevel, sShift, 0);
  return storeResult(vb, s);
}

/**
 * The TLB-hit run of an arm64 batch (walk.ts batchHits, arm64 grant test:
 * the allow bit per access); exported so it stays a call-free leaf.
 */
export function armBatchHits(i: u32, count: u32, base: usize, tlb: usize, keyHi: u64, salt: u64, mask: u64,
  bits: u32, e0pd: u32): u32 {
  return batchHits(true, i, count, base, tlb, keyHi, salt, mask, <u64>bits, 8, e0pd);
}

/**
 * Batch translation through record `c` over the vCPU's batch area at EL0 if
 * `el0`: the same semantics as armTranslate per address, in order. Status
 * words: BS_* layout; for STATUS_ARM_FAULT bits 5:0 hold the FSC, bit 6
 * stage 2, bit 7 S1PTW, bit 16 WnR, and pa[i] the faulting IPA of a stage-2
 * fault. Returns the number of faults.
 */
export function armTranslateBatch(c: usize, count: u32, el0: u32): u32 {
  if (count > BATCH_MAX) count = BATCH_MAX;
  const base = <usize>load<u32>(c, MC_VCPU);
  const vaArr = base + VCPU_BATCH_VA;
  const paArr = base + VCPU_BATCH_PA;
  const stArr = base + VCPU_BATCH_STATUS;
  const acArr = base + VCPU_BATCH_ACCESS;
  const isEl0 = el0 != 0;
  const f = load<u32>(c, MC_FLAGS);
  const tcr = load<u64>(c, MC_TCR);
  const fast = (f & MF_TLB) != 0 && load<u32>(c, MC_FORMAT) == FMT_ARM_S1;
  const bits = <u32>load<u64>(c + (isEl0 ? MC_HITU : MC_HITS));
  const e0pd: u32 = isEl0 ? ((tcr & TCR_E0PD0) != 0 ? 1 : 0) | ((tcr & TCR_E0PD1) != 0 ? 2 : 0) : 0;
  const tlb = tlbBaseOf(base);
  const mask = <u64>(tlbEntries() - 1);
  let hits: u64 = 0;
  let faults: u32 = 0;
  let i: u32 = 0;
  while (i < count) {
    if (fast) {
      const tag = acquireTag(base, slotCached(base, c + MC_SLOT, load<u64>(c, MC_KEY)));
      const j = armBatchHits(i, count, base, tlb, <u64>tag << 48, saltOf(tag), mask, bits, e0pd);
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
    const s = armTranslateSlow(c, base, va, access, isEl0);
    if (s == STATUS_OK) {
      store<u64>(paArr + (<usize>at << 3), rPa);
      store<u32>(stArr + (<usize>at << 2), (rShift << BS_PSHIFT_SHIFT) | (rLevel << BS_LEVEL_SHIFT));
    } else {
      faults++;
      store<u64>(paArr + (<usize>at << 3), rStage == 2 ? rIpa : 0);
      store<u32>(stArr + (<usize>at << 2), (s << BS_STATUS_SHIFT) | ((rFlags & FF_WRITE) != 0 ? 1 << 16 : 0)
        | (rLevel << BS_LEVEL_SHIFT) | ((rFlags & FF_S1PTW) != 0 ? 0x80 : 0) | (rStage == 2 ? 0x40 : 0) | (rFsc & 0x3f));
    }
  }
  if (hits != 0) {
    counterAdd(base, C_LOOKUPS, hits);
    counterAdd(base, C_HITS, hits);
  }
  return faults;
}

// ---- TLB maintenance by VMID / ASID (the TLBI targets; decoding is src/arm64/tlbi.ts) ----------

// @ts-ignore: decorator
@inline function spaceKey(vmid: u32): u64 {
  return KEY_VALID | (<u64>(vmid & 0xffff) << KEY_SPACE_SHIFT);
}

/** Flushes every stage-1 entry of `vmid` (ASIDs and global); with `s2` its stage-2-only entries too (VMALLE1 / VMALLS12E1). */
export function armFlushVmid(vb: usize, vmid: u32, s2: u32): void {
  tlbFlushMatch(vb, KEY_VALID | KEY_SPACE_MASK | (s2 != 0 ? 0 : KEY_S2), spaceKey(vmid));
}

/** Flushes the non-global stage-1 entries of (`vmid`, `asid`) (ASIDE1). */
export function armFlushAsid(vb: usize, vmid: u32, asid: u32): void {
  tlbFlushKey(vb, spaceKey(vmid) | <u64>(asid & 0xffff));
}

/**
 * Invalidates stage-1 entries of `vmid` for pages [vpn, vpn + pages) from
 * leaves at Arm level `level` (0: any): of ASID `asid` and the global ones,
 * or (`asid` < 0) of every ASID (VAE1 / VAAE1 and range forms). Returns the
 * number of slots examined.
 */
export function armInvalidateVa(vb: usize, vmid: u32, asid: i32, vpn: f64, pages: f64, level: u32): void {
  const sp = spaceKey(vmid);
  if (asid < 0) {
    tlbInvalidateRangeMatch(vb, KEY_VALID | KEY_SPACE_MASK | KEY_S2, sp, <u64>vpn, <u64>pages, level);
  } else {
    const a = slotFind(vb, sp | <u64>(asid & 0xffff));
    if (a != 0xffff_ffff) tlbInvalidateRange(vb, a, <u64>vpn, <u64>pages, level);
    const g = slotFind(vb, sp | KEY_GLOBAL);
    if (g != 0xffff_ffff) tlbInvalidateRange(vb, g, <u64>vpn, <u64>pages, level);
  }
  invalidated(vb);
}

/** Invalidates the stage-2-only entries of `vmid` for IPA pages [vpn, vpn + pages) (IPAS2E1 and range forms). */
export function armInvalidateIpa(vb: usize, vmid: u32, vpn: f64, pages: f64, level: u32): void {
  const s = slotFind(vb, spaceKey(vmid) | KEY_S2);
  if (s != 0xffff_ffff) tlbInvalidateRange(vb, s, <u64>vpn, <u64>pages, level);
  invalidated(vb);
}
