/**
 * BareMetalCpu: the GuestCpu interface as bare hardware over the guest's own
 * tables. Faults of X86Vcpu.translate become the exceptions a guest sees
 * (#PF with CR2 and the SDM error code, #GP), kernel stores land at the
 * translated address, and time is the cost table applied to events and to
 * the vCPU's TLB counters.
 */
import { describe, expect, it } from "vitest";
import { CR0, CR3_NOFLUSH, CR4, LONG_MODE, PFERR, X86PageTableBuilder } from "../../../src/index.js";
import { BareMetalCpu, BARE_METAL_COSTS, X86_BOOT_CONTROL } from "../../../src/guest/bare-metal-cpu.js";
import { x86Fixture } from "../../helpers/machine.js";

const UVA = 0x0000_0040_0000_0000n;
const KVA = 0xffff_8000_0000_0000n;
const FRAME = 0x100_0000n;

async function setup(opts: { invpcid?: boolean; costs?: Record<string, number> } = {}) {
  const { machine, builder } = await x86Fixture();
  for (let i = 0n; i < 4n; i++) builder.map(UVA + i * 0x1000n, FRAME + i * 0x1000n, "4K", { user: true, write: i !== 1n });
  builder.map(KVA, FRAME + 0x10_0000n, "4K", { write: true });
  const vcpu = machine.vcpu(0);
  const cpu = new BareMetalCpu(vcpu, { invpcid: opts.invpcid, costs: opts.costs });
  vcpu.setControl({ ...LONG_MODE, cr4: LONG_MODE.cr4 | CR4.PCIDE | CR4.PGE, cr3: builder.root });
  return { machine, builder, vcpu, cpu, mem: machine.memory };
}

describe("BareMetalCpu", () => {
  it("starts in the boot state: paging off, long mode enabled but not active", async () => {
    const { machine } = await x86Fixture();
    const cpu = new BareMetalCpu(machine.vcpu(0));
    expect(machine.vcpu(0).control()).toMatchObject({ cr0: X86_BOOT_CONTROL.cr0, cr4: CR4.PAE });
    expect(cpu.access(0x1234n, "read", false)).toBe(0x1234n);
  });

  it("returns the guest-physical address an access reaches", async () => {
    const { cpu } = await setup();
    expect(cpu.access(UVA + 0x2008n, "write", true)).toBe(FRAME + 0x2008n);
  });

  it("delivers a #PF with CR2 and the SDM error code", async () => {
    const { cpu } = await setup();
    expect(cpu.access(UVA + 0x1010n, "write", true)).toEqual({ cr2: UVA + 0x1010n, errorCode: PFERR.P | PFERR.W | PFERR.U });
    expect(cpu.access(UVA + 0x9000n, "read", true)).toEqual({ cr2: UVA + 0x9000n, errorCode: PFERR.U });
    expect(cpu.access(KVA, "read", true)).toEqual({ cr2: KVA, errorCode: PFERR.P | PFERR.U });
  });

  it("delivers a #GP for a non-canonical address and for a reserved CR3 bit", async () => {
    const { cpu } = await setup();
    expect(cpu.access(0x0000_8000_0000_0000n, "read", false)).toEqual({ gp: true });
    expect(cpu.writeCr3(1n << 50n)).toEqual({ gp: true });
  });

  it("store64 writes the value at the translated address, and faults without writing", async () => {
    const { cpu, mem } = await setup();
    expect(cpu.store64(KVA + 0x18n, 0xdead_beefn)).toBeNull();
    expect(mem.read64(FRAME + 0x10_0018n)).toBe(0xdead_beefn);
    expect(cpu.store64(KVA + 0x5000n, 1n)).toEqual({ cr2: KVA + 0x5000n, errorCode: PFERR.W });
  });

  it("zeroPage clears the whole 4 KiB page containing the address", async () => {
    const { cpu, mem } = await setup();
    mem.write(FRAME + 0x10_0000n, new Uint8Array(4096).fill(0xab));
    expect(cpu.zeroPage(KVA + 0x123n)).toBeNull();
    expect(mem.read(FRAME + 0x10_0000n, 4096).every((b) => b === 0)).toBe(true);
  });

  it("readPhys64 reads guest-physical memory without translation", async () => {
    const { cpu, builder, mem } = await setup();
    expect(cpu.readPhys64(builder.root)).toBe(mem.read64(builder.root));
  });

  it("accessMany runs a stream up to the first fault and returns that fault", async () => {
    const { cpu } = await setup();
    const va = new BigUint64Array([UVA, UVA + 0x1000n, UVA + 0x3000n, UVA + 0x1008n, UVA]);
    const kinds = new Uint8Array([1, 0, 2, 1, 0]);
    expect(cpu.accessMany(va, kinds, 5, true)).toEqual({ done: 3, exception: { cr2: UVA + 0x1008n, errorCode: PFERR.P | PFERR.W | PFERR.U } });
    expect(cpu.accessMany(va, kinds, 3, true)).toEqual({ done: 3 });
  });

  it("accessMany covers streams longer than the batch area", async () => {
    const { cpu, vcpu } = await setup();
    const n = vcpu.batch().capacity * 2 + 7;
    const va = new BigUint64Array(n).map((_, i) => UVA + BigInt((i % 4) * 0x1000 + 8));
    const kinds = new Uint8Array(n);
    expect(cpu.accessMany(va, kinds, n, true)).toEqual({ done: n });
    va[n - 2] = UVA + 0x7000n;
    expect(cpu.accessMany(va, kinds, n, true)).toEqual({ done: n - 2, exception: { cr2: UVA + 0x7000n, errorCode: PFERR.U } });
  });

  it("INVLPG and INVPCID reach the TLB: a stale translation survives a NOFLUSH CR3 load but not them", async () => {
    const { cpu, vcpu, builder, mem } = await setup();
    vcpu.setControl({ cr3: builder.root | 5n });
    expect(cpu.access(UVA, "read", true)).toBe(FRAME);
    mem.write64(builder.leafGpa(UVA)!, X86PageTableBuilder.leaf(FRAME + 0x8000n, "4K", { user: true }));
    expect(cpu.writeCr3(builder.root | 5n | CR3_NOFLUSH)).toBeNull();
    expect(cpu.access(UVA, "read", true)).toBe(FRAME);
    cpu.invlpg(UVA);
    expect(cpu.access(UVA, "read", true)).toBe(FRAME + 0x8000n);
    mem.write64(builder.leafGpa(UVA)!, X86PageTableBuilder.leaf(FRAME, "4K", { user: true }));
    expect(cpu.invpcid(0, 5, UVA)).toBeNull();
    expect(cpu.access(UVA, "read", true)).toBe(FRAME);
  });

  it("INVPCID is refused (#GP) when it is not advertised", async () => {
    const { cpu } = await setup({ invpcid: false });
    expect(cpu.hasInvpcid).toBe(false);
    expect(cpu.invpcid(1, 0)).toEqual({ gp: true });
  });

  it("charges a TLB hit less than a walk, and each instruction its cost", async () => {
    const { cpu } = await setup();
    const c0 = cpu.cycles;
    cpu.access(UVA, "read", true);
    const walk = cpu.cycles - c0;
    cpu.access(UVA + 8n, "read", true);
    const hit = cpu.cycles - c0 - walk;
    expect(hit).toBe(BARE_METAL_COSTS.tlbHit);
    expect(walk).toBeGreaterThanOrEqual(BARE_METAL_COSTS.walk! + 4 * BARE_METAL_COSTS.ptRef! + BARE_METAL_COSTS.exception! * 0);
    const c1 = cpu.cycles;
    cpu.invlpg(UVA);
    cpu.work(1000);
    expect(cpu.cycles - c1).toBe(BARE_METAL_COSTS.invlpg! + 1000);
    expect(cpu.events()).toMatchObject({ invlpg: 1 });
  });

  it("takes its costs from the table it is given", async () => {
    const { cpu } = await setup({ costs: { cr3Write: 7, tlbHit: 0, walk: 0, ptRef: 0, adWrite: 0 } });
    const c0 = cpu.cycles;
    cpu.writeCr3(0n);
    cpu.access(0n, "read", false);
    expect(cpu.cycles - c0).toBe(7 + BARE_METAL_COSTS.exception!);
  });

  it("tracks paging being turned on through writeCr0", async () => {
    const { machine, builder } = await x86Fixture();
    const cpu = new BareMetalCpu(machine.vcpu(0));
    builder.map(0x4000n, 0x8000n);
    expect(cpu.writeCr3(builder.root)).toBeNull();
    expect(cpu.writeCr0(CR0.PE | CR0.PG)).toBeNull();
    expect(cpu.access(0x4010n, "read", false)).toBe(0x8010n);
  });
});
