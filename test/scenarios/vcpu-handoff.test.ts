/**
 * A vCPU handed from one wasm instance to another (attachVcpu on the same
 * thread here; a worker is the same case) sees exactly the TLB state the last
 * owner left: the MMU context records, TLB slots and tags live in shared
 * memory (assembly/layout.ts), and no instance keeps a copy. Both reproducers
 * of the MMU-context issue: before the redesign, instance A kept its own
 * current-context tag and salt (x86) and its own (VMID, ASID) → slot table
 * (arm64), and returned translations B had flushed.
 */
import { describe, expect, it } from "vitest";
import { attachVcpu, createMachine, CR4, LONG_MODE, X86PageTableBuilder, Arm64Stage1Builder, type X86Vcpu, type Arm64Vcpu } from "../../src/index.js";

const MiB = 1n << 20n;

describe("a vCPU handed to another instance", () => {
  it("x86: A does not see a translation B remapped and flushed (writeCr3, then INVPCID type 2)", async () => {
    const m = await createMachine({ arch: "x86_64", memoryBytes: 128 << 20 });
    const a = m.vcpu(0);
    const pt = new X86PageTableBuilder(m.memory, { tableBase: 1n * MiB, tableLimit: 2n * MiB });
    pt.map(0x400000n, 0x1000000n, "4K", { write: true });
    a.setControl({ ...LONG_MODE, cr4: LONG_MODE.cr4 | CR4.PCIDE, cr3: pt.root | 2n });
    expect(a.translate(0x400000n)).toMatchObject({ pa: 0x1000000n });

    const b = (await attachVcpu(m.handle, 0)) as X86Vcpu;
    pt.map(0x400000n, 0x2000000n, "4K", { write: true });
    expect(b.writeCr3(pt.root | 2n)).toBeNull();
    expect(b.translate(0x400000n)).toMatchObject({ pa: 0x2000000n });
    pt.map(0x400000n, 0x3000000n, "4K", { write: true });
    expect(b.invpcid(2, 0)).toBeNull();

    expect(a.walk(0x400000n)).toMatchObject({ pa: 0x3000000n });
    expect(a.translate(0x400000n)).toMatchObject({ pa: 0x3000000n });
    m.dispose();
  });

  it("arm64: A reloading ASID 2 after B ran ASID 7 gets ASID 2's page, not ASID 7's", async () => {
    const m = await createMachine({ arch: "arm64", memoryBytes: 128 << 20 });
    const a = m.vcpu(0);
    const t2 = new Arm64Stage1Builder(m.memory, { tableBase: 1n * MiB, tableLimit: 2n * MiB });
    const t7 = new Arm64Stage1Builder(m.memory, { tableBase: 2n * MiB, tableLimit: 3n * MiB });
    t2.map(0x400000n, 0x1000000n, "4K", { nG: true });
    t7.map(0x400000n, 0x2000000n, "4K", { nG: true });
    const tcr = (16n) | (1n << 36n) | (5n << 32n); // T0SZ 16, AS (16-bit ASIDs), IPS 48 bits
    const regs = (table: bigint, asid: bigint) => ({ ttbr0: table | (asid << 48n), tcr, sctlr: 1n });
    a.setSystemRegisters(regs(t2.root, 2n));
    expect(a.translate(0x400000n)).toMatchObject({ pa: 0x1000000n });

    const b = (await attachVcpu(m.handle, 0)) as Arm64Vcpu;
    b.setSystemRegisters(regs(t7.root, 7n));
    expect(b.translate(0x400000n)).toMatchObject({ pa: 0x2000000n });

    a.setSystemRegisters(regs(t2.root, 2n));
    expect(a.translate(0x400000n)).toMatchObject({ pa: 0x1000000n });
    // and B, back on ASID 7, still sees ASID 7's page
    b.setSystemRegisters(regs(t7.root, 7n));
    expect(b.translate(0x400000n)).toMatchObject({ pa: 0x2000000n });
    m.dispose();
  });
});

describe("every MMU context counts its walks in its vCPU's counters", () => {
  it("an arm64 stage-1 walk of a 4-level table makes 4 paging-structure references, counted on the vCPU", async () => {
    const m = await createMachine({ arch: "arm64", memoryBytes: 64 << 20 });
    const v = m.vcpu(0);
    const t = new Arm64Stage1Builder(m.memory, { tableBase: 1n * MiB, tableLimit: 2n * MiB });
    t.map(0x400000n, 0x1000000n, "4K", { nG: true });
    v.setSystemRegisters({ ttbr0: t.root, tcr: 16n | (5n << 32n), sctlr: 1n });
    v.setTlbEnabled(false);
    const before = v.tlbStats();
    expect(v.translate(0x400000n)).toMatchObject({ pa: 0x1000000n });
    const after = v.tlbStats();
    expect(after.walks - before.walks).toBe(1);
    expect(after.ptRefs - before.ptRefs).toBe(4);
    m.dispose();
  });

  it("an x86 walker context counts in its own counters, not the vCPU's", async () => {
    const m = await createMachine({ arch: "x86_64", memoryBytes: 64 << 20 });
    const hw = m.vcpu(0);
    const pt = new X86PageTableBuilder(m.memory, { tableBase: 1n * MiB, tableLimit: 2n * MiB });
    pt.map(0x400000n, 0x1000000n, "4K", { write: true });
    const walker = hw.walkerContext();
    walker.setControl({ ...LONG_MODE, cr3: pt.root });
    const hwBefore = hw.tlbStats();
    expect(walker.translate(0x400000n)).toMatchObject({ pa: 0x1000000n });
    expect(walker.tlbStats()).toMatchObject({ walks: 1, ptRefs: 4 });
    expect(hw.tlbStats()).toEqual(hwBefore);
    m.dispose();
  });
});
