/**
 * The arm64 Number fast path (Arm64Vcpu.translateFast) and an embedder's page
 * cache built on its rights word and the invalidation epoch: such a cache
 * never serves a translation the core would not, across descriptor edits
 * (never invalidated by the test itself), TLBI by VA, ASID and VMALL, ASID
 * switches through TTBR0, PAN changes and TLB pressure.
 */
import { describe, expect, it } from "vitest";
import { Arm64Stage1Builder, LINUX_TCR, RIGHTS, SCTLR, createMachine } from "../../../src/index.js";
import { fuzzCount, Rng, seedNote, testSeed } from "../../helpers/rng.js";

const K4 = 0x1000n, M2 = 0x20_0000n;
const USER = 0x0000_0040_0000_0000n;
const KERN = 0xffff_0000_1000_0000n;
const lo = (va: bigint) => Number(va & 0xffff_ffffn);
const hi = (va: bigint) => Number(va >> 32n);

async function machine(tlbEntries = 4096) {
  const m = await createMachine({ arch: "arm64", memoryBytes: 64 << 20, tlbEntries });
  const user = [0, 1].map((i) => new Arm64Stage1Builder(m.memory, { tableBase: 0x10_0000n + BigInt(i) * 0x20_0000n, tableLimit: 0x30_0000n + BigInt(i) * 0x20_0000n }));
  const kern = new Arm64Stage1Builder(m.memory, { tableBase: 0x60_0000n, tableLimit: 0x80_0000n });
  return { m, v: m.vcpu(0), user, kern };
}

describe("arm64 translateFast", () => {
  it("returns the pa as a Number with EL0/EL1 rights, and faults as translate() does", async () => {
    const { v, user: [u], kern } = await machine();
    u!.map(USER, 0x200_0000n, "4K", { el0: true, nG: true, pxn: true });
    kern.map(KERN, 0x240_0000n, "2M", { uxn: true });
    v.setSystemRegisters({ tcr: LINUX_TCR, ttbr0: u!.root | (5n << 48n), ttbr1: kern.root, sctlr: SCTLR.M, pan: false });
    expect(v.translateFast(lo(USER + 0x10n), hi(USER), 1, 1)).toBe(0x200_0010);
    const r = v.lastRights();
    expect(r & (RIGHTS.RU | RIGHTS.WU | RIGHTS.RS | RIGHTS.WS | RIGHTS.XU | RIGHTS.CACHED)).toBe(RIGHTS.RU | RIGHTS.WU | RIGHTS.RS | RIGHTS.WS | RIGHTS.XU | RIGHTS.CACHED);
    expect(r & (RIGHTS.XS | RIGHTS.GLOBAL)).toBe(0);
    v.setSystemRegisters({ pan: true });
    expect(v.translateFast(lo(USER), hi(USER), 0, 0)).toBe(-1);
    expect(v.lastFault()).toMatchObject({ kind: "permission", stage: 1 });
    expect(v.translateFast(lo(KERN + 0x5n), hi(KERN), 2, 0)).toBe(0x240_0005);
    const k = v.lastRights();
    expect(k & (RIGHTS.GLOBAL | RIGHTS.XS | RIGHTS.RS)).toBe(RIGHTS.GLOBAL | RIGHTS.XS | RIGHTS.RS);
    expect(k & (RIGHTS.RU | RIGHTS.XU)).toBe(0);
    expect((k >> RIGHTS.PSHIFT_SHIFT) & 31).toBe(21);
  });

  it("does not let a tagged VA be cached (its translation depends on the access kind under TBID)", async () => {
    const { v, user: [u] } = await machine();
    u!.map(USER, 0x200_0000n, "4K", { el0: true });
    v.setSystemRegisters({ tcr: LINUX_TCR, ttbr0: u!.root, sctlr: SCTLR.M });
    const tagged = USER | (0x5an << 56n);
    expect(v.translateFast(lo(tagged), hi(tagged), 0, 1)).toBe(0x200_0000);
    expect(v.lastRights() & RIGHTS.CACHED).toBe(0);
  });
});

describe("an embedder's arm64 page cache built on the fast path's rights and epoch", () => {
  for (const [name, tlbEntries] of [["a roomy TLB", 4096], ["a 16-entry TLB under eviction pressure", 16]] as const) {
    it(`never serves a translation the core would not (random sequences, ${name})`, async () => {
      const seed = testSeed();
      const rng = new Rng(seed);
      const { v, user, kern } = await machine(tlbEntries);
      const upages = Array.from({ length: 24 }, (_, i) => USER + BigInt(i) * K4);
      const kpages = Array.from({ length: 6 }, (_, i) => KERN + BigInt(i) * M2);
      const pages = [...upages, ...kpages];
      const leaf = () => rng.chance(0.6)
        ? { el0: true, nG: rng.chance(0.7) }
        : { el0: rng.chance(0.6), readOnly: rng.chance(0.4), uxn: rng.chance(0.3), pxn: rng.chance(0.3), nG: rng.chance(0.5), af: rng.chance(0.9) };
      const mapU = (b: Arm64Stage1Builder, va: bigint) => b.map(va, 0x100_0000n + BigInt(rng.int(256)) * K4, "4K", leaf());
      const mapK = (va: bigint) => kern.map(va, 0x200_0000n + BigInt(rng.int(8)) * M2, "2M", leaf());
      for (const b of user) for (const va of upages) mapU(b, va);
      for (const va of kpages) mapK(va);
      const asids = [3n, 9n];
      let cur = 0;
      // LINUX_TCR has A1 = 1: the ASID comes from TTBR1, as Linux sets it.
      v.setSystemRegisters({ tcr: LINUX_TCR, ttbr0: user[0]!.root, ttbr1: kern.root | (asids[0]! << 48n), sctlr: SCTLR.M, pan: false });
      const cache = new Map<bigint, { pa: number; rights: number; epoch: number }>();
      let served = 0, checks = 0;
      for (let step = 0; step < 4000; step++) {
        const op = rng.int(1000) < 960 ? 0 : 1 + rng.int(8);
        if (op === 0) {
          const va = rng.pick(pages) + BigInt(rng.int(4096));
          const access = (rng.chance(0.7) ? 0 : rng.int(3)) as 0 | 1 | 2;
          const el0 = (va < KERN && rng.chance(0.8) ? 1 : 0) as 0 | 1;
          const page = va >> 12n;
          const hit = cache.get(page);
          const bit = el0 ? [RIGHTS.RU, RIGHTS.WU, RIGHTS.XU][access]! : [RIGHTS.RS, RIGHTS.WS, RIGHTS.XS][access]!;
          const cached = hit && hit.epoch === v.invalidationEpoch() && (hit.rights & bit) !== 0 ? hit.pa + Number(va & 0xfffn) : undefined;
          const pa = v.translateFast(lo(va), hi(va), access, el0);
          checks++;
          if (cached !== undefined) {
            served++;
            expect(pa, `${seedNote(seed, `step ${step}`)}: cache served ${cached.toString(16)} for ${va.toString(16)} access ${access} el0 ${el0}`).toBe(cached);
          }
          if (pa >= 0 && v.lastRights() & RIGHTS.CACHED) cache.set(page, { pa: pa - Number(va & 0xfffn), rights: v.lastRights(), epoch: v.invalidationEpoch() });
        } else if (op <= 3) {
          const va = rng.pick(pages);
          if (va >= KERN) mapK(va); else if (rng.chance(0.3)) rng.pick(user).unmap(va); else mapU(rng.pick(user), va);
        } else if (op === 4) {
          const va = rng.pick(pages);
          const name = rng.pick(["VAE1IS", "VALE1IS", "VAAE1IS", "VAE1", "VAALE1IS"]);
          v.tlbi(name, (rng.pick(asids) << 48n) | ((va >> 12n) & 0xfff_ffff_ffffn));
        } else if (op === 5) {
          v.tlbi(rng.pick(["ASIDE1IS", "ASIDE1"]), rng.pick(asids) << 48n);
        } else if (op === 6) {
          v.tlbi(rng.pick(["VMALLE1IS", "VMALLE1"]));
        } else if (op === 7) {
          cur = rng.int(2);
          v.setSystemRegisters({ ttbr0: user[cur]!.root, ttbr1: kern.root | (asids[cur]! << 48n) });
        } else {
          v.setSystemRegisters({ pan: rng.chance(0.5) });
        }
      }
      fuzzCount("arm64-fast-cache", checks);
      expect(served, seedNote(seed, "the cache served too few accesses for the test to mean anything")).toBeGreaterThan(checks / (tlbEntries > 16 ? 20 : 50));
    }, 60_000);
  }
});

describe("tlbiFast: TLB maintenance with Numbers", () => {
  it("has the effect of tlbi() by name: VAE1IS drops one page of one ASID, VMALLE1IS the rest, counted by name", async () => {
    const { TLBI_CODE } = await import("../../../src/index.js");
    const { v, user: [u] } = await machine();
    for (let i = 0n; i < 4n; i++) u!.map(USER + i * K4, 0x200_0000n + i * K4, "4K", { el0: true, nG: true });
    v.setSystemRegisters({ tcr: LINUX_TCR, ttbr0: u!.root, ttbr1: 7n << 48n, sctlr: SCTLR.M });
    expect(v.asid()).toBe(7);
    for (let i = 0n; i < 4n; i++) v.translate(USER + i * K4, "read", true);
    expect(v.tlbStats().live).toBe(4);
    const op = (7n << 48n) | ((USER + K4) >> 12n);
    v.tlbiFast(TLBI_CODE.VAE1IS, Number(op & 0xffff_ffffn), Number(op >> 32n));
    expect(v.tlbStats().live).toBe(3);
    v.tlbiFast(TLBI_CODE.VAE1IS, Number(op & 0xffff_ffffn), Number(op >> 32n) & 0xffff);
    expect(v.tlbStats().live).toBe(3);
    v.tlbiFast(TLBI_CODE.VMALLE1);
    expect(v.tlbStats().live).toBe(0);
    expect(v.tlbiStats().ops).toEqual({ VAE1IS: 2, VMALLE1: 1 });
  });

  it("refuses a code that is no TLBI and operand halves that are not 32-bit numbers, naming them", async () => {
    const { v } = await machine();
    expect(() => v.tlbiFast(32)).toThrow(/^vmmu: code must be a TLBI_CODE value \(0\.\.31\)/);
    expect(() => v.tlbiFast("VAE1IS" as unknown as number)).toThrow(/^vmmu: code/);
    expect(() => v.tlbiFast(0, 2 ** 32)).toThrow(/^vmmu: opLo/);
    expect(() => v.tlbiFast(0, 0, 0.5)).toThrow(/^vmmu: opHi/);
  });
});

describe("arm64 translate() with { rights: true }", () => {
  it("carries the rights word and the epoch beside pa, pageSize and level, and the fault as translate() gives it", async () => {
    const { v, user: [u] } = await machine();
    u!.map(USER, 0x200_0000n, "4K", { el0: true, nG: true });
    v.setSystemRegisters({ tcr: LINUX_TCR, ttbr0: u!.root, sctlr: SCTLR.M });
    const r = v.translate(USER + 0x10n, "write", true, { rights: true });
    expect(r).toEqual({ pa: 0x200_0010n, pageSize: 4096, level: 3, rights: v.lastRights(), epoch: v.invalidationEpoch() });
    expect(v.translate(USER + K4, "read", true, { rights: true })).toEqual(v.translate(USER + K4, "read", true));
  });
});
