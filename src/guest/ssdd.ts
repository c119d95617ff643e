// rt-tests' ssdd ("single-step, do-debug") on the Linux guest model, with
// grsecurity KERNEXEC's CR0.WP toggles: the workload of the CR0.WP/TDP-root
// pathology (Mathias Krause, `ssdd 10 50000` in a grsecurity guest; the fixes
// are upstream 01b31714bd90 and fb509f76acc8).
//
// The program (rt-tests src/ssdd/ssdd.c): main forks `pairs` tracers and
// waits for them; each tracer forks a tracee that spins in `while (1);`,
// installs a SIGCHLD handler (SA_SIGINFO), PTRACE_ATTACHes it and waits for
// the attach stop, then `iterations` times does ptrace(PTRACE_SINGLESTEP) and
// waitpid(-1, WUNTRACED | __WALL), checking that its handler ran. A step, as
// Linux runs it on one CPU (wake-affine keeps a ping-pong pair together):
//
//   1. tracer: ptrace(PTRACE_SINGLESTEP) — ptrace_check_attach, then
//      user_enable_single_step (arch/x86/kernel/step.c: TIF_SINGLESTEP, TF in
//      the tracee's pt_regs, is_setting_trap_flag reads the tracee's
//      instruction through access_process_vm) and wake_up_state;
//   2. tracer: wait4 — do_wait finds the tracee running and sleeps: context
//      switch tracer → tracee;
//   3. tracee: returns from ptrace_stop to user with RFLAGS.TF, executes one
//      instruction, takes #DB (vector 1); exc_debug → send_sigtrap; on the
//      way out get_signal → ptrace_stop: TASK_TRACED,
//      do_notify_parent_cldstop (SIGCHLD to the tracer, __wake_up_parent),
//      schedule: context switch tracee → tracer (kernel/signal.c);
//   4. tracer: wait_task_stopped copies the status out, the SIGCHLD handler
//      frame is built (setup_rt_frame: copy_fpstate_to_sigframe XSAVEs the
//      FPU state into it, the rest is copied), the handler runs,
//      rt_sigreturn (restore_sigcontext, fpu__restore_sig: XRSTOR from it).
//
// So per step: 3 syscalls (ptrace, wait4, rt_sigreturn), 2 context switches
// between two processes (switch_mm each time, KPTI CR3 writes as LinuxGuest
// does them, an XSAVES and an XRSTORS each), 2 try_to_wake_up, 1 #DB
// delivered and returned from, 1 SIGCHLD delivery (an XSAVE and an XRSTOR
// of the frame's FPU state, 7 lines of context copied each way); the guest
// memory touched is both tasks' task_struct (FPU state included), signal and
// sighand data, kernel stacks (pt_regs), the run queue, the tracer's user
// stack (status word, signal frame), its .bss, both programs' text and libc,
// and the page tables walked after every CR3 write. Not charged: the
// spectre/retbleed mitigations on entry, exit and switch (retpolines, return
// thunks, RSB filling), for want of a citable cost per event.
//
// KERNEXEC (PaX): read-only kernel data is written between pax_open_kernel
// (MOV CR0 with WP clear) and pax_close_kernel (MOV CR0 with WP set), each
// modelled as those two CR0 writes around the writer's code fetch, a read
// of its source and one 64-bit kernel store to a page of
// LinuxGuest.mapReadOnlyData (one store stands for __clone_user_pgds' 256
// and native_load_tls' 3: the window's pages, not its length, matter to an
// MMU that rebuilds its roots). Counts per path are options; the defaults
// follow grsecurity's last public 4.9 patch as forward-ported in
// github.com/minipli/linux-unofficial_grsec:
// - perSwitch 2: arch/x86/mm/tlb.c pax_switch_mm (PAX_PER_CPU_PGD, which
//   UDEREF selects on amd64: the user PGD slots copied into the read-only
//   per-CPU PGD) and arch/x86/include/asm/desc.h native_load_tls (the TLS
//   descriptors written into the read-only GDT by every __switch_to);
// - perException 0, perSyscall 0: the entry code (arch/x86/entry/calling.h
//   pax_enter_kernel*) writes CR0 only when it finds WP clear, which no
//   entry in this workload does, and arch/x86/kernel/step.c has no
//   pax_open_kernel; that ptrace, wait4, rt_sigreturn and the #DB handler
//   open the kernel nowhere else is an assumption (not found, not proven).
// The 5.x grsecurity kernels of the seed are not public: other counts are a
// configuration, never fitted to the seed's timings.
//
// Scheduling: pair i runs on CPU i mod N; each CPU has a FIFO run queue; the
// CPUs are interleaved in one thread by simulated time, a conservative
// discrete-event scheme: each CPU's kernel path is a coroutine that stops
// before every kernel primitive (one access or a few, a syscall entry, a
// context switch) and every MOV to CR0; the CPU with the fewest cycles runs
// next, up to its next stop or until its task blocks. So the CPUs' MMU events
// happen in simulated-time order to within one primitive: when one vCPU's
// CR0.WP window overlaps another's, which roots a hypervisor MMU finds
// referenced, and who waits for whom on its locks all follow from the cost
// model. `interleave: "block"` gives the coarser order: a CPU runs until its
// task blocks, and no two windows ever overlap. A tracer
// exits after its last step without killing its tracee ("It will
// automatically exit when its owner, ie, us, exits", ssdd.c): exit_ptrace
// detaches it (__ptrace_unlink wakes it in TASK_TRACED), ptrace_stop
// returns with exit_code still the step's SIGTRAP, get_signal delivers it
// and its default action kills the tracee; reparented to init at its
// tracer's exit, it is reaped there (the model reaps it at once). Not
// modelled: timer ticks, migration, the usleep backoff of check_sigchld (the
// signal always arrives before waitpid returns on one CPU).

import { CR0, PFERR, type X86Access } from "../x86/regs.js";
import { LinuxGuest, KERNEL_CR0, USER_LAYOUT, XSTATE_BYTES, type LinuxCpu, type LinuxStats, type Task, type Vma, type GuestFile } from "./linux.js";
import type { GuestException } from "./cpu.js";
import { fnArg, intArg, optionsObject, own, show } from "../validate.js";

/** How many pax_open_kernel/pax_close_kernel pairs each kernel path runs. */
export interface KernexecOptions {
  /** Per syscall (ptrace, wait4, rt_sigreturn, fork, …). */
  perSyscall: number;
  /** Per user-mode exception (the #DB of every step). */
  perException: number;
  /** Per context switch (switch_mm + __switch_to, or to the idle task). */
  perSwitch: number;
}

/** The defaults and their sources: see the file header. */
export const KERNEXEC_DEFAULTS: Readonly<KernexecOptions> = Object.freeze({ perSyscall: 0, perException: 0, perSwitch: 2 });

export type SsddInterleave = "fine" | "block";
export const SSDD_INTERLEAVES: readonly SsddInterleave[] = ["fine", "block"];

export interface SsddOptions {
  /** Tracer/tracee pairs (ssdd's nforks). */
  pairs: number;
  /** PTRACE_SINGLESTEP iterations per pair (ssdd's niters). */
  iterations: number;
  /** Picks the user-space addresses each task touches (code lines, stack and .bss slots); default 1. */
  seed?: number;
  /** grsecurity KERNEXEC's CR0.WP toggles (default KERNEXEC_DEFAULTS; missing counts default too), or false for a stock kernel. */
  kernexec?: Partial<KernexecOptions> | false;
  /**
   * How finely the CPUs interleave (default "fine"): "fine" switches to the CPU
   * that is furthest behind in simulated time before every kernel primitive
   * (an access or a few, a syscall entry, a context switch) and every MOV to
   * CR0, so the CPUs' MMU events — CR0 writes, EPT violations, mmu_lock
   * requests — happen in time order to within one primitive; "block" runs a
   * CPU until its task blocks, so one CPU's CR0.WP window never overlaps
   * another's (the coarse model, for comparison).
   */
  interleave?: SsddInterleave;
  /** Called with the fraction of steps done, every few hundred scheduling rounds and at the end. */
  onProgress?: (fraction: number) => void;
}

/** Events of the stepping phase: what the `steps` iterations themselves cost. */
export interface SsddStepCounts {
  syscalls: number;
  contextSwitches: number;
  debugExceptions: number;
  /** SIGCHLD deliveries (handler frames built). */
  signals: number;
  /** MOV to CR0 by pax_open_kernel / pax_close_kernel (two per open/close pair). */
  cr0Writes: number;
}

export interface SsddResult extends SsddStepCounts {
  /** PTRACE_SINGLESTEPs completed (pairs × iterations). */
  steps: number;
  /** Stores to read-only kernel data, one per open/close pair. */
  readOnlyStores: number;
  /** Guest #PFs handled (demand paging of main's, the tracers' and the tracees' memory). */
  pageFaults: number;
  userAccesses: number;
  /** Kernel accesses: LinuxGuest's count (entry code, task data, copies) plus the signal-frame copies done in batches. */
  kernelAccesses: number;
  /** The same events restricted to the steps (setup and teardown excluded). */
  inSteps: SsddStepCounts;
  /** Simulated cycles per vCPU spent in the run (GuestCpu.cycles). */
  cycles: number[];
  /** LinuxGuest counters over the run. */
  stats: LinuxStats;
  kernexec: Readonly<KernexecOptions> | false;
  wallMs: number;
}

/** x86-64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl). */
const NR = { rt_sigaction: 13, rt_sigreturn: 15, fork: 57, execve: 59, wait4: 61, ptrace: 101, exit_group: 231 };
/** Kernel-text paths of fetchText for the non-syscall kernel code. */
const PATH = { debug: 1001, signal: 1002, ptraceStop: 1003, switchMm: 1004, loadTls: 1005, syscall: 1100 };
/** Offsets into a task's slab frame (task_struct at 0; the rest an assumption of layout). */
const SLAB = { task: 0x000n, tls: 0x180n, sigqueue: 0xa00n, signal: 0xc00n, sighand: 0xe00n };
/** pt_regs->flags within the order-1 kernel stack (top of stack − sizeof(pt_regs) + 0x90). */
const PT_REGS_FLAGS = 0x1fe8n;
/** rt_sigframe without its FPU state: pretcode, ucontext (sigcontext inside) and siginfo, 440 bytes (arch/x86/include/asm/sigframe.h), in 64-byte lines. */
const SIGFRAME_CTX_LINES = 7;
/** The frame's FPU state: XSTATE_BYTES in XSAVE standard format and FP_XSTATE_MAGIC2 (arch/x86/kernel/fpu/signal.c), in 64-byte lines. */
const SIGFRAME_FP_LINES = Math.ceil((XSTATE_BYTES + 4) / 64);
/** Work of the #DB handler body (exc_debug: DR6, notify_die, send_sigtrap), cycles; an assumption. */
const DEBUG_WORK = 600;
/** Work of ptrace_stop / do_notify_parent_cldstop beyond their accesses; an assumption. */
const STOP_WORK = 500;
const BIN_TEXT_PAGES = 8;
const BIN_DATA_PAGES = 2;
const LIBC_TEXT_PAGES = 400;
/** GDT_ENTRY_TLS_MIN × 8: the TLS descriptors in a CPU's GDT page. */
const GDT_TLS = 12n * 8n;

type Kind = "main" | "tracer" | "tracee";

/**
 * A CPU's kernel path as a coroutine: it yields before each kernel primitive
 * and each MOV to CR0 (the sync points of the interleaving, see the file
 * header) and returns when the CPU's current task blocks or exits.
 */
type Co = Generator<void, void, void>;

/** A task as the workload drives it: which code it resumes when it next runs. */
class STask {
  phase = "start";
  readyAt = 0;
  /** main: exited tracers not yet reaped. */
  readonly zombies: STask[] = [];
  reaped = 0;
  waiting = false;
  /** tracer: its tracee; tracee: its tracer. */
  peer: STask | null = null;
  iter = 0;
  stepping = false;
  /** User addresses (seeded). */
  readonly code: number;
  readonly stack: number;
  readonly bss: number;
  readonly libc: number;
  constructor(readonly t: Task, readonly kind: Kind, readonly cpu: number, rnd: () => number) {
    this.code = USER_LAYOUT.pieBase + (rnd() % BIN_TEXT_PAGES) * 4096 + (rnd() % 62) * 64;
    this.stack = USER_LAYOUT.stackTop - 0x100 - (rnd() % 32) * 16;
    this.bss = USER_LAYOUT.pieBase + BIN_TEXT_PAGES * 4096 + (rnd() % (BIN_DATA_PAGES * 64)) * 64;
    this.libc = libcBase() + (rnd() % LIBC_TEXT_PAGES) * 4096 + (rnd() % 62) * 64;
  }
}

function libcBase(): number {
  return USER_LAYOUT.mmapBase - (LIBC_TEXT_PAGES + 16) * 4096;
}

function zeroSteps(): SsddStepCounts {
  return { syscalls: 0, contextSwitches: 0, debugExceptions: 0, signals: 0, cr0Writes: 0 };
}

function kernexecArg(v: unknown): Readonly<KernexecOptions> | false {
  if (v === undefined) return KERNEXEC_DEFAULTS;
  if (v === false) return false;
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new TypeError(`vmmu: kernexec must be false or { perSyscall, perException, perSwitch }, got ${show(v)}`);
  const o = v as Record<string, unknown>;
  const count = (k: keyof KernexecOptions) => {
    const x = own(o, k);
    return x === undefined ? KERNEXEC_DEFAULTS[k] : intArg(x, `kernexec.${k}`, 0, 64);
  };
  return Object.freeze({ perSyscall: count("perSyscall"), perException: count("perException"), perSwitch: count("perSwitch") });
}

/**
 * Runs ssdd on a booted guest (any GuestCpu array: bare metal, shadow
 * paging, EPT). Maps the KERNEXEC read-only data (LinuxGuest.mapReadOnlyData,
 * 1 + 2 pages per CPU) whether or not kernexec is on, so both runs share a
 * layout. Deterministic for (guest configuration, options). Throws a
 * TypeError or RangeError naming the option on bad input.
 */
export function runSsdd(guest: LinuxGuest, opts: SsddOptions): SsddResult {
  if (!(guest instanceof LinuxGuest)) throw new TypeError(`vmmu: guest must be a LinuxGuest, got ${show(guest)}`);
  optionsObject(opts, "opts");
  intArg(opts.pairs, "pairs", 1, 4096);
  intArg(opts.iterations, "iterations", 0, 1e9);
  if (opts.seed !== undefined) intArg(opts.seed, "seed", 0, 0xffff_ffff);
  fnArg(opts.onProgress, "onProgress", true);
  if (opts.interleave !== undefined && !SSDD_INTERLEAVES.includes(opts.interleave)) throw new TypeError(`vmmu: interleave must be one of ${SSDD_INTERLEAVES.join(", ")}, got ${show(opts.interleave)}`);
  if (guest.cpus.length > 255) throw new RangeError(`vmmu: ssdd maps 1 + 2 read-only pages per CPU (at most 512): the guest must have at most 255 CPUs, got ${guest.cpus.length}`);
  return new Ssdd(guest, opts, kernexecArg(opts.kernexec)).run();
}

class Ssdd {
  private readonly cpus: LinuxCpu[];
  private readonly runq: STask[][];
  private readonly cyc: number[];
  private readonly of = new Map<Task, STask>();
  private readonly rng = new Uint32Array(1);
  private readonly rodata: bigint;
  private readonly bin: GuestFile;
  private readonly libc: GuestFile;
  private readonly total = zeroSteps();
  private readonly step = zeroSteps();
  private steps = 0;
  private readOnlyStores = 0;
  /** Kernel accesses of kcopy (LinuxGuest counts the others). */
  private batchedKernelAccesses = 0;
  private readonly batchVa = new BigUint64Array(Math.max(SIGFRAME_CTX_LINES, SIGFRAME_FP_LINES));
  private readonly batchKind = new Uint8Array(Math.max(SIGFRAME_CTX_LINES, SIGFRAME_FP_LINES));
  private userAccesses = 0;
  private live = 0;
  private main!: STask;
  private readonly fine: boolean;

  constructor(private readonly g: LinuxGuest, private readonly o: SsddOptions, private readonly kx: Readonly<KernexecOptions> | false) {
    this.cpus = g.cpus;
    this.fine = (o.interleave ?? "fine") === "fine";
    this.runq = this.cpus.map(() => []);
    this.cyc = this.cpus.map(() => 0);
    this.rng[0] = ((o.seed ?? 1) >>> 0) || 0x2545f491;
    this.rodata = g.mapReadOnlyData(1 + 2 * this.cpus.length);
    this.bin = g.createFile("ssdd", BIN_TEXT_PAGES);
    this.libc = g.createFile("libc.so.6", LIBC_TEXT_PAGES);
  }

  /** xorshift32. */
  private rand = (): number => {
    let x = this.rng[0]!;
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    this.rng[0] = x;
    return x >>> 0;
  };

  run(): SsddResult {
    const g = this.g, o = this.o;
    const lc0 = this.cpus[0]!;
    const io = { wait: 0 };
    for (let i = 0; i < BIN_TEXT_PAGES; i++) g.pageCachePage(lc0, this.bin, i, io);
    for (let i = 0; i < LIBC_TEXT_PAGES; i++) g.pageCachePage(lc0, this.libc, i, io);
    const stats0 = { ...g.stats };
    const start = this.cpus.map((c) => c.cpu.cycles);
    for (let i = 0; i < this.cpus.length; i++) this.cyc[i] = start[i]!;
    const main = this.main = this.add(g.spawnInit(lc0, "ssdd"), "main", 0);
    main.readyAt = start[0]!;
    this.runq[0]!.push(main);
    const t0 = performance.now();
    const want = o.pairs * o.iterations;
    let rounds = 0;
    const active: (Co | null)[] = this.cpus.map(() => null);
    let suspended = 0;
    while (this.live > 0 || suspended > 0) {
      let i = -1;
      for (let j = 0; j < this.cpus.length; j++) {
        if (!active[j] && !this.cpus[j]!.current && this.runq[j]!.length === 0) continue;
        if (i < 0 || this.cyc[j]! < this.cyc[i]!) i = j;
      }
      if (i < 0) throw new Error("vmmu: ssdd deadlock: every task waits and no CPU has work");
      const lc = this.cpus[i]!;
      let co = active[i];
      if (co) suspended--;
      else co = lc.current ? this.resume(lc, this.of.get(lc.current)!) : this.wakeIdle(lc);
      if (this.fine) {
        if (co.next().done) co = null;
        else suspended++;
      } else {
        while (!co.next().done);
        co = null;
      }
      active[i] = co;
      this.cyc[i] = lc.cpu.cycles;
      if (o.onProgress && (++rounds & 255) === 0) o.onProgress(want === 0 ? 1 : this.steps / want);
    }
    o.onProgress?.(1);
    const wallMs = performance.now() - t0;
    const stats = { ...g.stats };
    for (const k of Object.keys(stats) as (keyof LinuxStats)[]) stats[k] -= stats0[k];
    return {
      steps: this.steps, ...this.total, readOnlyStores: this.readOnlyStores,
      pageFaults: stats.userFaults + stats.kernelFaults, userAccesses: this.userAccesses,
      kernelAccesses: stats.kernelAccesses + this.batchedKernelAccesses,
      inSteps: { ...this.step }, cycles: this.cpus.map((c, i) => c.cpu.cycles - start[i]!), stats, kernexec: this.kx, wallMs,
    };
  }

  private add(t: Task, kind: Kind, cpu: number): STask {
    const s = new STask(t, kind, cpu, this.rand);
    this.of.set(t, s);
    this.live++;
    return s;
  }

  // ---------------------------------------------------------------- scheduler

  /** An idle CPU with queued tasks: idles (HLT) until the first is ready, then switches to it. */
  private *wakeIdle(lc: LinuxCpu): Co {
    const q = this.runq[lc.index]!;
    let first = q[0]!;
    for (const s of q) if (s.readyAt < first.readyAt) first = s;
    const now = lc.cpu.cycles;
    if (first.readyAt > now) lc.cpu.work(first.readyAt - now);
    q.splice(q.indexOf(first), 1);
    yield* this.switchTo(lc, first, false);
  }

  /**
   * The first queued task of `lc` that is ready now (FIFO), removed from the
   * queue. Tasks woken on `lc` itself are ready by construction; the clock
   * (≈2 µs a read) is read only for a task woken from another CPU.
   */
  private pickReady(lc: LinuxCpu): STask | null {
    const q = this.runq[lc.index]!, started = this.cyc[lc.index]!;
    let now = -1;
    for (let i = 0; i < q.length; i++) {
      const r = q[i]!.readyAt;
      if (r > started) {
        if (now < 0) now = lc.cpu.cycles;
        if (r > now) continue;
      }
      return q.splice(i, 1)[0]!;
    }
    return null;
  }

  /** context_switch to `next` (or idle), then KERNEXEC's per-switch pairs (pax_switch_mm, native_load_tls). */
  private *switchTo(lc: LinuxCpu, next: STask | null, inStep: boolean): Co {
    yield;
    this.g.switchTo(lc, next ? next.t : null);
    this.total.contextSwitches++;
    if (inStep) this.step.contextSwitches++;
    if (!this.kx) return;
    const percpu = this.rodata + BigInt(1 + 2 * lc.index) * 0x1000n;
    const pgd = next ? next.t.mm.pgd : this.g.initMm.pgd;
    for (let k = 0; k < this.kx.perSwitch; k++) {
      if (k % 2 === 0) {
        // __clone_user_pgds: next's user PGD slots into the per-CPU PGD.
        yield* this.paxWrite(lc, percpu + 0x1000n + 8n * BigInt(k >> 1), pgd | 0x67n, inStep, PATH.switchMm, this.g.directMap(pgd));
      } else {
        // native_load_tls: next's thread.tls_array into this CPU's GDT.
        const tls = next ? this.g.directMap(this.slab(next, SLAB.tls)) : this.g.directMap(pgd);
        yield* this.paxWrite(lc, percpu + GDT_TLS + 8n * BigInt((k >> 1) % 3), next ? BigInt(next.t.pid) : 0n, inStep, PATH.loadTls, tls);
      }
    }
  }

  /** The current task of `lc` sleeps: schedule() to the next ready task, or idle. */
  private *schedule(lc: LinuxCpu, inStep: boolean): Co {
    yield* this.switchTo(lc, this.pickReady(lc), inStep);
  }

  /** try_to_wake_up of `s` by code running on `lc` (LinuxGuest.tryToWakeUp): onto its CPU's run queue; an idle remote CPU gets a reschedule IPI. */
  private wake(lc: LinuxCpu, s: STask): void {
    this.g.tryToWakeUp(lc, s.t, s.cpu);
    s.readyAt = s.cpu === lc.index ? this.cyc[lc.index]! : lc.cpu.cycles;
    this.runq[s.cpu]!.push(s);
    if (s.cpu !== lc.index && !this.cpus[s.cpu]!.current) lc.cpu.sendIpi(s.cpu);
  }

  private *resume(lc: LinuxCpu, s: STask): Co {
    switch (`${s.kind}:${s.phase}`) {
      case "main:start": return yield* this.mainStart(lc, s);
      case "main:reap": return yield* this.mainWait(lc, s, true);
      case "tracer:start": return yield* this.tracerStart(lc, s);
      case "tracer:waited": return yield* this.tracerWaited(lc, s);
      case "tracee:start": return yield* this.traceeStop(lc, s, false);
      case "tracee:stopped": return yield* this.traceeStep(lc, s);
      case "tracee:detached": return yield* this.traceeDie(lc, s);
    }
    throw new Error(`vmmu: ssdd: ${s.kind} ${s.t.pid} resumed in phase ${s.phase}`);
  }

  // ---------------------------------------------------------------- kernel primitives

  private slab(s: STask, off: bigint): bigint {
    return (BigInt(s.t.slab) << 12n) + off;
  }

  /**
   * pax_open_kernel; the writer's code (one line of kernel text on `path`)
   * and its source (`src`, a kernel va, if any) read with WP clear; a store
   * to read-only kernel data at `va`; pax_close_kernel.
   */
  private *paxWrite(lc: LinuxCpu, va: bigint, value: bigint, inStep: boolean, path: number, src: bigint | null): Co {
    const cpu = lc.cpu;
    yield;
    oops(cpu.writeCr0(KERNEL_CR0 & ~CR0.WP), lc, "pax_open_kernel");
    yield;
    this.g.fetchText(lc, path, 1);
    if (src !== null) this.g.kernelAccess(lc, src, "read");
    oops(cpu.store64(va, value), lc, `store to read-only data at 0x${va.toString(16)} with CR0.WP clear`);
    yield;
    oops(cpu.writeCr0(KERNEL_CR0), lc, "pax_close_kernel");
    this.readOnlyStores++;
    this.total.cr0Writes += 2;
    if (inStep) this.step.cr0Writes += 2;
  }

  /** A syscall entry and its KERNEXEC pairs (on a __read_only variable of the syscall's own). */
  private *sys(lc: LinuxCpu, nr: number, inStep: boolean): Co {
    yield;
    this.g.syscallEnter(lc, nr);
    this.total.syscalls++;
    if (inStep) this.step.syscalls++;
    if (this.kx) for (let k = 0; k < this.kx.perSyscall; k++) yield* this.paxWrite(lc, this.rodata + BigInt((nr * 8 + k * 64) % 2048), BigInt(nr), inStep, PATH.syscall + nr, null);
  }

  /** A user access by the current task, demand-faulting as needed. */
  private user(lc: LinuxCpu, va: number, kind: X86Access): void {
    this.userAccesses++;
    const r = this.g.userAccess(lc, BigInt(va), kind);
    if (typeof r !== "bigint") throw new Error(`vmmu: ssdd: user ${kind} at 0x${va.toString(16)} by pid ${lc.current?.pid} failed (${r.ok ? "I/O wait" : "SIGSEGV"})`);
  }

  /** copy_to_user / copy_from_user of one line of `s`'s memory. */
  private kuser(lc: LinuxCpu, s: STask, va: number, kind: X86Access): void {
    const io = { wait: 0 };
    if (this.g.kernelUserAccess(lc, s.t, va, kind, io) === undefined || io.wait > 0) throw new Error(`vmmu: ssdd: kernel ${kind} of user 0x${va.toString(16)} (pid ${s.t.pid}) failed`);
  }

  /**
   * Kernel accesses to `lines` consecutive 64-byte lines of user memory from
   * `va`: one batch of CPL-0 accesses (GuestCpu.accessMany); a #PF is
   * handled as the kernel's fixup path does (handleFault) and the batch
   * resumes at the faulting line. `copy`: a copy_to_user / copy_from_user,
   * charged LINUX_WORK_COSTS.copyLine a line; otherwise the caller charges
   * the instruction that makes them (XSAVE, XRSTOR).
   */
  private kcopy(lc: LinuxCpu, s: STask, va: number, lines: number, kind: X86Access, copy: boolean): void {
    const vas = this.batchVa, kinds = this.batchKind;
    kinds.fill(kind === "write" ? 1 : 0, 0, lines);
    for (let i = 0; i < lines; i++) vas[i] = BigInt(va + i * 64);
    for (let done = 0, tries = 0; done < lines;) {
      const r = lc.cpu.accessMany(vas.subarray(done), kinds.subarray(done), lines - done, false);
      done += r.done;
      this.batchedKernelAccesses += r.done;
      if (!r.exception) break;
      const e = r.exception;
      if (!("cr2" in e) || ++tries > 4 || !this.g.handleFault(lc, s.t, e, false).ok) throw new Error(`vmmu: ssdd: kernel ${kind} of user 0x${(va + done * 64).toString(16)} (pid ${s.t.pid}) failed`);
    }
    if (copy) lc.cpu.work(lines * this.g.work.copyLine);
  }

  private exec(lc: LinuxCpu, s: STask): void {
    const text = USER_LAYOUT.pieBase, data = text + BIN_TEXT_PAGES * 4096, brk = data + BIN_DATA_PAGES * 4096, libc = libcBase();
    const vmas: Vma[] = [
      { start: text, end: data, read: true, write: false, exec: true, file: this.bin, filePage: 0, name: "ssdd" },
      { start: data, end: brk, read: true, write: true, exec: false, name: "ssdd data" },
      { start: libc, end: libc + LIBC_TEXT_PAGES * 4096, read: true, write: false, exec: true, file: this.libc, filePage: 0, name: "libc" },
      { start: libc + LIBC_TEXT_PAGES * 4096, end: USER_LAYOUT.mmapBase, read: true, write: true, exec: false, name: "libc data" },
      { start: USER_LAYOUT.stackTop - USER_LAYOUT.stackBytes, end: USER_LAYOUT.stackTop, read: true, write: true, exec: false, name: "[stack]" },
    ];
    this.g.exec(lc, s.t, "ssdd", vmas, brk);
    this.kuser(lc, s, USER_LAYOUT.stackTop - 8, "write");
  }

  // ---------------------------------------------------------------- main

  /** execve, fork a tracer per pair (pair i on CPU i mod N), then wait for them. */
  private *mainStart(lc: LinuxCpu, m: STask): Co {
    const g = this.g;
    yield;
    g.leave(lc);
    yield* this.sys(lc, NR.execve, false);
    yield;
    this.exec(lc, m);
    yield;
    g.leave(lc);
    for (let i = 0; i < this.o.pairs; i++) {
      yield;
      this.user(lc, m.code, "fetch");
      yield;
      this.user(lc, m.stack, "write");
      yield* this.sys(lc, NR.fork, false);
      const tracer = this.add(g.fork(lc, m.t), "tracer", i % this.cpus.length);
      this.wake(lc, tracer);
      yield;
      g.leave(lc);
    }
    yield* this.mainWait(lc, m, false);
  }

  /** wait4 until every tracer is reaped (`woken`: returning from a sleep in do_wait), then exit. */
  private *mainWait(lc: LinuxCpu, m: STask, woken: boolean): Co {
    const g = this.g;
    for (;;) {
      if (!woken) yield* this.sys(lc, NR.wait4, false);
      woken = false;
      const z = m.zombies.shift();
      if (!z) {
        m.waiting = true;
        m.phase = "reap";
        yield* this.schedule(lc, false);
        return;
      }
      yield;
      g.touchPhys(lc, this.slab(z, SLAB.task), 2, "read");
      yield;
      g.reap(m.t, z.t);
      yield;
      this.kuser(lc, m, m.stack, "write");
      yield;
      g.leave(lc);
      yield;
      this.user(lc, m.code, "fetch");
      if (++m.reaped === this.o.pairs) break;
    }
    yield* this.sys(lc, NR.exit_group, false);
    yield* this.exitTask(lc, m);
  }

  private *exitTask(lc: LinuxCpu, s: STask): Co {
    yield;
    this.g.exit(lc, s.t);
    this.of.delete(s.t);
    this.live--;
    yield* this.schedule(lc, false);
  }

  // ---------------------------------------------------------------- tracer

  /** forktests(): fork the tracee, sigaction(SIGCHLD), PTRACE_ATTACH, wait for the attach stop. */
  private *tracerStart(lc: LinuxCpu, tr: STask): Co {
    const g = this.g;
    yield;
    g.leave(lc);
    yield;
    this.user(lc, tr.code, "fetch");
    yield;
    this.user(lc, tr.stack, "write");
    yield* this.sys(lc, NR.fork, false);
    const te = this.add(g.fork(lc, tr.t), "tracee", tr.cpu);
    te.peer = tr;
    tr.peer = te;
    this.wake(lc, te);
    yield;
    g.leave(lc);
    yield;
    this.user(lc, tr.libc, "fetch");
    yield* this.sys(lc, NR.rt_sigaction, false);
    yield;
    this.kuser(lc, tr, tr.stack - 0x40, "read");
    yield;
    g.touchPhys(lc, this.slab(tr, SLAB.sighand), 2, "write");
    yield;
    g.leave(lc);
    yield;
    this.user(lc, tr.libc, "fetch");
    yield* this.sys(lc, NR.ptrace, false);
    yield;
    g.touchPhys(lc, this.slab(te, SLAB.task), 2, "write");
    yield;
    g.touchPhys(lc, this.slab(te, SLAB.signal), 1, "write");
    yield;
    g.leave(lc);
    yield* this.wait4(lc, tr, false);
  }

  /** waitpid(-1, WUNTRACED | __WALL) with the tracee not stopped yet: do_wait sleeps. */
  private *wait4(lc: LinuxCpu, tr: STask, inStep: boolean): Co {
    yield;
    this.user(lc, tr.libc + 64, "fetch");
    yield* this.sys(lc, NR.wait4, inStep);
    yield;
    this.g.touchPhys(lc, this.slab(tr, SLAB.task), 1, "read");
    yield;
    this.g.touchPhys(lc, this.slab(tr.peer!, SLAB.task), 1, "read");
    tr.phase = "waited";
    tr.waiting = true;
    yield* this.schedule(lc, inStep);
  }

  /**
   * Woken in do_wait by the tracee's stop: wait_task_stopped, SIGCHLD
   * delivery (frame, handler, rt_sigreturn), ssdd's checks; then the next
   * PTRACE_SINGLESTEP and wait4, or exit after the last.
   */
  private *tracerWaited(lc: LinuxCpu, tr: STask): Co {
    const g = this.g, te = tr.peer!, inStep = tr.stepping;
    tr.waiting = false;
    yield;
    g.touchPhys(lc, this.slab(te, SLAB.task), 2, "write");
    yield;
    this.kuser(lc, tr, tr.stack, "write");
    yield;
    g.touchPhys(lc, this.slab(tr, SLAB.signal), 1, "write");
    yield;
    g.touchPhys(lc, this.slab(tr, SLAB.sighand), 1, "read");
    yield;
    g.fetchText(lc, PATH.signal, 6);
    // get_sigframe: the FPU state below the red zone, the frame below it.
    const fp = tr.stack - 0x200 - SIGFRAME_FP_LINES * 64, frame = fp - SIGFRAME_CTX_LINES * 64;
    // copy_fpstate_to_sigframe: XSAVE straight to the user frame (the registers hold the tracer's state since switch_fpu_finish).
    yield;
    lc.cpu.work(g.work.fpuSave);
    yield;
    this.kcopy(lc, tr, fp, SIGFRAME_FP_LINES, "write", false);
    yield;
    this.kcopy(lc, tr, frame, SIGFRAME_CTX_LINES, "write", true);
    this.total.signals++;
    if (inStep) this.step.signals++;
    yield;
    g.leave(lc);
    yield;
    this.user(lc, tr.code + 64, "fetch");
    yield;
    this.user(lc, tr.bss, "write");
    yield;
    this.user(lc, tr.libc + 128, "fetch");
    yield* this.sys(lc, NR.rt_sigreturn, inStep);
    // restore_sigcontext, then fpu__restore_sig: XRSTOR straight from the user frame.
    yield;
    this.kcopy(lc, tr, frame, SIGFRAME_CTX_LINES, "read", true);
    yield;
    lc.cpu.work(g.work.fpuRestore);
    yield;
    this.kcopy(lc, tr, fp, SIGFRAME_FP_LINES, "read", false);
    yield;
    g.leave(lc);
    yield;
    this.user(lc, tr.code, "fetch");
    yield;
    this.user(lc, tr.stack, "read");
    yield;
    this.user(lc, tr.bss, "read");
    yield;
    this.user(lc, tr.bss, "write");
    if (inStep) {
      tr.stepping = false;
      tr.iter++;
      this.steps++;
    }
    if (tr.iter >= this.o.iterations) {
      yield* this.tracerExit(lc, tr);
      return;
    }
    tr.stepping = true;
    yield;
    this.user(lc, tr.libc, "fetch");
    yield* this.sys(lc, NR.ptrace, true);
    yield;
    g.touchPhys(lc, this.slab(te, SLAB.task), 2, "write");
    yield;
    g.touchPhys(lc, (BigInt(te.t.kstack) << 12n) + (PT_REGS_FLAGS & ~63n), 1, "write");
    yield;
    this.readTraceeInsn(lc, te);
    te.phase = "stopped";
    this.wake(lc, te);
    yield;
    g.leave(lc);
    yield* this.wait4(lc, tr, true);
  }

  /** is_setting_trap_flag: access_process_vm of the instruction at the tracee's IP (GUP faults it in; read through the direct map). */
  private readTraceeInsn(lc: LinuxCpu, te: STask): void {
    let m = this.g.lookup(te.t.mm, te.code);
    if (!m) {
      const out = this.g.handleFault(lc, te.t, { cr2: BigInt(te.code), errorCode: 0 }, false);
      m = this.g.lookup(te.t.mm, te.code);
      if (!out.ok || out.ioWait > 0 || !m) throw new Error(`vmmu: ssdd: access_process_vm of pid ${te.t.pid} at 0x${te.code.toString(16)} failed`);
    }
    this.g.kernelAccess(lc, this.g.directMap((BigInt(m.pfn) << 12n) + BigInt(te.code % 4096)), "read");
  }

  /** exit_group after the last step: exit_ptrace detaches and wakes the tracee (stopped with its SIGTRAP pending), do_exit, main notified. */
  private *tracerExit(lc: LinuxCpu, tr: STask): Co {
    const te = tr.peer!, m = this.main;
    yield;
    this.user(lc, tr.libc, "fetch");
    yield* this.sys(lc, NR.exit_group, false);
    te.phase = "detached";
    this.wake(lc, te);
    yield;
    this.g.exit(lc, tr.t);
    this.of.delete(tr.t);
    this.live--;
    m.zombies.push(tr);
    if (m.waiting) {
      m.waiting = false;
      this.wake(lc, m);
    }
    yield* this.schedule(lc, false);
  }

  // ---------------------------------------------------------------- tracee

  /** get_signal → ptrace_stop: TASK_TRACED, SIGCHLD to the tracer and its wakeup (do_notify_parent_cldstop), schedule. */
  private *traceeStop(lc: LinuxCpu, te: STask, inStep: boolean): Co {
    const g = this.g, tr = te.peer!;
    yield;
    lc.cpu.work(STOP_WORK);
    yield;
    g.fetchText(lc, PATH.ptraceStop, 8);
    yield;
    g.touchPhys(lc, this.slab(te, SLAB.task), 2, "write");
    yield;
    g.touchPhys(lc, this.slab(tr, SLAB.sighand), 1, "read");
    yield;
    g.touchPhys(lc, this.slab(tr, SLAB.signal), 1, "write");
    if (!tr.waiting) throw new Error(`vmmu: ssdd: tracee ${te.t.pid} stopped with its tracer not in wait4`);
    this.wake(lc, tr);
    te.phase = "stopped";
    yield* this.schedule(lc, inStep);
  }

  /** Resumed by PTRACE_SINGLESTEP: back to user with TF, one instruction, #DB, SIGTRAP, stop again. */
  private *traceeStep(lc: LinuxCpu, te: STask): Co {
    const g = this.g;
    yield;
    g.touchPhys(lc, this.slab(te, SLAB.task), 1, "read");
    yield;
    g.leave(lc);
    yield;
    this.user(lc, te.code, "fetch");
    this.total.debugExceptions++;
    this.step.debugExceptions++;
    yield;
    lc.cpu.exception(1);
    yield;
    lc.cpu.work(g.work.exceptionDelivery);
    yield;
    g.enter(lc);
    yield;
    lc.cpu.work(DEBUG_WORK);
    yield;
    g.fetchText(lc, PATH.debug, 8);
    if (this.kx) for (let k = 0; k < this.kx.perException; k++) yield* this.paxWrite(lc, this.rodata + 0x800n + BigInt(k * 8), 1n, true, PATH.debug, null);
    yield;
    g.touchPhys(lc, this.slab(te, SLAB.sighand), 1, "read");
    yield;
    g.touchPhys(lc, this.slab(te, SLAB.signal), 1, "write");
    yield;
    g.touchPhys(lc, this.slab(te, SLAB.sigqueue), 1, "write");
    yield* this.traceeStop(lc, te, true);
  }

  /**
   * Detached by its tracer's exit: back from ptrace_stop with exit_code
   * still SIGTRAP, get_signal delivers it (sighand, signal) and its default
   * action kills the tracee (do_group_exit → do_exit); reaped at once (its
   * reaper, init, is not modelled).
   */
  private *traceeDie(lc: LinuxCpu, te: STask): Co {
    const g = this.g;
    yield;
    g.fetchText(lc, PATH.signal, 6);
    yield;
    g.touchPhys(lc, this.slab(te, SLAB.sighand), 1, "read");
    yield;
    g.touchPhys(lc, this.slab(te, SLAB.signal), 1, "write");
    yield;
    g.reap(te.peer!.t, te.t);
    yield* this.exitTask(lc, te);
  }
}

function oops(e: GuestException | null, lc: LinuxCpu, what: string): void {
  if (!e) return;
  const how = "gp" in e ? "#GP" : `#PF at 0x${e.cr2.toString(16)} (error code ${e.errorCode}${(e.errorCode & PFERR.W) !== 0 ? ", write" : ""})`;
  throw new Error(`vmmu: guest kernel oops on CPU ${lc.index}: ${what} raised ${how}`);
}
