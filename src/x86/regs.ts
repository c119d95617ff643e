// x86 control-register and paging-entry bits used by the TS control plane.
// Intel SDM Vol.3A §2.5 and §4.5; the wasm core has its own copy in
// assembly/x86/pte.ts for the hot paths, and test/src/x86/regs.test.ts proves
// the two agree by translating through both.

export const CR0 = { PE: 1n << 0n, WP: 1n << 16n, PG: 1n << 31n } as const;
export const CR4 = {
  PSE: 1n << 4n, PAE: 1n << 5n, PGE: 1n << 7n, LA57: 1n << 12n, PCIDE: 1n << 17n,
  SMEP: 1n << 20n, SMAP: 1n << 21n, PKE: 1n << 22n,
} as const;
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
