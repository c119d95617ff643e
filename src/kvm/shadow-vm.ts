// A VM whose guest runs on a shadow-paging hypervisor: one x86 machine whose
// guest RAM is the guest's physical memory and whose host-table pool holds
// the shadow pages, one vCPU per guest vCPU with two MMU contexts (the
// hardware's, on shadow pages, and the guest walker's: KVM's root_mmu and
// walk_mmu), a ShadowMmu and a ShadowVcpu per guest vCPU.

import { createMachine, type Machine } from "../machine.js";
import type { X86Vcpu } from "../x86/vcpu.js";
import { HostPool } from "./host-pool.js";
import { ShadowMmu } from "./shadow-mmu.js";
import { ShadowVcpu } from "./shadow-vcpu.js";
import { DEFAULT_COSTS, checkCostModel, type CostModel } from "./cost-model.js";
import { policyByName, type ShadowPolicy } from "./policy.js";
import { intArg, optionsObject, show } from "../validate.js";

export interface ShadowVmOptions {
  vcpus: number;
  /** Guest RAM (default 256 MiB). */
  memoryBytes?: number | bigint;
  /** Policy name or object (default shahid2018). */
  policy?: string | ShadowPolicy;
  costs?: CostModel;
  /** Host-table pool for shadow pages (default 64 MiB). */
  poolBytes?: number;
  /** Hardware TLB entries per vCPU (default 4096). */
  tlbEntries?: number;
}

export interface ShadowVm {
  machine: Machine<X86Vcpu>;
  mmu: ShadowMmu;
  vcpus: ShadowVcpu[];
  policy: ShadowPolicy;
  pool: HostPool;
}

/**
 * Creates a shadow-paging VM; its vCPUs still need start() with the guest's
 * first control registers. Throws a TypeError or RangeError naming the
 * option on bad input (machine options as createMachine names them).
 */
export async function createShadowVm(opts: ShadowVmOptions): Promise<ShadowVm> {
  optionsObject(opts, "opts");
  intArg(opts.vcpus, "vcpus", 1, 128);
  if (opts.policy !== undefined && typeof opts.policy !== "string" && (typeof opts.policy !== "object" || opts.policy === null)) {
    throw new TypeError(`vmmu: policy must be a policy name or a ShadowPolicy, got ${show(opts.policy)}`);
  }
  const policy = typeof opts.policy === "object" ? opts.policy : policyByName(opts.policy ?? "shahid2018");
  const costs = opts.costs === undefined ? DEFAULT_COSTS : checkCostModel(opts.costs);
  const machine = await createMachine({
    arch: "x86_64", memoryBytes: opts.memoryBytes ?? 256 << 20, vcpus: opts.vcpus, maxPhysAddrBits: 52,
    poolBytes: opts.poolBytes ?? 64 << 20, tlbEntries: opts.tlbEntries ?? 4096,
  });
  const pool = new HostPool(machine.memory.wasmMemory, machine.layout);
  const mmu = new ShadowMmu(machine.memory, pool, policy, costs);
  const vcpus: ShadowVcpu[] = [];
  for (let i = 0; i < opts.vcpus; i++) {
    const hw = machine.vcpu(i);
    vcpus.push(new ShadowVcpu(i, mmu, hw, hw.walkerContext(), policy, costs, machine.layout.C_HITS, machine.layout.C_PT_REFS));
  }
  mmu.vcpus = vcpus;
  return { machine, mmu, vcpus, policy, pool };
}
