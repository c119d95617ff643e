// The linear-memory map of one vmmu machine: the single source of truth.
//
// Every wasm instance (one per vCPU, possibly on different worker threads)
// imports the same shared WebAssembly.Memory. The TS control plane never
// retypes an offset: it reads the exported constants below, and the computed
// region bases from the machine header that `machineInit` writes.
//
//   0x0000_0000 ┌──────────────────────────────┐
//               │ NULL guard + AS static data  │ memoryBase = 1024 (asconfig)
//   0x0000_1000 ├──────────────────────────────┤
//               │ ZERO page (never written)    │ unbacked guest frames read as this
//   0x0000_2000 ├──────────────────────────────┤
//               │ MACHINE header (4 KiB)       │ config, memslot, allocator
//   0x0001_0000 ├──────────────────────────────┤ VCPU_AREA (64 KiB aligned)
//               │ vCPU 0 … vCPU n-1            │ n × vcpuStride (see VCPU_* below)
//               ├──────────────────────────────┤ poolBase (64 KiB aligned)
//               │ host-table pool              │ shadow / EPT / stage-2 tables
//               ├──────────────────────────────┤ frameDirBase (lazy slots only)
//               │ frame directory              │ one u32 per 4 MiB guest chunk
//               ├──────────────────────────────┤ ramHost (64 KiB aligned)
//               │ guest RAM: eager part        │ gpa = slotBase + (host - ramHost)
//               ├──────────────────────────────┤ backBase
//               │ backed frames + frame leaves │ bump-allocated on first write
//               └──────────────────────────────┘ memory end (grows to ≤ 4 GiB)
//
// Per vCPU (vcpuBase = VCPU_AREA + index × vcpuStride):
//
//   +0x0000  STATE     architectural registers, result record, TLB bookkeeping
//   +0x0400  COUNTERS  64 × u64
//   +0x0800  MMU       MMU context records: MMU_CTX_COUNT × MMU_STRIDE
//   +0x4000  CTX       TLB context slots (tag, key, live counts): CTX_SLOTS × 32 B
//   +…       SLOTLIST  u16 per slot ever used (scans for flushes by key)
//   +…       BATCH     BATCH_MAX × (va u64, pa u64, status u32, access u8)
//   +…       TLB       tlbEntries × 32 B
//
// Everything a wasm instance needs to run a vCPU is in this block: an
// instance keeps no per-vCPU state, so a vCPU may be driven by any instance
// on any thread (one at a time) and sees exactly what the last one left.
//
// Invariants:
//  - Nothing but the walker's A/D compare-exchange and the memory API writes
//    guest RAM; nothing writes the ZERO page.
//  - Every region base is 64 KiB aligned except the header-internal ones.

// ---- fixed regions --------------------------------------------------------

export const PAGE_SIZE: u32 = 4096;
export const WASM_PAGE: u32 = 65536;
export const ZERO_PAGE: u32 = 0x1000;
export const MACHINE_BASE: u32 = 0x2000;
export const VCPU_AREA: u32 = 0x10000;
/** Largest linear address + 1 a wasm32 memory can have. */
export const LINEAR_LIMIT: u64 = 0x1_0000_0000;

// ---- machine header (offsets from MACHINE_BASE) ---------------------------

export const M_MAGIC: u32 = 0x00; //        u32  MACHINE_MAGIC once initialised
export const M_NVCPUS: u32 = 0x04; //       u32
export const M_VCPU_STRIDE: u32 = 0x08; //  u32
export const M_TLB_ENTRIES: u32 = 0x0c; //  u32  power of two
export const M_POOL_BASE: u32 = 0x10; //    u32
export const M_POOL_BYTES: u32 = 0x14; //   u32
export const M_FRAME_DIR: u32 = 0x18; //    u32  0 if the slot is eager only
export const M_RAM_HOST: u32 = 0x1c; //     u32
export const M_BACK_NEXT: u32 = 0x58; //    u64  next free byte of the backing area (under M_GROW_LOCK); ≤ LINEAR_LIMIT, never wraps
export const M_BACK_END: u32 = 0x24; //     u32  current memory size in bytes / 64 KiB
export const M_BACKED: u32 = 0x28; //       u32  lazily backed 4 KiB frames (atomic)
export const M_POPULATE: u32 = 0x2c; //     u32  1: call host populate() for unbacked frames
export const M_SLOT_BASE: u32 = 0x30; //    u64  guest-physical base of the RAM memslot
export const M_SLOT_SIZE: u32 = 0x38; //    u64  bytes
export const M_EAGER_BYTES: u32 = 0x40; //  u64  first bytes of the slot backed whole
export const M_MAX_PAGES: u32 = 0x48; //    u32  memory maximum in 64 KiB pages
export const M_GROW_LOCK: u32 = 0x4c; //    u32  spin lock for memory.grow + leaf allocation
export const M_POOL_HPA: u32 = 0x50; //     u64  host-physical address where walkers see the pool
// 0x20: unused (was a u32 bump pointer, which wrapped to 0 at 4 GiB)

/**
 * Host-physical base of the host-table pool as hardware walkers see it (the
 * shadow/EPT/stage-2 tables a hypervisor builds point at each other by these
 * addresses). Above any guest RAM slot (slots end below 2^47 unless placed
 * higher; machineInit refuses an overlap) and below 2^52.
 */
export const POOL_HPA: u64 = 0x000f_0000_0000_0000;

export const MACHINE_MAGIC: u32 = 0x756d6d76; // "vmmu"

// ---- per-vCPU block -------------------------------------------------------

export const VCPU_STATE: u32 = 0x0000;
export const VCPU_COUNTERS: u32 = 0x0400;
export const VCPU_MMU: u32 = 0x0800;
export const VCPU_CTX: u32 = 0x4000;

// ---- MMU context records ----------------------------------------------------
//
// One record per translation regime a vCPU can use (x86 guest paging, EPT,
// arm64 stage 1, arm64 stage 2, and the extra regimes a hypervisor layer
// keeps: a shadow MMU's guest walker, nested MMUs). A decoder
// (x86DecodeContext, eptDecodeContext, armDecodeS1, armDecodeS2) builds a
// record from architectural state; every walk, TLB lookup and fill takes a
// record. `MC_PTW` names the record that translates this one's table reads
// and its output (EPT under x86 guest paging, stage 2 under stage 1): the
// two-dimensional walk of SDM Vol.3C §29.3 and Arm ARM AArch64.S1Translate
// with S1PTW.
//
//   +0x000  decoded fields (MC_* below)
//   +0x200  register block: the raw architectural state the record was
//           decoded from, at the S_* offsets (regimes other than the vCPU's
//           own keep their registers here)
export const MMU_CTX_COUNT: u32 = 8;
export const MMU_STRIDE: u32 = 0x400;
export const MMU_NONE: u32 = 0xff; //      MC_PTW: table reads and output are host-physical
/** Fixed roles: the vCPU's own regime, its second stage (EPT / stage 2), a hypervisor layer's guest walker. */
export const MMU_ROOT: u32 = 0;
export const MMU_STAGE2: u32 = 1;
export const MMU_WALKER: u32 = 2;

export const MC_FORMAT: u32 = 0x00; //   u32  FMT_*
export const MC_TOP: u32 = 0x04; //      u32  top level, counted from the leaf (1 = the 4 KiB level): x86/EPT 4 or 5, arm 4 − start level
export const MC_PTW: u32 = 0x08; //      u32  index of the record translating table reads and output, or MMU_NONE
export const MC_FLAGS: u32 = 0x0c; //    u32  MF_*
export const MC_ROOT: u32 = 0x10; //     u64  root table (x86 CR3 / EPTP / TTBR0 / VTTBR base)
export const MC_ROOT1: u32 = 0x18; //    u64  arm64 TTBR1 base
export const MC_ADDR: u32 = 0x20; //     u64  address bits of a table pointer or leaf
export const MC_RSVD: u32 = 0x28; //     u64  reserved bits of every entry (x86: 51:M and 63 without NXE; EPT: 51:M)
export const MC_PERM: u32 = 0x30; //     u64  x86: byte (access + 3·user) bit acc set ⇔ rights fault
export const MC_ERRS: u32 = 0x38; //     u64  x86: byte (access + 3·user) = #PF error bits of the access kind
export const MC_HITS: u32 = 0x40; //     u64  hit filter, supervisor / EL1 (x86: bit 16·access + attr[3:0]; arm: allow bit per access byte)
export const MC_HITU: u32 = 0x48; //     u64  hit filter, user / EL0
export const MC_KEY: u32 = 0x50; //      u64  TLB slot key of this regime's entries (0: never cached)
export const MC_GKEY: u32 = 0x58; //     u64  TLB slot key of its global entries (0: none)
export const MC_CANON: u32 = 0x60; //    u32  x86: 64 − linear-address width (16 or 7)
export const MC_PKRU: u32 = 0x64; //     u32
export const MC_OABITS: u32 = 0x68; //   u32  output / table address bits (arm IPS/PS, EPT MAXPHYADDR)
export const MC_TOPBITS: u32 = 0x6c; //  u32  arm64 stage 2: index bits of the (concatenated) start table
export const MC_TSZ0: u32 = 0x70; //     u32  arm64 stage 1: effective T0SZ (stage 2: input address bits)
export const MC_TSZ1: u32 = 0x74; //     u32  arm64 stage 1: effective T1SZ
export const MC_SLOT: u32 = 0x78; //     u32  cached slot of MC_KEY (valid while that slot's key is MC_KEY)
export const MC_GSLOT: u32 = 0x7c; //    u32  cached slot of MC_GKEY
export const MC_TCR: u32 = 0x80; //      u64  arm64 TCR_EL1 as written
export const MC_VCPU: u32 = 0x88; //     u32  base of the vCPU block this record belongs to
export const MC_CTRS: u32 = 0x8c; //     u32  where this record's walks count: the counter block at MC_CTRS + VCPU_COUNTERS (the vCPU's own, or MC_OWN_COUNTERS)
export const MC_HIT_TAG: u32 = 0x90; //  u32  live tag of MC_KEY's slot when last looked up (0: none; tlb.ts slotTagCached)
export const MC_HIT_EPOCH: u32 = 0x94; // u32  T_INV_EPOCH when MC_HIT_TAG was read: the tag stands while the two are equal
/** A record's own counter block (COUNTER_COUNT × u64), for regimes whose walks are not the hardware's (a hypervisor's guest walker). */
export const MC_OWN_COUNTERS: u32 = 0x100;
export const MC_REGS: u32 = 0x200;

// Formats (MC_FORMAT).
export const FMT_OFF: u32 = 0; //        no translation: output = input (x86 CR0.PG = 0, arm64 stage off)
export const FMT_X86: u32 = 1; //        x86-64 4/5-level paging (SDM Vol.3A §4.5)
export const FMT_EPT: u32 = 2; //        EPT 4/5-level (SDM Vol.3C §29.3.2)
export const FMT_ARM_S1: u32 = 3; //     VMSAv8-64 stage 1, EL1&0, 4 KiB granule
export const FMT_ARM_S2: u32 = 4; //     VMSAv8-64 stage 2, 4 KiB granule

// Context flags (MC_FLAGS).
export const MF_TLB: u32 = 1 << 0; //    use and fill the TLB
export const MF_AD: u32 = 1 << 1; //     hardware A/D updates (x86 always; EPT: EPTP bit 6; arm: TCR.HA / VTCR.HA)
export const MF_HD: u32 = 1 << 2; //     arm64 dirty-state updates (HD)
export const MF_PK: u32 = 1 << 3; //     x86 protection keys active
export const MF_PGE: u32 = 1 << 4; //    x86 CR4.PGE
export const MF_WP: u32 = 1 << 5; //     x86 CR0.WP
export const MF_MBEC: u32 = 1 << 6; //   EPT: mode-based execute control
export const MF_PAN: u32 = 1 << 7; //    arm64 PSTATE.PAN
export const MF_WXN: u32 = 1 << 8; //    arm64 SCTLR.WXN
export const MF_PTWDEV: u32 = 1 << 9; // arm64 HCR_EL2.PTW
export const MF_BAD: u32 = 1 << 10; //   arm64 stage 2: invalid/inconsistent SL0, every walk faults at level 0
export const MF_NXE: u32 = 1 << 11; //   x86 EFER.NXE

// ---- TLB context slots --------------------------------------------------------
//
// A slot names one set of TLB entries flushed together. Slots are found by a
// 64-bit key, in a set-associative table of CTX_SETS × CTX_WAYS slots with LRU
// replacement (replacing a slot flushes it first, so replacement only ever
// over-invalidates). One allocator for every tag the architectures define:
//
//   63  62  50 49   42 41  34 33       18 17  16 15             0
//  ┌───┬──────┬───────┬──────┬───────────┬───┬───┬───────────────┐
//  │ V │  0   │   0   │ EPT  │ VPID/VMID │ S2│ G │  PCID / ASID  │
//  └───┴──────┴───────┴──────┴───────────┴───┴───┴───────────────┘
//   V   key valid (a zero key names no slot)
//   G   the global entries of the VPID/VMID (x86 G pages under CR4.PGE, arm64 nG = 0)
//   S2  guest-physical entries: EPT (gpa → hpa) or arm64 stage 2 (IPA → PA)
//   EPT index of the EP4TA (EPTP bits 51:12) in the vCPU's EP4TA table, 0 = no EPT
export const CTX_SETS: u32 = 512;
export const CTX_WAYS: u32 = 8;
export const CTX_SLOTS: u32 = 4096;
export const CTX_STRIDE: u32 = 32;
export const CTX_TAG: u32 = 0; //     u32  tag (1..TAG_MAX) in force for this slot
export const CTX_EPOCH: u32 = 4; //   u32  tag valid iff equal to the vCPU's epoch
export const CTX_LIVE: u32 = 8; //    u32  live TLB entries carrying this tag
export const CTX_LIVE2M: u32 = 12; // u32  … of which pieces of 2 MiB pages
export const CTX_LIVE1G: u32 = 16; // u32  … of which pieces of 1 GiB pages
export const CTX_STAMP: u32 = 20; //  u32  LRU stamp
export const CTX_KEY: u32 = 24; //    u64  key (0: unused)

export const KEY_VALID: u64 = <u64>1 << 63;
export const KEY_GLOBAL: u64 = <u64>1 << 16;
export const KEY_S2: u64 = <u64>1 << 17;
export const KEY_SPACE_SHIFT: u64 = 18; //  VPID / VMID, 16 bits
export const KEY_EPT_SHIFT: u64 = 34; //    EP4TA index, 8 bits
export const KEY_ASID_MASK: u64 = 0xffff;
export const KEY_SPACE_MASK: u64 = <u64>0xffff << 18;
export const KEY_EPT_MASK: u64 = <u64>0xff << 34;

/** EP4TA table (per vCPU, in STATE): EP4TA_COUNT EPTP roots named by index 1..EP4TA_COUNT in slot keys. */
export const EP4TA_COUNT: u32 = 15;
export const T_EP4TA: u32 = 0x300; //        u64[16]: entry i (1..15) the EP4TA of index i, 0 = free
export const T_EP4TA_STAMP: u32 = 0x380; //  u32[16]: LRU stamps

export const BATCH_MAX: u32 = 16384;
export const VCPU_SLOTLIST: u32 = VCPU_CTX + CTX_SLOTS * CTX_STRIDE; //  u16[CTX_SLOTS]: slots in use, T_SLOTS_USED of them
export const VCPU_BATCH_VA: u32 = (VCPU_SLOTLIST + CTX_SLOTS * 2 + 4095) & ~4095; // u64[BATCH_MAX]
export const VCPU_BATCH_PA: u32 = VCPU_BATCH_VA + BATCH_MAX * 8; //         u64[BATCH_MAX]
export const VCPU_BATCH_STATUS: u32 = VCPU_BATCH_PA + BATCH_MAX * 8; //     u32[BATCH_MAX]
export const VCPU_BATCH_ACCESS: u32 = VCPU_BATCH_STATUS + BATCH_MAX * 4; // u8[BATCH_MAX]
export const VCPU_TLB: u32 = (VCPU_BATCH_ACCESS + BATCH_MAX + 4095) & ~4095;

// Batch status word (u32), one per address:
//
//   31   28 27  21 20   16 15     8 7        0
//  ┌───────┬──────┬───────┬────────┬──────────┐
//  │status │  0   │ shift │ level  │ #PF code │
//  └───────┴──────┴───────┴────────┴──────────┘
//  (STATUS_EPT_VIOLATION: bits 24:16 hold exit-qualification bits 8:0, bits 7:0 are 0)
export const BS_STATUS_SHIFT: u32 = 28;
export const BS_QUAL_SHIFT: u32 = 16;
export const BS_PSHIFT_SHIFT: u32 = 16;
export const BS_LEVEL_SHIFT: u32 = 8;

// STATE record (offsets from vcpuBase). 64-bit values are little-endian u64.
export const S_CR0: u32 = 0x00;
export const S_CR3: u32 = 0x08;
export const S_CR4: u32 = 0x10;
export const S_EFER: u32 = 0x18;
export const S_PKRU: u32 = 0x20;
export const S_RFLAGS: u32 = 0x28;
export const S_MAXPHY: u32 = 0x30; //    u32  MAXPHYADDR
export const S_TLB_ON: u32 = 0x34; //    u32  1: use and fill the TLB
export const S_INDEX: u32 = 0x38; //     u32  vCPU index
// VMX controls (x86): VMX non-root with EPT iff S_EPTP_ON.
export const S_EPTP: u32 = 0x40; //      u64  EPT pointer (validated by TS as VM entry would)
export const S_EPTP_ON: u32 = 0x48; //   u32  1: translations are VMX non-root under EPT
export const S_VPID: u32 = 0x4c; //      u32  VPID (0 = VPID off)
export const S_MBEC: u32 = 0x50; //      u32  1: mode-based execute control for EPT
// arm64 system registers (offsets from vcpuBase), u64 unless noted.
export const S_TTBR0: u32 = 0x100;
export const S_TTBR1: u32 = 0x108;
export const S_TCR: u32 = 0x110;
export const S_SCTLR: u32 = 0x118;
export const S_MAIR: u32 = 0x120;
export const S_VTTBR: u32 = 0x128;
export const S_VTCR: u32 = 0x130;
export const S_HCR: u32 = 0x138;
export const S_PAN: u32 = 0x140; //      u32  PSTATE.PAN
export const S_PA_BITS: u32 = 0x144; //  u32  implemented PA size (ID_AA64MMFR0.PARange), 48
// Result record of the last single translate / walk.
export const R_PA: u32 = 0x80; //        u64
export const R_GPA: u32 = 0x88; //       u64  table gpa of an abort
export const R_STATUS: u32 = 0x90; //    u32  STATUS_*
export const R_ERROR: u32 = 0x94; //     u32  #PF error code
export const R_LEVEL: u32 = 0x98; //     u32  leaf level, or level where the walk stopped
export const R_SHIFT: u32 = 0x9c; //     u32  page-size shift: 12, 21, 30 (0 on fault)
// Walk record (x86Walk with WALK_RECORD): per level L (1..5) at R_WALK + (L − 1) × 16,
// the entry's gpa (u64) and its value as read (u64); R_WALK_TOP the first level walked.
// KVM's struct guest_walker: the hypervisor shadows from it.
export const R_WALK: u32 = 0x200;
export const R_WALK_TOP: u32 = 0x250; // u32
// arm64 fault details (R_STATUS = STATUS_ARM_FAULT).
export const R_IPA: u32 = 0xa0; //       u64  intermediate address (ok), faulting IPA (stage 2)
export const R_FSC: u32 = 0xa8; //       u32  fault status code, ESR ISS[5:0]
export const R_STAGE: u32 = 0xac; //     u32  1 or 2
export const R_FFLAGS: u32 = 0xb0; //    u32  bit 0 S1PTW, bit 1 WnR
export const R_KIND: u32 = 0xb4; //      u32  FK_*

// Effective rights word (R_RIGHTS), written by the Number fast path:
//
//   31     21 20    16 15  12 11   9   8     7    6    5    4    3    2    1    0
//  ┌─────────┬────────┬──────┬──────┬──────┬────┬────┬────┬────┬────┬────┬────┬────┐
//  │    0    │ pshift │level │  0   │CACHED│ D  │ G  │ XU │ WU │ RU │ XS │ WS │ RS │
//  └─────────┴────────┴──────┴──────┴──────┴────┴────┴────┴────┴────┴────┴────┴────┘
//
// RS/WS/XS, RU/WU/XU: a read / write / fetch at supervisor (x86 CPL 0–2,
// arm64 EL1) / user (CPL 3, EL0) privilege would be served by this
// translation under the current mode (every rights rule folded in: x86
// WP/SMEP/SMAP+AC/NXE/PKRU, arm64 AP/UXN/PXN/PAN/WXN). D: the translation
// is dirty (x86 D set; arm64 writable without a DBM update), so a permitted
// write needs no A/D update and may be served from a cache. G: global.
// CACHED: the translation is in this vCPU's TLB, so an embedder may cache it
// until T_INV_EPOCH changes. level: the leaf level; pshift: 12, 21, 30.
export const RIGHTS_RS: u32 = 1 << 0;
export const RIGHTS_WS: u32 = 1 << 1;
export const RIGHTS_XS: u32 = 1 << 2;
export const RIGHTS_RU: u32 = 1 << 3;
export const RIGHTS_WU: u32 = 1 << 4;
export const RIGHTS_XU: u32 = 1 << 5;
export const RIGHTS_GLOBAL: u32 = 1 << 6;
export const RIGHTS_DIRTY: u32 = 1 << 7;
export const RIGHTS_CACHED: u32 = 1 << 8;
export const RIGHTS_LEVEL_SHIFT: u32 = 12;
export const RIGHTS_PSHIFT_SHIFT: u32 = 16;
// Per-vCPU TLB/context state kept in memory so every flush can be inspected.
export const T_EPOCH: u32 = 0xc0; //     u32
export const T_NEXT_TAG: u32 = 0xc4; //  u32
export const T_TOTAL_LIVE: u32 = 0xc8; // u32  live entries over all contexts
/**
 * Invalidation epoch (u32, wraps): changes whenever this vCPU's TLB may have
 * dropped an entry or stopped matching it — an invalidation, a flush, an
 * eviction by a fill, a tag rollover, a context switch, a mode or rights
 * change. An embedder's own cache of translations (built from results with
 * RIGHTS_CACHED) stays correct while the epoch it was built under holds.
 */
export const T_INV_EPOCH: u32 = 0xcc;
/** u32: effective rights word of the last successful fast translation (RIGHTS_* below); right after T_INV_EPOCH so TS reads both through one view. */
export const R_RIGHTS: u32 = 0xd0;
/** u32: slots listed in VCPU_SLOTLIST. */
export const T_SLOTS_USED: u32 = 0xd4;
/** u32: LRU clock of slots and EP4TA indexes. */
export const T_STAMP: u32 = 0xd8;
// EPT fault details (R_STATUS = STATUS_EPT_VIOLATION / STATUS_EPT_MISCONFIG / STATUS_ABORT under EPT).
export const R_GVA: u32 = 0xe0; //       u64  guest linear address of an EPT violation
export const R_HPA: u32 = 0xe8; //       u64  abort under EPT: host-physical address of the unreadable entry
export const R_ASTAGE: u32 = 0xf0; //    u32  abort: 0 no EPT, 1 a guest table entry, 2 an EPT entry

/** Tags are 16 bits; tag 0 never names a live context, so an all-zero entry never hits. */
export const TAG_MAX: u32 = 0xffff;
/** A TLB entry's vpn: bits 56:12 of the address (45 bits). */
export const VPN_BITS: u32 = 45;

// Status of a translation (R_STATUS, batch status high byte).
export const STATUS_OK: u32 = 0;
export const STATUS_PF: u32 = 1; //      #PF, vector 14
export const STATUS_GP: u32 = 2; //      #GP(0), vector 13: non-canonical address
export const STATUS_ABORT: u32 = 3; //   a table pointer outside every memslot
export const STATUS_ARM_FAULT: u32 = 4; // arm64 abort: details in R_FSC, R_STAGE, R_FFLAGS, R_KIND
export const STATUS_EACCESS: u32 = 5; //  batch entry with an access code other than 0, 1, 2
export const STATUS_EPT_VIOLATION: u32 = 6; // exit reason 48: R_ERROR exit qualification, R_GPA, R_GVA, R_LEVEL (EPT level)
export const STATUS_EPT_MISCONFIG: u32 = 7; // exit reason 49: R_GPA, R_LEVEL

// arm64 fault kinds (R_KIND).
export const FK_TRANSLATION: u32 = 1;
export const FK_ADDRESS_SIZE: u32 = 2;
export const FK_ACCESS_FLAG: u32 = 3;
export const FK_PERMISSION: u32 = 4;
export const FK_EXTERNAL: u32 = 5; //    synchronous external abort on the walk (table outside RAM)

// COUNTERS: u64 each, index × 8 from VCPU_COUNTERS.
export const C_LOOKUPS: u32 = 0;
export const C_HITS: u32 = 1;
export const C_MISSES: u32 = 2;
export const C_WALKS: u32 = 3;
export const C_PT_REFS: u32 = 4; //       paging-structure memory references (loads)
export const C_AD_WRITES: u32 = 5; //     successful A/D compare-exchanges
export const C_WALK_RETRIES: u32 = 6; //  walks restarted by a lost compare-exchange
export const C_FILLS: u32 = 7;
export const C_EVICTIONS: u32 = 8; //     live entries overwritten by a fill
export const C_FLUSH_ALL: u32 = 9; //     all contexts incl. global
export const C_FLUSH_NONGLOBAL: u32 = 10; // all contexts, globals kept
export const C_FLUSH_CTX: u32 = 11; //    one PCID context
export const C_FLUSH_PAGE: u32 = 12; //   single-address invalidations
export const C_DROPPED: u32 = 13; //      live entries removed by invalidations
export const C_FAULTS: u32 = 14;
export const C_ROLLOVERS: u32 = 15; //    tag space exhausted: whole TLB cleared
export const C_FLUSH_PROBES: u32 = 16; // slots examined by page invalidations
export const C_S2_REFS: u32 = 17; //      … of C_PT_REFS, loads of second-stage (EPT / stage-2) entries
export const C_SLOT_EVICTIONS: u32 = 18; // TLB context slots replaced (flushed) to make room
export const COUNTER_COUNT: u32 = 19;

// TLB entry (32 bytes):
//
//   63        48 47 45 44                                        0
//  ┌────────────┬─────┬───────────────────────────────────────────┐
//  │  tag (16)  │  0  │ vpn = va[56:12] (45)                      │ +0  key
//  ├────────────┴─────┴───────────────────────────────────────────┤
//  │ pa of the 4 KiB piece (bits 51:12; 11:0 zero)                │ +8
//  ├──────────────────────────────────────────────────────────────┤
//  │ attr (u32)                   │ ctx slot (u32)                │ +16
//  ├──────────────────────────────────────────────────────────────┤
//  │ batch status word of a hit (u32) │ gfn (u32)                 │ +24
//  └──────────────────────────────────────────────────────────────┘
// gfn: x86 combined (EPT) entries: the guest-physical frame of the piece
// (entries are filled only for gpa < 2^44); 0 otherwise.
//
// attr: bits 22:0 are per architecture — x86: 2:0 ACC (X=1, W=2, U=4, ANDed
// over the walk; X means "not XD"), 3 D of the leaf, 19:16 protection key;
// arm64: 7:0 allow bits per (EL, PAN, access) (assembly/arm64/desc.ts AL_*).
// Bits 31:23 are the TLB's own: 23 global, 28:24 page shift, 31:29 level.
export const TLB_ENTRY: u32 = 32;
export const E_KEY: u32 = 0;
export const E_PA: u32 = 8;
export const E_ATTR: u32 = 16;
export const E_CTX: u32 = 20;
export const E_STATUS: u32 = 24;
export const E_GFN: u32 = 28;
