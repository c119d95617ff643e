// A TDP MMU over a machine's host-table pool, and vCPU 0 of that machine with
// guest paging off running under the EPTP of a root, so the wasm walker
// translates every gpa through the tables the MMU built. Plus an independent
// recursive enumeration of a tree for the iterator tests.

import { createMachine, type Machine, type X86Vcpu } from "../../src/index.js";
import { HostPool } from "../../src/kvm/host-pool.js";
import { TdpMmu, type TdpMmuOptions } from "../../src/kvm/tdp-mmu.js";
import { directEptp } from "../../src/kvm/direct-mmu.js";
import { isLastSpte, isShadowPresent, spteHpa } from "../../src/kvm/ept-spte.js";
import { pagesPerLevel } from "../../src/kvm/tdp-iter.js";
import { disposeAfterAll } from "./machine.js";

export interface TdpWorld {
  machine: Machine<X86Vcpu>;
  pool: HostPool;
  mmu: TdpMmu;
  vcpu: X86Vcpu;
  /** Puts vCPU 0 on `root` (EPTP with the MMU's levels and A/D setting, VPID 1) and flushes its TLB, as kvm_mmu_load does. */
  load(root: bigint): void;
}

/** A machine with `memoryBytes` of guest RAM (default ramBytes) and a pool of `poolBytes`, and a TdpMmu on it. */
export async function tdpWorld(opts: Partial<TdpMmuOptions> & { memoryBytes?: bigint; poolBytes?: number } = {}): Promise<TdpWorld> {
  const ramBytes = opts.ramBytes ?? (64n << 20n) + 5n * 4096n;
  const machine = disposeAfterAll(await createMachine({
    arch: "x86_64", memoryBytes: opts.memoryBytes ?? ramBytes, vcpus: 1, maxPhysAddrBits: 52,
    poolBytes: opts.poolBytes ?? 16 << 20, tlbEntries: 1024,
  }));
  const pool = new HostPool(machine.memory.wasmMemory, machine.layout);
  const mmu = new TdpMmu(pool, {
    ramBytes, preserveRoots: opts.preserveRoots ?? false, levels: opts.levels, adEnabled: opts.adEnabled,
    hostLevel: opts.hostLevel, yieldEvery: opts.yieldEvery,
  });
  const vcpu = machine.vcpu(0);
  vcpu.setControl({ cr0: 0n, cr4: 0n, efer: 0n });
  const load = (root: bigint) => {
    vcpu.setVmcs({ eptp: directEptp(root, mmu.levels, mmu.adEnabled), vpid: 1 });
    vcpu.invept(2);
  };
  return { machine, pool, mmu, vcpu, load };
}

/** One SPTE of a pre-order walk: level, first gfn, pool entry number, value. */
export interface Visit { level: number; gfn: number; sptep: number; spte: bigint }

/**
 * The SPTEs a pre-order walk of the tree at `rootHpa` over gfns [start, end)
 * with `minLevel` visits, found by recursion over the tables (not the
 * iterator): every SPTE whose range meets [start, end), in address order,
 * each present non-leaf SPTE above minLevel followed by its table's.
 */
export function enumerateTree(pool: HostPool, rootHpa: bigint, rootLevel: number, minLevel: number, start: number, end: number): Visit[] {
  const out: Visit[] = [];
  const walk = (table: bigint, level: number, base: number) => {
    const n = pagesPerLevel(level), e0 = pool.entryBase(table);
    for (let i = 0; i < 512; i++) {
      const gfn = base + i * n;
      if (gfn + n <= start) continue;
      if (gfn >= end) return;
      const spte = pool.read(table, i);
      out.push({ level, gfn, sptep: e0 + i, spte });
      if (level > minLevel && isShadowPresent(spte) && !isLastSpte(spte, level)) walk(spteHpa(spte), level - 1, gfn);
    }
  };
  walk(rootHpa, rootLevel, 0);
  return out;
}

/** Every table page reachable from `rootHpa` (the root included). */
export function tablesOf(pool: HostPool, rootHpa: bigint, rootLevel: number): bigint[] {
  const out: bigint[] = [];
  const walk = (table: bigint, level: number) => {
    out.push(table);
    for (let i = 0; i < 512; i++) {
      const spte = pool.read(table, i);
      if (level > 1 && isShadowPresent(spte) && !isLastSpte(spte, level)) walk(spteHpa(spte), level - 1);
    }
  };
  walk(rootHpa, rootLevel);
  return out;
}
