// The wasm export surface: re-exports only (layout constants, machine bring-up,
// memory chokepoint, TLB maintenance, MMU context decoders and translation
// entry points per format). No logic lives here.

export * from "./layout";
export { machineInit, INIT_OK, INIT_EALREADY, INIT_EVCPUS, INIT_ETLB, INIT_ESLOT, INIT_ENOMEM, SLOT_MAX } from "./machine";
export { physAttach, hostForStore, hostForRead } from "./phys";
export {
  tlbInit, tlbFlushSlot, tlbFlushKey, tlbFlushMatch, tlbFlushNonGlobal, tlbFlushAll, tlbInvalidateRange, tlbInvalidateRangeMatch,
  ctxLiveTag, slotFind, slotAcquire,
} from "./tlb";
export { WALK_AD, WALK_CHECK, WALK_DEBUG, WALK_RECORD, WALK_NOTLB } from "./walk";
export {
  x86DecodeContext, x86ReloadCr3, x86Translate, x86TranslateFast, x86TranslateBatch, x86BatchHits, x86TranslateUntilFault, x86Walk,
  x86Invlpg, x86InvalidatePcidAddr, x86FlushPcid, x86FlushVpid, mmuOwnCounters, CONTROL_OK, CONTROL_EMODE, CONTROL_EMAXPHY,
} from "./x86/mmu";
export { eptDecodeContext, eptpCheck, vmxInvept, vmxInvvpid, EPTP_OK, EPTP_EMEMTYPE, EPTP_EWALK, EPTP_ERESERVED } from "./x86/ept";
export {
  armDecodeS1, armDecodeS2, armTranslate, armTranslateFast, armTranslateBatch, armBatchHits, armWalk, armWalkStage2,
  armFlushVmid, armFlushAsid, armInvalidateVa, armInvalidateIpa, AWALK_UPDATE, AWALK_DEBUG, REGS_OK,
} from "./arm64/mmu";
