// VMSAv8-64 translation-table descriptors and system-register fields, 4 KiB
// granule, 48-bit OA. Arm ARM DDI 0487 D8.3 (descriptor formats), D8.4
// (memory attributes), D8.5 (access permissions); register fields from
// TCR_EL1, SCTLR_EL1, HCR_EL2, VTTBR_EL2, VTCR_EL2 (Arm ARM, AArch64 system register descriptions).
//
// Stage-1 table descriptor (levels 0–2):
//
//   63  62 61  60    59    58 52 51 48 47                         12 11  2 1 0
//  ┌───┬─────┬─────┬─────┬──────┬─────┬─────────────────────────────┬──────┬─┬─┐
//  │NS │ APT │ UXNT│ PXNT│ ign. │ 0   │ next-level table address    │ ign. │1│1│
//  └───┴─────┴─────┴─────┴──────┴─────┴─────────────────────────────┴──────┴─┴─┘
//
// Stage-1 block (L1: 1 GiB, L2: 2 MiB; bits[1:0] = 01) and page (L3; 11):
//
//   63 59 58 55 54  53  52  51  50 48 47          n n-1 12 11 10  9 8  7 6  5  4  2 1 0
//  ┌─────┬─────┬───┬───┬────┬───┬────┬─────────────┬──────┬──┬──┬────┬─────┬──┬─────┬───┐
//  │ ign │ SW  │UXN│PXN│Cont│DBM│ 0  │ output addr │ 0    │nG│AF│ SH │AP2:1│NS│Attr │ty │
//  └─────┴─────┴───┴───┴────┴───┴────┴─────────────┴──────┴──┴──┴────┴─────┴──┴─────┴───┘
//   n = 30 (L1 block), 21 (L2 block), 12 (L3 page).
//
// Stage-2 block/page: as above but bits 5:2 MemAttr, 7:6 S2AP (bit 6 read, bit 7
// write), 54:53 XN (FEAT_XNX), no nG (bit 11 RES0), no table attributes.

export const D_VALID: u64 = 1 << 0;
export const D_TABLE: u64 = 1 << 1; //        with VALID: table (L0–2) or page (L3)
export const D_AP1: u64 = 1 << 6; //          EL0 access
export const D_AP2: u64 = 1 << 7; //          read-only
export const D_S2AP_R: u64 = 1 << 6;
export const D_S2AP_W: u64 = 1 << 7;
export const D_AF: u64 = 1 << 10;
export const D_NG: u64 = 1 << 11;
export const D_DBM: u64 = <u64>1 << 51;
export const D_PXN: u64 = <u64>1 << 53;
export const D_UXN: u64 = <u64>1 << 54;
export const D_S2XN_SHIFT: u64 = 53; //       2 bits
export const D_PXNTABLE: u64 = <u64>1 << 59;
export const D_UXNTABLE: u64 = <u64>1 << 60;
export const D_APTABLE0: u64 = <u64>1 << 61; // no EL0 access below
export const D_APTABLE1: u64 = <u64>1 << 62; // no write below
export const D_MEMATTR_SHIFT: u64 = 2; //     stage 2, 4 bits
export const D_ADDR_MASK: u64 = 0x0000_ffff_ffff_f000; // bits 47:12

export const TCR_EPD0: u64 = 1 << 7;
export const TCR_A1: u64 = 1 << 22;
export const TCR_EPD1: u64 = 1 << 23;
export const TCR_IPS_SHIFT: u64 = 32;
export const TCR_AS: u64 = <u64>1 << 36;
export const TCR_TBI0: u64 = <u64>1 << 37;
export const TCR_TBI1: u64 = <u64>1 << 38;
export const TCR_HA: u64 = <u64>1 << 39;
export const TCR_HD: u64 = <u64>1 << 40;
export const TCR_HPD0: u64 = <u64>1 << 41;
export const TCR_HPD1: u64 = <u64>1 << 42;
export const TCR_TBID0: u64 = <u64>1 << 51;
export const TCR_TBID1: u64 = <u64>1 << 52;
export const TCR_E0PD0: u64 = <u64>1 << 55;
export const TCR_E0PD1: u64 = <u64>1 << 56;
export const SCTLR_M: u64 = 1 << 0;
export const SCTLR_WXN: u64 = 1 << 19;
export const HCR_VM: u64 = 1 << 0;
export const HCR_PTW: u64 = 1 << 2;
export const VTCR_PS_SHIFT: u64 = 16;
export const VTCR_VS: u64 = 1 << 19;
export const VTCR_HA: u64 = 1 << 21;
export const VTCR_HD: u64 = 1 << 22;

// TLB allow bits (attr 7:0) of a combined stage-1(+2) entry: one bit per
// (exception level, PSTATE.PAN, access) the entry may serve without a walk.
export const AL_EL0_R: u32 = 1 << 0;
export const AL_EL0_W: u32 = 1 << 1;
export const AL_EL0_X: u32 = 1 << 2;
export const AL_EL1_R: u32 = 1 << 3;
export const AL_EL1_W: u32 = 1 << 4;
export const AL_EL1_X: u32 = 1 << 5;
export const AL_EL1P_R: u32 = 1 << 6; //      EL1 with PAN = 1
export const AL_EL1P_W: u32 = 1 << 7;
// Allow bits of a stage-2-only entry.
export const S2AL_R: u32 = 1 << 0;
export const S2AL_W: u32 = 1 << 1;
export const S2AL_X0: u32 = 1 << 2;
export const S2AL_X1: u32 = 1 << 3;
export const S2AL_DEVICE: u32 = 1 << 4;

/** Output-address bits for an IPS/PS encoding (000 32 … 101 48; 110 52 is capped at 48: no LPA). */
export function paBitsOf(ps: u32): u32 {
  switch (ps & 7) {
    case 0: return 32;
    case 1: return 36;
    case 2: return 40;
    case 3: return 42;
    case 4: return 44;
    default: return 48;
  }
}

/** Shift of the region one descriptor maps at Arm level `level` (4 KiB granule). */
// @ts-ignore: decorator
@inline export function levelShift(level: u32): u32 {
  return 12 + 9 * (3 - level);
}
