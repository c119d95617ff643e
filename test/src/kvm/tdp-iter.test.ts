/**
 * The TDP iterator (src/kvm/tdp-iter.ts, KVM tdp_iter.c): on random EPT trees
 * built by random faults of the TDP MMU, its pre-order walk visits exactly
 * the SPTEs a recursive enumeration of the tables finds, in the same order,
 * for random gfn ranges and minimum levels; a walk that yields and restarts
 * from the root visits every SPTE that is not a present table pointer exactly
 * once, in the same order, and terminates.
 */
import { describe, expect, it } from "vitest";
import { TdpIter, pagesPerLevel, roundGfnForLevel, spteIndex } from "../../../src/kvm/tdp-iter.js";
import { isLastSpte, isShadowPresent } from "../../../src/kvm/ept-spte.js";
import { Rng, fuzzCount, seedNote, testSeed } from "../../helpers/rng.js";
import { enumerateTree, tdpWorld, type Visit } from "../../helpers/tdp-world.js";

const seed = testSeed();
const note = seedNote(seed);

/** A tree of `levels` levels with faults spread over a few 512 GiB, 1 GiB and 2 MiB regions at 4 KiB, 2 MiB and 1 GiB goals. */
async function randomTree(rng: Rng, levels: 4 | 5) {
  const ramBytes = levels === 5 ? 1n << 50n : 1n << 41n;
  const w = await tdpWorld({ ramBytes, memoryBytes: 1n << 20n, levels, poolBytes: 8 << 20 });
  const { hpa } = w.mmu.acquireRoot(levels);
  const ramPages = Number(ramBytes >> 12n);
  const hubs = Array.from({ length: 4 }, () => rng.int(ramPages));
  for (let i = 0; i < 60; i++) {
    w.mmu.hostLevel = rng.pick([1, 1, 1, 2, 2, 3] as const);
    const hub = rng.pick(hubs);
    const gfn = Math.min(ramPages - 1, hub + rng.int(1 << rng.pick([4, 10, 19, 21])));
    w.mmu.pageFault(hpa, BigInt(gfn) << 12n, rng.chance(0.5), false);
  }
  return { ...w, root: hpa, ramPages, hubs };
}

function iterate(it: TdpIter, base: number, levels: number, minLevel: number, start: number, end: number, yieldEvery = 0): { visits: Visit[]; yields: number } {
  const visits: Visit[] = [];
  let steps = 0, yields = 0;
  for (it.start(base, levels, minLevel, start, end); it.more(); it.next()) {
    if (yieldEvery > 0 && ++steps % yieldEvery === 0 && it.yieldNow()) { yields++; continue; }
    visits.push({ level: it.level, gfn: it.gfn, sptep: it.sptep, spte: it.oldSpte });
    expect(steps, note).toBeLessThan(10_000_000);
  }
  return { visits, yields };
}

const key = (v: Visit) => `${v.level}:${v.gfn}:${v.sptep}:${v.spte.toString(16)}`;
const notTablePointer = (v: Visit) => !(isShadowPresent(v.spte) && !isLastSpte(v.spte, v.level));

describe("the TDP iterator", () => {
  it("rounds and indexes gfns per level as KVM's gfn_round_for_level and SPTE_INDEX do", () => {
    expect(pagesPerLevel(1)).toBe(1);
    expect(pagesPerLevel(4)).toBe(2 ** 27);
    expect(roundGfnForLevel(0x12345, 2)).toBe(0x12200);
    expect(roundGfnForLevel(2 ** 40 + 5, 5)).toBe(2 ** 36 * 16);
    expect(spteIndex(0x12345, 1)).toBe(0x145);
    expect(spteIndex(0x12345, 2)).toBe(0x91);
    expect(spteIndex(2 ** 44 + 2 ** 36 * 3, 5)).toBe(256 + 3);
  });

  for (const levels of [4, 5] as const) {
    it(`walks a random ${levels}-level tree in the order a recursive enumeration of its tables gives, for random ranges and minimum levels`, async () => {
      const rng = new Rng(seed + levels);
      const w = await randomTree(rng, levels);
      const it = new TdpIter(w.pool);
      const base = w.pool.entryBase(w.root);
      let cases = 0, nonEmpty = 0;
      for (let c = 0; c < 60; c++) {
        const minLevel = 1 + rng.int(levels);
        const hub = rng.pick(w.hubs);
        const start = c === 0 ? 0 : Math.max(0, hub - rng.int(1 << rng.pick([3, 12, 20, 30])));
        const end = c === 0 ? pagesPerLevel(levels + 1) : Math.min(pagesPerLevel(levels + 1), start + 1 + rng.int(2 ** rng.pick([2, 10, 18, 24, 30])));
        const want = enumerateTree(w.pool, w.root, levels, minLevel, start, end).map(key);
        const got = iterate(it, base, levels, minLevel, start, end).visits.map(key);
        expect(got, `${note} range [${start}, ${end}) minLevel ${minLevel}`).toEqual(want);
        cases++;
        if (want.some((k) => !k.endsWith(":0"))) nonEmpty++;
      }
      fuzzCount("tdp-iter", cases);
      expect(nonEmpty, note).toBeGreaterThan(10);
    });
  }

  it("after yields restarts from the root and visits every SPTE that is not a present table pointer exactly once, in order", async () => {
    const rng = new Rng(seed ^ 0x5eed);
    const w = await randomTree(rng, 4);
    const it = new TdpIter(w.pool);
    const base = w.pool.entryBase(w.root);
    let totalYields = 0;
    for (const every of [1, 2, 3, 7, 64]) {
      for (let c = 0; c < 6; c++) {
        const minLevel = c % 2 === 0 ? 1 : 1 + rng.int(3);
        const hub = rng.pick(w.hubs);
        const start = Math.max(0, hub - rng.int(1 << 19));
        const end = start + 1 + rng.int(1 << 21);
        const plain = iterate(it, base, 4, minLevel, start, end).visits;
        const { visits, yields } = iterate(it, base, 4, minLevel, start, end, every);
        totalYields += yields;
        expect(visits.filter(notTablePointer).map(key), `${note} every ${every} [${start}, ${end})`).toEqual(plain.filter(notTablePointer).map(key));
        // Table pointers are visited again on the way back down after a restart, never skipped.
        expect(new Set(visits.map(key)), note).toEqual(new Set(plain.map(key)));
      }
    }
    expect(totalYields, note).toBeGreaterThan(100);
  });

  it("refuses a second yield before the walk has moved on, so a walk yielding at every step still ends", async () => {
    const w = await tdpWorld({ ramBytes: 1n << 30n, memoryBytes: 1n << 20n, poolBytes: 1 << 20 });
    const { hpa } = w.mmu.acquireRoot(4);
    w.mmu.pageFault(hpa, 0x20_0000n, false, false);
    const it = new TdpIter(w.pool);
    it.start(w.pool.entryBase(hpa), 4, 1, 0, 1024);
    expect(it.yieldNow()).toBe(false);
    let steps = 0, visited = 0;
    for (; it.more(); it.next()) {
      if (++steps > 100_000) break;
      if (it.yieldNow()) continue;
      visited++;
    }
    expect(steps).toBeLessThan(100_000);
    // L4, L3, L2 at gfn 0; the step to gfn 512 yields; the restart visits L4 and L3 again, then the 2 MiB leaf at gfn 512.
    expect(visited).toBe(6);
  });
});
