// The seed-reproduction run: a KPTI guest compiling "a kernel" (many short-lived
// compiler processes, src/guest/kernel-compile.ts) on a shadow-paging
// hypervisor, once per policy, with the same seed so every policy runs the
// same programs (the guest scheduler follows simulated time, so interleavings
// and a few counts differ between policies, as on real hardware). Reports
// simulated time from the cost model beside host wall time, and the counters
// that explain the difference.

import { createShadowVm } from "../kvm/shadow-vm.js";
import { DEFAULT_COSTS, MAX_COST, type CostModel } from "../kvm/cost-model.js";
import { policyByName } from "../kvm/policy.js";
import { LINUX_WORK_COSTS, LinuxGuest, type LinuxWorkCosts } from "../guest/linux.js";
import { runKernelCompile } from "../guest/kernel-compile.js";
import { X86_BOOT_CONTROL } from "../guest/bare-metal-cpu.js";
import type { AccessTrace } from "../guest/lackey.js";

export interface KptiRunOptions {
  vcpus: number;
  policies: string[];
  /** Translation units compiled (default 32). */
  jobs?: number;
  seed?: number;
  /** User accesses per compiler process (default 200 000). */
  accessesPerProcess?: number;
  /** Guest RAM (default KPTI_MEMORY_BYTES, 256 MiB). */
  memoryBytes?: number;
  costs?: CostModel;
  /**
   * The shadow-page limit (KVM's n_max_mmu_pages, `kvm_mmu_change_mmu_pages`):
   * the host-table pool holds this many 4 KiB pages and reclaims the oldest
   * unused shadow pages when it runs low (make_mmu_pages_available). Default:
   * a 64 MiB pool, never under pressure in this workload.
   */
  maxShadowPages?: number;
  /** The guest's user-PCID flush (LinuxOptions.pcidFlush): "lazy" (default) or "eager" (INVPCID type 1 at once, where the policy exposes INVPCID). */
  pcidFlush?: "lazy" | "eager";
  /** User time between the guest's kernel events: "measured" (default; a real build's) or "simulated" (KernelCompileOptions.userTime). */
  userTime?: "measured" | "simulated";
  /** Guest work cycles overriding LINUX_WORK_COSTS (src/guest/linux.ts). */
  work?: Partial<LinuxWorkCosts>;
  /** A valgrind lackey trace replayed as each compiler's user-space access stream. */
  trace?: AccessTrace;
  /** Called with (policy index, fraction done of that policy) at most every few hundred ms. */
  onProgress?: (policy: number, fraction: number) => void;
}

export interface KptiPolicyResult {
  policy: string;
  title: string;
  /** Simulated time: the makespan (slowest vCPU), in cycles. */
  cycles: number;
  cyclesPerVcpu: number[];
  /** cycles / the baseline's cycles (if baseline was run), else undefined. */
  ratioToBaseline?: number;
  exits: Record<string, number>;
  exitsTotal: number;
  /** Guest #PFs injected (the guest's own faults). */
  guestFaults: number;
  syncs: number;
  spteSynced: number;
  emulatedWrites: number;
  unsyncs: number;
  flushes: { local: number; remote: number; address: number };
  /** Cycles the vCPUs spun on mmu_lock, summed (src/kvm/sim-lock.ts). */
  mmuLockWait: number;
  /** Remote-flush requests per target vCPU: waited for (target in guest mode: an IPI, and a kick exit for it) or skipped (target in an exit). */
  flushIpis: { waited: number; skipped: number };
  shadowPages: { allocated: number; zapped: number; live: number; peak: number };
  /** Roots built, freed, reused (cache or hash), and reused after their PCID was flushed (need-sync, lai2021). */
  roots: { built: number; freed: number; reused: number; needSyncReused: number };
  /** User gaps (GuestCpu.runUser) that found their hardware TLB context flushed, and the pages they walked again. */
  userTlbRefills: { gaps: number; pages: number };
  guestWalks: number;
  hwWalks: number;
  ptRefs: number;
  tlbHits: number;
  accesses: number;
  /**
   * The guest's own totals, to set beside a real build's
   * (bench/data/kernel-compile-lib.json): processes created, execs, syscalls,
   * #PFs handled (user and kernel), context switches, and userCycles — the
   * simulated cycles spent running user code (KernelCompileResult.userCycles);
   * plus the guest's TLB-maintenance instructions.
   */
  guest: {
    processes: number; execs: number; syscalls: number; faults: number; contextSwitches: number; userCycles: number;
    cr3Writes: number; cr3Noflush: number; invlpg: number; invpcid: number;
  };
  wallMs: number;
  accessesPerSecond: number;
}

/** Guest RAM of a run that does not choose it: 256 MiB. */
export const KPTI_MEMORY_BYTES = 256 << 20;

/** Runs the KPTI kernel-compile workload under each policy in turn. */
export async function runKpti(opts: KptiRunOptions): Promise<Record<string, KptiPolicyResult>> {
  const out: Record<string, KptiPolicyResult> = {};
  const memoryBytes = opts.memoryBytes ?? KPTI_MEMORY_BYTES;
  for (let p = 0; p < opts.policies.length; p++) {
    const policy = policyByName(opts.policies[p]!);
    const vm = await createShadowVm({
      vcpus: opts.vcpus, memoryBytes, policy, costs: opts.costs ?? DEFAULT_COSTS,
      ...(opts.maxShadowPages !== undefined ? { poolBytes: opts.maxShadowPages * 4096 } : {}),
    });
    for (const v of vm.vcpus) v.start({ ...X86_BOOT_CONTROL });
    const guest = new LinuxGuest(vm.vcpus, { ramBytes: memoryBytes, ...(opts.work ? { work: opts.work } : {}), ...(opts.pcidFlush ? { pcidFlush: opts.pcidFlush } : {}) });
    guest.boot();
    const before = vm.vcpus.map((v) => v.cycles);
    const t0 = performance.now();
    let lastTick = t0;
    const r = runKernelCompile(guest, {
      jobs: opts.jobs ?? 32, seed: opts.seed ?? 1, accessesPerProcess: opts.accessesPerProcess, trace: opts.trace, userTime: opts.userTime,
      ...(opts.onProgress ? {
        onProgress: (fraction: number) => {
          const now = performance.now();
          if (now - lastTick > 200) { lastTick = now; opts.onProgress!(p, fraction); }
        },
      } : {}),
    });
    const wallMs = performance.now() - t0;
    const cyclesPerVcpu = vm.vcpus.map((v, i) => v.cycles - before[i]!);
    const exits: Record<string, number> = {};
    let exitsTotal = 0, guestFaults = 0, hwWalks = 0, ptRefs = 0, tlbHits = 0, accesses = 0;
    for (const v of vm.vcpus) {
      for (const [k, n] of Object.entries(v.exits)) { exits[k] = (exits[k] ?? 0) + n; exitsTotal += n; }
      guestFaults += v.injected;
      const s = v.hw.tlbStats();
      hwWalks += s.walks; ptRefs += s.ptRefs; tlbHits += s.hits;
      accesses += v.accesses;
    }
    const st = vm.mmu.stats;
    const gs = r.stats as unknown as Record<string, number>;
    out[policy.name] = {
      policy: policy.name, title: policy.title, cycles: Math.max(...cyclesPerVcpu), cyclesPerVcpu, exits, exitsTotal, guestFaults,
      syncs: st.syncs, spteSynced: st.spteSynced, emulatedWrites: st.emulatedWrites, unsyncs: st.unsyncs,
      flushes: { local: st.localFlushes, remote: st.remoteFlushes, address: st.addrFlushes },
      mmuLockWait: st.mmuLockWait, flushIpis: { waited: st.flushIpis, skipped: st.flushIpisSkipped },
      shadowPages: { allocated: st.spAllocated, zapped: st.spZapped, live: st.spLive, peak: st.spPeak },
      roots: { built: st.rootsBuilt, freed: st.rootsFreed, reused: st.rootsReused, needSyncReused: st.rootsNeedSyncReused },
      userTlbRefills: {
        gaps: vm.vcpus.reduce((n, v) => n + v.userRefills.gaps, 0), pages: vm.vcpus.reduce((n, v) => n + v.userRefills.pages, 0),
      },
      guestWalks: st.guestWalks, hwWalks, ptRefs, tlbHits, accesses,
      guest: {
        processes: r.processes, execs: gs.execs ?? 0, syscalls: gs.syscalls ?? 0,
        faults: (gs.userFaults ?? 0) + (gs.kernelFaults ?? 0), contextSwitches: gs.contextSwitches ?? 0, userCycles: r.userCycles,
        cr3Writes: gs.cr3Writes ?? 0, cr3Noflush: gs.cr3NoFlush ?? 0, invlpg: gs.invlpg ?? 0, invpcid: gs.invpcid ?? 0,
      },
      wallMs, accessesPerSecond: r.accessesPerSecond,
    };
    vm.machine.dispose();
    opts.onProgress?.(p, 1);
  }
  const base = out.baseline;
  if (base) for (const r of Object.values(out)) r.ratioToBaseline = r.cycles / base.cycles;
  return out;
}

/** The seed's published figures (Junaid Shahid's cover letter, seed 000): kernel compile, KPTI guest, shadow paging. */
export const SEED_RESULTS = {
  4: { baseline: "16m12s", shahid2018: "4m44s", speedup: 972 / 284 },
  1: { baseline: "25m5s", shahid2018: "14m50s", speedup: 1505 / 890 },
} as const;

/** Hypervisor costs the shadow MMU charges (src/kvm/shadow-mmu.ts, shadow-vcpu.ts): the sensitivity table moves each. */
export const KPTI_SENSITIVE_COSTS = [
  "vmExit", "remoteFlush", "localFlush", "addrFlush", "syncSpte", "syncVisit", "swWalkLevel", "spAlloc", "spteInstall",
  "emulate", "zap", "hashLookup", "rootReload", "rootCacheLookup", "hwWalkRef",
] as const satisfies readonly (keyof CostModel)[];

/** Guest work costs the kernel-compile workload charges (src/guest/linux.ts LINUX_WORK_COSTS): the sensitivity table moves each. */
export const KPTI_SENSITIVE_WORK = [
  "entry", "syscall", "pageFault", "contextSwitch", "fork", "exec", "exit", "copyLine", "tick",
] as const satisfies readonly (keyof LinuxWorkCosts)[];

/** Factors each cost is moved by. */
export const KPTI_SENSITIVITY_FACTORS = [0.5, 2] as const;

/** One row of the sensitivity table: the headline speed-up (baseline → shahid2018) with one cost moved. */
export interface KptiSensitivityRow {
  /** The cost moved: a CostModel key, or "guest.<LINUX_WORK_COSTS key>". */
  cost: string;
  factor: number;
  /** The cost's value in this row, cycles. */
  value: number;
  /** baseline cycles / shahid2018 cycles. */
  speedup: number;
}

/**
 * How the headline ratio (baseline → shahid2018) moves when each cost is
 * halved and doubled, the rest as in `opts`:
 * 1. the unmoved run gives the reference row (cost "defaults", factor 1);
 * 2. each KPTI_SENSITIVE_COSTS entry, then each KPTI_SENSITIVE_WORK entry,
 *    is multiplied by each of KPTI_SENSITIVITY_FACTORS (capped at MAX_COST by
 *    checkCost's range) and both policies run again with the same seed.
 * `onProgress(done, total)` after each pair of runs.
 */
export async function runKptiSensitivity(opts: Omit<KptiRunOptions, "policies" | "onProgress">, onProgress?: (done: number, total: number) => void): Promise<KptiSensitivityRow[]> {
  const costs = opts.costs ?? DEFAULT_COSTS;
  const work: LinuxWorkCosts = { ...LINUX_WORK_COSTS, ...opts.work };
  const headline = async (o: Partial<KptiRunOptions>): Promise<number> => {
    const r = await runKpti({ ...opts, ...o, policies: ["baseline", "shahid2018"] });
    return r.baseline!.cycles / r.shahid2018!.cycles;
  };
  const total = 1 + (KPTI_SENSITIVE_COSTS.length + KPTI_SENSITIVE_WORK.length) * KPTI_SENSITIVITY_FACTORS.length;
  let done = 0;
  const tick = () => onProgress?.(++done, total);
  const rows: KptiSensitivityRow[] = [{ cost: "defaults", factor: 1, value: 0, speedup: await headline({}) }];
  tick();
  for (const k of KPTI_SENSITIVE_COSTS) {
    for (const f of KPTI_SENSITIVITY_FACTORS) {
      const value = Math.min(MAX_COST, costs[k] * f);
      rows.push({ cost: k, factor: f, value, speedup: await headline({ costs: { ...costs, [k]: value } }) });
      tick();
    }
  }
  for (const k of KPTI_SENSITIVE_WORK) {
    for (const f of KPTI_SENSITIVITY_FACTORS) {
      const value = Math.min(MAX_COST, work[k] * f);
      rows.push({ cost: `guest.${k}`, factor: f, value, speedup: await headline({ work: { ...opts.work, [k]: value } }) });
      tick();
    }
  }
  return rows;
}
