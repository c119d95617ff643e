// The EPT SPTEs a direct MMU writes (KVM arch/x86/kvm/mmu/spte.c make_spte,
// make_nonleaf_spte, kvm_mmu_set_ept_masks; spte.h SPTE_MMU_PRESENT_MASK,
// EPT_SPTE_HOST_WRITABLE, EPT_SPTE_MMU_WRITABLE), in the entry formats of SDM
// Vol.3C §29.3.2 (EPT paging-structure entries).
//
//   63  59 58  57 56     52 51                    12 11  10  9   8   7    6   5  3  2   1   0
//  ┌──────┬───┬───┬─────────┬────────────────────────┬───┬───┬───┬───┬────┬────┬─────┬───┬───┬───┐
//  │ ign. │mw │hw │ ignored │ frame / next table hpa │ P │ign│ D │ A │ PS │IPAT│ MT  │ X │ W │ R │
//  └──────┴───┴───┴─────────┴────────────────────────┴───┴───┴───┴───┴────┴────┴─────┴───┴───┘
//   P  bit 11: SPTE_MMU_PRESENT_MASK (software: KVM's "this SPTE is shadow-present"; ignored by hardware)
//   hw bit 57: host-writable, mw bit 58: MMU-writable (software; ignored by hardware without the
//   paging-write / guest-paging-verification controls, which vmmu does not enable)
//   MT 6 (WB) and IPAT on leaves: guest RAM with no non-coherent DMA (vmx_get_mt_mask).
//   Non-leaf: R|W|X, and A when EPT A/D is on (make_nonleaf_spte).

export const SPTE_R = 1n << 0n;
export const SPTE_W = 1n << 1n;
export const SPTE_X = 1n << 2n;
const SPTE_MT_WB = 6n << 3n;
const SPTE_IPAT = 1n << 6n;
export const SPTE_LARGE = 1n << 7n;
export const SPTE_A = 1n << 8n;
export const SPTE_D = 1n << 9n;
export const SPTE_MMU_PRESENT = 1n << 11n;
export const SPTE_HOST_WRITABLE = 1n << 57n;
export const SPTE_MMU_WRITABLE = 1n << 58n;
export const SPTE_ADDR_MASK = 0x000f_ffff_ffff_f000n;

/** Bytes mapped by one SPTE at `level` (1 = 4 KiB, 2 = 2 MiB, 3 = 1 GiB, 4 = 512 GiB). */
export function levelBytes(level: number): bigint {
  return 1n << BigInt(12 + 9 * (level - 1));
}

/**
 * make_spte for guest RAM: a leaf mapping host frame `hpa` (aligned to the
 * level) readable, writable if `write` (host- and MMU-writable always: guest
 * RAM is never write-tracked by a direct MMU), executable if `exec`. With EPT
 * A/D on (`ad`) KVM presets A, and D on every writable SPTE (spte.c make_spte:
 * spte_shadow_dirty_mask when pte_access has ACC_WRITE_MASK), so a fault never
 * clears a D bit the hardware set.
 */
export function makeLeafSpte(hpa: bigint, level: number, opt: { write: boolean; exec: boolean; ad: boolean }): bigint {
  let s = SPTE_MMU_PRESENT | SPTE_R | SPTE_MT_WB | SPTE_IPAT | SPTE_HOST_WRITABLE | SPTE_MMU_WRITABLE | (hpa & SPTE_ADDR_MASK);
  if (opt.write) s |= SPTE_W;
  if (opt.exec) s |= SPTE_X;
  if (level > 1) s |= SPTE_LARGE;
  if (opt.ad) s |= SPTE_A | (opt.write ? SPTE_D : 0n);
  return s;
}

/** make_nonleaf_spte: a present entry pointing at the table page `childHpa`. */
export function makeNonLeafSpte(childHpa: bigint, ad: boolean): bigint {
  return SPTE_MMU_PRESENT | SPTE_R | SPTE_W | SPTE_X | (childHpa & SPTE_ADDR_MASK) | (ad ? SPTE_A : 0n);
}

/** is_shadow_present_pte. */
export function isShadowPresent(spte: bigint): boolean {
  return (spte & SPTE_MMU_PRESENT) !== 0n;
}

/** is_last_spte: a leaf at `level` (level 1 always; 2 and 3 with PS). */
export function isLastSpte(spte: bigint, level: number): boolean {
  return level === 1 || (spte & SPTE_LARGE) !== 0n;
}

/** The frame or next-table hpa of an SPTE. */
export function spteHpa(spte: bigint): bigint {
  return spte & SPTE_ADDR_MASK;
}

/**
 * make_huge_page_split_spte: the child SPTE at `index` (0..511) of a table
 * splitting the huge leaf `huge` at `level` into level − 1 pieces: same rights,
 * A/D and memory type, frame advanced by index × the child size.
 */
export function splitChildSpte(huge: bigint, level: number, index: number): bigint {
  const childLevel = level - 1;
  const frame = spteHpa(huge) + BigInt(index) * levelBytes(childLevel);
  const attrs = huge & ~SPTE_ADDR_MASK & ~SPTE_LARGE;
  return attrs | frame | (childLevel > 1 ? SPTE_LARGE : 0n);
}

/**
 * make_spte_executable (spte.c; make_huge_page_split_spte's 4 KiB case): the
 * leaf with X set. With the NX huge page mitigation a huge leaf is made
 * without X (make_spte), and splitting it to 4 KiB pieces gives them X back:
 * the mitigation only concerns huge pages.
 */
export function makeSpteExecutable(spte: bigint): bigint {
  return spte | SPTE_X;
}
