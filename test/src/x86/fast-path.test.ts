/**
 * The Number fast path (X86Vcpu.translateFast) and what an embedder builds on
 * it: a page cache of its own, as v86 keeps, filled from results that carry
 * RIGHTS_CACHED and kept while the vCPU's invalidation epoch holds. The rule
 * under test: such a cache never serves a translation the core would not —
 * after any sequence of table edits (never invalidated by the test itself),
 * MOV CR3 with and without NOFLUSH, INVLPG, INVPCID, CR0/CR4/RFLAGS/PKRU
 * changes and TLB pressure.
 */
import { describe, expect, it } from "vitest";
import {
  CR0, CR3_NOFLUSH, CR4, LONG_MODE, PTE, RFLAGS, RIGHTS, X86PageTableBuilder, createMachine, type X86Vcpu,
} from "../../../src/index.js";
import { fuzzCount, Rng, seedNote, testSeed } from "../../helpers/rng.js";

const K4 = 0x1000n, M2 = 0x20_0000n;
const USER = 0x0000_0040_0000_0000n;
const KERN = 0xffff_8880_0000_0000n;

async function machine(tlbEntries = 4096) {
  const m = await createMachine({ arch: "x86_64", memoryBytes: 64 << 20, tlbEntries });
  const spaces = [0, 1].map((i) => new X86PageTableBuilder(m.memory, { tableBase: 0x10_0000n + BigInt(i) * 0x40_0000n, tableLimit: 0x50_0000n + BigInt(i) * 0x40_0000n }));
  return { m, v: m.vcpu(0), spaces };
}

const lo = (va: bigint) => Number(va & 0xffff_ffffn);
const hi = (va: bigint) => Number(va >> 32n);

describe("translateFast", () => {
  it("returns the pa as a Number, the rights word and the same answer as translate()", async () => {
    const { v, spaces: [pt] } = await machine();
    pt!.map(USER, 0x200_0000n, "4K", { user: true, write: true, dirty: true, accessed: true });
    pt!.map(KERN, 0x220_0000n, "2M", { global: true, nx: true });
    v.setControl({ ...LONG_MODE, cr4: LONG_MODE.cr4 | CR4.PGE, cr3: pt!.root });
    expect(v.translateFast(lo(USER + 0x123n), hi(USER), 1, 1)).toBe(0x200_0123);
    const r = v.lastRights();
    expect(r & (RIGHTS.RU | RIGHTS.WU | RIGHTS.RS | RIGHTS.WS | RIGHTS.DIRTY | RIGHTS.CACHED)).toBe(RIGHTS.RU | RIGHTS.WU | RIGHTS.RS | RIGHTS.WS | RIGHTS.DIRTY | RIGHTS.CACHED);
    expect((r >> RIGHTS.PSHIFT_SHIFT) & 31).toBe(12);
    expect(v.translateFast(lo(KERN + 0x1234n), hi(KERN), 0, 0)).toBe(0x220_1234);
    const k = v.lastRights();
    expect(k & (RIGHTS.RU | RIGHTS.XS | RIGHTS.XU)).toBe(0);
    expect(k & (RIGHTS.RS | RIGHTS.GLOBAL)).toBe(RIGHTS.RS | RIGHTS.GLOBAL);
    expect((k >> RIGHTS.PSHIFT_SHIFT) & 31).toBe(21);
    expect((k >> RIGHTS.LEVEL_SHIFT) & 7).toBe(2);
    expect(v.translateFast(lo(KERN), hi(KERN), 0, 1)).toBe(-1);
    const t = v.translate(KERN, "read", true);
    expect("fault" in t && v.lastFault()).toEqual("fault" in t && t.fault);
    expect(v.lastFault()).toMatchObject({ kind: "page-fault", vector: 14 });
  });

  it("refuses arguments that are not numbers of the right range, naming them", async () => {
    const { v } = await machine();
    expect(() => v.translateFast("0x1000" as unknown as number, 0, 0, 0)).toThrow(/^vmmu: vaLo/);
    expect(() => v.translateFast(0, 2 ** 32, 0, 0)).toThrow(/^vmmu: vaHi/);
    expect(() => v.translateFast(0, 0, 3 as 0, 0)).toThrow(/^vmmu: access/);
    expect(() => v.translateFast(0, 0, 0, "false" as unknown as 0)).toThrow(/^vmmu: user/);
  });

  it("changes the invalidation epoch on INVLPG, MOV CR3 and control-register writes, and not on a TLB hit", async () => {
    const { v, spaces: [pt] } = await machine();
    pt!.map(USER, 0x200_0000n, "4K", { user: true, write: true });
    v.setControl({ ...LONG_MODE, cr4: LONG_MODE.cr4 | CR4.PCIDE, cr3: pt!.root | 1n });
    v.translateFast(lo(USER), hi(USER), 0, 1);
    const e0 = v.invalidationEpoch();
    v.translateFast(lo(USER), hi(USER), 0, 1);
    expect(v.invalidationEpoch()).toBe(e0);
    v.invlpg(USER);
    const e1 = v.invalidationEpoch();
    expect(e1).not.toBe(e0);
    v.writeCr3(pt!.root | 2n | CR3_NOFLUSH);
    expect(v.invalidationEpoch()).not.toBe(e1);
    const e2 = v.invalidationEpoch();
    v.setControl({ rflags: RFLAGS.AC });
    expect(v.invalidationEpoch()).not.toBe(e2);
  });
});

describe("an embedder's page cache built on the fast path's rights and epoch", () => {
  for (const [name, tlbEntries] of [["a roomy TLB", 4096], ["a 16-entry TLB under eviction pressure", 16]] as const) {
    it(`never serves a translation the core would not (random sequences, ${name})`, async () => {
      const seed = testSeed();
      const rng = new Rng(seed);
      const { m, v, spaces } = await machine(tlbEntries);
      const pages = [...Array.from({ length: 24 }, (_, i) => USER + BigInt(i) * K4), ...Array.from({ length: 8 }, (_, i) => KERN + BigInt(i) * M2)];
      const randomLeaf = (va: bigint) => {
        const large = va >= KERN;
        return {
          size: large ? ("2M" as const) : ("4K" as const),
          pa: (large ? 0x200_0000n : 0x100_0000n) + BigInt(rng.int(large ? 8 : 256)) * (large ? M2 : K4),
          flags: rng.chance(0.6)
            ? { user: true, write: true, accessed: true, dirty: true, global: rng.chance(0.3) }
            : { user: rng.chance(0.7), write: rng.chance(0.6), nx: rng.chance(0.3), global: rng.chance(0.3), accessed: rng.chance(0.5), dirty: rng.chance(0.4), pkey: rng.int(4) },
        };
      };
      for (const pt of spaces) for (const va of pages) { const l = randomLeaf(va); pt.map(va, l.pa, l.size, l.flags); }
      let pcide = true;
      v.setControl({ ...LONG_MODE, cr0: LONG_MODE.cr0 | CR0.WP, cr4: LONG_MODE.cr4 | CR4.PCIDE | CR4.PGE | CR4.PKE, efer: LONG_MODE.efer, cr3: spaces[0]!.root | 1n });
      const cache = new Map<bigint, { pa: number; rights: number; epoch: number }>();
      let served = 0, checks = 0;
      const STEPS = 4000;
      for (let step = 0; step < STEPS; step++) {
        const op = rng.int(1000) < 960 ? 0 : 80 + rng.int(20);
        const note = () => seedNote(seed, `step ${step}`);
        if (op < 80) {
          const va = rng.pick(pages) + BigInt(rng.int(4096));
          const access = (rng.chance(0.7) ? 0 : rng.int(3)) as 0 | 1 | 2;
          const user = (rng.chance(0.8) ? 1 : 0) as 0 | 1;
          const page = va >> 12n;
          const hit = cache.get(page);
          const epoch = v.invalidationEpoch();
          let cached: number | undefined;
          if (hit && hit.epoch === epoch && (hit.rights >> (access + 3 * user)) & 1 && (access !== 1 || hit.rights & RIGHTS.DIRTY)) {
            cached = hit.pa + Number(va & 0xfffn);
          }
          const pa = v.translateFast(lo(va), hi(va), access, user);
          checks++;
          if (cached !== undefined) {
            served++;
            expect(pa, `${note()}: cache served ${cached.toString(16)} for ${va.toString(16)} access ${access} user ${user}`).toBe(cached);
          }
          if (pa >= 0 && v.lastRights() & RIGHTS.CACHED) cache.set(page, { pa: pa - Number(va & 0xfffn), rights: v.lastRights(), epoch: v.invalidationEpoch() });
        } else if (op < 88) {
          const pt = rng.pick(spaces), va = rng.pick(pages);
          if (rng.chance(0.3)) pt.unmap(va); else { const l = randomLeaf(va); pt.map(va, l.pa, l.size, l.flags); }
        } else if (op < 91) {
          v.invlpg(rng.pick(pages));
        } else if (op < 94) {
          const i = rng.int(2);
          v.writeCr3(spaces[i]!.root | (pcide ? BigInt(1 + i) : 0n) | (pcide && rng.chance(0.5) ? CR3_NOFLUSH : 0n));
        } else if (op < 96) {
          if (pcide) v.invpcid(rng.int(4), 1 + rng.int(2), rng.pick(pages));
        } else if (op < 97) {
          v.setControl({ rflags: rng.chance(0.5) ? RFLAGS.AC : 0n, pkru: BigInt(rng.u32()) & 0xfcn });
        } else if (op < 98) {
          const cr4 = v.control().cr4 ^ (rng.chance(0.5) ? CR4.PGE : CR4.SMAP | CR4.SMEP);
          v.writeCr4(cr4);
        } else if (op < 99) {
          v.writeCr0(v.control().cr0 ^ CR0.WP);
        } else {
          const c = v.control();
          if (pcide && (c.cr3 & 0xfffn) === 0n) { v.writeCr4(c.cr4 & ~CR4.PCIDE); pcide = false; }
          else if (!pcide) { v.writeCr3(c.cr3 & ~0xfffn); v.writeCr4(c.cr4 | CR4.PCIDE); pcide = true; }
        }
      }
      fuzzCount("x86-fast-cache", checks);
      expect(served, seedNote(seed, "the cache served too few accesses for the test to mean anything")).toBeGreaterThan(checks / (tlbEntries > 16 ? 20 : 50));
      m.dispose();
    }, 60_000);
  }
});

describe("the fast path on a disposed machine", () => {
  it("refuses every call with the disposed error", async () => {
    const { m, v } = await machine();
    m.dispose();
    expect(() => v.translateFast(0, 0, 0, 0)).toThrow(/^vmmu: machine is disposed/);
    expect(() => v.invalidationEpoch()).toThrow(/^vmmu: machine is disposed/);
    expect(() => v.lastRights()).toThrow(/^vmmu: machine is disposed/);
  });
});

describe("translate() with { rights: true }", () => {
  it("carries the rights word and the epoch beside pa, pageSize and level, and the fault as translate() gives it", async () => {
    const { v, spaces: [pt] } = await machine();
    pt!.map(USER, 0x200_0000n, "4K", { user: true, write: true, dirty: true, accessed: true });
    pt!.map(KERN, 0x220_0000n, "2M", { global: true });
    v.setControl({ ...LONG_MODE, cr4: LONG_MODE.cr4 | CR4.PGE, cr3: pt!.root });
    const r = v.translate(USER + 0x10n, "write", true, { rights: true });
    expect(r).toEqual({ pa: 0x200_0010n, pageSize: 4096, level: 1, rights: v.lastRights(), epoch: v.invalidationEpoch() });
    expect("rights" in r && r.rights & (RIGHTS.WU | RIGHTS.CACHED)).toBe(RIGHTS.WU | RIGHTS.CACHED);
    const k = v.translate(KERN + 0x1234n, "read", false, { rights: true });
    expect(k).toMatchObject({ pa: 0x220_1234n, pageSize: 2 << 20, level: 2 });
    expect(v.translate(KERN, "read", true, { rights: true })).toEqual(v.translate(KERN, "read", true));
    expect(v.translate(USER, "read", true, { rights: false })).toEqual({ pa: 0x200_0000n, pageSize: 4096, level: 1 });
    expect(() => v.translate(USER, "read", true, { rights: 1 as unknown as boolean })).toThrow(/^vmmu: opts\.rights/);
  });
});
