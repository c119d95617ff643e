/**
 * lookup() by explicit root: every level's entry address and value, the page
 * size and the folded rights, on tables the builders write, then on real
 * Linux tables against every QEMU gva2gpa row (x86-64 and arm64).
 * Intel SDM Vol.3A §4.5/§4.6; Arm ARM D8.2–D8.4.
 */
import { beforeAll, describe, expect, it } from "vitest";
import {
  Arm64Stage1Builder, createMachine, lookup, LINUX_TCR, X86PageTableBuilder, type Arm64Vcpu, type LookupResult, type Machine,
  type X86Vcpu,
} from "../../../src/index.js";
import {
  ARM64_SNAPSHOTS, X86_SNAPSHOTS, loadArm64Snapshot, loadX86Snapshot, writeTablePages, describeRealworld,
} from "../../helpers/realworld.js";

const hex = (v: bigint | null | undefined): string => (v === null || v === undefined ? "null" : "0x" + v.toString(16));
const paOf = (r: LookupResult): bigint | null => (r.mapped ? r.pa : null);

describe("lookup on x86-64 tables", () => {
  let m: Machine<X86Vcpu>;
  let pt: X86PageTableBuilder;
  beforeAll(async () => {
    m = await createMachine({ arch: "x86_64", memoryBytes: 64n << 20n });
    pt = new X86PageTableBuilder(m.memory, { tableBase: 0x10_0000n, tableLimit: 0x40_0000n });
    pt.map(0x40_0000n, 0x200_0000n, "4K", { user: true, write: true });
    pt.map(0x60_0000n, 0x280_0000n, "2M", { user: true, nx: true, global: true });
    pt.map(0xffff_ffff_8000_0000n, 0x0n, "1G", { write: true, global: true });
  });
  const space = () => ({ arch: "x86_64" as const, memory: m.memory, root: pt.root | 0x18n });

  it("reports the four entries of a 4 KiB page, root first, and the translation", () => {
    const r = lookup(space(), 0x40_0123n);
    expect(r).toMatchObject({ mapped: true, pa: 0x200_0123n, pageSize: 4096, level: 1, rights: { kernel: "rwx", user: "rwx" }, global: false });
    expect(r.entries.map((e) => e.level)).toEqual([4, 3, 2, 1]);
    expect(r.entries[0]!.entryAddress).toBe(pt.root);
    for (const e of r.entries) expect(e.value).toBe(m.memory.read64(e.entryAddress));
    expect(r.entries[3]!.entryAddress).toBe(pt.leafGpa(0x40_0000n));
  });

  it("stops at the PDE of a 2 MiB page and at the PDPTE of a 1 GiB page, with their rights and G", () => {
    expect(lookup(space(), 0x7f_ffffn)).toMatchObject({ mapped: true, pa: 0x29f_ffffn, pageSize: 2 << 20, level: 2, rights: { kernel: "r--", user: "r--" }, global: true });
    const k = lookup(space(), 0xffff_ffff_8123_4567n);
    expect(k).toMatchObject({ mapped: true, pa: 0x123_4567n, pageSize: 1 << 30, level: 3, rights: { kernel: "rwx", user: "---" } });
    expect(k.entries).toHaveLength(2);
  });

  it("folds R/W, U/S and XD over the levels, and ignores XD without nxe", async () => {
    const mm = await createMachine({ arch: "x86_64", memoryBytes: 16n << 20n });
    const p = new X86PageTableBuilder(mm.memory, { tableBase: 0x10_0000n, tableLimit: 0x20_0000n, tableFlags: 0x1n | (1n << 63n) });
    p.map(0x1000n, 0x5000n, "4K", { user: true, write: true });
    const s = { arch: "x86_64" as const, memory: mm.memory, root: p.root };
    expect(lookup(s, 0x1000n)).toMatchObject({ rights: { kernel: "r--", user: "---" } });
    expect(lookup({ ...s, nxe: false }, 0x1000n)).toMatchObject({ rights: { kernel: "r-x", user: "---" } });
  });

  it("says why and where there is no mapping", () => {
    expect(lookup(space(), 0x0000_8000_0000_0000n)).toEqual({ va: 0x0000_8000_0000_0000n, mapped: false, reason: "non-canonical", entries: [] });
    const np = lookup(space(), 0x40_1000n);
    expect(np).toMatchObject({ mapped: false, reason: "not-present", level: 1 });
    expect(np.entries).toHaveLength(4);
    expect(lookup(space(), 0x8000_0000_0000n - 1n)).toMatchObject({ mapped: false, reason: "not-present", level: 4 });
    m.memory.write64(pt.root + 8n * 5n, 0x7000_0000_0000n | 0x7n);
    const out = lookup(space(), 5n << 39n);
    expect(out).toMatchObject({ mapped: false, reason: "outside-memory", level: 3, entryAddress: 0x7000_0000_0000n });
    expect(out.entries).toHaveLength(1);
  });

  it("walks five levels with la57", async () => {
    const mm = await createMachine({ arch: "x86_64", memoryBytes: 16n << 20n });
    const p = new X86PageTableBuilder(mm.memory, { levels: 5, tableBase: 0x10_0000n, tableLimit: 0x20_0000n });
    p.map(0xff00_1234_5678_9000n, 0x7000n);
    const r = lookup({ arch: "x86_64", memory: mm.memory, root: p.root, la57: true }, 0xff00_1234_5678_9abcn);
    expect(r).toMatchObject({ mapped: true, pa: 0x7abcn, level: 1 });
    expect(r.entries.map((e) => e.level)).toEqual([5, 4, 3, 2, 1]);
    expect(lookup({ arch: "x86_64", memory: mm.memory, root: p.root }, 0xff00_1234_5678_9abcn).mapped).toBe(false);
  });

  it("masks entry addresses to MAXPHYADDR when told", () => {
    m.memory.write64(pt.root + 8n * 6n, (1n << 50n) | BigInt(pt.root) | 0x7n);
    const va = 6n << 39n;
    expect(lookup(space(), va)).toMatchObject({ mapped: false, reason: "outside-memory" });
    const masked = lookup({ ...space(), maxPhysAddrBits: 46 }, va);
    expect(masked.entries[1]!.entryAddress).toBe(pt.root);
  });

  it("names the bad argument", () => {
    expect(() => lookup({ ...space(), root: -1n }, 0n)).toThrow(/vmmu: lookup: space.root must be/);
    expect(() => lookup(space(), 5 as unknown as bigint)).toThrow(/vmmu: lookup: va must be a bigint/);
    expect(() => lookup({ ...space(), arch: "riscv" as "x86_64" }, 0n)).toThrow(/vmmu: lookup: space.arch must be one of/);
    expect(() => lookup({ ...space(), memory: {} as never }, 0n)).toThrow(/vmmu: lookup: space.memory must be guest memory/);
    expect(() => lookup({ ...space(), ttbr: 1 } as never, 0n)).toThrow(/space.ttbr is an arm64 field/);
    expect(() => lookup({ ...space(), maxPhysAddrBits: 60 }, 0n)).toThrow(/space.maxPhysAddrBits must be an integer 32..52/);
  });
});

describe("lookup on arm64 stage-1 tables", () => {
  let m: Machine<Arm64Vcpu>;
  let pt: Arm64Stage1Builder;
  beforeAll(async () => {
    m = await createMachine({ arch: "arm64", memoryBytes: 64n << 20n, ramBase: 0x4000_0000n });
    pt = new Arm64Stage1Builder(m.memory, { tableBase: 0x4010_0000n, tableLimit: 0x4040_0000n });
    pt.map(0x40_0000n, 0x4200_0000n, "4K", { el0: true, pxn: true, nG: true });
    pt.map(0x60_0000n, 0x4280_0000n, "2M", { el0: true, uxn: true, pxn: true });
    pt.map(0xffff_0000_0800_0000n, 0x4100_0000n, "4K", { readOnly: true, uxn: true });
    pt.map(0xffff_0000_0801_0000n, 0x4101_0000n, "4K", { readOnly: true, dbm: true, uxn: true, pxn: true });
    pt.map(0x1_0000_0000n, 0x4300_0000n, "4K", { el0: true }, { apTable: 2, pxnTable: true });
  });
  const lo = () => ({ arch: "arm64" as const, memory: m.memory, root: pt.ttbr(5), ttbr: 0 as const, tcr: LINUX_TCR });
  const hi = () => ({ ...lo(), ttbr: 1 as const });

  it("reports the four descriptors of a page, level 0 first", () => {
    const r = lookup(lo(), 0x40_0abcn);
    expect(r).toMatchObject({ mapped: true, pa: 0x4200_0abcn, pageSize: 4096, level: 3, rights: { kernel: "rw-", user: "rwx" }, global: false });
    expect(r.entries.map((e) => e.level)).toEqual([0, 1, 2, 3]);
    expect(r.entries[0]!.entryAddress).toBe(pt.root);
    for (const e of r.entries) expect(e.value).toBe(m.memory.read64(e.entryAddress));
  });

  it("folds AP, XN, APTable and XNTable; an EL0-writable page is not EL1-executable; DBM is writable under TCR.HA+HD", () => {
    expect(lookup(lo(), 0x7f_ffffn)).toMatchObject({ pageSize: 2 << 20, level: 2, rights: { kernel: "rw-", user: "rw-" }, global: true });
    expect(lookup(hi(), 0xffff_0000_0800_0010n)).toMatchObject({ pa: 0x4100_0010n, rights: { kernel: "r-x", user: "---" } });
    expect(lookup(hi(), 0xffff_0000_0801_0000n)).toMatchObject({ rights: { kernel: "rw-", user: "---" } });
    expect(lookup({ ...hi(), tcr: undefined }, 0xffff_0000_0801_0000n)).toMatchObject({ rights: { kernel: "r--", user: "---" } });
    expect(lookup(lo(), 0x1_0000_0000n)).toMatchObject({ rights: { kernel: "r--", user: "r-x" } });
  });

  it("checks the half, the range (with TBI) and EPD", () => {
    expect(lookup(lo(), 0xffff_0000_0800_0000n)).toMatchObject({ mapped: false, reason: "other-half", entries: [] });
    expect(lookup(hi(), 0x40_0000n)).toMatchObject({ mapped: false, reason: "other-half" });
    expect(lookup(lo(), 0x0001_0000_0040_0000n)).toMatchObject({ mapped: false, reason: "non-canonical" });
    expect(lookup(lo(), 0x5a00_0000_0040_0000n)).toMatchObject({ mapped: true, pa: 0x4200_0000n });
    expect(lookup({ ...lo(), tcr: undefined }, 0x5a00_0000_0040_0000n)).toMatchObject({ mapped: false, reason: "non-canonical" });
    expect(lookup({ ...lo(), tcr: undefined, tbi: true }, 0x5a00_0000_0040_0000n)).toMatchObject({ mapped: true });
    expect(lookup({ ...lo(), tcr: LINUX_TCR | (1n << 7n) }, 0x40_0000n)).toMatchObject({ mapped: false, reason: "disabled" });
    expect(lookup(lo(), 0x40_1000n)).toMatchObject({ mapped: false, reason: "not-present", level: 3 });
  });

  it("starts at level 1 for TnSZ 25 and indexes its smaller start table", async () => {
    const mm = await createMachine({ arch: "arm64", memoryBytes: 16n << 20n, ramBase: 0x4000_0000n });
    const p = new Arm64Stage1Builder(mm.memory, { tableBase: 0x4010_0000n, tableLimit: 0x4020_0000n, tsz: 25 });
    p.map(0x7f_c000_0000n, 0x4080_0000n, "4K");
    const tcr = (LINUX_TCR & ~0x3fn) | 25n;
    const r = lookup({ arch: "arm64", memory: mm.memory, root: p.ttbr(), ttbr: 0, tcr }, 0x7f_c000_0042n);
    expect(r).toMatchObject({ mapped: true, pa: 0x4080_0042n });
    expect(r.entries.map((e) => e.level)).toEqual([1, 2, 3]);
    expect(r.entries[0]!.entryAddress).toBe(p.root + 0x1ffn * 8n);
    expect(lookup({ arch: "arm64", memory: mm.memory, root: p.ttbr(), ttbr: 0, tsz: 25 }, 0x80_0000_0000n).mapped).toBe(false);
  });

  it("names the bad argument", () => {
    expect(() => lookup({ ...lo(), ttbr: 2 as 0 }, 0n)).toThrow(/vmmu: lookup: space.ttbr must be 0 or 1/);
    expect(() => lookup({ ...lo(), tsz: 20 }, 0n)).toThrow(/space.tsz and space.tbi come from space.tcr/);
    expect(() => lookup({ ...lo(), tcr: LINUX_TCR | (1n << 14n) }, 0n)).toThrow(/TG0 = 1 does not select the 4 KiB granule/);
    expect(() => lookup({ ...lo(), tcr: undefined, tsz: 12 }, 0n)).toThrow(/space.tsz must be an integer 16..39/);
    expect(() => lookup({ ...lo(), la57: true } as never, 0n)).toThrow(/space.la57 is an x86_64 field/);
  });
});

describeRealworld("x86_64", "lookup on real Linux x86-64 tables against QEMU gva2gpa", () => {
  for (const name of X86_SNAPSHOTS) {
    it(`${name}: every row of both vCPUs, with consistent per-level entries`, async () => {
      const snap = loadX86Snapshot(name);
      const m = await createMachine({ arch: "x86_64", memoryBytes: snap.ramSize, ramBase: snap.ramBase, eagerBytes: 0n });
      writeTablePages(m.memory, snap.pages);
      const wrong: string[] = [];
      for (const row of snap.refs) {
        const r = lookup({ arch: "x86_64", memory: m.memory, root: row.cr3 }, row.va);
        if (paOf(r) !== row.gpa) wrong.push(`cpu${row.cpu} ${hex(row.va)}: qemu ${hex(row.gpa)}, lookup ${hex(paOf(r))}`);
        if (r.mapped && r.entries.length !== 5 - r.level) wrong.push(`${hex(row.va)}: ${r.entries.length} entries for a level-${r.level} leaf`);
        for (const e of r.entries) if (m.memory.read64(e.entryAddress) !== e.value) wrong.push(`${hex(row.va)}: entry ${hex(e.entryAddress)}`);
      }
      expect(wrong.slice(0, 20)).toEqual([]);
      expect(snap.refs.length).toBe(snap.verification.ref_total);
      await m.dispose?.();
    });
  }
});

describeRealworld("arm64", "lookup on real Linux arm64 tables against QEMU gva2gpa", () => {
  for (const name of ARM64_SNAPSHOTS) {
    it(`${name}: every row, live and PSTATE-override passes, the row's EL and PAN applied to the folded rights`, async () => {
      const snap = loadArm64Snapshot(name);
      const m = await createMachine({ arch: "arm64", memoryBytes: snap.ramSize, ramBase: snap.ramBase, eagerBytes: 0n });
      writeTablePages(m.memory, snap.pages);
      const wrong: string[] = [];
      let refusedByRights = 0;
      for (const row of snap.refs) {
        const ttbr = (row.va >> 55n) & 1n ? 1 as const : 0 as const;
        const r = lookup({ arch: "arm64", memory: m.memory, root: ttbr ? row.ttbr1 : row.ttbr0, ttbr, tcr: row.tcr }, row.va);
        let got = paOf(r);
        if (r.mapped) {
          // A data read (QEMU gva2gpa): EL0 needs user read and, under TCR.E0PD1, a TTBR0 address; EL1 with PAN refuses user-readable pages.
          const userRead = r.rights.user[0] === "r";
          const e0pd = ttbr === 1 ? (row.tcr >> 56n) & 1n : (row.tcr >> 55n) & 1n;
          const allowed = row.el === 0 ? userRead && e0pd === 0n : !(row.pan && userRead);
          if (!allowed) { got = null; refusedByRights++; }
        }
        if (got !== row.gpa) wrong.push(`cpu${row.cpu} el${row.el} pan${Number(row.pan)} ${hex(row.va)}: qemu ${hex(row.gpa)}, lookup ${hex(got)}`);
      }
      expect(wrong.slice(0, 20)).toEqual([]);
      expect(refusedByRights).toBeGreaterThan(0);
      expect(snap.refs.length).toBe(snap.verification.ref_total);
      await m.dispose?.();
    });
  }
});
