// Reads the linear-memory map from the wasm module's exported constants
// (assembly/layout.ts is the single source of truth). Nothing here retypes an
// offset: the names below are checked to exist at load, their values are the
// module's.

/** Names of the exported layout constants the control plane uses. */
const NAMES = [
  "PAGE_SIZE", "WASM_PAGE", "ZERO_PAGE", "MACHINE_BASE", "VCPU_AREA", "LINEAR_LIMIT",
  "M_MAGIC", "M_NVCPUS", "M_VCPU_STRIDE", "M_TLB_ENTRIES", "M_POOL_BASE", "M_POOL_BYTES", "M_FRAME_DIR",
  "M_RAM_HOST", "M_BACK_NEXT", "M_BACK_END", "M_BACKED", "M_POPULATE", "M_SLOT_BASE", "M_SLOT_SIZE",
  "M_EAGER_BYTES", "M_MAX_PAGES", "M_GROW_LOCK", "M_POOL_HPA", "MACHINE_MAGIC",
  "VCPU_STATE", "VCPU_COUNTERS", "VCPU_CTX", "CTX_SLOTS", "CTX_STRIDE", "CTX_TAG", "CTX_EPOCH",
  "CTX_LIVE", "CTX_KEY", "VCPU_MMU", "MMU_CTX_COUNT", "MMU_STRIDE", "MMU_NONE", "MMU_ROOT", "MMU_STAGE2", "MMU_WALKER",
  "MC_FORMAT", "MC_PTW", "MC_REGS", "MC_SLOT", "MC_GSLOT", "MC_OWN_COUNTERS", "MC_KEY", "MC_GKEY", "FMT_OFF", "FMT_X86", "FMT_EPT", "FMT_ARM_S1", "FMT_ARM_S2",
  "S_EPTP", "S_EPTP_ON", "S_VPID", "S_MBEC", "R_GVA", "R_HPA", "R_ASTAGE", "STATUS_EPT_VIOLATION", "STATUS_EPT_MISCONFIG",
  "BS_QUAL_SHIFT", "E_GFN", "C_S2_REFS", "C_SLOT_EVICTIONS", "T_SLOTS_USED", "VCPU_SLOTLIST", "EP4TA_COUNT", "T_EP4TA",
  "FK_TRANSLATION", "FK_ADDRESS_SIZE", "FK_ACCESS_FLAG", "FK_PERMISSION", "FK_EXTERNAL", "VPN_BITS",
  "KEY_GLOBAL", "KEY_S2", "KEY_SPACE_SHIFT", "KEY_EPT_SHIFT", "EPTP_OK", "EPTP_EMEMTYPE", "EPTP_EWALK", "EPTP_ERESERVED", "WALK_NOTLB", "BATCH_MAX", "VCPU_BATCH_VA", "VCPU_BATCH_PA", "VCPU_BATCH_STATUS", "VCPU_BATCH_ACCESS", "VCPU_TLB",
  "BS_STATUS_SHIFT", "BS_PSHIFT_SHIFT", "BS_LEVEL_SHIFT",
  "S_CR0", "S_CR3", "S_CR4", "S_EFER", "S_PKRU", "S_RFLAGS", "S_MAXPHY", "S_TLB_ON", "S_INDEX",
  "R_PA", "R_GPA", "R_STATUS", "R_ERROR", "R_LEVEL", "R_SHIFT", "T_EPOCH", "T_NEXT_TAG", "T_TOTAL_LIVE", "TAG_MAX",
  "STATUS_OK", "STATUS_PF", "STATUS_GP", "STATUS_ABORT", "STATUS_ARM_FAULT", "STATUS_EACCESS",
  "C_LOOKUPS", "C_HITS", "C_MISSES", "C_WALKS", "C_PT_REFS", "C_AD_WRITES", "C_WALK_RETRIES", "C_FILLS",
  "C_EVICTIONS", "C_FLUSH_ALL", "C_FLUSH_NONGLOBAL", "C_FLUSH_CTX", "C_FLUSH_PAGE", "C_DROPPED", "C_FAULTS",
  "C_ROLLOVERS", "C_FLUSH_PROBES", "COUNTER_COUNT",
  "TLB_ENTRY", "E_KEY", "E_PA", "E_ATTR", "E_CTX", "E_STATUS",
  "INIT_OK", "INIT_EALREADY", "INIT_EVCPUS", "INIT_ETLB", "INIT_ESLOT", "INIT_ENOMEM",
  "WALK_AD", "WALK_CHECK", "WALK_DEBUG", "WALK_RECORD", "R_WALK", "R_WALK_TOP", "CONTROL_OK", "CONTROL_EMODE", "CONTROL_EMAXPHY",
  "S_TTBR0", "S_TTBR1", "S_TCR", "S_SCTLR", "S_MAIR", "S_VTTBR", "S_VTCR", "S_HCR", "S_PAN", "S_PA_BITS",
  "R_IPA", "R_FSC", "R_STAGE", "R_FFLAGS", "R_KIND", "R_RIGHTS", "T_INV_EPOCH", "AWALK_UPDATE", "AWALK_DEBUG",
  "REGS_OK",
] as const;

export type LayoutName = (typeof NAMES)[number];
export type Layout = { readonly [K in LayoutName]: number } & { readonly SLOT_MAX: bigint };

/** Builds the layout record from an instance's exports; throws if a name is missing. */
export function readLayout(exports: WebAssembly.Exports): Layout {
  const out: Record<string, number | bigint> = {};
  for (const name of NAMES) {
    const g = exports[name];
    if (!(g instanceof WebAssembly.Global)) throw new Error(`vmmu: wasm module lacks layout constant ${name}`);
    out[name] = Number(g.value);
  }
  const slotMax = exports.SLOT_MAX;
  if (!(slotMax instanceof WebAssembly.Global)) throw new Error("vmmu: wasm module lacks SLOT_MAX");
  out.SLOT_MAX = slotMax.value as bigint;
  // Rebuilt by Object.fromEntries: an object grown by ~130 keyed stores is in
  // V8's dictionary mode, where every `L.X` on a hot path is a hash lookup
  // (≈ 20 ns); fromEntries builds it with fast properties.
  return Object.freeze(Object.fromEntries(Object.entries(out))) as Layout;
}
