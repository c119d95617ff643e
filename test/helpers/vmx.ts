// A small VMX world for the TLB scenario tests: one x86 vCPU, guest page
// tables at guest-physical 1 MiB, and EPT trees that map those tables
// identically and the guest's data pages each onto its own host range, so the
// same linear address gives a different host address under each EPTP.

import { CR4, LONG_MODE, X86EptBuilder, X86PageTableBuilder, createMachine, type GuestMemory, type Machine, type X86Vcpu } from "../../src/index.js";
import { disposeAfterAll } from "./machine.js";

/** A fault as any translation may report it: #PF, #GP, abort, EPT violation or misconfiguration (fields by kind). */
export interface VmxFault {
  kind: string; vector: number; errorCode: number; level: number;
  qualification?: number; gpa?: bigint; gva?: bigint; stage?: string; hpa?: bigint;
}

/** Guest linear addresses of the world: two user pages and a global kernel page. */
export const VA = 0x40_0000n;
export const VA2 = 0x40_1000n;
export const KVA = 0xffff_ffff_8000_0000n;
/** Guest-physical pages the three addresses map to (DATA, DATA + 4 KiB, DATA + 8 KiB). */
export const DATA = 0x80_0000n;
/** Spare guest-physical pages a guest entry may be pointed at (DATA + 16 KiB …). */
export const SPARE = DATA + 0x4000n;

export interface VmxWorld {
  machine: Machine;
  mem: GuestMemory;
  vcpu: X86Vcpu;
  guest: X86PageTableBuilder;
  /** EPT trees; tree i maps DATA + j·4 KiB (j < 16) to hostOf(i) + j·4 KiB. */
  epts: X86EptBuilder[];
  hostOf(i: number): bigint;
  /** Points the guest leaf of `va` at guest-physical `gpa` (no invalidation). */
  remapGuest(va: bigint, gpa: bigint): void;
  /** Points EPT tree `i`'s entry for guest-physical page `gpa` at host-physical `hpa` (no invalidation). */
  remapEpt(i: number, gpa: bigint, hpa: bigint): void;
}

/**
 * A machine with guest tables at gpa 1 MiB (VA, VA2 user and writable, KVA
 * global), `trees` EPT trees (tables identity-mapped by a 2 MiB page at gpa 0,
 * DATA by 4 KiB pages onto 16 MiB + 1 MiB·i), long mode with PGE and PCIDE,
 * CR3 = the guest root with PCID 1, no VMCS fields set.
 */
export async function vmxWorld(trees = 3, tlbEntries = 4096): Promise<VmxWorld> {
  const machine = disposeAfterAll(await createMachine({ arch: "x86_64", memoryBytes: 32 << 20, tlbEntries }));
  const mem = machine.memory;
  const guest = new X86PageTableBuilder(mem, { tableBase: 0x10_0000n, tableLimit: 0x20_0000n });
  const flags = { user: true, write: true };
  guest.map(VA, DATA, "4K", flags);
  guest.map(VA2, DATA + 0x1000n, "4K", flags);
  guest.map(KVA, DATA + 0x2000n, "4K", { write: true, global: true });
  const hostOf = (i: number) => 0x100_0000n + BigInt(i) * 0x10_0000n;
  const epts: X86EptBuilder[] = [];
  for (let i = 0; i < trees; i++) {
    const e = new X86EptBuilder(mem, { tableBase: 0x20_0000n + BigInt(i) * 0x1_0000n, tableLimit: 0x20_0000n + BigInt(i + 1) * 0x1_0000n });
    e.map(0n, 0n, "2M");
    e.mapRange(DATA, hostOf(i), 16, "4K");
    epts.push(e);
  }
  const vcpu = machine.vcpu(0);
  vcpu.setControl({ ...LONG_MODE, cr4: LONG_MODE.cr4 | CR4.PGE | CR4.PCIDE, cr3: guest.root | 1n });
  return {
    machine, mem, vcpu, guest, epts, hostOf,
    remapGuest: (va, gpa) => { guest.map(va, gpa, "4K", va === KVA ? { write: true, global: true } : flags); },
    remapEpt: (i, gpa, hpa) => { epts[i]!.map(gpa, hpa, "4K"); },
  };
}
