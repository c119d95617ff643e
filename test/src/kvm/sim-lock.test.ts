/**
 * mmu_lock in simulated time (src/kvm/sim-lock.ts): a calendar of busy
 * intervals with their request times. In-order requests wait as on a FIFO
 * spinlock; a request simulated late queues only behind holders that asked
 * before it; the differential test checks every grant against a brute-force
 * search over all intervals ever granted.
 */
import { describe, expect, it } from "vitest";
import { SimLock } from "../../../src/kvm/sim-lock.js";
import { Rng, fuzzCount, seedNote, testSeed } from "../../helpers/rng.js";

/**
 * The earliest s ≥ t with [s, s + d) disjoint from every interval of `busy`
 * requested at or before t (the candidates: t and every end after it).
 */
function referenceStart(busy: [number, number, number][], t: number, d: number): number {
  const ahead = busy.filter(([r]) => r <= t);
  const candidates = [t, ...ahead.map(([, , e]) => e).filter((e) => e > t)].sort((a, b) => a - b);
  for (const s of candidates) if (ahead.every(([, a, e]) => e <= s || a >= s + d)) return s;
  throw new Error("unreachable: the last end is always free");
}

describe("SimLock", () => {
  it("is free at first, and a request in time order waits for the holder as a FIFO spinlock would", () => {
    const lock = new SimLock(() => 0);
    expect(lock.acquire(0, 100)).toBe(0);
    expect(lock.acquire(50, 10)).toBe(50);
    expect(lock.acquire(50, 10)).toBe(60);
    expect(lock.acquire(500, 10)).toBe(0);
    expect(lock.waited).toBe(110);
    expect(lock.contended).toBe(2);
    expect(lock.acquisitions).toBe(4);
  });

  it("queues a request simulated late only behind the holders that asked before it, not behind later-timed ones already granted", () => {
    const lock = new SimLock(() => 0);
    lock.acquire(0, 100);
    lock.acquire(300, 100); // asked at 300
    expect(lock.acquire(100, 250)).toBe(0); // asked at 100: ahead of the 300 request in a FIFO lock
    expect(lock.acquire(50, 100)).toBe(50); // asked at 50: behind [0, 100) only
    expect(lock.acquire(350, 10)).toBe(50); // asked at 350: every holder asked before it; [300, 400) is the one in its way
    expect(lock.size).toBe(5);
  });

  it("takes nothing for a hold of 0, and refuses negative or non-finite times and holds by name", () => {
    const lock = new SimLock(() => 0);
    lock.acquire(0, 100);
    expect(lock.acquire(10, 0)).toBe(0);
    expect(lock.size).toBe(1);
    expect(lock.acquisitions).toBe(1);
    for (const [t, d] of [[-1, 1], [0, -1], [Number.NaN, 1], [0, Number.POSITIVE_INFINITY]]) {
      expect(() => lock.acquire(t!, d!)).toThrow(/vmmu: SimLock\.acquire.*finite and ≥ 0/);
    }
  });

  it("drops intervals that end by the horizon, and caps what an idle vCPU's horizon would keep", () => {
    let horizon = 0;
    const lock = new SimLock(() => horizon);
    for (let i = 0; i < 100; i++) lock.acquire(i * 10, 5);
    horizon = 900;
    lock.acquire(1000, 5);
    expect(lock.size).toBeLessThanOrEqual(12);
    horizon = 0;
    const capped = new SimLock(() => horizon);
    for (let i = 0; i < 3000; i++) capped.acquire(i * 10, 5);
    expect(capped.size).toBeLessThanOrEqual(1024);
    expect(capped.acquire(30_000, 5)).toBe(0);
  });

  it("grants what a brute-force search over every granted interval grants, on random request sequences", () => {
    const seed = testSeed();
    const rng = new Rng(seed);
    let cases = 0;
    for (let round = 0; round < 200; round++) {
      const lock = new SimLock(() => 0);
      const busy: [number, number, number][] = [];
      const span = 1 + rng.int(5000);
      for (let k = 0; k < 60; k++) {
        const t = rng.int(span), d = rng.chance(0.1) ? 0 : 1 + rng.int(rng.chance(0.2) ? 2000 : 100);
        const wait = lock.acquire(t, d);
        const note = `${seedNote(seed)} round ${round} request ${k}: t ${t} hold ${d}`;
        if (d === 0) { expect(wait, note).toBe(0); continue; }
        const s = referenceStart(busy, t, d);
        expect(wait, note).toBe(s - t);
        busy.push([t, s, s + d]);
        cases++;
      }
      expect(lock.size).toBe(busy.length);
    }
    fuzzCount("sim-lock", cases);
  });
});
