// x86 control-register and paging-entry bits used by the TS control plane.
// Intel SDM Vol.3A §2.5 and §4.5; the wasm core has its own copy in
// assembly/x86/pte.ts for the hot paths, and test/src/x86/regs.test.ts proves
// the two agree by translating through both.

export const CR0 = {
  PE: 1n << 0n, MP: 1n << 1n, EM: 1n << 2n, TS: 1n << 3n, ET: 1n << 4n, NE: 1n << 5n, WP: 1n << 16n, AM: 1n << 18n,
  NW: 1n << 29n, CD: 1n << 30n, PG: 1n << 31n,
} as const;
export const CR4 = {
  PSE: 1n << 4n, PAE: 1n << 5n, PGE: 1n << 7n, LA57: 1n << 12n, PCIDE: 1n << 17n,
  SMEP: 1n << 20n, SMAP: 1n << 21n, PKE: 1n << 22n, CET: 1n << 23n,
} as const;

/**
 * The defined bits of CR0[31:0] (SDM Vol.3A §2.5): a MOV to CR0 ignores the
 * others there (KVM kvm_set_cr0 masks CR0_RESERVED_BITS); a bit of 63:32 #GPs.
 */
export const CR0_DEFINED = Object.values(CR0).reduce((a, b) => a | b, 0n);

/**
 * The CR4 bits this vCPU accepts: those of the features it models (PSE, PAE,
 * PGE, LA57, PCIDE, SMEP, SMAP, PKE) and those of features a CPU has that
 * change no translation — VME 0, PVI 1, TSD 2, DE 3, MCE 6, PCE 8, OSFXSR 9,
 * OSXMMEXCPT 10, UMIP 11, VMXE 13, SMXE 14, FSGSBASE 16, OSXSAVE 18, CET 23
 * (SDM Vol.3A §2.5, Figure 2-7). This is KVM's CR4_RESERVED_BITS complement
 * (arch/x86/include/asm/kvm_host.h) plus SMXE, minus LAM_SUP (28), whose
 * canonicality rules are not modelled. Any other bit is reserved: bit 15, KL
 * (19), PKS (24, not modelled), UINTR (25), 26–27, 28–63; setting one #GPs.
 */
export const CR4_VALID = [0n, 1n, 2n, 3n, 4n, 5n, 6n, 7n, 8n, 9n, 10n, 11n, 12n, 13n, 14n, 16n, 17n, 18n, 20n, 21n, 22n, 23n]
  .reduce((a, b) => a | (1n << b), 0n);

/** Lowest set bit of `v` (> 0n). */
function lowestBit(v: bigint): bigint {
  let n = 0n;
  while (((v >> n) & 1n) === 0n) n++;
  return n;
}

/**
 * Why a MOV to CR0 of `cr0` raises #GP on its own (SDM Vol.3A §2.5 and the
 * MOV to/from Control Registers page; KVM kvm_is_valid_cr0), or null: a bit
 * of 63:32 set, NW without CD, PG without PE.
 */
export function cr0Invalid(cr0: bigint): string | null {
  const high = cr0 >> 32n;
  if (high !== 0n) return `CR0 bit ${32n + lowestBit(high)} is reserved (bits 63:32 must be 0)`;
  if ((cr0 & CR0.NW) !== 0n && (cr0 & CR0.CD) === 0n) return "CR0.NW = 1 needs CR0.CD = 1";
  if ((cr0 & CR0.PG) !== 0n && (cr0 & CR0.PE) === 0n) return "CR0.PG = 1 needs CR0.PE = 1";
  return null;
}

/** Why a MOV to CR4 of `cr4` raises #GP on its own — a reserved bit (see CR4_VALID) — or null. */
export function cr4Invalid(cr4: bigint): string | null {
  const reserved = cr4 & ~CR4_VALID;
  return reserved === 0n ? null : `CR4 bit ${lowestBit(reserved)} is reserved`;
}
export const EFER = { LME: 1n << 8n, LMA: 1n << 10n, NXE: 1n << 11n } as const;
export const RFLAGS = { AC: 1n << 18n } as const;
export const CR3_PCID_MASK = 0xfffn;
export const CR3_NOFLUSH = 1n << 63n;

/** Paging-structure entry bits (SDM Tables 4-15…4-20). */
export const PTE = {
  P: 1n << 0n, RW: 1n << 1n, US: 1n << 2n, PWT: 1n << 3n, PCD: 1n << 4n, A: 1n << 5n, D: 1n << 6n,
  PS: 1n << 7n, PAT: 1n << 7n, G: 1n << 8n, PAT_LARGE: 1n << 12n, XD: 1n << 63n,
} as const;
export const PTE_PKEY_SHIFT = 59n;
export const PTE_ADDR_MASK = 0x000f_ffff_ffff_f000n;

export type X86Access = "read" | "write" | "fetch";
export const ACCESS_CODE: Record<X86Access, number> = { read: 0, write: 1, fetch: 2 };

/** #PF error-code bits (SDM §4.7). */
export const PFERR = { P: 1, W: 2, U: 4, RSVD: 8, FETCH: 16, PK: 32 } as const;

/** A typical 64-bit kernel state: PE|PG|WP, PAE, long mode with NX. */
export const LONG_MODE = {
  cr0: CR0.PE | CR0.WP | CR0.PG,
  cr4: CR4.PAE,
  efer: EFER.LME | EFER.LMA | EFER.NXE,
} as const;
