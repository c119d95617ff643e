// The direct-MMU benchmark fixtures (src/kvm/tdp-mmu.ts after KVM
// arch/x86/kvm/mmu/tdp_mmu.c, src/kvm/legacy-direct-mmu.ts after KVM
// arch/x86/kvm/mmu/mmu.c with tdp_mmu=0): MMUs over a machine's host-table
// pool, the gpa lists a fault sample touches, a root populated with 4 KiB
// leaves for the zap measurements, and an EPT guest with paging off for the
// end-to-end fault path.
//
//   pool machine  a machine whose guest RAM is small and whose pool holds the
//                 EPT tables; the MMUs on it are told a larger guest RAM
//                 (ramBytes) — the MMU never reads guest RAM, only the pool.
//   fault gpas    "dense": consecutive host-level units from gpa 0 (a new
//                 table page every 512 faults); "sparse": one unit per
//                 table-page span (512 units), so every fault also links one
//                 new table page.
//   e2e guest     one TdpVcpu with CR0.PG = 0 (X86_BOOT_CONTROL): every gva
//                 is its gpa, each first touch is hardware EPT walk → EPT
//                 violation → pageFault → walk again.

import { createMachine, type Machine, type X86Vcpu } from "../src/index.js";
import { HostPool } from "../src/kvm/host-pool.js";
import { TdpMmu } from "../src/kvm/tdp-mmu.js";
import { LegacyDirectMmu } from "../src/kvm/legacy-direct-mmu.js";
import type { DirectMmu } from "../src/kvm/direct-mmu.js";
import { ACC_ALL, ROLE_CR0_WP, ROLE_EFER_NX, roleAt } from "../src/kvm/shadow-mmu.js";
import { createTdpVm, type DirectMmuKind, type TdpVm } from "../src/kvm/tdp-vm.js";
import { X86_BOOT_CONTROL } from "../src/guest/bare-metal-cpu.js";

/** The root role a 4-level EPT vCPU with CR0.WP = 1 and EFER.NX asks for (TdpVcpu.rootRole). */
export const ROOT_ROLE = roleAt(ROLE_EFER_NX | ROLE_CR0_WP, 4, ACC_ALL, true);

export type HostLevel = 1 | 2;
export type FaultPattern = "dense" | "sparse";

/** Bytes one leaf maps at `level` (1 = 4 KiB, 2 = 2 MiB). */
export function unitBytes(level: HostLevel): bigint {
  return 4096n << BigInt(9 * (level - 1));
}

export interface PoolMachine {
  machine: Machine<X86Vcpu>;
  pool: HostPool;
}

/** A machine with 4 MiB of guest RAM and a `poolBytes` host-table pool, and the pool over it. */
export async function poolMachine(poolBytes: number): Promise<PoolMachine> {
  const machine = await createMachine({ arch: "x86_64", memoryBytes: 4 << 20, vcpus: 1, maxPhysAddrBits: 52, poolBytes, tlbEntries: 64 });
  return { machine, pool: new HostPool(machine.memory.wasmMemory, machine.layout) };
}

/** A direct MMU of `kind` on `pool` for guest RAM [0, ramBytes), 4-level EPT, A/D on. `preserveRoots` selects v6.4 TDP roots (ignored by legacy). */
export function directMmu(kind: DirectMmuKind, pool: HostPool, ramBytes: bigint, hostLevel: 1 | 2 | 3, preserveRoots = false): DirectMmu {
  return kind === "tdp"
    ? new TdpMmu(pool, { ramBytes, levels: 4, adEnabled: true, preserveRoots, hostLevel })
    : new LegacyDirectMmu(pool, { ramBytes, levels: 4, adEnabled: true, hostLevel });
}

/**
 * The `n` gpas of a fault sample at host level `level`: "dense" = unit i at
 * i × unit; "sparse" = unit i at i × 512 units (each in its own table page).
 * Every gpa is the first byte of a distinct leaf, so on an empty root each one
 * installs a leaf.
 */
export function faultGpas(pattern: FaultPattern, level: HostLevel, n: number): bigint[] {
  const step = pattern === "dense" ? unitBytes(level) : unitBytes(level) * 512n;
  return Array.from({ length: n }, (_, i) => BigInt(i) * step);
}

/** Guest RAM a fault sample of `n` gpas needs. */
export function faultSpan(pattern: FaultPattern, level: HostLevel, n: number): bigint {
  return BigInt(n) * (pattern === "dense" ? unitBytes(level) : unitBytes(level) * 512n);
}

/**
 * Back to an empty MMU: kvm_mmu_zap_all_fast (invalidateAllRoots) and the
 * holder's release of `root`, after which both MMUs hold no page (the TDP
 * root's tree is zapped by the invalidation, the legacy MMU frees every
 * unreferenced page, and the last release frees the invalid root). Throws if
 * a page is left.
 */
export function emptyMmu(mmu: DirectMmu, root: bigint): void {
  mmu.invalidateAllRoots();
  mmu.releaseRoot(root);
  if (mmu.pagesInUse() !== 0) throw new Error(`bench: ${mmu.kind} MMU still holds ${mmu.pagesInUse()} pages after invalidation and release`);
}

/** Faults gpas 0, 4 KiB, … for `leaves` pages under `root` (the MMU at host level 1); throws unless each fault installs a 4 KiB leaf. */
export function populate(mmu: DirectMmu, root: bigint, leaves: number): void {
  for (let i = 0; i < leaves; i++) {
    const r = mmu.pageFault(root, BigInt(i) << 12n, true, false);
    if (r.spurious || r.level !== 1 || ("retry" in r && r.retry)) throw new Error(`bench: populate fault ${i} did not install a 4 KiB leaf`);
  }
}

export interface E2eGuest {
  vm: TdpVm;
  /** Guest RAM, bytes. */
  ramBytes: bigint;
}

/** One vCPU on `kind` at host level `level`, guest paging off, started (its first root loaded), `ramBytes` of guest RAM. */
export async function e2eGuest(kind: DirectMmuKind, level: HostLevel, ramBytes = 256 << 20): Promise<E2eGuest> {
  const vm = await createTdpVm({ vcpus: 1, mmu: kind, memoryBytes: ramBytes, hostLevel: level, poolBytes: 8 << 20, policy: "baseline" });
  vm.vcpus[0]!.start({ ...X86_BOOT_CONTROL });
  return { vm, ramBytes: BigInt(ramBytes) };
}

/**
 * One end-to-end sample: the vCPU reads each of `gpas` once (with paging off,
 * gva = gpa). Throws unless every read reaches its gpa (identity map). The
 * caller empties the tree first (invalidateE2e).
 */
export function touch(g: E2eGuest, gpas: readonly bigint[]): void {
  const v = g.vm.vcpus[0]!;
  for (const gpa of gpas) {
    const pa = v.access(gpa, "read", false);
    if (pa !== gpa) throw new Error(`bench: e2e read of ${gpa.toString(16)} gave ${typeof pa === "bigint" ? pa.toString(16) : "a guest exception"}`);
  }
}

/** Empties the e2e guest's EPT tree (kvm_mmu_zap_all_fast); the vCPU reloads a fresh root on its next access. */
export function invalidateE2e(g: E2eGuest): void {
  g.vm.mmu.invalidateAllRoots();
}
