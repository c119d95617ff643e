// Fixtures shared by tests: a machine with a builder, and the reference
// walker's memory interface over the machine's own guest RAM.

import { afterAll } from "vitest";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { createMachine, X86PageTableBuilder, type Machine, type MachineOptions, type X86MachineOptions, type GuestMemory, type X86Vcpu } from "../../src/index.js";
import type { RefMemory } from "../../src/ref/x86-walk.js";

setFlagsFromString("--expose-gc");
/**
 * A full garbage collection: V8 frees a released machine's shared memory only
 * in one, and does not schedule one for wasm-memory pressure.
 */
export const collectGarbage = runInNewContext("gc") as () => void;

const created = new Set<{ dispose(): void }>();

/** Disposes `m` after the last test of the file that created it (then collects); returns `m`. */
export function disposeAfterAll<T extends { dispose(): void }>(m: T): T {
  created.add(m);
  return m;
}

afterAll(() => {
  if (created.size === 0) return;
  for (const m of created) m.dispose();
  created.clear();
  collectGarbage();
});

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

/**
 * A machine of `memoryBytes` (default 64 MiB) with a builder whose tables live
 * in [tableBase, tableLimit), disposed after the file's last test.
 */
export async function x86Fixture(opts: Partial<MachineOptions> & { levels?: 4 | 5; tableBase?: bigint; tableLimit?: bigint } = {}): Promise<X86Fixture> {
  const machine = disposeAfterAll(await createMachine({ memoryBytes: 64 << 20, ...opts, arch: "x86_64" } as X86MachineOptions));
  const builder = new X86PageTableBuilder(machine.memory, {
    levels: opts.levels ?? 4,
    tableBase: opts.tableBase ?? 0x10_0000n,
    tableLimit: opts.tableLimit ?? 0x80_0000n,
  });
  return { machine, builder };
}
