// Fixtures shared by tests: a machine with a builder, and the reference
// walker's memory interface over the machine's own guest RAM.

import { createMachine, X86PageTableBuilder, type Machine, type MachineOptions, type X86MachineOptions, type GuestMemory, type X86Vcpu } from "../../src/index.js";
import type { RefMemory } from "../../src/ref/x86-walk.js";

/** RefMemory over a machine's guest RAM: the reference walker reads and A/D-updates the same bytes. */
export function refMemoryOf(mem: GuestMemory): RefMemory {
  return {
    read64: (gpa) => (mem.contains(gpa) && mem.contains(gpa + 7n) ? mem.read64(gpa) : undefined),
    cmpxchg64: (gpa, expected, desired) => mem.cmpxchg64(gpa, expected, desired),
  };
}

export interface X86Fixture {
  machine: Machine<X86Vcpu>;
  builder: X86PageTableBuilder;
}

/** A machine of `memoryBytes` (default 64 MiB) with a builder whose tables live in [tableBase, tableLimit). */
export async function x86Fixture(opts: Partial<MachineOptions> & { levels?: 4 | 5; tableBase?: bigint; tableLimit?: bigint } = {}): Promise<X86Fixture> {
  const machine = await createMachine({ memoryBytes: 64 << 20, ...opts, arch: "x86_64" } as X86MachineOptions);
  const builder = new X86PageTableBuilder(machine.memory, {
    levels: opts.levels ?? 4,
    tableBase: opts.tableBase ?? 0x10_0000n,
    tableLimit: opts.tableLimit ?? 0x80_0000n,
  });
  return { machine, builder };
}
