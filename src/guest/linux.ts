// A guest operating system in the shape of Linux x86-64 (v4.15+) with page
// table isolation (pti=on) and PCIDs, running on the abstract GuestCpu. Its
// page tables are real SDM encodings in guest RAM, written only by kernel
// stores through the direct map (GuestCpu.store64), so a hypervisor that
// write-protects them sees every one.
//
// What follows Linux (arch/x86/mm/{tlb,pti,pgtable}.c, arch/x86/entry/calling.h,
// mm/memory.c, mm/mmap.c; invalidation per Intel SDM Vol.3A §4.10.4):
// - Layout: direct map of RAM at PAGE_OFFSET (2 MiB pages, NX), kernel text at
//   0xffffffff81000000 (2 MiB pages), cpu_entry_area at 0xfffffe0000000000.
// - PTI: each mm has an order-1 PGD pair, user PGD = kernel PGD + 4 KiB. The
//   kernel PGD's kernel half is copied from swapper's (same PUD pages); the
//   user PGD's kernel half holds only the cpu_entry_area (same PUD page as the
//   kernel's) and the entry text (pti's own PUD/PMD pages, the PMD entry
//   copied). User PML4 entries are written to both PGDs (pti_set_user_pgtbl:
//   user copy first, kernel copy with NX), so user tables below are shared.
// - Global pages, as __default_kernel_pte_mask and pti decide: with PTI the
//   direct map is non-global and kernel text is global only without PCID
//   (pti_kernel_image_global_ok); entry text and cpu_entry_area are global.
// - PCIDs: TLB_NR_DYN_ASIDS = 6 per CPU, kernel PCID = ASID + 1, user PCID =
//   kernel PCID | 1 << 11. choose_new_asid: reuse the CPU's ASID of this mm
//   (flush iff its tlb_gen is behind), else the next ASID round-robin
//   (Linux's next_asid, not an LRU) with a flush.
// - CR3: SWITCH_TO_KERNEL_CR3 always sets NOFLUSH; SWITCH_TO_USER_CR3 sets it
//   unless the CPU's user_pcid_flush_mask has this ASID (then it flushes the
//   user PCID and clears the bit); switch_mm loads the next mm's kernel CR3
//   with NOFLUSH iff its ASID was still valid (load_new_mm_cr3).
// - Flushes: flush_tlb_mm_range bumps the mm's tlb_gen; flush_tlb_func does
//   per-page flush_tlb_one_user (≤ 33 pages, and only if exactly one
//   generation behind) else a full local flush (CR3 rewrite + user ASID).
//   flush_tlb_one_user = INVLPG (kernel PCID, current CR3) + INVPCID type 0 on
//   the user PCID when INVPCID is available, else invalidate_user_asid (the
//   deferred user flush at the next return to user): Linux ≥ 4.15's
//   __native_flush_tlb_one_user. A lazy CPU receiving a flush switches to
//   init_mm; remote CPUs get an IPI only if not lazy or tables were freed.
// - Memory: demand paging (anonymous read faults map the zero page; write
//   faults allocate zeroed frames; write to the zero page is a COW with
//   ptep_clear_flush), file text mapped from shared page-cache frames,
//   munmap/brk shrink zap PTEs, free empty tables (free_pgtables), flush, then
//   free frames (mmu_gather order).
// - Scheduling: a context switch saves prev's FPU state and restores next's
//   unless the CPU still holds it (switch_fpu_prepare/finish, fpregs_state_valid);
//   try_to_wake_up touches the wakee and the target CPU's run queue.
//
// Simplifications (deliberate): fork gives the child fresh (unpopulated)
// mappings of the parent's image instead of copying PTEs with COW; private
// file data is anonymous; kernel stacks live in the direct map (no
// VMAP_STACK); I/O completes at once in memory and the task then sleeps for
// the device latency; no SMAP (GuestCpu has no STAC/CLAC); no vmalloc, no
// swap, no reclaim, no huge user pages; one guest "kernel" runs all CPUs in
// one thread, and remote IPI handlers run when the sender makes them.

import type { GuestCpu, GuestException, GuestPageFault } from "./cpu.js";
import { X86PageTableBuilder } from "../x86/table-builder.js";
import { CR0, CR3_NOFLUSH, CR4, PFERR, PTE, PTE_ADDR_MASK, type X86Access } from "../x86/regs.js";
import { FRAME, FrameAllocator } from "./frames.js";
import { bigintRangeArg, fnArg, intArg, optBoolArg, optionsObject, show, sizeArg } from "../validate.js";

/** page_offset_base without KASLR, 4-level paging. */
export const PAGE_OFFSET = 0xffff_8880_0000_0000n;
/** __START_KERNEL_map: virtual address of physical 0 (+ phys_base) in the kernel-image mapping. */
export const START_KERNEL_MAP = 0xffff_ffff_8000_0000n;
/** _text: CONFIG_PHYSICAL_START (16 MiB) above START_KERNEL_MAP. */
export const KERNEL_TEXT_START = 0xffff_ffff_8100_0000n;
/** CPU_ENTRY_AREA_BASE (v4.17+ 4-level layout). */
export const CPU_ENTRY_AREA_BASE = 0xffff_fe00_0000_0000n;
/** Dynamic ASIDs per CPU (arch/x86/include/asm/tlbflush.h). */
export const TLB_NR_DYN_ASIDS = 6;
/** CR3 bit that turns a kernel PCID into its user PCID under PTI. */
export const X86_CR3_PTI_PCID_USER_BIT = 11;
/** PTI_USER_PGTABLE_BIT: the user PGD is the kernel PGD + 4 KiB. */
export const PTI_USER_PGTABLE_BIT = 12;
/** tlb_single_page_flush_ceiling: above this many pages a range flush is a full flush. */
export const TLB_SINGLE_PAGE_FLUSH_CEILING = 33;
/**
 * Bytes of a task's FPU state: the XSAVE standard format of x87 | SSE | AVX
 * (512-byte legacy region + 64-byte header + 256 bytes of YMM_Hi128; Intel
 * SDM Vol.1 §13.4), what XSAVES writes for a CPU with AVX and neither
 * AVX-512, MPX nor PKU in XCR0 (the compacted form has the same size here).
 */
export const XSTATE_BYTES = 832;
/** KERNEL_PGD_BOUNDARY: PML4 index where the kernel half starts. */
export const KERNEL_PGD_BOUNDARY = 256;
/** CR0 as the kernel runs with paging on (boot loads it; grsecurity KERNEXEC clears WP only between pax_open_kernel and pax_close_kernel). */
export const KERNEL_CR0 = CR0.PE | CR0.WP | CR0.PG;

const CONFIG_PHYSICAL_START = 0x100_0000n;
/** Offset of thread.fpu's fpstate in a task's slab frame (an assumption of layout: task_struct ends with it). */
const FPSTATE_OFFSET = 0x400n;
/** 64-byte lines XSAVES writes (XSTATE_BYTES). */
const XSTATE_LINES = XSTATE_BYTES / 64;
/** fetchText path of try_to_wake_up (not a syscall number). */
const TEXT_PATH_TTWU = 900;
const M2 = 0x20_0000n;
const K4 = 0x1000n;
/** Bytes between per-CPU cpu_entry_area records (struct cpu_entry_area rounded; an assumption). */
const CEA_STRIDE = 0x4_0000n;
const PTI_USER_PCID = 1n << BigInt(X86_CR3_PTI_PCID_USER_BIT);
const PTI_USER_PGD = 1n << BigInt(PTI_USER_PGTABLE_BIT);
/** User-space layout without ASLR (setarch -R): PIE base, mmap_base and stack top. */
export const USER_LAYOUT = {
  pieBase: 0x5555_5555_4000,
  mmapBase: 0x7fff_f7ff_f000,
  stackTop: 0x7fff_ffff_f000,
  /** Size of the initial stack VMA. */
  stackBytes: 0x2_0000,
} as const;
const USER_TOP = 2 ** 47;
const SPAN = [0, 2 ** 12, 2 ** 21, 2 ** 30, 2 ** 39];

/**
 * Guest-side work in cycles, charged with GuestCpu.work (the CPU charges its
 * own instructions: CR3 writes, INVLPG, walks…). Assumptions, order of
 * magnitude from common measurements of Linux paths on ≈3 GHz cores, unless
 * the entry names its source.
 */
export const LINUX_WORK_COSTS = Object.freeze({
  /** SYSCALL/SYSRET or exception entry/exit instructions and entry code, without the CR3 writes. */
  entry: 120,
  /** A small syscall's body (open/stat/close/getpid-like). */
  syscall: 400,
  /** The #PF handler's body (find_vma, handle_mm_fault) per fault. */
  pageFault: 700,
  /** copy_page/clear_page and copy_{to,from}_user per 64-byte line, beyond its accesses. */
  copyLine: 2,
  fork: 12_000,
  exec: 30_000,
  exit: 8_000,
  /** __schedule + context_switch without switch_mm's CR3 write and without the FPU switch (fpuSave, fpuRestore). */
  contextSwitch: 1_500,
  /**
   * XSAVES of a task's XSTATE_BYTES of FPU state (switch_fpu_prepare), or
   * XSAVE of it into a signal frame (copy_fpstate_to_sigframe). 232 = 58 ns
   * at 3.993 GHz: the XSAVEOPT of an 832-byte x87+SSE+AVX area measured by
   * ablation in a futex ping-pong under KVM (github.com/AlessandroSangiuliano/Uros
   * issue #561), memory traffic included; another kernel and CPU.
   */
  fpuSave: 232,
  /**
   * XRSTORS of a task's FPU state (switch_fpu_finish), or XRSTOR of it from
   * a signal frame (fpu__restore_sig). 659 = 165 ns at 3.993 GHz: the XRSTOR
   * of the same measurement (Uros issue #561).
   */
  fpuRestore: 659,
  /**
   * try_to_wake_up's body beyond its accesses: pi_lock and rq lock,
   * update_rq_clock, enqueue_task_fair, check_preempt_curr. An assumption
   * (the order of a small syscall body).
   */
  wakeup: 400,
  /**
   * Vectoring of an exception the CPU raises itself, without a faulting
   * access (the #DB after a single-stepped instruction, on its IST stack),
   * and the IRET back: BARE_METAL_COSTS.exception's assumption for #PF/#GP.
   * Charged as work: GuestCpu has no operation that raises it.
   */
  exceptionDelivery: 250,
  /** Timer interrupt body (scheduler_tick). */
  tick: 800,
  /** flush_tlb_func on an IPI's target. */
  ipiHandler: 400,
  /** Block-device latency of a page-cache miss (≈100 µs at 3 GHz). */
  ioLatency: 300_000,
});
export type LinuxWorkCosts = { -readonly [K in keyof typeof LINUX_WORK_COSTS]: number };

export interface LinuxOptions {
  /**
   * How a user PCID is flushed (KPTI with PCIDs): "lazy" (default, Linux's
   * invalidate_user_asid: the flush is deferred to the next return to user,
   * a CR3 load without NOFLUSH) or "eager" (INVPCID single-context of the
   * user PCID at once, and the return to user keeps NOFLUSH). Eager needs
   * INVPCID; without it the flush stays lazy.
   */
  pcidFlush?: "lazy" | "eager";
  /** Guest RAM in bytes: a multiple of 2 MiB, at least 64 MiB. */
  ramBytes: bigint | number;
  /** Guest-physical start of RAM (default 0; 2 MiB aligned). */
  ramBase?: bigint;
  /** Page table isolation (default true). */
  pti?: boolean;
  /** Use PCIDs (CR4.PCIDE, default true). */
  pcid?: boolean;
  /** Use INVPCID (default: what cpus[0].hasInvpcid says). */
  invpcid?: boolean;
  /** Kernel text size (default 8 MiB; a multiple of 2 MiB, the last 2 MiB page is .entry.text). */
  kernelTextBytes?: number;
  /** Guest work cycles overriding LINUX_WORK_COSTS. */
  work?: Partial<LinuxWorkCosts>;
  /** Called on every event (tests, tracing). */
  trace?: (e: GuestEvent) => void;
}

/** Why the guest wrote CR3. */
export type Cr3Reason = "boot" | "entry" | "exit" | "switch_mm" | "flush";

/** What the guest did, for tests and traces. */
export type GuestEvent =
  | { type: "cr3"; cpu: number; value: bigint; why: Cr3Reason }
  | { type: "invlpg"; cpu: number; va: bigint }
  | { type: "invpcid"; cpu: number; kind: number; pcid: number; va: bigint }
  | { type: "map"; mm: Mm; va: number; pfn: number; pte: bigint }
  | { type: "unmap"; mm: Mm; va: number; pfn: number }
  | { type: "fault"; cpu: number; pid: number; cr2: bigint; errorCode: number; user: boolean };

/** Counters of guest events. */
export interface LinuxStats {
  syscalls: number;
  /** #PF handled: from user mode, and from kernel mode on user addresses (copy_*_user). */
  userFaults: number;
  kernelFaults: number;
  anonFaults: number;
  zeroPageMaps: number;
  fileFaults: number;
  cowFaults: number;
  segv: number;
  cr3Writes: number;
  /** CR3 writes with bit 63 (NOFLUSH). */
  cr3NoFlush: number;
  cr3Entry: number;
  cr3Exit: number;
  cr3SwitchMm: number;
  cr3FlushAll: number;
  invlpg: number;
  invpcid: number;
  /** flush_tlb_one_user calls. */
  flushOneUser: number;
  /** flush_tlb_local (full flushes of the current ASID). */
  flushLocal: number;
  /** invalidate_user_asid: user PCID flush deferred to the next return to user. */
  userFlushDeferred: number;
  /** invalidate_user_asid done at once by INVPCID type 1 (pcidFlush "eager"). */
  userFlushEager: number;
  /** Returns to user that flushed the user PCID (no NOFLUSH). */
  userFlushOnExit: number;
  /** choose_new_asid picked a new ASID (recycling one, with a flush). */
  asidNew: number;
  ipis: number;
  lazyToInitMm: number;
  forks: number;
  execs: number;
  exits: number;
  contextSwitches: number;
  interrupts: number;
  /** Kernel stores of paging-structure entries. */
  ptStores: number;
  tablePagesAllocated: number;
  tablePagesFreed: number;
  kernelAccesses: number;
  pageCacheMisses: number;
  /** try_to_wake_up calls. */
  wakeups: number;
  /** XSAVES of a task's FPU state at a context switch. */
  fpuSaves: number;
  /** XRSTORS of a task's FPU state at a context switch (skipped while the registers still hold it). */
  fpuRestores: number;
}

/** A guest file (binary, source, output): its pages live in the page cache once read or written. */
export class GuestFile {
  /** Page-cache frames by page index. */
  readonly cache = new Map<number, number>();
  constructor(readonly id: number, readonly name: string, public pages: number) {}
}

/** A virtual memory area (vm_area_struct): [start, end) page aligned. */
export interface Vma {
  start: number;
  end: number;
  read: boolean;
  write: boolean;
  exec: boolean;
  /** File-backed shared read-only mapping (text); writable mappings are anonymous. */
  file?: GuestFile;
  /** File page mapped at `start`. */
  filePage?: number;
  name: string;
}

/** An address space (mm_struct). */
export class Mm {
  /** context.tlb_gen. */
  tlbGen = 0;
  /** mm_cpumask as a bit set over CPU indices. */
  cpumask = 0n;
  vmas: Vma[] = [];
  brkStart = 0;
  brk = 0;
  /** Page-table pages below the PGD. */
  tablePages = 0;
  /** Anonymous frames mapped. */
  anonPages = 0;
  constructor(
    /** context.ctx_id: unique, never reused (init_mm is 1). */
    readonly id: number,
    /** gpa of the kernel PGD (the user PGD follows at +4 KiB under PTI). */
    readonly pgd: bigint,
    readonly name: string,
  ) {}
}

/** A process (task_struct with its kernel stack). */
export class Task {
  exited = false;
  /** thread.fpu.last_cpu: the CPU whose registers held this task's FPU state when it was last saved (-1: none). */
  fpuCpu = -1;
  readonly children = new Set<Task>();
  constructor(
    readonly pid: number,
    public name: string,
    public mm: Mm,
    readonly parent: Task | null,
    /** Kernel stack: an order-1 block (pfn). */
    readonly kstack: number,
    /** Slab objects (task_struct, files, vmas): one frame (pfn). */
    readonly slab: number,
  ) {}
}

/** Per-CPU state the guest kernel keeps (cpu_tlbstate and friends). */
export class LinuxCpu {
  loadedMm!: Mm;
  loadedAsid = 0;
  nextAsid = 1;
  readonly ctxId = new Float64Array(TLB_NR_DYN_ASIDS);
  readonly ctxGen = new Float64Array(TLB_NR_DYN_ASIDS);
  /** Bit (kernel PCID) set: flush that user PCID at the next return to user. */
  userPcidFlushMask = 0;
  /** CR3 as the kernel last wrote it, without bit 63 (what __native_read_cr3 returns). */
  cr3 = 0n;
  /** CPL 3 (between a return to user and the next entry). */
  user = false;
  lazy = true;
  pagingOn = false;
  current: Task | null = null;
  /** fpu_fpregs_owner_ctx: the task whose FPU state this CPU's registers hold. */
  fpuOwner: Task | null = null;
  constructor(readonly index: number, readonly cpu: GuestCpu) {}
}

/** A user page fault's outcome: fixed, fixed after an I/O wait of `ioWait` cycles, or SIGSEGV. */
export type FaultOutcome = { ok: true; ioWait: number } | { ok: false };

const FAULT_OK: FaultOutcome = Object.freeze({ ok: true, ioWait: 0 });
const FAULT_SEGV: FaultOutcome = Object.freeze({ ok: false });

function isPf(e: GuestException): e is GuestPageFault {
  return "cr2" in e;
}

/**
 * The guest kernel. Construct with the CPUs it runs on (all in
 * X86_BOOT_CONTROL state) and call boot(). Every method that takes a
 * LinuxCpu runs kernel code on that CPU, which must be in kernel mode
 * (after enter(), or in a context switch) unless documented otherwise.
 */
export class LinuxGuest {
  readonly cpus: LinuxCpu[];
  readonly frames: FrameAllocator;
  readonly stats: LinuxStats;
  readonly pti: boolean;
  readonly pcid: boolean;
  readonly invpcid: boolean;
  /** pcidFlush "eager" with INVPCID: a user PCID is flushed by INVPCID type 1 at once. */
  readonly eagerUserFlush: boolean;
  readonly work: LinuxWorkCosts;
  readonly ramBase: bigint;
  readonly ramBytes: bigint;
  /** init_mm: swapper_pg_dir, no user mappings. */
  initMm!: Mm;
  /** The shared zero page (pfn). */
  zeroPfn = 0;
  /** Physical address of the kernel image (_text). */
  readonly kernelPhys: bigint;
  readonly kernelTextBytes: number;
  private readonly trace?: (e: GuestEvent) => void;
  private nextCtxId = 2;
  /** swapper's present kernel-half PGD entries: [offset in the PGD pair, value]. */
  private readonly kernelHalf: [bigint, bigint][] = [];
  private nextPid = 1;
  private nextFileId = 1;
  private readonly directMapGlobal: boolean;
  private readonly textGlobal: boolean;
  /** The read-only kernel data mapped by mapReadOnlyData: first va and its frames. */
  private readOnlyData?: { va: bigint; pfns: number[] };
  /** Per-CPU struct rq frames (pfn), allocated at the first wakeup onto each CPU. */
  private readonly runqueues: number[] = [];

  /** Throws a TypeError or RangeError naming the argument or option on bad input. */
  constructor(cpus: readonly GuestCpu[], opts: LinuxOptions) {
    if (!Array.isArray(cpus)) throw new TypeError(`vmmu: cpus must be an array of GuestCpu, got ${show(cpus)}`);
    if (cpus.length === 0) throw new RangeError("vmmu: cpus must hold at least one CPU, got an empty array");
    cpus.forEach((c, i) => {
      if (typeof c !== "object" || c === null || typeof (c as GuestCpu).accessMany !== "function") throw new TypeError(`vmmu: cpus[${i}] must be a GuestCpu, got ${show(c)}`);
    });
    optionsObject(opts, "opts");
    this.ramBytes = sizeArg(opts.ramBytes, "ramBytes", 64n << 20n, 1n << 46n, "a multiple of 2 MiB, at least 64 MiB");
    this.ramBase = opts.ramBase === undefined ? 0n : bigintRangeArg(opts.ramBase, "ramBase", 0n, 1n << 52n, "a 2 MiB aligned gpa below 2^52");
    if (this.ramBytes % M2 !== 0n) throw new RangeError(`vmmu: ramBytes (guest RAM) must be a multiple of 2 MiB, at least 64 MiB, got ${this.ramBytes}`);
    if (this.ramBase % M2 !== 0n) throw new RangeError(`vmmu: ramBase (guest RAM base) must be 2 MiB aligned, got ${show(this.ramBase)}`);
    this.kernelTextBytes = opts.kernelTextBytes === undefined ? 8 << 20 : intArg(opts.kernelTextBytes, "kernelTextBytes", 2 << 20, 1 << 30);
    if (this.kernelTextBytes % (2 << 20) !== 0) throw new RangeError(`vmmu: kernelTextBytes must be a positive multiple of 2 MiB, got ${this.kernelTextBytes}`);
    this.pti = optBoolArg(opts.pti, "pti", true);
    this.pcid = optBoolArg(opts.pcid, "pcid", true);
    if (opts.work !== undefined) optionsObject(opts.work, "work");
    fnArg(opts.trace, "trace", true);
    this.invpcid = this.pcid && optBoolArg(opts.invpcid, "invpcid", cpus[0]!.hasInvpcid);
    if (opts.pcidFlush !== undefined && opts.pcidFlush !== "lazy" && opts.pcidFlush !== "eager") {
      throw new RangeError(`vmmu: pcidFlush must be "lazy" or "eager", got ${show(opts.pcidFlush)}`);
    }
    this.eagerUserFlush = opts.pcidFlush === "eager" && this.invpcid;
    this.work = { ...LINUX_WORK_COSTS, ...opts.work };
    this.trace = opts.trace;
    this.directMapGlobal = !this.pti;
    this.textGlobal = !this.pti || !this.pcid;
    this.cpus = cpus.map((c, i) => new LinuxCpu(i, c));
    this.kernelPhys = this.ramBase + CONFIG_PHYSICAL_START;
    this.frames = new FrameAllocator(Number(this.ramBase >> 12n), Number(this.ramBytes >> 12n));
    this.stats = {
      syscalls: 0, userFaults: 0, kernelFaults: 0, anonFaults: 0, zeroPageMaps: 0, fileFaults: 0, cowFaults: 0, segv: 0,
      cr3Writes: 0, cr3NoFlush: 0, cr3Entry: 0, cr3Exit: 0, cr3SwitchMm: 0, cr3FlushAll: 0, invlpg: 0, invpcid: 0, userFlushEager: 0,
      flushOneUser: 0, flushLocal: 0, userFlushDeferred: 0, userFlushOnExit: 0, asidNew: 0, ipis: 0, lazyToInitMm: 0,
      forks: 0, execs: 0, exits: 0, contextSwitches: 0, interrupts: 0, ptStores: 0, tablePagesAllocated: 0,
      tablePagesFreed: 0, kernelAccesses: 0, pageCacheMisses: 0, wakeups: 0, fpuSaves: 0, fpuRestores: 0,
    };
  }

  // ---------------------------------------------------------------- addresses

  /** The direct-map address of guest-physical `gpa`. */
  directMap(gpa: bigint): bigint {
    return PAGE_OFFSET + gpa;
  }

  /** Virtual address of the entry text (the last 2 MiB page of kernel text). */
  get entryText(): bigint {
    return KERNEL_TEXT_START + BigInt(this.kernelTextBytes) - M2;
  }

  /** Base of CPU `cpu`'s cpu_entry_area record (GDT, entry stack, TSS pages). */
  ceaOf(cpu: number): bigint {
    return CPU_ENTRY_AREA_BASE + K4 + BigInt(cpu) * CEA_STRIDE;
  }

  /** Kernel PCID of ASID `asid` (kern_pcid). */
  kernPcid(asid: number): number {
    return asid + 1;
  }

  /** User PCID of ASID `asid` (user_pcid). */
  userPcid(asid: number): number {
    return this.kernPcid(asid) | (1 << X86_CR3_PTI_PCID_USER_BIT);
  }

  /** The kernel CR3 of `mm` on ASID `asid` (build_cr3), without NOFLUSH. */
  buildCr3(mm: Mm, asid: number): bigint {
    return this.pcid ? mm.pgd | BigInt(this.kernPcid(asid)) : mm.pgd;
  }

  // ---------------------------------------------------------------- boot

  /**
   * Boots every CPU: builds the kernel page tables (with paging still off,
   * through identity-mapped stores, as the early boot code does), enables
   * 4-level paging (CR3 = swapper, CR0.PG|WP, CR4.PGE|SMEP|PCIDE) and loads
   * init_mm on ASID 0 (initialize_tlbstate_and_flush).
   */
  boot(): void {
    const f = this.frames, c0 = this.cpus[0]!;
    const imageEnd = this.kernelPhys + BigInt(this.kernelTextBytes);
    const firstFree = imageEnd;
    const lowEnd = this.ramBase + 0x10_0000n;
    f.release(Number(lowEnd >> 12n), Number((this.kernelPhys - lowEnd) >> 12n));
    f.release(Number(firstFree >> 12n), Number((this.ramBase + this.ramBytes - firstFree) >> 12n));

    const swapper = this.allocPgd(c0);
    this.initMm = new Mm(1, swapper, "init_mm");
    const kpgd = swapper, upgd = swapper + K4;

    const dmFlags = { write: true, accessed: true, dirty: true, nx: true, global: this.directMapGlobal };
    for (let pa = this.ramBase; pa < this.ramBase + this.ramBytes; pa += M2) {
      this.kernelMap(c0, kpgd, PAGE_OFFSET + pa, X86PageTableBuilder.leaf(pa, "2M", dmFlags), 2);
    }
    const textFlags = { accessed: true, dirty: true, global: this.textGlobal };
    for (let off = 0n; off < BigInt(this.kernelTextBytes); off += M2) {
      const va = KERNEL_TEXT_START + off;
      const entry = va === this.entryText;
      this.kernelMap(c0, kpgd, va, X86PageTableBuilder.leaf(this.kernelPhys + off, "2M", { ...textFlags, global: textFlags.global || entry }), 2);
    }
    const cea = { accessed: true, dirty: true, nx: true, global: true };
    this.kernelMap(c0, kpgd, CPU_ENTRY_AREA_BASE, X86PageTableBuilder.leaf(this.pfnGpa(f.alloc(FRAME.KERNEL)), "4K", cea), 1);
    for (const lc of this.cpus) {
      const base = this.ceaOf(lc.index);
      this.kernelMap(c0, kpgd, base, X86PageTableBuilder.leaf(this.pfnGpa(f.alloc(FRAME.KERNEL)), "4K", cea), 1);
      for (const page of [1n, 2n]) {
        this.kernelMap(c0, kpgd, base + page * K4, X86PageTableBuilder.leaf(this.pfnGpa(f.alloc(FRAME.KERNEL)), "4K", { ...cea, write: true }), 1);
      }
    }
    if (this.pti) {
      const ceaSlot = pml4Index(CPU_ENTRY_AREA_BASE);
      this.setEntry(c0, upgd + BigInt(ceaSlot * 8), c0.cpu.readPhys64(kpgd + BigInt(ceaSlot * 8)));
      const kpmd = this.entryGpa(c0, kpgd, this.entryText, 2)!;
      const upmd = this.kernelTable(c0, upgd, this.entryText, 2);
      this.setEntry(c0, upmd, c0.cpu.readPhys64(kpmd));
    }
    this.zeroPfn = f.alloc(FRAME.ZERO);
    this.zero(c0, this.pfnGpa(this.zeroPfn));

    for (const off of this.pti ? [0n, K4] : [0n]) {
      for (let i = KERNEL_PGD_BOUNDARY; i < 512; i++) {
        const e = c0.cpu.readPhys64(swapper + off + BigInt(i * 8));
        if (e !== 0n) this.kernelHalf.push([off + BigInt(i * 8), e]);
      }
    }
    for (const lc of this.cpus) this.bootCpu(lc);
  }

  private bootCpu(lc: LinuxCpu): void {
    const cpu = lc.cpu;
    this.writeCr3(lc, this.initMm.pgd, "boot");
    check(cpu.writeCr0(KERNEL_CR0), "CR0");
    lc.pagingOn = true;
    let cr4 = CR4.PAE | CR4.PGE | CR4.SMEP;
    if (this.pcid) cr4 |= CR4.PCIDE;
    check(cpu.writeCr4(cr4), "CR4");
    lc.ctxId.fill(0);
    lc.ctxGen.fill(0);
    lc.ctxId[0] = this.initMm.id;
    lc.ctxGen[0] = this.initMm.tlbGen;
    lc.loadedMm = this.initMm;
    lc.loadedAsid = 0;
    lc.lazy = true;
    this.initMm.cpumask |= 1n << BigInt(lc.index);
    this.writeCr3(lc, this.buildCr3(this.initMm, 0), "boot");
  }

  // ---------------------------------------------------------------- kernel memory primitives

  private pfnGpa(pfn: number): bigint {
    return BigInt(pfn) << 12n;
  }

  /** The address a kernel store to `gpa` uses: identity before paging, the direct map after. */
  private kva(lc: LinuxCpu, gpa: bigint): bigint {
    return lc.pagingOn ? PAGE_OFFSET + gpa : gpa;
  }

  /** Writes a paging-structure entry (set_pte/set_pmd/…): one kernel store. */
  private setEntry(lc: LinuxCpu, gpa: bigint, value: bigint): void {
    this.stats.ptStores++;
    check(lc.cpu.store64(this.kva(lc, gpa), value), "page-table store");
  }

  private zero(lc: LinuxCpu, gpa: bigint): void {
    check(lc.cpu.zeroPage(this.kva(lc, gpa)), "clear_page");
  }

  private allocTable(lc: LinuxCpu): bigint {
    const gpa = this.pfnGpa(this.frames.alloc(FRAME.PAGETABLE));
    this.zero(lc, gpa);
    this.stats.tablePagesAllocated++;
    return gpa;
  }

  /** pgd_alloc: an order-1 block (one page without PTI), zeroed. */
  private allocPgd(lc: LinuxCpu): bigint {
    const pfn = this.pti ? this.frames.allocPair(FRAME.PAGETABLE) : this.frames.alloc(FRAME.PAGETABLE);
    const gpa = this.pfnGpa(pfn);
    this.zero(lc, gpa);
    if (this.pti) this.zero(lc, gpa + K4);
    return gpa;
  }

  private freePgd(mm: Mm): void {
    const pfn = Number(mm.pgd >> 12n);
    this.frames.free(pfn);
    if (this.pti) this.frames.free(pfn + 1);
  }

  /** Table entry (_KERNPG_TABLE, or _PAGE_TABLE for user tables). */
  private tableEntry(table: bigint, user: boolean): bigint {
    return X86PageTableBuilder.leaf(table, "4K", { write: true, user, accessed: true, dirty: true });
  }

  /** gpa of the entry for `va` at `level` under `root`, creating kernel tables. */
  private kernelTable(lc: LinuxCpu, root: bigint, va: bigint, level: number): bigint {
    let table = root;
    for (let l = 4; l > level; l--) {
      const g = X86PageTableBuilder.entryGpa(table, va, l);
      const e = lc.cpu.readPhys64(g);
      if ((e & PTE.P) === 0n) {
        const t = this.allocTable(lc);
        this.setEntry(lc, g, this.tableEntry(t, false));
        table = t;
      } else {
        table = e & PTE_ADDR_MASK;
      }
    }
    return X86PageTableBuilder.entryGpa(table, va, level);
  }

  private kernelMap(lc: LinuxCpu, root: bigint, va: bigint, leaf: bigint, level: number): void {
    this.setEntry(lc, this.kernelTable(lc, root, va, level), leaf);
  }

  /**
   * Maps `pages` fresh, zeroed kernel frames read-only (present, R/W = 0, NX,
   * global as kernel text is) right above the kernel text in the kernel-image
   * mapping, where a KERNEXEC kernel keeps its read-only data (the
   * `.data..read_only` section of PaX's __read_only objects and of its
   * constify gcc plugin: GDT, IDT, constified ops tables). Supervisor
   * stores to it fault with CR0.WP = 1 and go through with WP = 0 (SDM
   * Vol.3A §4.6.1). The PMD is the one every mm's kernel half shares, so all
   * address spaces see it; not mapped in the PTI user PGD. Runs on CPU 0
   * after boot(); a second call returns the first mapping if it has at least
   * `pages` pages, else throws. Returns the first page's va.
   */
  mapReadOnlyData(pages: number): bigint {
    intArg(pages, "pages", 1, 512);
    const lc = this.cpus[0]!;
    if (!lc.pagingOn) throw new Error("vmmu: mapReadOnlyData needs a booted guest (call boot() first)");
    const have = this.readOnlyData;
    if (have) {
      if (have.pfns.length >= pages) return have.va;
      throw new RangeError(`vmmu: pages must be at most ${have.pfns.length} (the read-only data already mapped), got ${pages}`);
    }
    const va = KERNEL_TEXT_START + BigInt(this.kernelTextBytes);
    const pfns: number[] = [];
    for (let i = 0; i < pages; i++) {
      const pfn = this.frames.alloc(FRAME.KERNEL);
      this.zero(lc, this.pfnGpa(pfn));
      const leaf = X86PageTableBuilder.leaf(this.pfnGpa(pfn), "4K", { accessed: true, dirty: true, nx: true, global: this.textGlobal });
      this.kernelMap(lc, this.initMm.pgd, va + BigInt(i) * K4, leaf, 1);
      pfns.push(pfn);
    }
    this.readOnlyData = { va, pfns };
    return va;
  }

  /** gpa of the entry for `va` at `level` under `root` if its path exists. */
  private entryGpa(lc: LinuxCpu, root: bigint, va: bigint, level: number): bigint | undefined {
    let table = root;
    for (let l = 4; l > level; l--) {
      const e = lc.cpu.readPhys64(X86PageTableBuilder.entryGpa(table, va, l));
      if ((e & PTE.P) === 0n || (l <= 3 && (e & PTE.PS) !== 0n)) return undefined;
      table = e & PTE_ADDR_MASK;
    }
    return X86PageTableBuilder.entryGpa(table, va, level);
  }

  /**
   * A kernel access to a kernel address (CPL 0). The kernel's own mappings
   * never fault; a fault here is a guest bug, thrown as an oops.
   */
  kernelAccess(lc: LinuxCpu, va: bigint, access: X86Access): bigint {
    this.stats.kernelAccesses++;
    const r = lc.cpu.access(va, access, false);
    if (typeof r !== "bigint") throw new Error(`vmmu: guest kernel oops on CPU ${lc.index}: ${access} at 0x${va.toString(16)} → ${JSON.stringify(r, (_, v) => (typeof v === "bigint" ? "0x" + v.toString(16) : v))}`);
    return r;
  }

  /** Kernel accesses to `lines` consecutive 64-byte lines of the direct map from `gpa`. */
  touchPhys(lc: LinuxCpu, gpa: bigint, lines: number, access: X86Access): void {
    for (let i = 0; i < lines; i++) this.kernelAccess(lc, PAGE_OFFSET + gpa + BigInt(i * 64), access);
  }

  /** Instruction fetches of a kernel path: `n` lines of text selected by `path` (deterministic). */
  fetchText(lc: LinuxCpu, path: number, n: number): void {
    const pages = this.kernelTextBytes / 4096 - 512;
    for (let i = 0; i < n; i++) {
      const h = Math.imul(path * 31 + i, 0x9e3779b1) >>> 0;
      this.kernelAccess(lc, KERNEL_TEXT_START + BigInt((h % pages) * 4096 + ((h >>> 20) & 63) * 64), "fetch");
    }
  }

  // ---------------------------------------------------------------- CR3 and TLB

  private writeCr3(lc: LinuxCpu, value: bigint, why: Cr3Reason): void {
    const s = this.stats;
    s.cr3Writes++;
    if ((value & CR3_NOFLUSH) !== 0n) s.cr3NoFlush++;
    if (why === "entry") s.cr3Entry++;
    else if (why === "exit") s.cr3Exit++;
    else if (why === "switch_mm") s.cr3SwitchMm++;
    else if (why === "flush") s.cr3FlushAll++;
    this.trace?.({ type: "cr3", cpu: lc.index, value, why });
    check(lc.cpu.writeCr3(value), "MOV CR3");
    lc.cr3 = value & ~CR3_NOFLUSH;
  }

  private invlpg(lc: LinuxCpu, va: bigint): void {
    this.stats.invlpg++;
    this.trace?.({ type: "invlpg", cpu: lc.index, va });
    lc.cpu.invlpg(va);
  }

  private invpcidOne(lc: LinuxCpu, pcid: number, va: bigint): void {
    this.stats.invpcid++;
    this.trace?.({ type: "invpcid", cpu: lc.index, kind: 0, pcid, va });
    check(lc.cpu.invpcid(0, pcid, va), "INVPCID");
  }

  /**
   * invalidate_user_asid: flush this ASID's user PCID at the next return to
   * user; with pcidFlush "eager", now, by INVPCID type 1 (single context).
   */
  private invalidateUserAsid(lc: LinuxCpu, asid: number): void {
    if (!this.pcid || !this.pti) return;
    if (this.eagerUserFlush) {
      const pcid = this.userPcid(asid);
      this.stats.invpcid++;
      this.stats.userFlushEager++;
      this.trace?.({ type: "invpcid", cpu: lc.index, kind: 1, pcid, va: 0n });
      check(lc.cpu.invpcid(1, pcid), "INVPCID");
      return;
    }
    this.stats.userFlushDeferred++;
    lc.userPcidFlushMask |= 1 << this.kernPcid(asid);
  }

  /** __flush_tlb_one_user: INVLPG on the current (kernel) PCID, then the user PCID. */
  private flushOneUser(lc: LinuxCpu, va: bigint): void {
    this.stats.flushOneUser++;
    this.invlpg(lc, va);
    if (!this.pti) return;
    if (this.invpcid) this.invpcidOne(lc, this.userPcid(lc.loadedAsid), va);
    else this.invalidateUserAsid(lc, lc.loadedAsid);
  }

  /** flush_tlb_local: user ASID deferred, kernel ASID by rewriting CR3 without NOFLUSH. */
  private flushLocal(lc: LinuxCpu): void {
    this.stats.flushLocal++;
    this.invalidateUserAsid(lc, lc.loadedAsid);
    this.writeCr3(lc, lc.cr3, "flush");
  }

  /**
   * flush_tlb_func on `lc` for `mm`'s range [start, end) (end undefined: all),
   * generation `newGen`. A lazy CPU leaves the mm instead (switch to init_mm).
   */
  private flushTlbFunc(lc: LinuxCpu, mm: Mm, start: number, end: number | undefined, newGen: number): void {
    if (lc.loadedMm !== mm) return;
    if (lc.lazy) {
      this.stats.lazyToInitMm++;
      this.switchMm(lc, this.initMm);
      lc.lazy = true;
      return;
    }
    const asid = lc.loadedAsid;
    const local = lc.ctxGen[asid]!, mmGen = mm.tlbGen;
    if (local === mmGen) return;
    const pages = end === undefined ? Infinity : (end - start) / 4096;
    if (end !== undefined && newGen === local + 1 && newGen === mmGen && pages <= TLB_SINGLE_PAGE_FLUSH_CEILING) {
      for (let a = start; a < end; a += 4096) this.flushOneUser(lc, BigInt(a));
    } else {
      this.flushLocal(lc);
    }
    lc.ctxGen[asid] = mmGen;
  }

  /**
   * flush_tlb_mm_range: bump mm's tlb_gen, flush locally if this CPU has it
   * loaded, IPI the other CPUs in mm_cpumask (lazy ones only if tables were freed).
   */
  flushTlbMmRange(lc: LinuxCpu, mm: Mm, start: number, end: number | undefined, freedTables: boolean): void {
    const newGen = ++mm.tlbGen;
    this.flushTlbFunc(lc, mm, start, end, newGen);
    for (const other of this.cpus) {
      if (other === lc || (mm.cpumask & (1n << BigInt(other.index))) === 0n) continue;
      if (other.loadedMm !== mm || (other.lazy && !freedTables)) continue;
      this.stats.ipis++;
      lc.cpu.sendIpi(other.index);
      const wasUser = other.user;
      if (wasUser) this.enter(other);
      other.cpu.work(this.work.ipiHandler);
      this.flushTlbFunc(other, mm, start, end, newGen);
      if (wasUser) this.leave(other);
    }
  }

  /** choose_new_asid: [asid, needFlush]. */
  private chooseNewAsid(lc: LinuxCpu, next: Mm, nextGen: number): [number, boolean] {
    if (!this.pcid) return [0, true];
    for (let asid = 0; asid < TLB_NR_DYN_ASIDS; asid++) {
      if (lc.ctxId[asid] !== next.id) continue;
      return [asid, lc.ctxGen[asid]! < nextGen];
    }
    this.stats.asidNew++;
    let asid = lc.nextAsid++;
    if (asid >= TLB_NR_DYN_ASIDS) {
      asid = 0;
      lc.nextAsid = 1;
    }
    return [asid, true];
  }

  /** switch_mm_irqs_off(loaded mm → next) on `lc`, in kernel mode. */
  switchMm(lc: LinuxCpu, next: Mm): void {
    const prev = lc.loadedMm;
    const wasLazy = lc.lazy;
    lc.lazy = false;
    let asid: number, needFlush: boolean;
    const bit = 1n << BigInt(lc.index);
    if (prev === next) {
      if (!wasLazy) return;
      const gen = next.tlbGen;
      if (lc.ctxGen[lc.loadedAsid] === gen) return;
      asid = lc.loadedAsid;
      needFlush = true;
    } else {
      if (prev !== this.initMm) prev.cpumask &= ~bit;
      next.cpumask |= bit;
      [asid, needFlush] = this.chooseNewAsid(lc, next, next.tlbGen);
    }
    if (needFlush) {
      lc.ctxId[asid] = next.id;
      lc.ctxGen[asid] = next.tlbGen;
      this.invalidateUserAsid(lc, asid);
      this.writeCr3(lc, this.buildCr3(next, asid), "switch_mm");
    } else {
      this.writeCr3(lc, this.buildCr3(next, asid) | CR3_NOFLUSH, "switch_mm");
    }
    lc.loadedMm = next;
    lc.loadedAsid = asid;
  }

  // ---------------------------------------------------------------- entry and exit

  /**
   * Kernel entry from user mode (syscall, exception, interrupt): the entry
   * code runs on the cpu_entry_area stack with the user CR3, then
   * SWITCH_TO_KERNEL_CR3 (NOFLUSH with PCID). No-op if already in kernel mode.
   */
  enter(lc: LinuxCpu): void {
    if (!lc.user) return;
    lc.cpu.work(this.work.entry);
    this.kernelAccess(lc, this.entryText, "fetch");
    this.kernelAccess(lc, this.ceaOf(lc.index) + K4 + 0xfc0n, "write");
    if (this.pti) {
      const cr3 = lc.cr3 & ~(PTI_USER_PGD | PTI_USER_PCID);
      this.writeCr3(lc, this.pcid ? cr3 | CR3_NOFLUSH : cr3, "entry");
    }
    lc.user = false;
    const t = lc.current;
    if (t) this.touchPhys(lc, this.pfnGpa(t.kstack) + 0x1f00n, 3, "write");
  }

  /**
   * Return to user mode: SWITCH_TO_USER_CR3, with NOFLUSH unless this ASID's
   * user PCID has a deferred flush pending (which it clears).
   */
  leave(lc: LinuxCpu): void {
    if (lc.user) return;
    const t = lc.current;
    if (t) this.touchPhys(lc, this.pfnGpa(t.kstack) + 0x1f00n, 3, "read");
    this.kernelAccess(lc, this.ceaOf(lc.index) + K4 + 0xfc0n, "write");
    if (this.pti) {
      let cr3 = lc.cr3 | PTI_USER_PGD;
      if (this.pcid) {
        cr3 |= PTI_USER_PCID;
        const bit = 1 << Number(lc.cr3 & 0x7ffn);
        if ((lc.userPcidFlushMask & bit) !== 0) {
          lc.userPcidFlushMask &= ~bit;
          this.stats.userFlushOnExit++;
        } else {
          cr3 |= CR3_NOFLUSH;
        }
      }
      this.writeCr3(lc, cr3, "exit");
    }
    this.kernelAccess(lc, this.entryText + 0x40n, "fetch");
    lc.user = true;
  }

  /** A syscall's entry and generic body: entry, `textLines` of kernel text on path `nr`, task data. */
  syscallEnter(lc: LinuxCpu, nr: number, textLines = 6): void {
    this.stats.syscalls++;
    this.enter(lc);
    lc.cpu.work(this.work.syscall);
    this.fetchText(lc, nr, textLines);
    const t = lc.current;
    if (t) this.touchPhys(lc, this.pfnGpa(t.slab), 2, "read");
  }

  // ---------------------------------------------------------------- processes

  /** A file of `pages` pages (not yet in the page cache). */
  createFile(name: string, pages: number): GuestFile {
    return new GuestFile(this.nextFileId++, name, pages);
  }

  /** Drops a file's page-cache frames (unlink of a file nobody maps). */
  unlink(lc: LinuxCpu, file: GuestFile): void {
    lc.cpu.work(this.work.syscall);
    for (const pfn of file.cache.values()) this.frames.free(pfn);
    file.cache.clear();
    file.pages = 0;
  }

  /**
   * mm_alloc + pgd_alloc: a new mm whose kernel half (both PGDs under PTI)
   * is swapper's (clone_pgd_range). The page was just zeroed, so only the
   * present entries of the memcpy are stored.
   */
  newMm(lc: LinuxCpu, name: string): Mm {
    const pgd = this.allocPgd(lc);
    const mm = new Mm(this.nextCtxId++, pgd, name);
    for (const [off, e] of this.kernelHalf) this.setEntry(lc, pgd + off, e);
    return mm;
  }

  /** The first process (pid 1) with a fresh mm named `name`, not yet running anywhere. */
  spawnInit(lc: LinuxCpu, name: string): Task {
    return this.newTask(lc, name, this.newMm(lc, name), null);
  }

  private newTask(lc: LinuxCpu, name: string, mm: Mm, parent: Task | null): Task {
    const kstack = this.frames.allocPair(FRAME.KERNEL);
    const slab = this.frames.alloc(FRAME.KERNEL);
    const t = new Task(this.nextPid++, name, mm, parent, kstack, slab);
    parent?.children.add(t);
    this.touchPhys(lc, this.pfnGpa(slab), 8, "write");
    this.touchPhys(lc, this.pfnGpa(kstack) + 0x1f00n, 4, "write");
    return t;
  }

  /**
   * fork: a child with a new mm holding the parent's VMAs, unpopulated (a
   * deliberate simplification of dup_mmap's COW copy). The child is not
   * running; it starts in kernel mode (ret_from_fork) and returns to user
   * with leave() once switched to.
   */
  fork(lc: LinuxCpu, parent: Task): Task {
    this.stats.forks++;
    lc.cpu.work(this.work.fork);
    this.fetchText(lc, 57, 24);
    const mm = this.newMm(lc, parent.mm.name);
    mm.vmas = parent.mm.vmas.map((v) => ({ ...v }));
    mm.brkStart = parent.mm.brkStart;
    mm.brk = parent.mm.brk;
    this.touchPhys(lc, this.pfnGpa(parent.slab), 8, "read");
    return this.newTask(lc, parent.name, mm, parent);
  }

  /**
   * execve: a new mm with `vmas` (and brk at `brkStart`), switched to on
   * this CPU (exec_mmap → switch_mm); the old mm is torn down (mmput).
   * `task` must be current on `lc`.
   */
  exec(lc: LinuxCpu, task: Task, name: string, vmas: Vma[], brkStart: number): void {
    this.stats.execs++;
    lc.cpu.work(this.work.exec);
    this.fetchText(lc, 59, 32);
    const mm = this.newMm(lc, name);
    mm.vmas = vmas.map((v) => ({ ...v })).sort((a, b) => a.start - b.start);
    mm.brkStart = mm.brk = brkStart;
    const old = task.mm;
    task.mm = mm;
    task.name = name;
    this.switchMm(lc, mm);
    this.exitMmap(lc, old);
  }

  /**
   * do_exit for the task current on `lc`: exit_mm (lazy TLB, then
   * exit_mmap, whose flush moves this CPU to init_mm), frees its kernel
   * memory. The CPU is left idle (current = null, lazy), in kernel mode.
   */
  exit(lc: LinuxCpu, task: Task): void {
    this.stats.exits++;
    lc.cpu.work(this.work.exit);
    this.fetchText(lc, 60, 24);
    lc.lazy = true;
    this.exitMmap(lc, task.mm);
    task.exited = true;
    this.frames.free(task.kstack);
    this.frames.free(task.kstack + 1);
    this.frames.free(task.slab);
    lc.current = null;
  }

  /** Reaps an exited child (wait4): forgets it. */
  reap(parent: Task, child: Task): void {
    parent.children.delete(child);
  }

  /**
   * exit_mmap + mmdrop: zap every VMA, free all user tables, flush (full,
   * tables freed), free the frames, then the PGD. CPUs still holding `mm`
   * (lazily) are moved to init_mm by the flush.
   */
  private exitMmap(lc: LinuxCpu, mm: Mm): void {
    const frames: number[] = [];
    for (const v of mm.vmas) this.zapRange(lc, mm, v.start, v.end, frames);
    mm.vmas = [];
    const tables: number[] = [];
    this.freePgtables(lc, mm, 0, USER_TOP, tables);
    this.flushTlbMmRange(lc, mm, 0, undefined, true);
    for (const p of frames) this.frames.free(p);
    for (const p of tables) this.frames.free(p);
    for (const other of this.cpus) {
      if (other.loadedMm === mm) throw new Error(`vmmu: guest frees mm ${mm.id} still loaded on CPU ${other.index}`);
    }
    this.freePgd(mm);
  }

  /**
   * context_switch on `lc` to `next` (or to idle if null): scheduler work,
   * switch_mm to next's mm (enter_lazy_tlb for idle), the FPU switch. In
   * kernel mode; `next` then returns to user with leave().
   *
   * The FPU switch, as v4.15–v5.1 arch/x86/include/asm/fpu/internal.h does
   * it (every task here is a user task with FPU state):
   *   1. switch_fpu_prepare: XSAVES of prev's registers into its fpstate
   *      (XSTATE_BYTES in its task_struct), last_cpu = this CPU; the CPU
   *      stays prev's fpu_fpregs_owner_ctx;
   *   2. switch_fpu_finish: XRSTORS of next's fpstate unless
   *      fpregs_state_valid (this CPU still owns next's state and next last
   *      saved it here: a switch to idle and back).
   * v5.2+ (5f409e20b794, "x86/fpu: Defer FPU state load until return to
   * userspace") moves step 2 to the return to user, which every task here
   * makes before it switches out again: same count.
   */
  switchTo(lc: LinuxCpu, next: Task | null): void {
    this.stats.contextSwitches++;
    lc.cpu.work(this.work.contextSwitch);
    this.fetchText(lc, 1, 12);
    const prev = lc.current;
    if (prev && !prev.exited) {
      this.touchPhys(lc, this.pfnGpa(prev.slab), 4, "write");
      this.stats.fpuSaves++;
      lc.cpu.work(this.work.fpuSave);
      this.touchPhys(lc, this.pfnGpa(prev.slab) + FPSTATE_OFFSET, XSTATE_LINES, "write");
      prev.fpuCpu = lc.index;
      lc.fpuOwner = prev;
    }
    if (next) {
      this.touchPhys(lc, this.pfnGpa(next.slab), 4, "read");
      this.switchMm(lc, next.mm);
      if (lc.fpuOwner !== next || next.fpuCpu !== lc.index) {
        this.stats.fpuRestores++;
        lc.cpu.work(this.work.fpuRestore);
        this.touchPhys(lc, this.pfnGpa(next.slab) + FPSTATE_OFFSET, XSTATE_LINES, "read");
        lc.fpuOwner = next;
      }
    } else {
      lc.lazy = true;
    }
    lc.current = next;
  }

  /**
   * try_to_wake_up(task) by the kernel code running on `lc`, onto CPU
   * `target`'s run queue (kernel/sched/core.c, ttwu_queue →
   * ttwu_do_activate → enqueue_task_fair → check_preempt_curr):
   *   1. p->pi_lock and p->state (task_struct line 0), p->se (line 1);
   *   2. the target rq: its lock and clock, the cfs_rq and its rb-tree root
   *      (three lines of the per-CPU struct rq);
   *   3. rq->curr's sched_entity for the preemption check, if the target is
   *      this CPU and it runs a task;
   *   4. the wakeup work. The caller queues the task and sends any IPI.
   */
  tryToWakeUp(lc: LinuxCpu, task: Task, target: number): void {
    intArg(target, "target", 0, this.cpus.length - 1);
    this.stats.wakeups++;
    lc.cpu.work(this.work.wakeup);
    this.fetchText(lc, TEXT_PATH_TTWU, 6);
    this.touchPhys(lc, this.pfnGpa(task.slab), 2, "write");
    this.touchPhys(lc, this.pfnGpa(this.runqueue(target)), 3, "write");
    const curr = target === lc.index ? lc.current : null;
    if (curr) this.kernelAccess(lc, this.directMap(this.pfnGpa(curr.slab) + 64n), "read");
  }

  /** The frame of CPU `cpu`'s struct rq (the model has no per-CPU area; one frame per CPU at first use). */
  private runqueue(cpu: number): number {
    let pfn = this.runqueues[cpu];
    if (pfn === undefined) {
      pfn = this.frames.alloc(FRAME.KERNEL);
      this.runqueues[cpu] = pfn;
    }
    return pfn;
  }

  // ---------------------------------------------------------------- user page tables

  /** gpa of the PTE for user `va` in `mm`, allocating missing tables if `alloc`. */
  pteGpa(lc: LinuxCpu, mm: Mm, va: number, alloc: boolean): bigint | undefined {
    let table = mm.pgd;
    for (let level = 4; level > 1; level--) {
      const idx = Math.floor(va / SPAN[level]!) & 511;
      const g = table + BigInt(idx * 8);
      const e = lc.cpu.readPhys64(g);
      if ((e & PTE.P) === 0n) {
        if (!alloc) return undefined;
        const t = this.allocTable(lc);
        mm.tablePages++;
        if (level === 4) this.setPgd(lc, mm, idx, this.tableEntry(t, true));
        else this.setEntry(lc, g, this.tableEntry(t, true));
        table = t;
      } else {
        table = e & PTE_ADDR_MASK;
      }
    }
    return table + BigInt((Math.floor(va / 4096) & 511) * 8);
  }

  /** set_pgd of a user slot: under PTI the user PGD copy first, then the kernel copy with NX. */
  private setPgd(lc: LinuxCpu, mm: Mm, idx: number, value: bigint): void {
    if (this.pti) {
      this.setEntry(lc, mm.pgd + K4 + BigInt(idx * 8), value);
      if ((value & (PTE.P | PTE.US)) === (PTE.P | PTE.US)) value |= PTE.XD;
    }
    this.setEntry(lc, mm.pgd + BigInt(idx * 8), value);
  }

  private setPte(lc: LinuxCpu, mm: Mm, va: number, g: bigint, pfn: number, f: { write: boolean; exec: boolean; dirty: boolean }): void {
    const pte = X86PageTableBuilder.leaf(this.pfnGpa(pfn), "4K", { user: true, accessed: true, write: f.write, dirty: f.dirty, nx: !f.exec });
    this.setEntry(lc, g, pte);
    this.trace?.({ type: "map", mm, va, pfn, pte });
  }

  /** find_vma: the VMA containing `va`. */
  findVma(mm: Mm, va: number): Vma | undefined {
    for (const v of mm.vmas) if (va >= v.start && va < v.end) return v;
    return undefined;
  }

  private intersectsVma(mm: Mm, lo: number, hi: number): boolean {
    for (const v of mm.vmas) if (v.start < hi && v.end > lo) return true;
    return false;
  }

  /** The page-cache frame of `file` page `page`, reading it in (a miss) if needed; adds the I/O wait to `io`. */
  pageCachePage(lc: LinuxCpu, file: GuestFile, page: number, io: { wait: number }): number {
    let pfn = file.cache.get(page);
    if (pfn === undefined) {
      this.stats.pageCacheMisses++;
      pfn = this.frames.alloc(FRAME.PAGECACHE);
      this.zero(lc, this.pfnGpa(pfn));
      file.cache.set(page, pfn);
      if (page >= file.pages) file.pages = page + 1;
      io.wait += this.work.ioLatency;
    }
    return pfn;
  }

  /**
   * The #PF handler for a fault on a user address (from user mode, or from
   * kernel mode in copy_*_user). Fixes the tables or reports SIGSEGV. The
   * caller does the entry/exit (enter/leave) for user-mode faults.
   */
  handleFault(lc: LinuxCpu, task: Task, f: GuestPageFault, fromUser: boolean): FaultOutcome {
    const s = this.stats;
    if (fromUser) s.userFaults++; else s.kernelFaults++;
    this.trace?.({ type: "fault", cpu: lc.index, pid: task.pid, cr2: f.cr2, errorCode: f.errorCode, user: fromUser });
    lc.cpu.work(this.work.pageFault);
    this.fetchText(lc, 14, 10);
    this.touchPhys(lc, this.pfnGpa(task.slab), 2, "read");
    if (f.cr2 >= BigInt(USER_TOP)) {
      if (!fromUser) throw new Error(`vmmu: guest kernel oops: #PF on kernel address 0x${f.cr2.toString(16)} (error code ${f.errorCode})`);
      s.segv++;
      return FAULT_SEGV;
    }
    const va = Number(f.cr2) - (Number(f.cr2) % 4096);
    const mm = task.mm;
    const vma = this.findVma(mm, va);
    const write = (f.errorCode & PFERR.W) !== 0, fetch = (f.errorCode & PFERR.FETCH) !== 0;
    if (!vma || (write && !vma.write) || (fetch && !vma.exec) || (!write && !fetch && !vma.read)) {
      s.segv++;
      return FAULT_SEGV;
    }
    const g = this.pteGpa(lc, mm, va, true)!;
    const old = lc.cpu.readPhys64(g);
    if ((f.errorCode & PFERR.P) !== 0) {
      if (!write || (old & PTE.P) === 0n) return FAULT_OK;
      if ((old & PTE.RW) !== 0n) return FAULT_OK;
      return this.doWpPage(lc, mm, vma, va, g);
    }
    if ((old & PTE.P) !== 0n) return FAULT_OK;
    if (vma.file && !vma.write) {
      s.fileFaults++;
      const io = { wait: 0 };
      const pfn = this.pageCachePage(lc, vma.file, (vma.filePage ?? 0) + (va - vma.start) / 4096, io);
      this.setPte(lc, mm, va, g, pfn, { write: false, exec: vma.exec, dirty: false });
      return io.wait === 0 ? FAULT_OK : { ok: true, ioWait: io.wait };
    }
    if (!write) {
      s.zeroPageMaps++;
      this.setPte(lc, mm, va, g, this.zeroPfn, { write: false, exec: vma.exec, dirty: false });
      return FAULT_OK;
    }
    s.anonFaults++;
    const pfn = this.frames.alloc(FRAME.ANON);
    mm.anonPages++;
    this.zero(lc, this.pfnGpa(pfn));
    lc.cpu.work(64 * this.work.copyLine);
    this.setPte(lc, mm, va, g, pfn, { write: true, exec: vma.exec, dirty: true });
    return FAULT_OK;
  }

  /** do_wp_page → wp_page_copy of a read-only (zero-page or file) PTE: new frame, ptep_clear_flush, set. */
  private doWpPage(lc: LinuxCpu, mm: Mm, vma: Vma, va: number, g: bigint): FaultOutcome {
    this.stats.cowFaults++;
    const pfn = this.frames.alloc(FRAME.ANON);
    mm.anonPages++;
    this.zero(lc, this.pfnGpa(pfn));
    lc.cpu.work(64 * this.work.copyLine);
    const old = lc.cpu.readPhys64(g);
    this.setEntry(lc, g, 0n);
    this.trace?.({ type: "unmap", mm, va, pfn: Number((old & PTE_ADDR_MASK) >> 12n) });
    this.flushTlbMmRange(lc, mm, va, va + 4096, false);
    this.setPte(lc, mm, va, g, pfn, { write: true, exec: vma.exec, dirty: true });
    return FAULT_OK;
  }

  /**
   * Clears every present PTE of `mm` in [lo, hi) (zap_pte_range), collecting
   * the anonymous frames to free after the TLB flush.
   */
  private zapRange(lc: LinuxCpu, mm: Mm, lo: number, hi: number, out: number[]): void {
    this.zapLevel(lc, mm, mm.pgd, 4, 0, lo, hi, out);
  }

  private zapLevel(lc: LinuxCpu, mm: Mm, table: bigint, level: number, base: number, lo: number, hi: number, out: number[]): void {
    const span = SPAN[level]!;
    const first = Math.max(0, Math.floor((lo - base) / span));
    const last = Math.min(level === 4 ? KERNEL_PGD_BOUNDARY - 1 : 511, Math.floor((hi - 1 - base) / span));
    for (let i = first; i <= last; i++) {
      const g = table + BigInt(i * 8);
      const e = lc.cpu.readPhys64(g);
      if ((e & PTE.P) === 0n) continue;
      const start = base + i * span;
      if (level > 1) {
        this.zapLevel(lc, mm, e & PTE_ADDR_MASK, level - 1, start, lo, hi, out);
        continue;
      }
      this.setEntry(lc, g, 0n);
      const pfn = Number((e & PTE_ADDR_MASK) >> 12n);
      this.trace?.({ type: "unmap", mm, va: start, pfn });
      if (this.frames.use[pfn - this.frames.firstPfn] === FRAME.ANON) {
        out.push(pfn);
        mm.anonPages--;
      }
    }
  }

  /**
   * free_pgtables for [lo, hi): every table below the PGD whose whole span
   * no VMA touches any more is unlinked (PGD slots in both PGDs) and
   * collected for freeing after the flush.
   */
  private freePgtables(lc: LinuxCpu, mm: Mm, lo: number, hi: number, out: number[]): void {
    this.freeLevel(lc, mm, mm.pgd, 4, 0, lo, hi, out);
  }

  private freeLevel(lc: LinuxCpu, mm: Mm, table: bigint, level: number, base: number, lo: number, hi: number, out: number[]): void {
    const span = SPAN[level]!;
    const first = Math.max(0, Math.floor((lo - base) / span));
    const last = Math.min(level === 4 ? KERNEL_PGD_BOUNDARY - 1 : 511, Math.floor((hi - 1 - base) / span));
    for (let i = first; i <= last; i++) {
      const g = table + BigInt(i * 8);
      const e = lc.cpu.readPhys64(g);
      if ((e & PTE.P) === 0n) continue;
      const start = base + i * span;
      const child = e & PTE_ADDR_MASK;
      if (level > 2) this.freeLevel(lc, mm, child, level - 1, start, lo, hi, out);
      if (this.intersectsVma(mm, start, start + span)) continue;
      if (level === 4) this.setPgd(lc, mm, i, 0n);
      else this.setEntry(lc, g, 0n);
      out.push(Number(child >> 12n));
      mm.tablePages--;
      this.stats.tablePagesFreed++;
    }
  }

  /**
   * munmap(addr, bytes) for the task current on `lc`: splits/removes VMAs,
   * zaps, frees empty tables, flushes (per page up to 33 pages, else full),
   * then frees the frames.
   */
  munmap(lc: LinuxCpu, task: Task, addr: number, bytes: number): void {
    const mm = task.mm;
    const lo = addr, hi = addr + roundUp(bytes);
    lc.cpu.work(this.work.syscall);
    this.fetchText(lc, 11, 16);
    const kept: Vma[] = [];
    for (const v of mm.vmas) {
      if (v.end <= lo || v.start >= hi) { kept.push(v); continue; }
      if (v.start < lo) kept.push({ ...v, end: lo });
      if (v.end > hi) kept.push({ ...v, start: hi, filePage: v.file ? (v.filePage ?? 0) + (hi - v.start) / 4096 : undefined });
    }
    this.unmapRange(lc, mm, lo, hi, kept);
  }

  private unmapRange(lc: LinuxCpu, mm: Mm, lo: number, hi: number, kept: Vma[]): void {
    const frames: number[] = [];
    this.zapRange(lc, mm, lo, hi, frames);
    mm.vmas = kept.sort((a, b) => a.start - b.start);
    const tables: number[] = [];
    this.freePgtables(lc, mm, lo, hi, tables);
    this.flushTlbMmRange(lc, mm, lo, hi, tables.length > 0);
    for (const p of frames) this.frames.free(p);
    for (const p of tables) this.frames.free(p);
  }

  /**
   * mmap of `bytes` anonymous (or, with `file`, shared read-only) memory:
   * get_unmapped_area top-down below mmap_base; no page is populated.
   * Returns the address.
   */
  mmap(lc: LinuxCpu, task: Task, bytes: number, prot: { write: boolean; exec: boolean }, file?: GuestFile, name = "anon"): number {
    lc.cpu.work(this.work.syscall);
    this.fetchText(lc, 9, 16);
    const len = roundUp(bytes);
    const mm = task.mm;
    let top: number = USER_LAYOUT.mmapBase;
    const below = mm.vmas.filter((v) => v.start < USER_LAYOUT.mmapBase).sort((a, b) => b.start - a.start);
    for (const v of below) {
      if (v.end <= top - len) break;
      top = Math.min(top, v.start);
    }
    const addr = top - len;
    mm.vmas.push({ start: addr, end: top, read: true, write: prot.write, exec: prot.exec, file, filePage: file ? 0 : undefined, name });
    mm.vmas.sort((a, b) => a.start - b.start);
    this.touchPhys(lc, this.pfnGpa(task.slab) + 0x800n, 2, "write");
    return addr;
  }

  /** brk(newBrk): grows or shrinks the heap VMA (from the page-aligned brkStart); shrinking unmaps. Returns the break. */
  brk(lc: LinuxCpu, task: Task, newBrk: number): number {
    const mm = task.mm;
    lc.cpu.work(this.work.syscall);
    this.fetchText(lc, 12, 12);
    if (newBrk < mm.brkStart) return mm.brk;
    const oldEnd = roundUp(mm.brk), newEnd = roundUp(newBrk);
    const heap = mm.vmas.find((v) => v.name === "[heap]");
    if (newEnd > oldEnd) {
      if (mm.vmas.some((v) => v !== heap && v.start < newEnd && v.end > oldEnd)) return mm.brk;
      if (heap) {
        heap.end = newEnd;
      } else {
        mm.vmas.push({ start: mm.brkStart, end: newEnd, read: true, write: true, exec: false, name: "[heap]" });
        mm.vmas.sort((a, b) => a.start - b.start);
      }
    } else if (newEnd < oldEnd && heap) {
      const kept = mm.vmas.filter((v) => v !== heap);
      if (newEnd > heap.start) kept.push({ ...heap, end: newEnd });
      this.unmapRange(lc, mm, newEnd, oldEnd, kept);
    }
    mm.brk = newBrk;
    this.touchPhys(lc, this.pfnGpa(task.slab) + 0x800n, 1, "write");
    return mm.brk;
  }

  /**
   * A user access by the task current on `lc` (which is in user mode) with
   * demand paging: on #PF, entry, handler, exit, retry. Returns the gpa, or
   * the fault outcome if the access cannot complete (SIGSEGV, or an I/O wait
   * the caller must sleep for before retrying).
   */
  userAccess(lc: LinuxCpu, va: bigint, access: X86Access): bigint | FaultOutcome {
    for (let tries = 0; tries < 4; tries++) {
      const r = lc.cpu.access(va, access, true);
      if (typeof r === "bigint") return r;
      const out = this.userFault(lc, r);
      if (!out.ok || out.ioWait > 0) return out;
    }
    throw new Error(`vmmu: guest livelock: user ${access} at 0x${va.toString(16)} keeps faulting`);
  }

  /** A user-mode exception on `lc`: entry, #PF handler (#GP: SIGSEGV), exit. */
  userFault(lc: LinuxCpu, e: GuestException): FaultOutcome {
    const t = lc.current;
    if (!t) throw new Error("vmmu: user fault with no current task");
    this.enter(lc);
    const out = isPf(e) ? this.handleFault(lc, t, e, true) : (this.stats.segv++, FAULT_SEGV);
    if (out.ok && out.ioWait === 0) this.leave(lc);
    return out;
  }

  /** A kernel access to user memory (copy_*_user) with fault handling; returns the gpa, or undefined on -EFAULT. */
  kernelUserAccess(lc: LinuxCpu, task: Task, va: number, access: X86Access, io: { wait: number }): bigint | undefined {
    const bva = BigInt(va);
    for (let tries = 0; tries < 4; tries++) {
      this.stats.kernelAccesses++;
      const r = lc.cpu.access(bva, access, false);
      if (typeof r === "bigint") return r;
      if (!isPf(r)) return undefined;
      const out = this.handleFault(lc, task, r, false);
      if (!out.ok) return undefined;
      io.wait += out.ioWait;
    }
    throw new Error(`vmmu: guest livelock: kernel ${access} of user 0x${va.toString(16)} keeps faulting`);
  }

  /**
   * read(): copies file bytes [offset, offset + bytes) from the page cache to
   * user `buf`, line by line (kernel read of the direct map, kernel write of
   * the user buffer). Returns the I/O wait (cycles) of page-cache misses.
   */
  read(lc: LinuxCpu, task: Task, file: GuestFile, offset: number, bytes: number, buf: number): number {
    const io = { wait: 0 };
    this.fetchText(lc, 0, 16);
    for (let done = 0; done < bytes;) {
      const pos = offset + done;
      const page = Math.floor(pos / 4096), inPage = pos % 4096;
      const n = Math.min(bytes - done, 4096 - inPage);
      const src = this.pfnGpa(this.pageCachePage(lc, file, page, io)) + BigInt(inPage);
      this.copyLines(lc, task, src, buf + done, n, false, io);
      done += n;
    }
    return io.wait;
  }

  /** write(): appends `bytes` from user `buf` to `file` through the page cache. */
  write(lc: LinuxCpu, task: Task, file: GuestFile, bytes: number, buf: number): void {
    const io = { wait: 0 };
    this.fetchText(lc, 1, 16);
    const offset = file.pages * 4096;
    for (let done = 0; done < bytes;) {
      const page = Math.floor((offset + done) / 4096);
      const n = Math.min(bytes - done, 4096);
      let pfn = file.cache.get(page);
      if (pfn === undefined) {
        pfn = this.frames.alloc(FRAME.PAGECACHE);
        this.zero(lc, this.pfnGpa(pfn));
        file.cache.set(page, pfn);
      }
      file.pages = Math.max(file.pages, page + 1);
      this.copyLines(lc, task, this.pfnGpa(pfn), buf + done, n, true, io);
      done += n;
    }
  }

  private copyLines(lc: LinuxCpu, task: Task, gpa: bigint, user: number, n: number, fromUser: boolean, io: { wait: number }): void {
    for (let off = 0; off < n; off += 64) {
      const kva = PAGE_OFFSET + gpa + BigInt(off);
      if (fromUser) {
        if (this.kernelUserAccess(lc, task, user + off, "read", io) === undefined) return;
        this.kernelAccess(lc, kva, "write");
      } else {
        this.kernelAccess(lc, kva, "read");
        if (this.kernelUserAccess(lc, task, user + off, "write", io) === undefined) return;
      }
    }
    lc.cpu.work(Math.ceil(n / 64) * this.work.copyLine);
  }

  /** A timer or device interrupt on `lc`: entry (if in user mode), handler, exit back to where it was. */
  interrupt(lc: LinuxCpu): void {
    this.stats.interrupts++;
    const wasUser = lc.user;
    this.enter(lc);
    lc.cpu.work(this.work.tick);
    this.fetchText(lc, 2, 8);
    if (wasUser) this.leave(lc);
  }

  /**
   * The guest's own view of user `va` in `mm`: the leaf PTE and the frame it
   * maps, read from the tables in RAM (for tests and checks).
   */
  lookup(mm: Mm, va: number): { pte: bigint; pfn: number } | undefined {
    const lc = this.cpus[0]!;
    const g = this.pteGpa(lc, mm, va, false);
    if (g === undefined) return undefined;
    const pte = lc.cpu.readPhys64(g);
    if ((pte & PTE.P) === 0n) return undefined;
    return { pte, pfn: Number((pte & PTE_ADDR_MASK) >> 12n) };
  }
}

function roundUp(bytes: number): number {
  return Math.ceil(bytes / 4096) * 4096;
}

function pml4Index(va: bigint): number {
  return Number((va >> 39n) & 511n);
}

function check(e: GuestException | null, what: string): void {
  if (e) throw new Error(`vmmu: guest kernel oops: ${what} raised ${"gp" in e ? "#GP" : `#PF at 0x${e.cr2.toString(16)} (error code ${e.errorCode})`}`);
}
