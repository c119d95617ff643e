// The TLB mechanism (assembly/tlb.ts): generation tags, rollover, large-page
// pieces, live accounting. Instruction-level semantics are in test/src/x86/vcpu.test.ts.

import { describe, it, expect } from "vitest";
import { X86PageTableBuilder, LONG_MODE, CR4, CR3_NOFLUSH } from "../../src/index.js";
import { x86Fixture } from "../helpers/machine.js";

const PCIDE_ON = { ...LONG_MODE, cr4: LONG_MODE.cr4 | CR4.PCIDE | CR4.PGE };

describe("TLB generation tags", () => {
  it("exhausting the 16-bit tag space clears the array once and never resurrects a dead entry", async () => {
    const { machine, builder } = await x86Fixture({ tlbEntries: 256 });
    const leaf = builder.map(0x40_0000n, 0x20_0000n, "4K", { user: true });
    const v = machine.vcpu(0);
    v.setControl({ ...PCIDE_ON, cr3: builder.root | 1n });
    expect(v.translate(0x40_0000n, "read", true)).toMatchObject({ pa: 0x20_0000n });
    machine.memory.write64(leaf, X86PageTableBuilder.leaf(0x30_0000n, "4K", { user: true }));
    // PCID 1's entry is now stale; flushing PCID 2 over and over burns tags.
    for (let i = 0; i < 70_000; i++) v.writeCr3(builder.root | 2n);
    v.writeCr3(builder.root | 1n | CR3_NOFLUSH);
    const s = v.tlbStats();
    expect(s.rollovers).toBeGreaterThanOrEqual(1);
    // A rollover may drop PCID 1's stale entry (allowed) but must never show a
    // translation other than the stale one or the fresh one.
    const r = v.translate(0x40_0000n, "read", true);
    expect(["0x200000", "0x300000"]).toContain("pa" in r ? "0x" + r.pa.toString(16) : "fault");
    v.writeCr3(builder.root | 1n);
    expect(v.translate(0x40_0000n, "read", true)).toMatchObject({ pa: 0x30_0000n });
  });

  it("keeps live counts exact through fills, evictions and flushes", async () => {
    const { machine, builder } = await x86Fixture({ tlbEntries: 16 });
    builder.mapRange(0x40_0000n, 0x20_0000n, 64, "4K", { user: true });
    const v = machine.vcpu(0);
    v.setControl({ ...PCIDE_ON, cr3: builder.root | 1n });
    for (let i = 0n; i < 64n; i++) v.translate(0x40_0000n + i * 4096n, "read", true);
    const s = v.tlbStats();
    expect(s.fills).toBe(64);
    expect(s.live).toBeLessThanOrEqual(16);
    expect(s.live + s.evictions).toBe(64);
    v.writeCr3(builder.root | 1n);
    const after = v.tlbStats();
    expect(after.live).toBe(0);
    expect(after.dropped - s.dropped).toBe(s.live);
  });
});

describe("large pages cached as 4 KiB pieces", () => {
  it("INVLPG anywhere in a 1 GiB page drops every piece, by scan when the TLB is small", async () => {
    const { machine, builder } = await x86Fixture({ tlbEntries: 1024 });
    const leaf = builder.map(0x4000_0000n, 0x4000_0000n, "1G", { write: true });
    const v = machine.vcpu(0);
    v.setControl({ ...LONG_MODE, cr3: builder.root });
    const vas = [0x4000_0000n, 0x4123_4000n, 0x7fff_f000n];
    for (const va of vas) expect(v.translate(va, "read", false)).toMatchObject({ pageSize: 1 << 30, level: 3 });
    machine.memory.write64(leaf, X86PageTableBuilder.leaf(0x8000_0000n, "1G", { write: true }));
    for (const va of vas) expect(v.translate(va, "read", false)).toMatchObject({ pa: va });
    const before = v.tlbStats();
    v.invlpg(0x5555_5000n);
    const after = v.tlbStats();
    expect(after.flushProbes - before.flushProbes).toBeLessThanOrEqual(1024 + 1 + 512 * 2);
    for (const va of vas) expect(v.translate(va, "read", false)).toMatchObject({ pa: va + 0x4000_0000n });
  });

  it("INVLPG of a 4 KiB page costs one probe per context when no large page is cached", async () => {
    const { machine, builder } = await x86Fixture();
    builder.map(0x40_0000n, 0x20_0000n, "4K");
    const v = machine.vcpu(0);
    v.setControl({ ...LONG_MODE, cr3: builder.root });
    v.translate(0x40_0000n, "read", false);
    const before = v.tlbStats();
    v.invlpg(0x40_0000n);
    const after = v.tlbStats();
    expect(after.flushProbes - before.flushProbes).toBe(1);
    expect(after.dropped - before.dropped).toBe(1);
  });

  it("a 2 MiB page filled piece by piece is removed whole by INVLPG of any address in it", async () => {
    const { machine, builder } = await x86Fixture();
    const leaf = builder.map(0x20_0000n, 0x60_0000n, "2M", { write: true });
    const v = machine.vcpu(0);
    v.setControl({ ...LONG_MODE, cr3: builder.root });
    for (let i = 0n; i < 512n; i += 37n) v.translate(0x20_0000n + i * 4096n, "read", false);
    const live = v.tlbStats().live;
    expect(live).toBe(14);
    machine.memory.write64(leaf, 0n);
    v.invlpg(0x3f_f000n);
    expect(v.tlbStats().live).toBe(0);
    expect(v.translate(0x20_0000n, "read", false)).toMatchObject({ fault: { vector: 14, level: 2 } });
  });
});

describe("the record's cached slot tag (tlb.ts slotTagCached)", () => {
  // A single translation finds its slot's tag through the record's cache; each
  // case serves a stale entry first (the cache is in use), then checks the
  // invalidation that must retire the cached tag.
  async function staleEntry() {
    const { machine, builder } = await x86Fixture();
    const leaf = builder.map(0x40_0000n, 0x20_0000n, "4K", { user: true });
    const v = machine.vcpu(0);
    v.setControl({ ...PCIDE_ON, cr3: builder.root | 1n });
    expect(v.translate(0x40_0000n, "read", true)).toMatchObject({ pa: 0x20_0000n });
    machine.memory.write64(leaf, X86PageTableBuilder.leaf(0x30_0000n, "4K", { user: true }));
    expect(v.translate(0x40_0000n, "read", true)).toMatchObject({ pa: 0x20_0000n });
    return v;
  }

  it("INVPCID of the current PCID (no CR3 write) gives the slot a new tag the next translation uses", async () => {
    const v = await staleEntry();
    expect(v.invpcid(1, 1)).toBeNull();
    expect(v.translate(0x40_0000n, "read", true)).toMatchObject({ pa: 0x30_0000n });
    // The fresh entry is cached under the new tag and served from it.
    const before = v.tlbStats();
    expect(v.translate(0x40_0000n, "read", true)).toMatchObject({ pa: 0x30_0000n });
    expect(v.tlbStats().hits - before.hits).toBe(1);
  });

  it("INVPCID of all contexts (the epoch moves) is seen by the next translation", async () => {
    const v = await staleEntry();
    expect(v.invpcid(2, 0)).toBeNull();
    expect(v.translate(0x40_0000n, "read", true)).toMatchObject({ pa: 0x30_0000n });
  });

  it("INVPCID of all non-global contexts is seen by the next translation", async () => {
    const v = await staleEntry();
    expect(v.invpcid(3, 0)).toBeNull();
    expect(v.translate(0x40_0000n, "read", true)).toMatchObject({ pa: 0x30_0000n });
  });

  it("the number fast path and translate() share the cache: a flush between them is seen by both", async () => {
    const v = await staleEntry();
    expect(v.translateFast(0x40_0000, 0, 0, 1)).toBe(0x20_0000);
    expect(v.invpcid(1, 1)).toBeNull();
    expect(v.translateFast(0x40_0000, 0, 0, 1)).toBe(0x30_0000);
    expect(v.translate(0x40_0000n, "read", true)).toMatchObject({ pa: 0x30_0000n });
  });
});
