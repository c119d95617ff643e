// A VM whose guest runs under EPT on a direct MMU: one x86 machine whose guest
// RAM is the guest's physical memory (identity-mapped into host-physical
// space) and whose host-table pool holds the EPT tables, one TdpVcpu per guest
// vCPU over one hardware vCPU each (VPID = index + 1), and one DirectMmu for the
// VM — the TDP MMU (arch/x86/kvm/mmu/tdp_mmu.c) or the legacy direct MMU
// (hashed direct shadow pages), as KVM's `tdp_mmu` module parameter selects.

import { createMachine, type Machine } from "../machine.js";
import type { X86Vcpu } from "../x86/vcpu.js";
import { HostPool } from "./host-pool.js";
import { DEFAULT_COSTS, checkCostModel, type CostModel } from "./cost-model.js";
import { cr0WpPolicyByName, type Cr0WpPolicy } from "./cr0wp-policy.js";
import type { DirectMmu } from "./direct-mmu.js";
import { TdpMmu } from "./tdp-mmu.js";
import { LegacyDirectMmu } from "./legacy-direct-mmu.js";
import { TdpVcpu, type TdpVmContext } from "./tdp-vcpu.js";
import { SimLock } from "./sim-lock.js";
import { enumArg, intArg, optionsObject, show } from "../validate.js";

export type DirectMmuKind = "tdp" | "legacy";

export interface TdpVmOptions {
  vcpus: number;
  /** "tdp" (the TDP MMU) or "legacy" (the legacy direct MMU). */
  mmu: DirectMmuKind;
  /** Guest RAM (default 256 MiB). */
  memoryBytes?: number;
  /** CR0.WP policy name or object (default baseline). */
  policy?: string | Cr0WpPolicy;
  costs?: CostModel;
  /** Host-table pool for EPT tables (default 64 MiB). */
  poolBytes?: number;
  /** Hardware TLB entries per vCPU (default 4096). */
  tlbEntries?: number;
  /** Largest page the host backs guest RAM with: 1 (4 KiB), 2 (2 MiB, THP; default), 3 (1 GiB). An assumption about the host. */
  hostLevel?: 1 | 2 | 3;
  /** EPT A/D bits (KVM enable_ept_ad_bits; default true). */
  adEnabled?: boolean;
  /** KVM's nx_huge_pages, the iTLB multihit mitigation (src/kvm/tdp-mmu.ts header; default false). */
  nxHugePages?: boolean;
  /** The TDP MMU splits a huge leaf in a fault's way without a flush (v6.2+, default) or zaps it with one (v5.10). */
  splitOnFault?: boolean;
}

export interface TdpVm {
  machine: Machine<X86Vcpu>;
  mmu: DirectMmu;
  /** kvm->mmu_lock in simulated time: its waits are in each vCPU's stats.mmuLockWait. */
  mmuLock: SimLock;
  vcpus: TdpVcpu[];
  policy: Cr0WpPolicy;
  costs: CostModel;
  pool: HostPool;
}

/**
 * Creates an EPT VM on a direct MMU; its vCPUs still need start() with the
 * guest's first control registers. Throws a TypeError or RangeError naming
 * the option on bad input.
 */
export async function createTdpVm(opts: TdpVmOptions): Promise<TdpVm> {
  optionsObject(opts, "opts");
  intArg(opts.vcpus, "vcpus", 1, 128);
  const kind = enumArg(opts.mmu, "mmu", ["tdp", "legacy"] as const);
  if (opts.policy !== undefined && typeof opts.policy !== "string" && (typeof opts.policy !== "object" || opts.policy === null)) {
    throw new TypeError(`vmmu: policy must be a CR0.WP policy name or a Cr0WpPolicy, got ${show(opts.policy)}`);
  }
  const policy = typeof opts.policy === "object" ? opts.policy : cr0WpPolicyByName(opts.policy ?? "baseline");
  const costs = opts.costs === undefined ? DEFAULT_COSTS : checkCostModel(opts.costs);
  const hostLevel = opts.hostLevel === undefined ? 2 : intArg(opts.hostLevel, "hostLevel", 1, 3) as 1 | 2 | 3;
  const adEnabled = opts.adEnabled ?? true;
  const nxHugePages = opts.nxHugePages ?? false;
  const memoryBytes = opts.memoryBytes ?? 256 << 20;
  const machine = await createMachine({
    arch: "x86_64", memoryBytes, vcpus: opts.vcpus, maxPhysAddrBits: 52,
    poolBytes: opts.poolBytes ?? 64 << 20, tlbEntries: opts.tlbEntries ?? 4096,
  });
  const pool = new HostPool(machine.memory.wasmMemory, machine.layout);
  const ramBytes = BigInt(memoryBytes);
  const mmu: DirectMmu = kind === "tdp"
    ? new TdpMmu(pool, { ramBytes, levels: 4, adEnabled, preserveRoots: policy.preserveTdpRoots, hostLevel, nxHugePages, splitOnFault: opts.splitOnFault ?? true })
    : new LegacyDirectMmu(pool, { ramBytes, levels: 4, adEnabled, hostLevel, nxHugePages });
  const vcpus: TdpVcpu[] = [];
  const mmuLock = new SimLock(() => vcpus.reduce((m, v) => Math.min(m, v.cycles), Infinity));
  const ctx: TdpVmContext = { mmu, policy, costs, memory: machine.memory, ramBytes, levels: 4, adEnabled, vcpus, mmuLock };
  for (let i = 0; i < opts.vcpus; i++) {
    vcpus.push(new TdpVcpu(i, ctx, machine.vcpu(i), machine.layout.C_HITS, machine.layout.C_PT_REFS));
  }
  return { machine, mmu, mmuLock, vcpus, policy, costs, pool };
}
