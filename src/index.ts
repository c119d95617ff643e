// vmmu public API. See README.md for the tour and docs/mmu.md for the design.

export {
  createMachine, attachVcpu, coreLayout, Machine, type MachineOptions, type X86MachineOptions, type Arm64MachineOptions,
  type MachineHandle, type Vcpu,
} from "./machine.js";
export { GuestMemory, type Memslot } from "./memory.js";
export {
  X86Vcpu, isCanonical, type X86Control, type X86Fault, type X86Translation, type X86TranslationWithRights, type X86TranslateResult, type X86Batch,
  type X86TlbEntry, type X86EptViolation, type X86EptMisconfig, type X86VmFail, type X86Vmcs,
} from "./x86/vcpu.js";
export type { TlbStats, Batch } from "./core/vcpu-base.js";
export { X86PageTableBuilder, type X86PageSize, type X86LeafFlags, type X86BuilderOptions } from "./x86/table-builder.js";
export { X86EptBuilder, type EptPageSize, type EptLeafFlags, type EptBuilderOptions } from "./x86/ept-builder.js";
export { CR0, CR4, EFER, RFLAGS, PTE, PFERR, LONG_MODE, CR3_NOFLUSH, CR3_PCID_MASK, type X86Access } from "./x86/regs.js";
export { hex } from "./addr.js";
export { coreHash, RIGHTS } from "./core/load.js";
export {
  Arm64Vcpu, armAccessCode, type Arm64SystemRegisters, type Arm64Fault, type Arm64FaultKind, type Arm64Translation, type Arm64TranslationWithRights,
  type Arm64TranslateResult, type Arm64Batch, type TlbiStats,
} from "./arm64/vcpu.js";
export {
  Arm64Stage1Builder, Arm64Stage2Builder, type Arm64BlockSize, type Arm64S1Flags, type Arm64S1TableFlags, type Arm64S2Flags,
} from "./arm64/table-builder.js";
export { TCR, SCTLR, HCR, VTCR, DESC, LINUX_TCR, kvmVtcr, s1StartLevel, type Arm64Access } from "./arm64/regs.js";
export { decodeTlbi, encodeTlbiVa, encodeTlbiRange, TLBI_OPS, TLBI_NAMES, TLBI_CODE, type DecodedTlbi, type TlbiOp, type TlbiName } from "./arm64/tlbi.js";
export { linuxFlushTlbRange, kvmTlbFlushVmidRange, type TlbiCall } from "./arm64/linux-tlb.js";
export { lookup, type LookupResult, type LookupMapped, type LookupUnmapped, type LookupEntry, type LookupStop } from "./forensics/lookup.js";
export { mappings, type Mapping, type MappingsOptions, type MappingsStats } from "./forensics/mappings.js";
export { readVirtual, writeVirtual } from "./forensics/virtual.js";
export { openImage, MemoryImage, type ImageSource, type ImageRange, type ImageCpu, type OpenImageOptions } from "./forensics/image.js";
export type { AddressSpace, X86Space, Arm64Space, PhysicalMemory, PageRights } from "./forensics/space.js";
