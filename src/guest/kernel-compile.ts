// A kernel-compile-like workload on the Linux guest model: `make -jN`
// forking one `gcc` driver per translation unit, which forks `cc1` (the
// compiler: reads the source and headers, grows its heap with brk and mmap,
// computes, frees arenas with munmap, writes assembly) and then `as` (reads
// the assembly, writes the object); every process exits. It is the workload
// behind the KPTI-on-shadow-paging numbers of the seed posts (Shahid 2018, Alon 2018):
// short-lived processes, two CR3 writes per syscall and fault, many page
// table pages allocated and freed.
//
// Deterministic for a seed: the vCPUs are interleaved in one thread, always
// stepping the one with the fewest simulated cycles; a step is one syscall,
// one fault or up to `stepAccesses` user accesses. User accesses are
// synthetic (fetches over the program's text with a hot set, stack, a heap
// working set around the allocation frontier, uniform heap, globals), or a
// lackey trace replayed by each cc1 (its addresses kept, its regions mapped).
//
// Scale: real cc1 runs execute ~10^9 accesses; here `accessesPerProcess`
// (default 200 000) is the cc1 budget, the other programs get fixed
// fractions of it, and file sizes are a few pages. Not modelled: vfork,
// pipes (cc1 → as go through a temporary file), signals, make's own reads.

import { createMachine } from "../machine.js";
import type { GuestCpu } from "./cpu.js";
import type { FrameStats } from "./frames.js";
import { BareMetalCpu, type BareMetalCpuOptions } from "./bare-metal-cpu.js";
import {
  LinuxGuest, USER_LAYOUT, type GuestFile, type LinuxCpu, type LinuxOptions, type LinuxStats, type Task, type Vma,
} from "./linux.js";
import { traceRegions, type AccessTrace } from "./lackey.js";
import { pagesTouched, userCyclesPerKernelEvent } from "./kernel-compile-measured.js";
import { fnArg, intArg, optBoolArg, optionsObject, show } from "../validate.js";

export interface KernelCompileOptions {
  /** Translation units compiled (each: gcc → cc1, as). */
  jobs: number;
  /** make -j (default: the guest's CPU count). */
  parallel?: number;
  /** User accesses of each cc1 (default 200 000); gcc, as and make get fractions of it. */
  accessesPerProcess?: number;
  seed: number;
  /** Replayed by every cc1 (from a seeded offset, wrapping) instead of its synthetic stream. */
  trace?: AccessTrace;
  /** Headers each cc1 reads (default 24, from a shared pool of 64). */
  headersPerJob?: number;
  /** Accesses per accessMany call and per scheduling step (default 512). */
  stepAccesses?: number;
  /** Timer interrupts per second (default 1000) of a `cpuHz` (default 3e9) CPU. */
  tickHz?: number;
  cpuHz?: number;
  /** Time slice in cycles before a task with waiters is preempted at a tick (default 3 M). */
  sliceCycles?: number;
  /**
   * User time between kernel events (default "measured"): before each syscall
   * and each user #PF a process runs the user time a real build runs between
   * two such events (src/guest/kernel-compile-measured.ts: 82 k cycles for a
   * cc1 at 3 GHz, 7.2 k for any other process), charged as user work on its
   * vCPU — besides the user accesses simulated one by one. "simulated": the
   * simulated accesses only (kernel events 10^2–10^3 times denser per unit of
   * user time than in a real build).
   */
  userTime?: "measured" | "simulated";
  /** Leave files out of the page cache at start (reads then wait for I/O; default false: warm, as a second make run). */
  coldCache?: boolean;
  /**
   * Called after every user access with the gpa it reached. Makes the
   * workload use GuestCpu.access (one call per access) instead of accessMany.
   */
  onAccess?: (lc: LinuxCpu, task: Task, va: number, kind: number, gpa: bigint) => void;
  /** Called every 64 scheduling steps with the fraction of processes finished (progress display). */
  onProgress?: (fraction: number) => void;
}

export interface KernelCompileResult {
  /** Guest event counts (syscalls, CR3 writes, INVLPG, INVPCID, faults, …) during the run. */
  stats: LinuxStats;
  /** Processes created (make, and per job gcc, cc1, as). */
  processes: number;
  /** User accesses (compute phases). */
  userAccesses: number;
  /**
   * Simulated cycles the vCPUs spent running user code (the compute phases),
   * summed: what a run of the same guest on the same CPU charges its user
   * accesses, including the exits those accesses cause under a hypervisor.
   * The guest's #PF handling after a faulting access is kernel time.
   */
  userCycles: number;
  /** Kernel accesses (entry code, syscall bodies, copies, page-table work excluded). */
  kernelAccesses: number;
  /** Simulated cycles per vCPU spent in the run. */
  cycles: number[];
  /** The CPUs' own event counts, if they keep them (BareMetalCpu.events). */
  cpuEvents: Record<string, number>[];
  frames: FrameStats;
  /** Host wall time of the run and guest accesses (user + kernel) per host second. */
  wallMs: number;
  accessesPerSecond: number;
}

type Op =
  | { k: "exec"; prog: Program }
  | { k: "compute"; n: number }
  | { k: "read"; file: GuestFile; offset: number; bytes: number }
  | { k: "write"; file: GuestFile; bytes: number }
  | { k: "syscall"; nr: number }
  | { k: "brk"; grow: number }
  | { k: "mmap"; bytes: number }
  | { k: "munmap"; addr: number; bytes: number }
  | { k: "spawn"; script: () => Script }
  | { k: "wait" }
  | { k: "unlink"; file: GuestFile }
  | { k: "exit" };

type Script = Generator<Op, void, number>;

/** A program image: text from a binary in the page cache, plus libc. */
interface Program {
  name: string;
  bin: GuestFile;
  textPages: number;
  dataPages: number;
  /** Hot text pages (same for every instance: same binary). */
  hot: Int32Array;
}

const NR = { read: 0, write: 1, open: 2, close: 3, stat: 4, mmap: 9, munmap: 11, brk: 12, fork: 57, execve: 59, exit: 60, wait4: 61, unlink: 87 };
const LIBC_TEXT_PAGES = 400;
const READ_CHUNK = 16384;

/** xorshift32 over a Uint32 state. */
function xs(s: Uint32Array): number {
  let x = s[0]!;
  x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
  s[0] = x;
  return x >>> 0;
}

/** A process as the workload drives it. */
class Proc {
  state: "ready" | "running" | "blocked" | "waiting" | "zombie" = "ready";
  readyAt = 0;
  op: Op | null = null;
  remaining = 0;
  resume = 0;
  cpu = -1;
  ranSince = 0;
  readonly zombies: Proc[] = [];
  /** Batch buffer of user accesses: va as u32 pairs over a BigUint64Array, kinds, cursor. */
  readonly va: BigUint64Array;
  readonly vaU32: Uint32Array;
  readonly kinds: Uint8Array;
  pos = 0;
  len = 0;
  stream: Stream | null = null;
  heapBuf = 0;
  /** The program is cc1 (the measured user time between its kernel events is cc1's). */
  cc1 = false;
  constructor(readonly task: Task, readonly parent: Proc | null, readonly script: Script, batch: number) {
    this.va = new BigUint64Array(batch);
    this.vaU32 = new Uint32Array(this.va.buffer);
    this.kinds = new Uint8Array(batch);
  }
}

/** Fills a batch of user accesses. */
interface Stream {
  fill(vaU32: Uint32Array, kinds: Uint8Array, n: number): void;
  /** The heap grew or shrank (new break). */
  heap?(start: number, end: number): void;
  mmaps?(chunks: readonly [number, number][]): void;
}

/**
 * Synthetic compiler-like stream: 40% fetches (sequential runs within a
 * text page, jumps mostly to hot pages, some to libc), 60% data (stack top
 * 30%, writes at the allocation frontier 10%, a working set behind the
 * frontier 40%, uniform over mmap arenas and the initialised heap 15%,
 * globals 5%). Reads of heap or arena memory never written map the zero page
 * and a later write copies it (COW), as for calloc'ed memory. Weights
 * are assumptions shaped after published cc1 profiles, not measurements.
 */
class SyntheticStream implements Stream {
  private readonly s = new Uint32Array(1);
  private pc = 0;
  private heapStart = 0;
  private heapEnd = 0;
  private front = 0;
  /** Highest frontier reached: heap below it has been initialised. */
  private high = 0;
  private chunks: readonly [number, number][] = [];
  private stackOff = 0;

  constructor(seed: number, private readonly prog: Program, private readonly textStart: number, private readonly libcStart: number,
    private readonly dataStart: number, private readonly dataEnd: number) {
    this.s[0] = seed || 1;
    this.pc = textStart + prog.hot[0]! * 4096;
  }

  heap(start: number, end: number): void {
    this.heapStart = start;
    this.heapEnd = end;
    if (this.front < start || this.front >= end) this.front = Math.max(start, Math.min(this.front, end - 64));
    this.high = Math.min(Math.max(this.high, this.front), end);
  }

  mmaps(chunks: readonly [number, number][]): void {
    this.chunks = chunks;
  }

  fill(out: Uint32Array, kinds: Uint8Array, n: number): void {
    const s = this.s, prog = this.prog;
    const heapBytes = this.heapEnd - this.heapStart;
    for (let i = 0; i < n; i++) {
      const r = xs(s);
      let va: number, k: number;
      const sel = r & 1023;
      if (sel < 410) {
        this.pc += 4 + ((r >>> 10) & 7);
        if ((r >>> 13 & 31) === 0 || (this.pc & 4095) < 8) {
          const q = xs(s);
          if ((q & 15) < 2) this.pc = this.libcStart + (q >>> 4) % 64 * 4096 + (q >>> 16 & 4032);
          else if ((q & 15) < 3) this.pc = this.textStart + (q >>> 4) % prog.textPages * 4096 + (q >>> 16 & 4032);
          else this.pc = this.textStart + prog.hot[(q >>> 4) % prog.hot.length]! * 4096 + (q >>> 16 & 4032);
        }
        va = this.pc;
        k = 2;
      } else if (sel < 717 || heapBytes <= 0) {
        this.stackOff = (this.stackOff + ((r >>> 10) & 3) * 8 - 12 + 8192) % 8192;
        va = USER_LAYOUT.stackTop - 8192 + (this.stackOff & ~7);
        k = (r >>> 20) & 1;
      } else if (sel < 819) {
        va = this.front;
        this.front += 64;
        if (this.front > this.high) this.high = this.front;
        if (this.front >= this.heapEnd) this.front = this.heapStart;
        k = 1;
      } else if (sel < 973) {
        const win = Math.min(heapBytes, 256 * 1024);
        let a = this.front - 8 - ((r >>> 10) % win);
        if (a < this.heapStart) a = this.heapStart + ((this.heapStart - a) % Math.max(64, this.high - this.heapStart));
        va = a - (a % 8);
        k = (r >>> 30) === 0 ? 1 : 0;
      } else if (sel < 1012) {
        const q = xs(s);
        const nch = this.chunks.length;
        if (nch > 0 && (q & 1) === 0) {
          const [a, b] = this.chunks[(q >>> 1) % nch]!;
          va = a + ((q >>> 8) * 8) % (b - a);
        } else {
          va = this.heapStart + ((q >>> 3) * 8) % Math.max(64, this.high - this.heapStart);
        }
        k = (q >>> 29) === 0 ? 1 : 0;
      } else {
        va = this.dataStart + ((r >>> 10) * 8) % (this.dataEnd - this.dataStart);
        k = (r >>> 3) & 1;
      }
      out[2 * i] = va >>> 0;
      out[2 * i + 1] = (va / 4294967296) >>> 0;
      kinds[i] = k;
    }
  }
}

/** Replays a trace from `offset`, wrapping. */
class TraceStream implements Stream {
  constructor(private readonly t: AccessTrace, private at: number) {}
  fill(out: Uint32Array, kinds: Uint8Array, n: number): void {
    const t = this.t;
    for (let i = 0; i < n; i++) {
      const va = t.addr[this.at]!;
      out[2 * i] = va >>> 0;
      out[2 * i + 1] = (va / 4294967296) >>> 0;
      kinds[i] = t.kind[this.at]!;
      if (++this.at === t.length) this.at = 0;
    }
  }
}

/** Runs the workload on a booted guest. Deterministic for (guest configuration, options). */
/** Throws a TypeError or RangeError naming the option unless `o` is well formed (an empty trace included). */
function checkOptions(o: KernelCompileOptions): void {
  optionsObject(o, "opts");
  intArg(o.jobs, "jobs", 1, 1_000_000);
  intArg(o.seed, "seed", 0, 0xffff_ffff);
  const opt = (k: keyof KernelCompileOptions, min: number, max: number) => { if (o[k] !== undefined) intArg(o[k], k, min, max); };
  opt("parallel", 1, 4096);
  opt("accessesPerProcess", 1, 1e9);
  opt("headersPerJob", 0, 64);
  opt("stepAccesses", 1, 1 << 20);
  const pos = (k: "tickHz" | "cpuHz" | "sliceCycles") => {
    const v = o[k];
    if (v === undefined) return;
    if (typeof v !== "number") throw new TypeError(`vmmu: ${k} must be a positive number, got ${show(v)}`);
    if (!(v > 0 && v < 1e15)) throw new RangeError(`vmmu: ${k} must be a positive number, got ${show(v)}`);
  };
  pos("tickHz");
  pos("cpuHz");
  pos("sliceCycles");
  if (Math.round((o.cpuHz ?? 3e9) / (o.tickHz ?? 1000)) < 1) throw new RangeError(`vmmu: tickHz (${o.tickHz}) must be at most about cpuHz (${o.cpuHz ?? 3e9}): a tick is at least one cycle`);
  optBoolArg(o.coldCache, "coldCache", false);
  if (o.userTime !== undefined && o.userTime !== "measured" && o.userTime !== "simulated") {
    throw new RangeError(`vmmu: userTime must be "measured" or "simulated", got ${show(o.userTime)}`);
  }
  fnArg(o.onAccess, "onAccess", true);
  fnArg(o.onProgress, "onProgress", true);
  const t = o.trace;
  if (t !== undefined) {
    if (typeof t !== "object" || t === null || !(t.addr instanceof Float64Array) || !(t.kind instanceof Uint8Array) || typeof t.length !== "number") {
      throw new TypeError(`vmmu: trace must be an AccessTrace ({ addr: Float64Array, kind: Uint8Array, length }), got ${show(t)}`);
    }
    if (t.length < 1 || t.length > t.addr.length || t.length > t.kind.length) {
      throw new RangeError(`vmmu: trace must hold at least one access (length ${t.length}): an empty or unparsable lackey trace has none`);
    }
  }
}

export function runKernelCompile(guest: LinuxGuest, opts: KernelCompileOptions): KernelCompileResult {
  return new KernelCompile(guest, opts).run();
}

export interface BareMetalKernelCompileOptions extends KernelCompileOptions {
  /** vCPUs (default 1). */
  vcpus?: number;
  /** Guest RAM in bytes (default 256 MiB). */
  memoryBytes?: number;
  /** Guest kernel configuration (RAM is set from memoryBytes). */
  linux?: Omit<LinuxOptions, "ramBytes">;
  /** BareMetalCpu options (costs, INVPCID). */
  cpu?: BareMetalCpuOptions;
}

/** Creates a machine, boots the Linux model on BareMetalCpus and runs the workload: the native baseline. */
export async function bareMetalKernelCompile(opts: BareMetalKernelCompileOptions): Promise<KernelCompileResult & { guest: LinuxGuest }> {
  const memoryBytes = opts.memoryBytes ?? 256 << 20;
  const machine = await createMachine({ arch: "x86_64", memoryBytes, vcpus: opts.vcpus ?? 1 });
  const guest = new LinuxGuest(BareMetalCpu.forMachine(machine, opts.cpu), { ...opts.linux, ramBytes: memoryBytes });
  guest.boot();
  return { ...runKernelCompile(guest, opts), guest };
}

/**
 * Scheduler steps with neither a completed operation nor a user access before
 * the driver gives up: every step of a live workload either runs an operation,
 * runs user accesses, takes a tick, or idles to the next event, so a long run
 * of steps without either is a livelock, never a slow run.
 */
const MAX_STALLED_STEPS = 1_000_000;

class KernelCompile {
  private readonly cpus: LinuxCpu[];
  private readonly A: number;
  private readonly step: number;
  private readonly tick: number;
  /** Non-compute operations started (progress, with userAccesses, for the stall guard). */
  private opsDone = 0;
  private readonly slice: number;
  private readonly rng = new Uint32Array(1);
  private readonly runq: Proc[] = [];
  private readonly procOf = new Map<Task, Proc>();
  private readonly programs: Record<string, Program>;
  private readonly libc: GuestFile;
  private readonly headers: GuestFile[] = [];
  private readonly sources: GuestFile[] = [];
  private readonly nextTick: number[];
  private readonly cyc: number[];
  private traceVmas: Vma[] = [];
  private alive = 0;
  private processes = 0;
  private userAccesses = 0;
  private userCycles = 0;
  /** User cycles charged before each kernel event, for cc1 and for the rest (0: userTime "simulated"). */
  private readonly gapCc1: number;
  private readonly gapRest: number;
  /** Distinct pages touched in those gaps (measured for cc1; the rest read off the same curve). */
  private readonly pagesCc1: number;
  private readonly pagesRest: number;

  constructor(private readonly g: LinuxGuest, private readonly o: KernelCompileOptions) {
    checkOptions(o);
    const measured = (o.userTime ?? "measured") === "measured";
    this.gapCc1 = measured ? userCyclesPerKernelEvent(true, o.cpuHz ?? 3e9) : 0;
    this.gapRest = measured ? userCyclesPerKernelEvent(false, o.cpuHz ?? 3e9) : 0;
    this.pagesCc1 = pagesTouched(this.gapCc1, o.cpuHz ?? 3e9);
    this.pagesRest = pagesTouched(this.gapRest, o.cpuHz ?? 3e9);
    this.cpus = g.cpus;
    this.A = o.accessesPerProcess ?? 200_000;
    this.step = o.stepAccesses ?? 512;
    this.tick = Math.round((o.cpuHz ?? 3e9) / (o.tickHz ?? 1000));
    this.slice = o.sliceCycles ?? 3_000_000;
    this.rng[0] = (o.seed >>> 0) || 0x2545f491;
    const prog = (name: string, textPages: number, dataPages: number, hot: number): Program => {
      const h = new Int32Array(hot);
      for (let i = 0; i < hot; i++) h[i] = xs(this.rng) % textPages;
      return { name, bin: g.createFile(name, textPages), textPages, dataPages, hot: h };
    };
    this.programs = {
      make: prog("make", 64, 16, 12),
      gcc: prog("gcc", 256, 16, 16),
      cc1: prog("cc1", 1024, 64, 48),
      as: prog("as", 256, 16, 16),
    };
    this.libc = g.createFile("libc.so.6", LIBC_TEXT_PAGES);
    for (let i = 0; i < 64; i++) this.headers.push(g.createFile(`include/${i}.h`, 2 + (xs(this.rng) % 7)));
    for (let j = 0; j < o.jobs; j++) this.sources.push(g.createFile(`job${j}.c`, 2 + (xs(this.rng) % 6)));
    this.nextTick = this.cpus.map(() => this.tick);
    this.cyc = this.cpus.map(() => 0);
  }

  private rand(n: number): number {
    return xs(this.rng) % n;
  }

  run(): KernelCompileResult {
    const g = this.g, o = this.o;
    if (o.trace) this.traceVmas = this.mapTrace(o.trace);
    const lc0 = this.cpus[0]!;
    if (!o.coldCache) {
      const io = { wait: 0 };
      for (const p of Object.values(this.programs)) for (let i = 0; i < p.textPages; i++) g.pageCachePage(lc0, p.bin, i, io);
      for (let i = 0; i < LIBC_TEXT_PAGES; i++) g.pageCachePage(lc0, this.libc, i, io);
      for (const f of [...this.headers, ...this.sources]) for (let i = 0; i < f.pages; i++) g.pageCachePage(lc0, f, i, io);
    }
    const stats0 = { ...g.stats };
    const kacc0 = g.stats.kernelAccesses;
    const start = this.cpus.map((c) => c.cpu.cycles);
    for (let i = 0; i < this.cpus.length; i++) {
      this.cyc[i] = start[i]!;
      this.nextTick[i] = start[i]! + this.tick;
    }
    const init = g.spawnInit(lc0, "init");
    this.addProc(init, null, this.makeScript());
    const t0 = performance.now();
    const expected = 1 + 3 * o.jobs;
    let steps = 0;
    let stalled = 0;
    let mark = -1;
    while (this.alive > 0) {
      if (o.onProgress && (++steps & 63) === 0) o.onProgress(Math.min(1, this.processes / expected));
      const progress = this.userAccesses + this.opsDone;
      if (progress !== mark) { mark = progress; stalled = 0; }
      else if (++stalled > MAX_STALLED_STEPS) {
        throw new Error(`vmmu: the workload made no progress in ${MAX_STALLED_STEPS} scheduler steps (no operation completed, no user access ran); ` +
          "a cost configuration where every step is spent in interrupts or exits cannot finish — lower the costs");
      }
      let i = 0;
      for (let j = 1; j < this.cyc.length; j++) if (this.cyc[j]! < this.cyc[i]!) i = j;
      const lc = this.cpus[i]!;
      this.stepCpu(lc);
      this.cyc[i] = lc.cpu.cycles;
    }
    const wallMs = performance.now() - t0;
    const stats = { ...g.stats };
    for (const k of Object.keys(stats) as (keyof LinuxStats)[]) stats[k] -= stats0[k];
    const kernelAccesses = g.stats.kernelAccesses - kacc0;
    return {
      stats,
      processes: this.processes,
      userAccesses: this.userAccesses,
      userCycles: this.userCycles,
      kernelAccesses,
      cycles: this.cpus.map((c, i) => c.cpu.cycles - start[i]!),
      cpuEvents: this.cpus.map((c) => (c.cpu as GuestCpu & { events?: () => Record<string, number> }).events?.() ?? {}),
      frames: { ...g.frames.stats },
      wallMs,
      accessesPerSecond: ((this.userAccesses + kernelAccesses) / wallMs) * 1000,
    };
  }

  /** Trace regions as VMAs: read-only executable ones from a shared file, the rest anonymous. */
  private mapTrace(t: AccessTrace): Vma[] {
    const vmas: Vma[] = [];
    for (const r of traceRegions(t)) {
      if (r.end > USER_LAYOUT.pieBase || r.start < 0x1_0000) {
        throw new RangeError(`vmmu: trace region [0x${r.start.toString(16)}, 0x${r.end.toString(16)}) overlaps the guest's own layout (above 0x${USER_LAYOUT.pieBase.toString(16)} or in page zero)`);
      }
      const ro = r.exec && !r.write;
      const file = ro ? this.g.createFile(`trace@${r.start.toString(16)}`, (r.end - r.start) / 4096) : undefined;
      vmas.push({ start: r.start, end: r.end, read: true, write: !ro, exec: r.exec, file, filePage: file ? 0 : undefined, name: "trace" });
    }
    return vmas;
  }

  private addProc(task: Task, parent: Proc | null, script: Script): Proc {
    const p = new Proc(task, parent, script, this.step);
    this.procOf.set(task, p);
    this.alive++;
    this.processes++;
    p.state = "ready";
    p.readyAt = 0;
    this.runq.push(p);
    return p;
  }

  // ---------------------------------------------------------------- programs

  private *makeScript(): Script {
    const o = this.o, par = o.parallel ?? this.cpus.length;
    yield { k: "exec", prog: this.programs.make! };
    yield { k: "compute", n: Math.ceil(this.A / 10) };
    let running = 0;
    for (let j = 0; j < o.jobs; j++) {
      while (running >= par) {
        yield { k: "wait" };
        running--;
      }
      for (let s = 0; s < 3; s++) yield { k: "syscall", nr: NR.stat };
      yield { k: "compute", n: Math.ceil(this.A / 50) };
      const job = j;
      yield { k: "spawn", script: () => this.gccScript(job) };
      running++;
    }
    while (running > 0) {
      yield { k: "wait" };
      running--;
    }
    yield { k: "exit" };
  }

  private *gccScript(job: number): Script {
    const g = this.g;
    yield { k: "exec", prog: this.programs.gcc! };
    yield { k: "compute", n: Math.ceil(this.A / 40) };
    for (let s = 0; s < 6; s++) yield { k: "syscall", nr: s % 2 ? NR.stat : NR.open };
    const asm = g.createFile(`job${job}.s`, 0);
    yield { k: "spawn", script: () => this.cc1Script(job, asm) };
    yield { k: "wait" };
    yield { k: "compute", n: Math.ceil(this.A / 200) };
    const obj = g.createFile(`job${job}.o`, 0);
    yield { k: "spawn", script: () => this.asScript(asm, obj) };
    yield { k: "wait" };
    yield { k: "unlink", file: asm };
    yield { k: "exit" };
  }

  private *readFile(file: GuestFile): Generator<Op, void, number> {
    const bytes = Math.max(1, file.pages) * 4096;
    for (let off = 0; off < bytes; off += READ_CHUNK) {
      yield { k: "read", file, offset: off, bytes: Math.min(READ_CHUNK, bytes - off) };
    }
    yield { k: "syscall", nr: NR.close };
  }

  private *cc1Script(job: number, asm: GuestFile): Script {
    const o = this.o, g = this.g;
    yield { k: "exec", prog: this.programs.cc1! };
    yield* this.readFile(this.sources[job]!);
    const phases = 8, per = Math.ceil(this.A / phases);
    const headers = o.headersPerJob ?? 24;
    const arenas: [number, number][] = [];
    for (let ph = 0; ph < phases; ph++) {
      for (let h = 0; h < Math.ceil(headers / phases); h++) {
        const r = this.rand(64 * 64);
        for (let miss = 2 + this.rand(4); miss > 0; miss--) yield { k: "syscall", nr: miss % 2 ? NR.stat : NR.open };
        yield { k: "syscall", nr: NR.open };
        yield* this.readFile(this.headers[Math.floor(Math.sqrt(r))]!);
      }
      yield { k: "brk", grow: (64 + this.rand(128)) * 1024 };
      if (ph % 2 === 1) {
        const bytes = (128 + this.rand(256)) * 1024;
        const addr = yield { k: "mmap", bytes };
        arenas.push([addr, bytes]);
      }
      if (arenas.length > 2) {
        const [addr, bytes] = arenas.shift()!;
        yield { k: "munmap", addr, bytes };
      }
      yield { k: "compute", n: per };
    }
    yield { k: "write", file: asm, bytes: (8 + this.rand(24)) * 1024 };
    yield { k: "exit" };
  }

  private *asScript(asm: GuestFile, obj: GuestFile): Script {
    yield { k: "exec", prog: this.programs.as! };
    yield* this.readFile(asm);
    yield { k: "brk", grow: 128 * 1024 };
    yield { k: "compute", n: Math.ceil(this.A / 8) };
    yield { k: "write", file: obj, bytes: (4 + this.rand(12)) * 1024 };
    yield { k: "exit" };
  }

  // ---------------------------------------------------------------- scheduler

  private now(lc: LinuxCpu): number {
    return this.cyc[lc.index]!;
  }

  private pickReady(now: number): Proc | undefined {
    let best = -1;
    for (let i = 0; i < this.runq.length; i++) {
      const p = this.runq[i]!;
      if (p.readyAt > now) continue;
      if (best < 0 || p.readyAt < this.runq[best]!.readyAt) best = i;
    }
    if (best < 0) return undefined;
    return this.runq.splice(best, 1)[0];
  }

  /** Switches `lc` (in kernel mode) to the next ready task, or to idle. */
  private schedule(lc: LinuxCpu): void {
    const next = this.pickReady(this.now(lc));
    this.g.switchTo(lc, next?.task ?? null);
    if (next) this.startRunning(lc, next);
  }

  private startRunning(lc: LinuxCpu, p: Proc): void {
    p.state = "running";
    p.cpu = lc.index;
    p.ranSince = this.now(lc);
    this.g.leave(lc);
  }

  private stepCpu(lc: LinuxCpu): void {
    const now = this.now(lc);
    const cur = lc.current ? this.procOf.get(lc.current) : undefined;
    if (now >= this.nextTick[lc.index]!) {
      if (cur) {
        this.g.interrupt(lc);
        if (now - cur.ranSince >= this.slice && this.runq.some((q) => q.readyAt <= now)) {
          this.g.enter(lc);
          cur.state = "ready";
          cur.readyAt = now;
          this.runq.push(cur);
          this.schedule(lc);
        }
      }
      // Re-arm from the time the handler finished, skipping the periods it
      // overran (kernel/time/tick-sched.c tick_sched_timer → hrtimer_forward):
      // a tick that costs more than its period never starves the task.
      const after = lc.cpu.cycles;
      this.nextTick[lc.index] = after - (after % this.tick) + this.tick;
      if (cur) return;
    }
    if (!cur) {
      const next = this.pickReady(now);
      if (next) {
        this.g.switchTo(lc, next.task);
        this.startRunning(lc, next);
        return;
      }
      if (this.runq.length === 0 && this.cpus.every((c) => !c.current)) throw new Error("vmmu: workload deadlock: every process waits");
      let until = this.nextTick[lc.index]!;
      for (const q of this.runq) until = Math.min(until, q.readyAt);
      for (let j = 0; j < this.cyc.length; j++) if (j !== lc.index && this.cpus[j]!.current) until = Math.min(until, this.cyc[j]! + 1);
      lc.cpu.work(Math.max(1000, until - now));
      return;
    }
    this.runOp(lc, cur);
  }

  private block(lc: LinuxCpu, p: Proc, until: number): void {
    p.state = "blocked";
    p.readyAt = until;
    this.runq.push(p);
    this.schedule(lc);
  }

  private nextOp(p: Proc): Op | null {
    if (p.op) return p.op;
    const r = p.script.next(p.resume);
    if (r.done) return null;
    p.op = r.value;
    if (p.op.k === "compute") p.remaining = p.op.n;
    return p.op;
  }

  private runOp(lc: LinuxCpu, p: Proc): void {
    const g = this.g, t = p.task;
    const op = this.nextOp(p);
    if (!op) throw new Error(`vmmu: ${t.name} (pid ${t.pid}) ended without exit`);
    if (op.k === "compute") {
      this.compute(lc, p);
      return;
    }
    p.op = null;
    p.resume = 0;
    this.opsDone++;
    this.userGap(lc, p);
    const nr = op.k === "read" ? NR.read : op.k === "write" ? NR.write : op.k === "brk" ? NR.brk : op.k === "mmap" ? NR.mmap
      : op.k === "munmap" ? NR.munmap : op.k === "spawn" ? NR.fork : op.k === "exec" ? NR.execve : op.k === "wait" ? NR.wait4
      : op.k === "unlink" ? NR.unlink : op.k === "exit" ? NR.exit : op.nr;
    g.syscallEnter(lc, nr);
    switch (op.k) {
      case "exec": {
        this.exec(lc, p, op.prog);
        break;
      }
      case "read": {
        const wait = g.read(lc, t, op.file, op.offset, op.bytes, p.heapBuf);
        if (wait > 0) return this.block(lc, p, this.now(lc) + wait);
        break;
      }
      case "write":
        g.write(lc, t, op.file, op.bytes, p.heapBuf);
        break;
      case "syscall":
        g.touchPhys(lc, BigInt(t.slab) << 12n, 4, "read");
        break;
      case "brk": {
        p.resume = g.brk(lc, t, t.mm.brk + op.grow);
        p.stream?.heap?.(t.mm.brkStart, t.mm.brk - (t.mm.brk % 4096));
        break;
      }
      case "mmap": {
        p.resume = g.mmap(lc, t, op.bytes, { write: true, exec: false }, undefined, "arena");
        p.stream?.mmaps?.(this.arenas(t));
        break;
      }
      case "munmap":
        g.munmap(lc, t, op.addr, op.bytes);
        p.stream?.mmaps?.(this.arenas(t));
        break;
      case "spawn": {
        const child = g.fork(lc, t);
        const cp = this.addProc(child, p, op.script());
        cp.readyAt = this.now(lc);
        p.resume = child.pid;
        break;
      }
      case "wait": {
        const z = p.zombies.shift();
        if (z) {
          g.reap(t, z.task);
          p.resume = z.task.pid;
          break;
        }
        p.state = "waiting";
        this.schedule(lc);
        return;
      }
      case "unlink":
        g.unlink(lc, op.file);
        break;
      case "exit":
        this.exit(lc, p);
        return;
    }
    g.leave(lc);
  }

  /**
   * The measured user time a process runs before its next kernel event
   * (userTime "measured"), touching the pages a real cc1 touches in that many
   * instructions (GuestCpu.runUser: a CPU whose TLB lost the address space
   * meanwhile walks for them again).
   */
  private userGap(lc: LinuxCpu, p: Proc): void {
    const gap = p.cc1 ? this.gapCc1 : this.gapRest;
    if (gap === 0) return;
    const c0 = lc.cpu.cycles;
    if (lc.cpu.runUser) lc.cpu.runUser(gap, p.cc1 ? this.pagesCc1 : this.pagesRest);
    else lc.cpu.work(gap);
    this.userCycles += lc.cpu.cycles - c0;
  }

  private arenas(t: Task): [number, number][] {
    return t.mm.vmas.filter((v) => v.name === "arena").map((v) => [v.start, v.end]);
  }

  private exec(lc: LinuxCpu, p: Proc, prog: Program): void {
    const g = this.g;
    const text = USER_LAYOUT.pieBase;
    const data = text + prog.textPages * 4096;
    const brk = data + prog.dataPages * 4096 + 0x20_0000;
    const libc = USER_LAYOUT.mmapBase - (LIBC_TEXT_PAGES + 16) * 4096;
    const vmas: Vma[] = [
      { start: text, end: data, read: true, write: false, exec: true, file: prog.bin, filePage: 0, name: prog.name },
      { start: data, end: data + prog.dataPages * 4096, read: true, write: true, exec: false, name: `${prog.name} data` },
      { start: libc, end: libc + LIBC_TEXT_PAGES * 4096, read: true, write: false, exec: true, file: this.libc, filePage: 0, name: "libc" },
      { start: libc + LIBC_TEXT_PAGES * 4096, end: USER_LAYOUT.mmapBase, read: true, write: true, exec: false, name: "libc data" },
      { start: USER_LAYOUT.stackTop - USER_LAYOUT.stackBytes, end: USER_LAYOUT.stackTop, read: true, write: true, exec: false, name: "[stack]" },
    ];
    if (prog.name === "cc1") vmas.push(...this.traceVmas);
    g.exec(lc, p.task, prog.name, vmas, brk);
    p.cc1 = prog.name === "cc1";
    g.brk(lc, p.task, brk + 64 * 1024);
    p.heapBuf = brk;
    const seed = xs(this.rng);
    p.stream = prog.name === "cc1" && this.o.trace
      ? new TraceStream(this.o.trace, this.o.trace.length > this.A ? seed % this.o.trace.length : 0)
      : new SyntheticStream(seed, prog, text, libc, data, data + prog.dataPages * 4096);
    p.stream.heap?.(brk, brk + 64 * 1024);
    p.pos = p.len = 0;
    for (let i = 0; i < 4; i++) {
      const r = g.kernelUserAccess(lc, p.task, USER_LAYOUT.stackTop - 8 - i * 512, "write", { wait: 0 });
      if (r === undefined) throw new Error("vmmu: exec could not write the new stack");
    }
  }

  private exit(lc: LinuxCpu, p: Proc): void {
    const g = this.g;
    g.exit(lc, p.task);
    p.state = "zombie";
    this.procOf.delete(p.task);
    this.alive--;
    const parent = p.parent;
    if (parent) {
      if (parent.state === "waiting") {
        g.reap(parent.task, p.task);
        parent.state = "ready";
        parent.readyAt = this.now(lc);
        parent.resume = p.task.pid;
        this.runq.push(parent);
      } else {
        parent.zombies.push(p);
      }
    }
    this.schedule(lc);
  }

  private compute(lc: LinuxCpu, p: Proc): void {
    const g = this.g, cpu = lc.cpu, stream = p.stream!;
    let budget = this.step;
    while (budget > 0 && p.remaining > 0) {
      if (p.pos >= p.len) {
        p.len = Math.min(p.va.length, p.remaining);
        stream.fill(p.vaU32, p.kinds, p.len);
        p.pos = 0;
      }
      const n = Math.min(p.len - p.pos, budget);
      let done: number;
      let exc;
      const c0 = cpu.cycles;
      if (this.o.onAccess) {
        done = 0;
        for (; done < n; done++) {
          const va = p.va[p.pos + done]!;
          const kind = p.kinds[p.pos + done]!;
          const r = cpu.access(va, kind === 1 ? "write" : kind === 2 ? "fetch" : "read", true);
          if (typeof r !== "bigint") { exc = r; break; }
          this.o.onAccess(lc, p.task, Number(va), kind, r);
        }
      } else {
        const r = cpu.accessMany(p.va.subarray(p.pos), p.kinds.subarray(p.pos), n, true);
        done = r.done;
        exc = r.exception;
      }
      this.userCycles += cpu.cycles - c0;
      p.pos += done;
      p.remaining -= done;
      budget -= done;
      this.userAccesses += done;
      if (exc) {
        budget--;
        this.userGap(lc, p);
        const out = g.userFault(lc, exc);
        if (!out.ok) {
          throw new Error(`vmmu: ${p.task.name} (pid ${p.task.pid}) got SIGSEGV at 0x${p.va[p.pos]!.toString(16)}`);
        }
        if (out.ioWait > 0) return this.block(lc, p, this.now(lc) + out.ioWait);
        if (budget <= 0) return;
      }
    }
    if (p.remaining <= 0) p.op = null;
  }
}
