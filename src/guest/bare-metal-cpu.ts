// The guest's CPU with no hypervisor in between: the hardware walks the
// guest's own page tables (an X86Vcpu whose CR3 is the guest's CR3), so every
// GuestCpu operation is the bare instruction (Intel SDM Vol.3A ch. 4; the
// invalidation rules of SDM §4.10.4 are X86Vcpu's). It is the
// test harness of the guest models and the native baseline a hypervisor
// policy is compared against.
//
// Time is a cost model, not a measurement: each event costs a number of
// cycles from a plain table (`CpuCosts`). TLB hits, walks and paging-structure
// references are read from the vCPU's own counters, so the per-access path
// stays one translate(). Not modelled: caches, the paging-structure caches,
// pipelining, interrupts other than the IPIs the guest sends.

import { X86Vcpu, type X86Fault, type X86EptViolation, type X86EptMisconfig } from "../x86/vcpu.js";
import type { GuestMemory } from "../memory.js";
import type { TlbStats } from "../core/vcpu-base.js";
import { CR0, CR4, EFER, type X86Access } from "../x86/regs.js";
import type { GuestCpu, GuestException } from "./cpu.js";
import { optBoolArg, optionsObject, show } from "../validate.js";

/** Cycles per event, by event name. Unknown names cost nothing. */
export type CpuCosts = { [event: string]: number };

/**
 * Default cycle costs. All are assumptions (no measured source; see
 * src/kvm/cost-model.ts for the sourced ones), to be replaced by src/kvm/cost-model.ts:
 *
 * - `tlbHit` 1: an access whose translation hits the TLB (the access itself).
 * - `walk` 10: fixed overhead of a TLB miss beyond its memory references.
 * - `ptRef` 30: each paging-structure entry read by a walk (no paging-structure
 *   caches are modelled, so every level is a reference; 30 ≈ an L2/L3 hit).
 * - `adWrite` 20: a locked A/D update of an entry by the walker.
 * - `store` 1: a kernel store (page-table entry) beyond its translation.
 * - `zeroPage` 300: clearing 4 KiB (64 lines with rep stosb).
 * - `cr3Write` 200, `cr4Write` 300, `cr0Write` 300: MOV to CRn, serializing.
 * - `invlpg` 200, `invpcid` 250: one invalidation instruction.
 * - `exception` 250: delivering #PF/#GP and the IRET back (not the handler).
 * - `ipi` 1500: sending an IPI and waiting for the target's acknowledgement.
 *
 * Accesses with paging off (boot) have no TLB lookup and cost nothing.
 */
export const BARE_METAL_COSTS: Readonly<CpuCosts> = Object.freeze({
  tlbHit: 1, walk: 10, ptRef: 30, adWrite: 20, store: 1, zeroPage: 300,
  cr3Write: 200, cr4Write: 300, cr0Write: 300, invlpg: 200, invpcid: 250,
  exception: 250, ipi: 1500,
});

/**
 * The control state a guest kernel is handed at its first instruction here:
 * protected mode with paging off, EFER.LME|NXE and CR4.PAE set, so that its
 * first MOV CR3 + MOV CR0.PG enters 4-level long mode (what startup_32 and
 * the secondary-CPU trampoline do before paging is on).
 */
export const X86_BOOT_CONTROL = Object.freeze({
  cr0: CR0.PE, cr3: 0n, cr4: CR4.PAE, efer: EFER.LME | EFER.NXE, pkru: 0n, rflags: 2n,
});

export interface BareMetalCpuOptions {
  /** Cycle costs overriding BARE_METAL_COSTS entry by entry. */
  costs?: Partial<CpuCosts>;
  /** Whether CPUID advertises INVPCID (default true). */
  invpcid?: boolean;
  /** Put the vCPU in X86_BOOT_CONTROL first (default true). */
  reset?: boolean;
}

const ZERO_PAGE = new Uint8Array(4096);

/**
 * GuestCpu over one X86Vcpu of a machine, the guest's tables walked as they
 * are. Owns the vCPU: it must not be translated through or have its counters
 * reset by anyone else, or `cycles` is wrong.
 */
export class BareMetalCpu implements GuestCpu {
  readonly index: number;
  readonly hasInvpcid: boolean;
  private readonly memory: GuestMemory;
  private readonly c: Readonly<CpuCosts>;
  /** Cycles of discrete events and work(), excluding TLB-derived cycles. */
  private charged = 0;
  private readonly base: TlbStats;
  private readonly counts: Record<string, number> = Object.create(null) as Record<string, number>;

  /** Throws a TypeError naming the argument unless `vcpu` is an X86Vcpu and `opts` well typed. */
  constructor(readonly vcpu: X86Vcpu, opts: BareMetalCpuOptions = {}) {
    if (!(vcpu instanceof X86Vcpu)) throw new TypeError(`vmmu: vcpu must be an X86Vcpu, got ${show(vcpu)}`);
    optionsObject(opts, "opts");
    if (opts.costs !== undefined) optionsObject(opts.costs, "opts.costs");
    this.index = vcpu.index;
    this.memory = vcpu.memory;
    this.hasInvpcid = optBoolArg(opts.invpcid, "opts.invpcid", true);
    this.c = { ...BARE_METAL_COSTS, ...opts.costs } as CpuCosts;
    if (optBoolArg(opts.reset, "opts.reset", true)) vcpu.setControl(X86_BOOT_CONTROL);
    this.base = vcpu.tlbStats();
  }

  /** One BareMetalCpu per vCPU of `machine`, with the same options. */
  static forMachine(machine: { vcpuCount: number; vcpu(i: number): X86Vcpu }, opts: BareMetalCpuOptions = {}): BareMetalCpu[] {
    return Array.from({ length: machine.vcpuCount }, (_, i) => new BareMetalCpu(machine.vcpu(i), opts));
  }

  /** An exception with no hypervisor: delivered by the CPU; the guest model charges the delivery as work. Counted. */
  exception(vector: number): void {
    this.counts[`exception${vector}`] = (this.counts[`exception${vector}`] ?? 0) + 1;
  }

  private charge(event: string): void {
    this.counts[event] = (this.counts[event] ?? 0) + 1;
    this.charged += this.c[event] ?? 0;
  }

  private deliver(va: bigint, f: X86Fault | X86EptViolation | X86EptMisconfig): GuestException {
    this.charge("exception");
    if (f.kind === "page-fault") return { cr2: BigInt.asUintN(64, va), errorCode: f.errorCode };
    if (f.kind === "general-protection") return { gp: true };
    if (f.kind !== "abort") throw new Error(`vmmu: ${f.kind} at gpa 0x${(f.gpa ?? 0n).toString(16)} (this CPU runs no EPT)`);
    throw new Error(`vmmu: guest table entry at gpa 0x${(f.gpa ?? 0n).toString(16)} is outside guest RAM (walk abort for va 0x${BigInt.asUintN(64, va).toString(16)})`);
  }

  access(va: bigint, access: X86Access, user: boolean): bigint | GuestException {
    const r = this.vcpu.translate(va, access, user);
    if ("fault" in r) return this.deliver(va, r.fault);
    return r.pa;
  }

  /**
   * The batch form of access(): one wasm call runs the accesses until the
   * first that faults (TLB-hit runs stay inside wasm); that one is decoded
   * from its batch status and delivered.
   */
  accessMany(va: BigUint64Array, kinds: Uint8Array, n: number, user: boolean): { done: number; exception?: GuestException } {
    let done = 0;
    while (done < n) {
      const bt = this.vcpu.batch();
      const m = Math.min(bt.capacity, n - done);
      bt.va.set(va.subarray(done, done + m));
      bt.access.set(kinds.subarray(done, done + m));
      const stop = this.vcpu.translateUntilFault(0, m, user);
      if (stop < m) {
        const r = this.vcpu.decodeStatus(bt.status[stop]!, bt.pa[stop]!);
        if ("fault" in r) return { done: done + stop, exception: this.deliver(va[done + stop]!, r.fault) };
        done += stop + 1;
        continue;
      }
      done += m;
    }
    return { done };
  }

  store64(va: bigint, value: bigint): GuestException | null {
    const r = this.vcpu.translate(va, "write", false);
    if ("fault" in r) return this.deliver(va, r.fault);
    this.memory.write64(r.pa, value);
    this.charge("store");
    return null;
  }

  zeroPage(va: bigint): GuestException | null {
    const r = this.vcpu.translate(va & ~0xfffn, "write", false);
    if ("fault" in r) return this.deliver(va, r.fault);
    this.memory.write(r.pa, ZERO_PAGE);
    this.charge("zeroPage");
    return null;
  }

  readPhys64(gpa: bigint): bigint {
    return this.memory.read64(gpa);
  }

  writeCr3(value: bigint): GuestException | null {
    this.charge("cr3Write");
    return this.vcpu.writeCr3(value) ? { gp: true } : null;
  }

  writeCr4(value: bigint): GuestException | null {
    this.charge("cr4Write");
    return this.vcpu.writeCr4(value) ? { gp: true } : null;
  }

  writeCr0(value: bigint): GuestException | null {
    this.charge("cr0Write");
    return this.vcpu.writeCr0(value) ? { gp: true } : null;
  }

  invlpg(va: bigint): void {
    this.charge("invlpg");
    this.vcpu.invlpg(va);
  }

  /** INVPCID; without `hasInvpcid` it is #UD on hardware, reported as #GP (GuestException has no #UD). */
  invpcid(type: number, pcid: number, va?: bigint): GuestException | null {
    this.charge("invpcid");
    if (!this.hasInvpcid) return { gp: true };
    return this.vcpu.invpcid(type, pcid, va ?? 0n) ? { gp: true } : null;
  }

  sendIpi(_target: number): void {
    this.charge("ipi");
  }

  work(n: number): void {
    this.charged += n;
  }

  /**
   * Cycles so far: charged events and work(), plus TLB hits, walks,
   * paging-structure references and A/D writes since construction, each at
   * its cost. Reads the vCPU counters (≈1 µs): call it per scheduling step,
   * not per access.
   */
  get cycles(): number {
    const s = this.vcpu.tlbStats(), b = this.base, c = this.c;
    return this.charged + (s.hits - b.hits) * (c.tlbHit ?? 0) + (s.walks - b.walks) * (c.walk ?? 0)
      + (s.ptRefs - b.ptRefs) * (c.ptRef ?? 0) + (s.adWrites - b.adWrites) * (c.adWrite ?? 0);
  }

  /** How many times each charged event happened (cr3Write, invlpg, exception, …). */
  events(): Record<string, number> {
    return { ...this.counts };
  }
}
