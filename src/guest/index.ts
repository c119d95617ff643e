// The guest layer: guest operating-system models and workloads that run on
// the abstract GuestCpu (cpu.ts), on bare metal (BareMetalCpu) or under a
// hypervisor model (src/kvm/).

export type { GuestCpu, GuestException, GuestPageFault, GuestGeneralProtection } from "./cpu.js";
export { BareMetalCpu, BARE_METAL_COSTS, X86_BOOT_CONTROL, type CpuCosts, type BareMetalCpuOptions } from "./bare-metal-cpu.js";
export { FrameAllocator, FRAME, PCP_HIGH, PCP_BATCH, type FrameUse, type FrameStats } from "./frames.js";
export {
  LinuxGuest, LinuxCpu, Mm, Task, GuestFile, LINUX_WORK_COSTS, USER_LAYOUT, PAGE_OFFSET, START_KERNEL_MAP, KERNEL_TEXT_START,
  CPU_ENTRY_AREA_BASE, TLB_NR_DYN_ASIDS, X86_CR3_PTI_PCID_USER_BIT, PTI_USER_PGTABLE_BIT, TLB_SINGLE_PAGE_FLUSH_CEILING,
  KERNEL_PGD_BOUNDARY, KERNEL_CR0, type LinuxOptions, type LinuxWorkCosts, type LinuxStats, type GuestEvent, type Cr3Reason, type Vma,
  type FaultOutcome,
} from "./linux.js";
export {
  runKernelCompile, bareMetalKernelCompile, type KernelCompileOptions, type KernelCompileResult, type BareMetalKernelCompileOptions,
} from "./kernel-compile.js";
export {
  LackeyParser, readLackey, parseLackey, collectTrace, traceRegions, ACCESS_READ, ACCESS_WRITE, ACCESS_FETCH,
  type AccessChunk, type AccessTrace, type LackeyOptions, type LackeyCounts, type TraceRegion,
} from "./lackey.js";
export { runSsdd, KERNEXEC_DEFAULTS, type SsddOptions, type SsddResult, type SsddStepCounts, type KernexecOptions } from "./ssdd.js";
