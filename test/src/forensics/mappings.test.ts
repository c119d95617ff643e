/**
 * mappings(): one enumeration of the tables, leaves coalesced when their
 * rights are equal and their physical addresses contiguous. Checked on
 * builder tables, then on real Linux tables: every leaf against QEMU's
 * `info tlb` (x86-64), and the ranges against per-address lookups and every
 * QEMU gva2gpa row (both architectures).
 */
import { beforeAll, describe, expect, it } from "vitest";
import {
  Arm64Stage1Builder, createMachine, LINUX_TCR, lookup, mappings, X86PageTableBuilder, type AddressSpace, type Mapping,
  type MappingsStats,
} from "../../../src/index.js";
import {
  ARM64_SNAPSHOTS, X86_SNAPSHOTS, loadArm64Snapshot, loadInfoTlb, loadX86Snapshot, vcpuOf, writeTablePages, describeRealworld,
} from "../../helpers/realworld.js";

const hex = (v: bigint): string => "0x" + v.toString(16);
const brief = (m: Mapping) => ({ va: hex(m.va), pa: hex(m.pa), size: hex(m.size), kernel: m.rights.kernel, user: m.rights.user });

/** QEMU `info tlb` flag characters of an x86 leaf entry (target/i386/monitor.c print_pte). */
function tlbFlags(e: bigint): string {
  const b = (n: bigint, c: string) => ((e >> n) & 1n ? c : "-");
  return b(63n, "X") + b(8n, "G") + b(7n, "P") + b(6n, "D") + b(5n, "A") + b(4n, "C") + b(3n, "T") + b(2n, "U") + b(1n, "W");
}

/** Every range is inside the space, sorted and disjoint; sampled addresses of each agree with lookup(). */
function checkAgainstLookup(space: AddressSpace, ranges: Mapping[], samplesPerRange = 3): string[] {
  const wrong: string[] = [];
  let prevEnd = -1n;
  for (const m of ranges) {
    if (m.va < prevEnd) wrong.push(`${hex(m.va)} overlaps or is out of order`);
    prevEnd = m.va + m.size;
    const offs = [0n, m.size - 1n, (m.size / 2n) & ~0xfffn].slice(0, samplesPerRange);
    for (const off of offs) {
      const r = lookup(space, m.va + off);
      if (!r.mapped || r.pa !== m.pa + off || r.rights !== m.rights) wrong.push(`${hex(m.va + off)}: range pa ${hex(m.pa + off)} ${m.rights.kernel}/${m.rights.user}, lookup ${r.mapped ? `${hex(r.pa)} ${r.rights.kernel}/${r.rights.user}` : r.reason}`);
    }
  }
  return wrong;
}

/** The range holding `va`, if any (ranges sorted). */
function rangeAt(ranges: Mapping[], va: bigint): Mapping | undefined {
  let lo = 0, hi = ranges.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const m = ranges[mid]!;
    if (va < m.va) hi = mid - 1;
    else if (va >= m.va + m.size) lo = mid + 1;
    else return m;
  }
  return undefined;
}

describe("mappings on builder tables", () => {
  it("coalesces contiguous leaves of equal rights across page sizes, and splits on rights, pa gaps and holes", async () => {
    const m = await createMachine({ arch: "x86_64", memoryBytes: 64n << 20n });
    const pt = new X86PageTableBuilder(m.memory, { tableBase: 0x10_0000n, tableLimit: 0x40_0000n });
    pt.mapRange(0x1f_e000n, 0x3f_e000n, 2, "4K", { write: true });   // two 4K pages, then
    pt.map(0x20_0000n, 0x40_0000n, "2M", { write: true });            // a contiguous 2M page: one range
    pt.map(0x40_0000n, 0x60_0000n, "4K");                              // read-only: new range
    pt.map(0x40_1000n, 0x90_0000n, "4K");                              // pa gap: new range
    pt.map(0x40_3000n, 0x90_2000n, "4K");                              // va hole: new range
    const space = { arch: "x86_64" as const, memory: m.memory, root: pt.root };
    const stats = {} as MappingsStats;
    const ranges = mappings(space, {}, stats);
    expect(ranges.map(brief)).toEqual([
      { va: "0x1fe000", pa: "0x3fe000", size: "0x202000", kernel: "rwx", user: "---" },
      { va: "0x400000", pa: "0x600000", size: "0x1000", kernel: "r-x", user: "---" },
      { va: "0x401000", pa: "0x900000", size: "0x1000", kernel: "r-x", user: "---" },
      { va: "0x403000", pa: "0x902000", size: "0x1000", kernel: "r-x", user: "---" },
    ]);
    expect(stats).toEqual({ tables: 5, leaves: 6, unreadable: 0 });
    const leaves = mappings(space, { coalesce: false });
    expect(leaves).toHaveLength(6);
    expect(leaves[2]).toMatchObject({ va: 0x20_0000n, size: 2n << 20n, leaf: { level: 2 } });
    for (const l of leaves) expect(l.leaf!.value).toBe(m.memory.read64(l.leaf!.entryAddress));
    expect(checkAgainstLookup(space, ranges)).toEqual([]);
  });

  it("never merges across the canonical hole, and sign-extends upper-half addresses", async () => {
    const m = await createMachine({ arch: "x86_64", memoryBytes: 16n << 20n });
    const pt = new X86PageTableBuilder(m.memory, { tableBase: 0x10_0000n, tableLimit: 0x20_0000n });
    pt.map(0x7fff_ffff_f000n, 0x50_0000n);
    pt.map(0xffff_8000_0000_0000n, 0x50_1000n);
    const ranges = mappings({ arch: "x86_64", memory: m.memory, root: pt.root });
    expect(ranges.map((r) => hex(r.va))).toEqual(["0x7ffffffff000", "0xffff800000000000"]);
  });

  it("counts and skips a table pointer outside memory", async () => {
    const m = await createMachine({ arch: "x86_64", memoryBytes: 16n << 20n });
    const pt = new X86PageTableBuilder(m.memory, { tableBase: 0x10_0000n, tableLimit: 0x20_0000n });
    pt.map(0x1000n, 0x50_0000n);
    m.memory.write64(pt.root + 8n * 3n, 0x7000_0000_0000n | 7n);
    const stats = {} as MappingsStats;
    expect(mappings({ arch: "x86_64", memory: m.memory, root: pt.root }, {}, stats)).toHaveLength(1);
    expect(stats.unreadable).toBe(1);
  });

  it("folds arm64 table attributes and lists only the TTBR's half, sign-extended for TTBR1", async () => {
    const m = await createMachine({ arch: "arm64", memoryBytes: 16n << 20n, ramBase: 0x4000_0000n });
    const pt = new Arm64Stage1Builder(m.memory, { tableBase: 0x4010_0000n, tableLimit: 0x4020_0000n });
    pt.mapRange(0xffff_8000_0000_0000n, 0x4080_0000n, 3, "4K", { uxn: true });
    pt.map(0x1000n, 0x4090_0000n, "4K", { el0: true }, { apTable: 2, uxnTable: true });
    const lo = { arch: "arm64" as const, memory: m.memory, root: pt.ttbr(), ttbr: 0 as const, tcr: LINUX_TCR };
    // One set of tables seen through TTBR0 and through TTBR1: the same leaves at VAs of either half.
    expect(mappings(lo).map(brief)).toEqual([
      { va: "0x1000", pa: "0x40900000", size: "0x1000", kernel: "r-x", user: "r--" },
      { va: "0x800000000000", pa: "0x40800000", size: "0x3000", kernel: "rwx", user: "---" },
    ]);
    expect(mappings({ ...lo, ttbr: 1 }).map(brief)).toEqual([
      { va: "0xffff000000001000", pa: "0x40900000", size: "0x1000", kernel: "r-x", user: "r--" },
      { va: "0xffff800000000000", pa: "0x40800000", size: "0x3000", kernel: "rwx", user: "---" },
    ]);
    expect(mappings({ ...lo, tcr: LINUX_TCR | (1n << 7n) })).toEqual([]);
  });

  it("names a bad option", async () => {
    const m = await createMachine({ arch: "x86_64", memoryBytes: 16n << 20n });
    expect(() => mappings({ arch: "x86_64", memory: m.memory, root: 0n }, { coalesce: 1 as unknown as boolean })).toThrow(/vmmu: mappings: opts.coalesce must be a boolean/);
    expect(() => mappings({ arch: "x86_64", memory: m.memory, root: 0n, la57: "yes" as unknown as boolean })).toThrow(/vmmu: mappings: space.la57 must be a boolean/);
  });
});

describeRealworld("x86_64", "mappings of real Linux x86-64 tables", () => {
  for (const name of X86_SNAPSHOTS) {
    describe(name, () => {
      let snap: ReturnType<typeof loadX86Snapshot>;
      let memory: AddressSpace["memory"];
      beforeAll(async () => {
        snap = loadX86Snapshot(name);
        const m = await createMachine({ arch: "x86_64", memoryBytes: snap.ramSize, ramBase: snap.ramBase, eagerBytes: 0n });
        writeTablePages(m.memory, snap.pages);
        memory = m.memory;
      });

      it("lists every leaf of each vCPU's live CR3 exactly as QEMU's info tlb: va, pa and all nine flags", () => {
        for (const cpu of [0, 1]) {
          const tlb = loadInfoTlb(snap, cpu);
          const leaves = mappings({ arch: "x86_64", memory, root: vcpuOf(snap, cpu).cr3 }, { coalesce: false });
          const ours = leaves.map((l) => `${l.va.toString(16).padStart(16, "0")}: ${l.pa.toString(16).padStart(16, "0")} ${tlbFlags(l.leaf!.value)}`);
          const qemu = tlb.map((t) => `${t.va.toString(16).padStart(16, "0")}: ${t.pa.toString(16).padStart(16, "0")} ${t.flags}`);
          expect(ours.length).toBe(qemu.length);
          expect(ours.filter((l, i) => l !== qemu[i]).slice(0, 10)).toEqual([]);
        }
      });

      it("coalesced ranges agree with lookup() inside each range and with every QEMU gva2gpa row", () => {
        for (const cpu of [0, 1]) {
          const space = { arch: "x86_64" as const, memory, root: vcpuOf(snap, cpu).cr3 };
          const ranges = mappings(space);
          const leaves = mappings(space, { coalesce: false });
          expect(ranges.length).toBeLessThan(leaves.length);
          expect(ranges.reduce((s, r) => s + r.size, 0n)).toBe(leaves.reduce((s, r) => s + r.size, 0n));
          expect(checkAgainstLookup(space, ranges)).toEqual([]);
          const wrong: string[] = [];
          for (const row of snap.refs.filter((r) => r.cpu === cpu)) {
            const m = rangeAt(ranges, row.va);
            const got = m === undefined ? null : m.pa + (row.va - m.va);
            if (got !== row.gpa) wrong.push(`${hex(row.va)}: qemu ${row.gpa === null ? "null" : hex(row.gpa)}, ranges ${got === null ? "null" : hex(got)}`);
          }
          expect(wrong.slice(0, 10)).toEqual([]);
        }
      });
    });
  }
});

describeRealworld("arm64", "mappings of real Linux arm64 tables", () => {
  for (const name of ARM64_SNAPSHOTS) {
    it(`${name}: both halves of each vCPU agree with lookup() and with every PSTATE-override gva2gpa row`, async () => {
      const snap = loadArm64Snapshot(name);
      const m = await createMachine({ arch: "arm64", memoryBytes: snap.ramSize, ramBase: snap.ramBase, eagerBytes: 0n });
      writeTablePages(m.memory, snap.pages);
      for (const v of snap.vcpus) {
        const halves = ([0, 1] as const).map((ttbr) => {
          const space = { arch: "arm64" as const, memory: m.memory, root: ttbr ? v.ttbr1 : v.ttbr0, ttbr, tcr: v.tcr };
          const ranges = mappings(space);
          expect(checkAgainstLookup(space, ranges)).toEqual([]);
          return ranges;
        });
        const all = [...halves[0]!, ...halves[1]!];
        const wrong: string[] = [];
        for (const row of snap.refs.filter((r) => r.cpu === v.cpu && r.pstateOverride !== null)) {
          const va = (row.va >> 55n) & 1n ? row.va | 0xff00_0000_0000_0000n : row.va & 0x00ff_ffff_ffff_ffffn; // TBI: the tag is ignored
          const r = rangeAt(all, va);
          const got = r === undefined ? null : r.pa + (va - r.va);
          if (got !== row.gpa) wrong.push(`${hex(row.va)}: qemu ${row.gpa === null ? "null" : hex(row.gpa)}, ranges ${got === null ? "null" : hex(got)}`);
        }
        expect(wrong.slice(0, 10)).toEqual([]);
      }
    });
  }
});
