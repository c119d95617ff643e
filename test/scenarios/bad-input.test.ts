/**
 * Bad translation input, per the walker contract (Intel SDM Vol.3A §3.3.7.1
 * canonical addresses, §4.5 reserved bits above MAXPHYADDR, §4.7 error codes;
 * a table pointer outside guest RAM is an abort). Every case answers with a
 * fault or a JS exception, never a wasm trap, and leaves the vCPU usable.
 */
import { describe, expect, it } from "vitest";
import {
  createMachine, X86PageTableBuilder, LONG_MODE, CR0, CR4, EFER, PTE, PFERR,
  type X86Access, type X86TranslateResult, type X86Vcpu,
} from "../../src/index.js";
import { refTranslateX86 } from "../../src/ref/x86-walk.js";
import { refMemoryOf, x86Fixture } from "../helpers/machine.js";

const GP = { fault: { vector: 13, errorCode: 0, level: 0, kind: "general-protection" } };
const pf = (errorCode: number, level: number) => ({ fault: { vector: 14, errorCode, level, kind: "page-fault" } });
const abort = (level: number, gpa: bigint) => ({ fault: { vector: -1, errorCode: 0, level, kind: "abort", gpa } });
const ACCESSES: X86Access[] = ["read", "write", "fetch"];
const RAM = 64n << 20n;
const VA = 0x0000_1234_5670_0000n;
const PA = 0x30_0000n;

/** A 4-level machine mapping VA → PA (4K, writable, user) and the top page of the address space. */
async function fixture(levels: 4 | 5 = 4) {
  const { machine, builder } = await x86Fixture({ levels });
  builder.map(VA, PA, "4K", { write: true, user: true });
  builder.map(0xffff_ffff_ffff_f000n, 0x40_0000n, "4K", { write: true });
  const v = machine.vcpu(0);
  v.setControl({ ...LONG_MODE, cr4: LONG_MODE.cr4 | (levels === 5 ? CR4.LA57 : 0n), cr3: builder.root });
  return { machine, builder, v };
}

/** The vCPU still translates the good mapping, through the TLB and without. */
function stillWorks(v: X86Vcpu): void {
  expect(v.translate(VA + 0x10n, "write", true)).toEqual({ pa: PA + 0x10n, pageSize: 4096, level: 1 });
  expect(v.walk(VA + 0x18n)).toEqual({ pa: PA + 0x18n, pageSize: 4096, level: 1 });
}

/** What the reference walker says for the vCPU's current state. */
function reference(v: X86Vcpu, va: bigint, access: X86Access, user: boolean): X86TranslateResult {
  const r = refTranslateX86(refMemoryOf(v.memory), { ...v.control(), maxPhysAddrBits: v.maxPhysAddrBits }, va, access, user);
  if (r.ok) return { pa: r.pa, pageSize: r.pageSize, level: r.level };
  const { vector, errorCode, level, kind, gpa } = r;
  return { fault: gpa === undefined ? { vector, errorCode, level, kind } : { vector, errorCode, level, kind, gpa } };
}

describe("non-canonical addresses", () => {
  it("#GP in 4-level paging, from translate, walk, peek and batches, before any memory access", async () => {
    const { v } = await fixture(4);
    const bad = [0x0000_8000_0000_0000n, 0xffff_7fff_ffff_f000n, 0x8000_0000_0000_0000n, 0x0001_0000_0000_0000n, VA | (1n << 50n)];
    v.resetStats();
    for (const va of bad) {
      for (const access of ACCESSES) {
        for (const user of [false, true]) {
          expect(v.translate(va, access, user)).toEqual(GP);
          expect(reference(v, va, access, user)).toEqual(GP);
        }
        expect(v.walk(va, access)).toEqual(GP);
      }
      expect(v.peek(va)).toEqual(GP);
    }
    expect(v.tlbStats().ptRefs).toBe(0);
    const out = { pa: new BigUint64Array(bad.length), status: new Uint32Array(bad.length) };
    expect(v.translateBatch(BigUint64Array.from(bad), "read", false, out)).toBe(bad.length);
    for (let i = 0; i < bad.length; i++) expect(v.decodeStatus(out.status[i]!, out.pa[i]!)).toEqual(GP);
    v.invlpg(0x0000_8000_0000_0000n);
    expect(v.invpcid(0, 0, 0x0000_8000_0000_0000n)).toEqual(GP.fault);
    stillWorks(v);
  });

  it("#GP in 5-level paging only above bit 56, where 4-level canonical bounds no longer apply", async () => {
    const { builder, v } = await fixture(5);
    builder.map(0x0000_8000_0000_0000n, 0x50_0000n, "4K");
    builder.map(0xff00_0000_0000_0000n, 0x60_0000n, "4K");
    expect(v.translate(0x0000_8000_0000_0123n)).toEqual({ pa: 0x50_0123n, pageSize: 4096, level: 1 });
    expect(v.translate(0xff00_0000_0000_0123n)).toEqual({ pa: 0x60_0123n, pageSize: 4096, level: 1 });
    for (const va of [0x0100_0000_0000_0000n, 0xfeff_ffff_ffff_f000n, 0x7fff_0000_0000_0000n]) {
      expect(v.translate(va)).toEqual(GP);
      expect(v.peek(va)).toEqual(GP);
      expect(reference(v, va, "read", false)).toEqual(GP);
    }
    stillWorks(v);
  });
});

describe("table pointers outside guest RAM", () => {
  it("abort at the root level when CR3 points beyond RAM, with the gpa of the entry", async () => {
    const { v, builder } = await fixture(4);
    const cr3 = 1n << 32n;
    v.setControl({ cr3 });
    const gpa = cr3 + ((VA >> 39n) & 511n) * 8n;
    expect(v.translate(VA)).toEqual(abort(4, gpa));
    expect(v.walk(VA, "write", true)).toEqual(abort(4, gpa));
    expect(v.peek(VA)).toEqual(abort(4, gpa));
    expect(reference(v, VA, "read", false)).toEqual(abort(4, gpa));
    expect(v.writeCr3(RAM)).toBeNull();
    expect(v.translate(0n)).toEqual(abort(4, RAM));
    expect(v.writeCr3(builder.root)).toBeNull();
    stillWorks(v);
  });

  it("abort at level 5 in 5-level paging", async () => {
    const { v } = await fixture(5);
    v.setControl({ cr3: RAM + 0x1000n });
    expect(v.translate(VA)).toEqual(abort(5, RAM + 0x1000n + ((VA >> 48n) & 511n) * 8n));
  });

  it("abort at level 2 when a PDPTE points beyond RAM, at level 1 when a PDE does, with A set on the way down", async () => {
    const { machine, builder, v } = await fixture(4);
    const mem = machine.memory;
    const va2 = VA + (1n << 30n), va1 = VA + (2n << 21n);
    builder.map(va2, 0x1000n, "4K");
    builder.map(va1, 0x2000n, "4K");
    const pdpte = builder.entryAt(va2, 3)!, pde = builder.entryAt(va1, 2)!;
    mem.write64(pdpte, (3n << 30n) | PTE.P | PTE.RW);
    mem.write64(pde, (5n << 30n) | PTE.P | PTE.RW);
    const want2 = abort(2, (3n << 30n) + ((va2 >> 21n) & 511n) * 8n);
    const want1 = abort(1, (5n << 30n) + ((va1 >> 12n) & 511n) * 8n);
    for (const access of ACCESSES) {
      expect(v.translate(va2, access)).toEqual(want2);
      expect(v.translate(va1, access)).toEqual(want1);
      expect(reference(v, va2, access, false)).toEqual(want2);
      expect(reference(v, va1, access, false)).toEqual(want1);
    }
    expect(mem.read64(pdpte) & PTE.A).toBe(PTE.A);
    expect(mem.read64(pde) & PTE.A).toBe(PTE.A);
    const bt = v.batch();
    bt.va.set([va2, va1, VA]);
    bt.access.set([0, 1, 1]);
    expect(bt.run(3, false)).toBe(2);
    expect([0, 1, 2].map((i) => v.decodeStatus(bt.status[i]!, bt.pa[i]!))).toEqual([want2, want1, { pa: PA, pageSize: 4096, level: 1 }]);
    stillWorks(v);
  });
});

describe("table pointers with bits at or above MAXPHYADDR", () => {
  it("#PF with P|RSVD at the level of the entry, for each access kind", async () => {
    const { machine, builder, v } = await fixture(4);
    const mem = machine.memory;
    const pml4e = builder.entryAt(VA, 4)!;
    const good = mem.read64(pml4e);
    for (const bit of [46n, 51n]) {
      mem.write64(pml4e, good | (1n << bit));
      v.invlpg(VA);
      for (const access of ACCESSES) {
        for (const user of [false, true]) {
          const code = PFERR.P | PFERR.RSVD | (access === "write" ? PFERR.W : 0) | (user ? PFERR.U : 0) | (access === "fetch" ? PFERR.FETCH : 0);
          expect(v.translate(VA, access, user), `bit ${bit} ${access} user=${user}`).toEqual(pf(code, 4));
          expect(reference(v, VA, access, user)).toEqual(pf(code, 4));
        }
      }
      expect(v.peek(VA)).toMatchObject({ fault: { kind: "abort", level: 3 } });
    }
    mem.write64(pml4e, good);
    const pde = builder.entryAt(VA, 2)!;
    mem.write64(pde, mem.read64(pde) | (1n << 49n));
    v.invlpg(VA);
    expect(v.translate(VA, "write", true)).toEqual(pf(PFERR.P | PFERR.RSVD | PFERR.W | PFERR.U, 2));
  });

  it("is an address bit, not a reserved one, when MAXPHYADDR is 52: the walk aborts instead", async () => {
    const m = await createMachine({ arch: "x86_64", memoryBytes: RAM, maxPhysAddrBits: 52 });
    const b = new X86PageTableBuilder(m.memory, { levels: 4, tableBase: 0x10_0000n, tableLimit: 0x20_0000n });
    b.map(VA, PA, "4K");
    const pml4e = b.entryAt(VA, 4)!;
    const pdpt = m.memory.read64(pml4e) & 0x000f_ffff_ffff_f000n;
    m.memory.write64(pml4e, m.memory.read64(pml4e) | (1n << 51n));
    const v = m.vcpu(0);
    v.setControl({ ...LONG_MODE, cr3: b.root });
    expect(v.translate(VA)).toEqual(abort(3, (1n << 51n) + pdpt + ((VA >> 30n) & 511n) * 8n));
  });

  it("refuses a MOV to CR3 with bits above MAXPHYADDR with #GP", async () => {
    const { v, builder } = await fixture(4);
    expect(v.writeCr3(builder.root | (1n << 46n))).toEqual(GP.fault);
    expect(v.control().cr3).toBe(builder.root);
    stillWorks(v);
  });
});

describe("malformed arguments", () => {
  it("an access kind other than read, write or fetch is a TypeError from translate and translateBatch", async () => {
    const { v } = await fixture(4);
    for (const access of ["exec", "", "READ", "read "] as unknown as X86Access[]) {
      expect(() => v.translate(VA, access)).toThrow(TypeError);
      expect(() => v.translateBatch(BigUint64Array.of(VA), access, false)).toThrow(TypeError);
    }
    stillWorks(v);
  });

  it("an access kind other than read, write or fetch is a TypeError from walk", async () => {
    const { v } = await fixture(4);
    expect(() => v.walk(VA, "exec" as X86Access)).toThrow(TypeError);
    expect(() => v.walk(VA, "" as X86Access, true)).toThrow(TypeError);
    stillWorks(v);
  });

  it("an access code above 2 in a batch is refused, never a rights-free access to a supervisor page", async () => {
    const { builder, v } = await fixture(4);
    builder.map(0x7000_0000n, 0x8000n, "4K", { nx: true });
    for (const code of [3, 4, 7, 255]) {
      let refused = false;
      try {
        const out = { pa: new BigUint64Array(1), status: new Uint32Array(1) };
        v.translateBatch(BigUint64Array.of(0x7000_0000n), Uint8Array.of(code), true, out);
        refused = "fault" in v.decodeStatus(out.status[0]!, out.pa[0]!);
      } catch {
        refused = true;
      }
      expect(refused, `access code ${code}`).toBe(true);
      const bt = v.batch();
      bt.va.set([0x7000_0000n, VA]);
      bt.access.set([code, 1]);
      let first: unknown;
      try { bt.run(2, true); first = v.decodeStatus(bt.status[0]!, bt.pa[0]!); } catch (e) { first = e; }
      expect(first instanceof Error || (typeof first === "object" && first !== null && "fault" in first), `batch.run, code ${code}`).toBe(true);
    }
    stillWorks(v);
  });

  it("batch.run refuses counts outside 0..capacity with a RangeError", async () => {
    const { v } = await fixture(4);
    const bt = v.batch();
    for (const n of [bt.capacity + 1, -1, 1.5, NaN, Infinity]) expect(() => bt.run(n, false)).toThrow(RangeError);
    expect(bt.run(0, false)).toBe(0);
    expect(() => v.translateBatch(BigUint64Array.of(VA, VA), "read", false, { pa: new BigUint64Array(1), status: new Uint32Array(2) })).toThrow(RangeError);
    expect(() => v.translateBatch(BigUint64Array.of(VA, VA), Uint8Array.of(0), false)).toThrow(RangeError);
    stillWorks(v);
  });

  it("translateBatch handles more addresses than the batch capacity, in chunks", async () => {
    const { v } = await fixture(4);
    const n = v.batch().capacity * 2 + 3;
    const va = new BigUint64Array(n).map((_, i) => VA + BigInt(i % 4096));
    const out = { pa: new BigUint64Array(n), status: new Uint32Array(n) };
    expect(v.translateBatch(va, "write", true, out)).toBe(0);
    expect(out.pa[n - 1]).toBe(PA + BigInt((n - 1) % 4096));
  });

  it("setControl with CR0.PG = 1 outside long mode throws an Error, and a valid state afterwards works", async () => {
    const { v, builder } = await fixture(4);
    const bad = [
      { cr0: CR0.PE | CR0.PG, cr4: 0n, efer: 0n },
      { cr0: CR0.PE | CR0.PG, cr4: CR4.PAE, efer: 0n },
      { cr0: CR0.PE | CR0.PG, cr4: 0n, efer: EFER.LME },
    ];
    for (const c of bad) expect(() => v.setControl(c)).toThrow(/long mode/);
    v.setControl({ ...LONG_MODE, cr3: builder.root });
    stillWorks(v);
  });

  it("a negative or oversized bigint va is taken modulo 2^64", async () => {
    const { v } = await fixture(4);
    const top = { pa: 0x40_0010n, pageSize: 4096, level: 1 };
    expect(v.translate(-4096n + 0x10n, "write")).toEqual(top);
    expect(v.translate(0xffff_ffff_ffff_f010n)).toEqual(top);
    expect(v.walk(-4096n + 0x10n)).toEqual(top);
    expect(v.peek(-4096n + 0x10n)).toEqual(top);
    expect(v.translate((1n << 64n) + VA + 0x20n)).toEqual({ pa: PA + 0x20n, pageSize: 4096, level: 1 });
    expect(v.translate(-(1n << 64n) + VA)).toEqual({ pa: PA, pageSize: 4096, level: 1 });
    expect(v.translate(-(1n << 63n))).toEqual(GP);
    v.invlpg(-4096n);
    expect(v.translate(-4096n)).toEqual({ pa: 0x40_0000n, pageSize: 4096, level: 1 });
  });

  it("other refused instructions answer #GP and change nothing", async () => {
    const { v } = await fixture(4);
    const before = v.control();
    expect(v.invpcid(4, 0)).toEqual(GP.fault);
    expect(v.invpcid(0, 4096)).toEqual(GP.fault);
    expect(v.invpcid(1, 5)).toEqual(GP.fault);
    expect(v.writeCr4(before.cr4 & ~CR4.PAE)).toEqual(GP.fault);
    expect(v.writeCr4(before.cr4 | CR4.LA57)).toEqual(GP.fault);
    expect(v.writeCr0(CR0.PG)).toEqual(GP.fault);
    expect(v.control()).toEqual(before);
    stillWorks(v);
  });

  it("reserved control-register bits raise #GP (KVM kvm_is_valid_cr4, kvm_is_valid_cr0) and change nothing", async () => {
    const { v } = await fixture(4);
    const before = v.control();
    expect(v.writeCr4(before.cr4 | (1n << 15n))).toEqual(GP.fault);
    expect(v.writeCr4(before.cr4 | (1n << 63n))).toEqual(GP.fault);
    expect(v.writeCr0(before.cr0 | (1n << 32n))).toEqual(GP.fault);
    expect(v.writeCr0(before.cr0 | CR0.NW)).toEqual(GP.fault);
    expect(v.writeCr0(before.cr0 & ~CR0.PE)).toEqual(GP.fault);
    expect(v.control()).toEqual(before);
    stillWorks(v);
  });

  it("setControl refuses the same states with an error naming the register and bit, and changes nothing", async () => {
    const { v } = await fixture(4);
    const before = v.control();
    expect(() => v.setControl({ cr4: before.cr4 | (1n << 15n) })).toThrow(/^vmmu: CR4 bit 15 is reserved/);
    expect(() => v.setControl({ cr0: before.cr0 | (1n << 63n) })).toThrow(/^vmmu: CR0 bit 63 is reserved/);
    expect(() => v.setControl({ cr0: before.cr0 | CR0.NW })).toThrow(/^vmmu: CR0\.NW = 1 needs CR0\.CD = 1/);
    expect(() => v.setControl({ cr0: CR0.PG })).toThrow(/^vmmu: CR0\.PG = 1 needs CR0\.PE = 1/);
    expect(v.control()).toEqual(before);
    stillWorks(v);
  });
});
