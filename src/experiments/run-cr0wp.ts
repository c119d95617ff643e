// The seed-002 reproduction: rt-tests' ssdd in a grsecurity guest whose
// KERNEXEC toggles CR0.WP around writes to read-only kernel data
// (src/guest/ssdd.ts), on each hypervisor MMU — EPT on the legacy direct MMU,
// EPT on the TDP MMU, shadow paging — under each CR0.WP policy
// (src/kvm/cr0wp-policy.ts), with the same seed so every run executes the same
// program. Reports simulated time from the cost model beside host wall time,
// and the counters that explain it: exits by reason, roots built, freed and
// reused, EPT violations, SPTEs installed and zapped, TLB flushes.
//
// Guest configuration (assumptions, each a parameter): 2 vCPUs (CR0WP_VCPUS),
// interleaved so that their MMU events happen in simulated-time order
// (src/guest/ssdd.ts); an Intel host with KVM's NX huge page mitigation on
// (CR0WP_NX_HUGE_PAGES) and guest RAM backed by THP;
// the guest runs with page-table isolation and PCIDs (grsecurity's amd64
// UDEREF also switches CR3 with PCIDs on every kernel entry and exit); shadow
// paging runs Junaid Shahid's 2018 series (in every kernel the seed measured)
// and no CR0.WP policy reaches it.

import { createTdpVm } from "../kvm/tdp-vm.js";
import { TdpMmu } from "../kvm/tdp-mmu.js";
import { LegacyDirectMmu } from "../kvm/legacy-direct-mmu.js";
import { createShadowVm } from "../kvm/shadow-vm.js";
import { POLICIES, type ShadowPolicy } from "../kvm/policy.js";
import { cr0WpPolicyByName } from "../kvm/cr0wp-policy.js";
import { DEFAULT_COSTS, type CostModel } from "../kvm/cost-model.js";
import type { X86Vcpu } from "../x86/vcpu.js";
import { LinuxGuest } from "../guest/linux.js";
import { runSsdd, type KernexecOptions, type SsddInterleave } from "../guest/ssdd.js";
import { X86_BOOT_CONTROL } from "../guest/bare-metal-cpu.js";

export type Cr0WpMmu = "legacy" | "tdp" | "shadow";
export const CR0WP_MMUS: readonly Cr0WpMmu[] = ["legacy", "tdp", "shadow"];

export interface Cr0WpRunOptions {
  mmus: Cr0WpMmu[];
  policies: string[];
  /** Guest vCPUs (default CR0WP_VCPUS). */
  vcpus?: number;
  /** ssdd pairs (default 10, the seed's) and PTRACE_SINGLESTEP iterations per pair (default 2000; the seed's 50 000 is a long run). */
  pairs?: number;
  iterations?: number;
  seed?: number;
  /** Guest RAM (default 256 MiB). */
  memoryBytes?: number;
  costs?: CostModel;
  /** KERNEXEC open/close counts per path (default src/guest/ssdd.ts KERNEXEC_DEFAULTS), or false for a stock kernel. */
  kernexec?: Partial<KernexecOptions> | false;
  /** Largest host page backing guest RAM for the direct MMUs (default 2: THP). */
  hostLevel?: 1 | 2 | 3;
  /**
   * KVM's nx_huge_pages for the direct MMUs (default CR0WP_NX_HUGE_PAGES): huge leaves
   * non-executable, instruction fetches mapped at 4 KiB. Shadow paging is
   * unaffected here (KVM's FNAME(fetch) applies it too; not modelled).
   */
  nxHugePages?: boolean;
  /** How finely the vCPUs interleave (default "fine": their MMU events in simulated-time order; src/guest/ssdd.ts). */
  interleave?: SsddInterleave;
  /** Called with (run index, fraction done of that run). */
  onProgress?: (run: number, fraction: number) => void;
}

export interface Cr0WpResult {
  mmu: Cr0WpMmu;
  policy: string;
  title: string;
  /** Simulated time: the makespan (slowest vCPU), in cycles. */
  cycles: number;
  cyclesPerVcpu: number[];
  /** cycles / this MMU's baseline cycles (if baseline was run). */
  ratioToBaseline?: number;
  /** VM exits during the workload (after the guest booted), by reason. */
  exits: Record<string, number>;
  exitsTotal: number;
  roots: { built: number; freed: number; reused: number };
  /** EPT-violation exits (direct MMUs; 0 under shadow paging, whose faults are #PF exits). */
  eptViolations: number;
  sptes: { installed: number; zapped: number };
  /** Tables linked where the NX huge page mitigation disallowed a huge page (direct MMUs' nxLpageSplits; 0 under shadow paging). */
  nxLpageSplits: number;
  /** Table pages allocated and freed by the hypervisor MMU. */
  pages: { allocated: number; freed: number };
  flushes: { local: number; remote: number };
  /** Cycles the vCPUs spun on mmu_lock, summed (src/kvm/sim-lock.ts). */
  mmuLockWait: number;
  /**
   * Remote-flush requests per target vCPU: waited for (the target was in guest
   * mode: an IPI round trip) or not (it was handling an exit).
   */
  flushIpis: { waited: number; skipped: number };
  /** MMU resets (kvm_mmu_reset_context) and WP-only re-inits. */
  resets: number;
  reinitOnly: number;
  guest: { steps: number; cr0Writes: number; syscalls: number; contextSwitches: number; debugExceptions: number };
  tlbHits: number;
  hwWalks: number;
  ptRefs: number;
  accesses: number;
  wallMs: number;
}

/**
 * Guest vCPUs of a run that does not choose it: 2. The seed does not say; its
 * v6.1 row (TDP 8.23 s ≈ legacy 7.65 s, while every CR0.WP toggle still unloads
 * the vCPU's root) needs another vCPU holding the shared root, which a 1-vCPU
 * guest lacks (edbdb43fc96b: "especially problematic for 1-vCPU setups"). An
 * assumption; `--sensitivity` shows 1 and 4.
 */
export const CR0WP_VCPUS = 2;

/**
 * KVM's nx_huge_pages in a run that does not choose it: on. KVM's default is
 * "auto" (arch/x86/kvm/mmu/mmu.c get_nx_auto_mode), on wherever the host CPU
 * has X86_BUG_ITLB_MULTIHIT, which "most Intel Core and Xeon processor models"
 * have (Documentation/admin-guide/hw-vuln/multihit.rst: every Intel core not
 * in arch/x86/kernel/cpu/common.c's NO_ITLB_MULTIHIT list and without
 * ARCH_CAP_PSCHANGE_MC_NO). The seed's host is Intel: its "+ backport" column
 * includes the guest-owned CR0.WP patch, which only VMX can do. Its CPU model
 * is not given: an assumption; `--sensitivity` shows it off.
 */
export const CR0WP_NX_HUGE_PAGES = true;

/** Guest RAM of a run that does not choose it. */
export const CR0WP_MEMORY_BYTES = 256 << 20;

interface Counted {
  readonly exits: Record<string, number>;
  readonly cycles: number;
  readonly accesses: number;
  readonly hw: X86Vcpu;
}

/** Exits of every vCPU summed by reason, minus `since` (a snapshot taken the same way). */
function sumExits(vcpus: readonly Counted[], since?: Record<string, number>): { exits: Record<string, number>; total: number } {
  const exits: Record<string, number> = {};
  let total = 0;
  for (const v of vcpus) for (const [k, n] of Object.entries(v.exits)) { exits[k] = (exits[k] ?? 0) + n; total += n; }
  if (since) for (const [k, n] of Object.entries(since)) { exits[k]! -= n; total -= n; }
  return { exits, total };
}

/** `a − b` field by field, one level of nesting deep (counters since a snapshot). */
function minus<T extends Record<string, number | Record<string, number>>>(a: T, b: T): T {
  const out: Record<string, number | Record<string, number>> = {};
  for (const [k, v] of Object.entries(a)) {
    const w = b[k]!;
    if (typeof v === "number") out[k] = v - (w as number);
    else out[k] = Object.fromEntries(Object.entries(v).map(([kk, vv]) => [kk, vv - (w as Record<string, number>)[kk]!]));
  }
  return out as T;
}

/** Runs ssdd under each (MMU, policy) in turn, MMU-major. */
export async function runCr0Wp(opts: Cr0WpRunOptions): Promise<Record<string, Record<string, Cr0WpResult>>> {
  const out: Record<string, Record<string, Cr0WpResult>> = {};
  const memoryBytes = opts.memoryBytes ?? CR0WP_MEMORY_BYTES;
  const vcpuCount = opts.vcpus ?? CR0WP_VCPUS;
  const costs = opts.costs ?? DEFAULT_COSTS;
  let run = 0;
  for (const mmu of opts.mmus) {
    out[mmu] = {};
    for (const name of opts.policies) {
      const policy = cr0WpPolicyByName(name);
      const index = run++;
      let vcpus: Counted[];
      let dispose: () => void;
      let mmuStats: () => Omit<Cr0WpResult, "mmu" | "policy" | "title" | "cycles" | "cyclesPerVcpu" | "exits" | "exitsTotal" | "guest" | "tlbHits" | "hwWalks" | "ptRefs" | "accesses" | "wallMs" | "eptViolations">;
      if (mmu === "shadow") {
        const sp: ShadowPolicy = { ...POLICIES.shahid2018!, name: `shahid2018 (${name})` };
        const vm = await createShadowVm({ vcpus: vcpuCount, memoryBytes, policy: sp, costs });
        for (const v of vm.vcpus) v.start({ ...X86_BOOT_CONTROL });
        vcpus = vm.vcpus;
        dispose = () => vm.machine.dispose();
        mmuStats = () => {
          const s = vm.mmu.stats;
          return {
            roots: { built: s.rootsBuilt, freed: s.rootsFreed, reused: s.rootsReused },
            sptes: { installed: s.spteInstalled, zapped: s.spZapped },
            pages: { allocated: s.spAllocated, freed: s.spZapped },
            flushes: { local: s.localFlushes, remote: s.remoteFlushes },
            mmuLockWait: s.mmuLockWait,
            flushIpis: { waited: s.flushIpis, skipped: s.flushIpisSkipped },
            resets: vm.vcpus.reduce((n, v) => n + v.exits.cr0 + v.exits.cr4 + v.exits.smi + v.exits.rsm, 0),
            reinitOnly: 0,
            nxLpageSplits: 0,
          };
        };
      } else {
        const vm = await createTdpVm({ vcpus: vcpuCount, mmu, memoryBytes, policy, costs, hostLevel: opts.hostLevel ?? 2, nxHugePages: opts.nxHugePages ?? CR0WP_NX_HUGE_PAGES,
          // Every policy is v5.10 plus one fix: its TDP fault path zaps a huge leaf in the way (no split before v6.2).
          splitOnFault: false });
        for (const v of vm.vcpus) v.start({ ...X86_BOOT_CONTROL });
        vcpus = vm.vcpus;
        dispose = () => { for (const v of vm.vcpus) v.destroy(); vm.machine.dispose(); };
        mmuStats = () => {
          const s = vm.mmu.stats;
          const sum = (f: (v: (typeof vm.vcpus)[number]) => number) => vm.vcpus.reduce((n, v) => n + f(v), 0);
          return {
            roots: { built: s.rootsBuilt, freed: s.rootsFreed, reused: s.rootsReused },
            sptes: { installed: s.spteInstalled, zapped: s.spteZapped },
            pages: { allocated: s.spAllocated, freed: s.spFreed },
            flushes: { local: sum((v) => v.stats.localFlushes), remote: s.remoteFlushes },
            mmuLockWait: sum((v) => v.stats.mmuLockWait),
            flushIpis: { waited: sum((v) => v.stats.flushIpis), skipped: sum((v) => v.stats.flushIpisSkipped) },
            resets: sum((v) => v.stats.resets),
            reinitOnly: sum((v) => v.stats.reinitOnly),
            nxLpageSplits: vm.mmu instanceof TdpMmu || vm.mmu instanceof LegacyDirectMmu ? vm.mmu.stats.nxLpageSplits : 0,
          };
        };
      }
      const guest = new LinuxGuest(vcpus as never, { ramBytes: memoryBytes });
      guest.boot();
      const before = vcpus.map((v) => v.cycles);
      const exits0 = sumExits(vcpus).exits;
      const mmu0 = mmuStats();
      const hw0 = vcpus.map((v) => v.hw.tlbStats());
      const t0 = performance.now();
      let lastTick = t0;
      const r = runSsdd(guest, {
        pairs: opts.pairs ?? 10, iterations: opts.iterations ?? 2000, seed: opts.seed ?? 1,
        ...(opts.kernexec !== undefined ? { kernexec: opts.kernexec } : {}),
        ...(opts.interleave !== undefined ? { interleave: opts.interleave } : {}),
        ...(opts.onProgress ? {
          onProgress: (f: number) => {
            const now = performance.now();
            if (now - lastTick > 200) { lastTick = now; opts.onProgress!(index, f); }
          },
        } : {}),
      });
      const wallMs = performance.now() - t0;
      const cyclesPerVcpu = vcpus.map((v, i) => v.cycles - before[i]!);
      const { exits, total } = sumExits(vcpus, exits0);
      let tlbHits = 0, hwWalks = 0, ptRefs = 0, accesses = 0;
      vcpus.forEach((v, i) => {
        const s = v.hw.tlbStats();
        tlbHits += s.hits - hw0[i]!.hits; hwWalks += s.walks - hw0[i]!.walks; ptRefs += s.ptRefs - hw0[i]!.ptRefs;
        accesses += v.accesses;
      });
      out[mmu]![name] = {
        mmu, policy: name, title: policy.title, cycles: Math.max(...cyclesPerVcpu), cyclesPerVcpu, exits, exitsTotal: total,
        eptViolations: exits["ept-violation"] ?? 0, ...minus(mmuStats(), mmu0),
        guest: { steps: r.steps, cr0Writes: r.cr0Writes, syscalls: r.syscalls, contextSwitches: r.contextSwitches, debugExceptions: r.debugExceptions },
        tlbHits, hwWalks, ptRefs, accesses, wallMs,
      };
      dispose();
      opts.onProgress?.(index, 1);
    }
    const base = out[mmu]!.baseline;
    if (base) for (const r of Object.values(out[mmu]!)) r.ratioToBaseline = r.cycles / base.cycles;
  }
  return out;
}

/** The vCPUs' mmu_lock spin as a share of their summed time (cr0wp and kpti results). */
export function lockShare(r: { mmuLockWait: number; cyclesPerVcpu: readonly number[] }): string {
  const total = r.cyclesPerVcpu.reduce((a, b) => a + b, 0);
  return `${(total > 0 ? 100 * r.mmuLockWait / total : 0).toFixed(1)}%`;
}

/** The seed's table (Mathias Krause, stable backport thread, May 2023): `ssdd 10 50000`, seconds, without / with the backported series. */
export const CR0WP_SEED = {
  "v5.10.177": { legacy: [10.37, 4.88], tdp: [88.7, 4.92], shadow: [69.7, 70.1] },
  "v5.15.106": { legacy: [9.94, 4.81], tdp: [66.1, 4.79], shadow: [64.9, 64.6] },
  "v6.1.23": { legacy: [7.65, 3.36], tdp: [8.23, 3.36], shadow: [68.7, 69.1] },
} as const;

/** One moved assumption of the sensitivity table and what it does to the options. */
export interface Cr0WpVariant {
  name: string;
  apply: (o: Cr0WpRunOptions) => Cr0WpRunOptions;
}

/**
 * The assumptions the result rests on, each moved on its own (the defaults in
 * the first row): KERNEXEC toggles per context switch, the host page size
 * behind guest RAM, KVM's NX huge page mitigation, the vCPU count (which vCPUs hold which root), the
 * interleaving of the vCPUs (CR0.WP windows of two vCPUs allowed to overlap or
 * not), the VM-exit round trip, the EPT-violation handler cost, the MMU
 * re-init and the remote flush (most of a v5.10 teardown's hold on mmu_lock).
 */
export function cr0WpVariants(costs: CostModel): Cr0WpVariant[] {
  const cost = (k: keyof CostModel, f: number): Cr0WpVariant => ({
    name: `${k} × ${f}`, apply: (o) => ({ ...o, costs: { ...costs, [k]: costs[k] * f } }),
  });
  return [
    { name: "defaults", apply: (o) => o },
    { name: "KERNEXEC 1 per switch", apply: (o) => ({ ...o, kernexec: { perSyscall: 0, perException: 0, perSwitch: 1 } }) },
    { name: "KERNEXEC 4 per switch", apply: (o) => ({ ...o, kernexec: { perSyscall: 0, perException: 0, perSwitch: 4 } }) },
    { name: "KERNEXEC +1 per syscall", apply: (o) => ({ ...o, kernexec: { perSyscall: 1, perException: 0, perSwitch: 2 } }) },
    { name: "host pages 4 KiB", apply: (o) => ({ ...o, hostLevel: 1 }) },
    { name: "host pages 1 GiB", apply: (o) => ({ ...o, hostLevel: 3 }) },
    { name: "NX huge pages off", apply: (o) => ({ ...o, nxHugePages: false }) },
    { name: "1 vCPU", apply: (o) => ({ ...o, vcpus: 1 }) },
    { name: "4 vCPUs", apply: (o) => ({ ...o, vcpus: 4 }) },
    { name: "windows never overlap", apply: (o) => ({ ...o, interleave: "block" }) },
    cost("vmExit", 0.5), cost("vmExit", 2), cost("tdpFault", 0.5), cost("tdpFault", 2), cost("mmuReinit", 0.5), cost("mmuReinit", 2),
    cost("remoteFlush", 0.5), cost("remoteFlush", 2),
  ];
}

/** Speed-up baseline → krause2023 per MMU under one variant. */
export interface Cr0WpSensitivityRow {
  variant: string;
  speedup: Partial<Record<Cr0WpMmu, number>>;
  /** baseline cycles of the TDP MMU over the legacy MMU's (the pathology in one number). */
  tdpOverLegacy?: number;
}

/** Runs baseline and krause2023 on every MMU of `opts` under each variant. */
export async function runCr0WpSensitivity(opts: Cr0WpRunOptions): Promise<Cr0WpSensitivityRow[]> {
  const variants = cr0WpVariants(opts.costs ?? DEFAULT_COSTS);
  const rows: Cr0WpSensitivityRow[] = [];
  for (let i = 0; i < variants.length; i++) {
    const v = variants[i]!;
    const o = v.apply({ ...opts, policies: ["baseline", "krause2023"] });
    const onProgress = opts.onProgress;
    const r = await runCr0Wp({ ...o, ...(onProgress ? { onProgress: (_run, f) => onProgress(i, f) } : {}) });
    const speedup: Partial<Record<Cr0WpMmu, number>> = {};
    for (const m of opts.mmus) speedup[m] = r[m]!.baseline!.cycles / r[m]!.krause2023!.cycles;
    const row: Cr0WpSensitivityRow = { variant: v.name, speedup };
    if (r.tdp && r.legacy) row.tdpOverLegacy = r.tdp.baseline!.cycles / r.legacy.baseline!.cycles;
    rows.push(row);
    onProgress?.(i, 1);
  }
  return rows;
}
