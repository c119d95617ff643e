// x86-64 paging-structure entry format and control-register bits.
// Intel SDM Vol.3A §4.5 (4-level and 5-level paging), Tables 4-15 … 4-20;
// §2.5 (CR0, CR4), §2.2.1 (EFER).
//
// 64-bit entry, every level:
//
//   63  62  59 58   52 51      M M-1                 12 11  9 8 7 6 5 4 3 2 1 0
//  ┌──┬──────┬───────┬──────────┬──────────────────────┬─────┬─┬─┬─┬─┬───┬───┬───┬───┬─┐
//  │XD│ PKEY │ ign.  │ reserved │ address              │ ign.│G│S│D│A│PCD│PWT│U/S│R/W│P│
//  └──┴──────┴───────┴──────────┴──────────────────────┴─────┴─┴─┴─┴─┴───┴───┴───┴───┴─┘
//   S = PS at levels 2 and 3 (2 MiB / 1 GiB leaf), PAT at level 1, reserved at 4 and 5.
//   PKEY (62:59) and G, D, PAT mean something in leaf entries only.
//   A 2 MiB leaf holds PAT in bit 12 and reserves 20:13; a 1 GiB leaf reserves 29:13.
//   XD is reserved unless EFER.NXE = 1.
//   Levels use KVM numbering: 1 = PTE, 2 = PDE, 3 = PDPTE, 4 = PML4E, 5 = PML5E.

export const PTE_P: u64 = 1 << 0;
export const PTE_RW: u64 = 1 << 1;
export const PTE_US: u64 = 1 << 2;
export const PTE_PWT: u64 = 1 << 3;
export const PTE_PCD: u64 = 1 << 4;
export const PTE_A: u64 = 1 << 5;
export const PTE_D: u64 = 1 << 6;
export const PTE_PS: u64 = 1 << 7;
export const PTE_G: u64 = 1 << 8;
export const PTE_PAT_LARGE: u64 = 1 << 12;
export const PTE_PKEY_SHIFT: u64 = 59;
export const PTE_XD: u64 = <u64>1 << 63;
/** Address bits 51:12 — the widest any MAXPHYADDR allows; the debugger view uses it. */
export const PTE_ADDR_MASK_52: u64 = 0x000f_ffff_ffff_f000;
/** Reserved in a 2 MiB leaf: bits 20:13. */
export const PTE_RSVD_2M: u64 = 0x1f_e000;
/** Reserved in a 1 GiB leaf: bits 29:13. */
export const PTE_RSVD_1G: u64 = 0x3fff_e000;

export const CR0_PE: u64 = 1 << 0;
export const CR0_WP: u64 = 1 << 16;
export const CR0_PG: u64 = 1 << 31;
export const CR3_PCID_MASK: u64 = 0xfff;
export const CR3_NOFLUSH: u64 = <u64>1 << 63;
export const CR4_PSE: u64 = 1 << 4;
export const CR4_PAE: u64 = 1 << 5;
export const CR4_PGE: u64 = 1 << 7;
export const CR4_LA57: u64 = 1 << 12;
export const CR4_PCIDE: u64 = 1 << 17;
export const CR4_SMEP: u64 = 1 << 20;
export const CR4_SMAP: u64 = 1 << 21;
export const CR4_PKE: u64 = 1 << 22;
export const EFER_LME: u64 = 1 << 8;
export const EFER_LMA: u64 = 1 << 10;
export const EFER_NXE: u64 = 1 << 11;
export const RFLAGS_AC: u64 = 1 << 18;

// Effective access rights, KVM's ACC_* encoding (arch/x86/kvm/mmu/spte.h):
// X means "execution allowed", i.e. no XD on the walk (inverted so it ANDs).
export const ACC_EXEC: u32 = 1;
export const ACC_WRITE: u32 = 2;
export const ACC_USER: u32 = 4;

// #PF error code (SDM §4.7)
export const PFERR_P: u32 = 1 << 0;
export const PFERR_W: u32 = 1 << 1;
export const PFERR_U: u32 = 1 << 2;
export const PFERR_RSVD: u32 = 1 << 3;
export const PFERR_FETCH: u32 = 1 << 4;
export const PFERR_PK: u32 = 1 << 5;

export const ACCESS_READ: u32 = 0;
export const ACCESS_WRITE: u32 = 1;
export const ACCESS_FETCH: u32 = 2;
