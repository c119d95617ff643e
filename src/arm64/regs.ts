// arm64 system-register fields and descriptor bits used by the TS control
// plane (Arm ARM DDI 0487 D8.3–D8.5; register pages for TCR_EL1, SCTLR_EL1,
// HCR_EL2, VTTBR_EL2, VTCR_EL2). The wasm core has its own copy in
// assembly/arm64/desc.ts for the hot paths; the differential tests prove
// the two agree by translating through both.

export const TCR = {
  T0SZ_SHIFT: 0n, EPD0: 1n << 7n, TG0_SHIFT: 14n, T1SZ_SHIFT: 16n, A1: 1n << 22n, EPD1: 1n << 23n,
  TG1_SHIFT: 30n, IPS_SHIFT: 32n, AS: 1n << 36n, TBI0: 1n << 37n, TBI1: 1n << 38n, HA: 1n << 39n, HD: 1n << 40n,
  HPD0: 1n << 41n, HPD1: 1n << 42n, TBID0: 1n << 51n, TBID1: 1n << 52n, E0PD0: 1n << 55n, E0PD1: 1n << 56n,
  /** TG1 = 4 KiB (TG1 uses 10 for 4K; TG0 uses 00). */
  TG1_4K: 2n << 30n,
} as const;
export const SCTLR = { M: 1n << 0n, WXN: 1n << 19n } as const;
export const HCR = { VM: 1n << 0n, PTW: 1n << 2n } as const;
export const VTCR = { SL0_SHIFT: 6n, PS_SHIFT: 16n, VS: 1n << 19n, HA: 1n << 21n, HD: 1n << 22n, RES1: 1n << 31n } as const;

/** Stage-1 and stage-2 descriptor bits. */
export const DESC = {
  VALID: 1n << 0n, TABLE: 1n << 1n, AP1: 1n << 6n, AP2: 1n << 7n, S2AP_R: 1n << 6n, S2AP_W: 1n << 7n,
  SH_INNER: 3n << 8n, AF: 1n << 10n, NG: 1n << 11n, DBM: 1n << 51n, CONT: 1n << 52n, PXN: 1n << 53n, UXN: 1n << 54n,
  PXNTABLE: 1n << 59n, UXNTABLE: 1n << 60n, APTABLE0: 1n << 61n, APTABLE1: 1n << 62n,
} as const;
export const DESC_ADDR_MASK = 0x0000_ffff_ffff_f000n;
export const S2_XN_SHIFT = 53n;
export const MEMATTR_SHIFT = 2n;
/** Stage-2 MemAttr: normal write-back (KVM MT_S2_NORMAL) and Device-nGnRE. */
export const S2_MEMATTR = { NORMAL: 0xfn, DEVICE_NGNRE: 0x1n } as const;

export type Arm64Access = "read" | "write" | "fetch";
export const ARM_ACCESS_CODE: Record<Arm64Access, number> = { read: 0, write: 1, fetch: 2 };

/**
 * TCR_EL1 as a 48-bit-VA Linux kernel sets it (the value of the real-kernel
 * fixtures, minus nothing): T0SZ = T1SZ = 16, 4K granules, IPS 48-bit, A1, AS,
 * TBI0/TBI1, HA, HD, E0PD1. Handy for tests and demos.
 */
export const LINUX_TCR = 0x15001f5b5503510n;

/** Start level of a stage-1 walk for a TnSZ: 4 − ceil((64 − TnSZ − 12) / 9). */
export function s1StartLevel(tsz: number): number {
  return 4 - Math.ceil((64 - tsz - 12) / 9);
}

/**
 * VTCR_EL2 for an IPA size as KVM programs it (kvm_get_vtcr, stage2_pgtable_levels):
 * concatenate up to 16 start tables, at least 2 levels; PS 48-bit; HA; VS.
 */
export function kvmVtcr(ipaBits: number): { vtcr: bigint; startLevel: number; startTables: number } {
  if (!Number.isInteger(ipaBits) || ipaBits < 32 || ipaBits > 48) throw new RangeError("vmmu: IPA size must be 32..48 bits");
  const levels = Math.max(2, Math.floor((ipaBits - 4 - 4) / 9)); // ARM64_HW_PGTABLE_LEVELS(ipa - 4)
  const startLevel = 4 - levels;
  const startTables = Number(((1n << BigInt(ipaBits)) - 1n) >> BigInt(12 + 9 * (4 - startLevel))) + 1;
  const sl0 = BigInt(2 - startLevel);
  const vtcr = BigInt(64 - ipaBits) | (sl0 << VTCR.SL0_SHIFT) | (1n << 8n) | (1n << 10n) | (3n << 12n)
    | (5n << VTCR.PS_SHIFT) | VTCR.VS | VTCR.HA | VTCR.RES1;
  return { vtcr, startLevel, startTables };
}
