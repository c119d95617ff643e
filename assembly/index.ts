// The wasm export surface: re-exports only (layout constants, machine bring-up,
// memory chokepoint, TLB maintenance, x86 translation). No logic lives here.

export * from "./layout";
export { machineInit, INIT_OK, INIT_EALREADY, INIT_EVCPUS, INIT_ETLB, INIT_ESLOT, INIT_ENOMEM, SLOT_MAX } from "./machine";
export { physAttach, hostForStore, hostForRead } from "./phys";
export { tlbAttach, tlbFlushCtx, tlbFlushNonGlobal, tlbFlushAll, tlbInvalidatePage, tlbInvalidateRange, tlbInvalidateRangeF, ctxLiveTag, selectCtx, selectGlobal } from "./tlb";
export {
  x86LoadControl, x86LoadCr3, x86Translate, x86TranslateFast, x86TranslateBatch, x86BatchHits, x86TranslateUntilFault, x86Walk, x86Invlpg, x86InvalidatePcidAddr,
  WALK_AD, WALK_CHECK, WALK_DEBUG, WALK_RECORD, CONTROL_OK, CONTROL_EMODE, CONTROL_EMAXPHY,
} from "./x86/mmu";
export {
  armLoadRegs, armSelectContexts, armTranslate, armTranslateFast, armTranslateBatch, armBatchHits, armWalk, armWalkStage2,
  AWALK_UPDATE, AWALK_DEBUG, REGS_OK,
} from "./arm64/mmu";
