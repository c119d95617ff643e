/**
 * The guest's frame allocator: LIFO reuse (the frame freed last comes back
 * first, whatever it held), 8 KiB-aligned order-1 blocks for KPTI PGD pairs,
 * buddies merged on free, and the recycling counters a shadow MMU cares
 * about (page-table pages reused as data and the reverse).
 */
import { describe, expect, it } from "vitest";
import { FRAME, FrameAllocator, PCP_BATCH, PCP_HIGH } from "../../../src/guest/frames.js";

function allocator(n = 16): FrameAllocator {
  const f = new FrameAllocator(0x100, n);
  f.release(0x100, n);
  return f;
}

describe("FrameAllocator", () => {
  it("hands out the lowest frames first after boot", () => {
    const f = allocator();
    expect([f.alloc(FRAME.ANON), f.alloc(FRAME.ANON), f.alloc(FRAME.ANON)]).toEqual([0x100, 0x101, 0x102]);
  });

  it("reuses the frame freed last", () => {
    const f = allocator();
    const a = f.alloc(FRAME.ANON), b = f.alloc(FRAME.ANON);
    f.alloc(FRAME.ANON);
    f.free(a);
    f.free(b);
    expect(f.alloc(FRAME.PAGETABLE)).toBe(b);
  });

  it("allocates order-1 blocks 8 KiB aligned, merging freed buddies", () => {
    const f = allocator(8);
    const p = f.allocPair(FRAME.PAGETABLE);
    expect(p % 2).toBe(0);
    const x = f.alloc(FRAME.ANON), y = f.alloc(FRAME.ANON);
    expect(y).toBe(x ^ 1);
    f.free(x);
    f.free(y);
    expect(f.freeCount).toBe(6);
    const q = [f.allocPair(FRAME.KERNEL), f.allocPair(FRAME.KERNEL), f.allocPair(FRAME.KERNEL)];
    expect(q.every((v) => v % 2 === 0)).toBe(true);
    expect(() => f.allocPair(FRAME.KERNEL)).toThrow(/out of memory/);
  });

  it("keeps at most PCP_HIGH freed pages hot, returning the coldest batch to the buddy lists", () => {
    const f = allocator(512);
    const got = Array.from({ length: PCP_HIGH + 1 }, () => f.alloc(FRAME.ANON));
    for (const p of got) f.free(p);
    expect(f.alloc(FRAME.ANON)).toBe(got[PCP_HIGH]);
    const hot = new Set(got.slice(PCP_BATCH));
    for (let i = 0; i < PCP_HIGH + 1 - PCP_BATCH - 1; i++) expect(hot.has(f.alloc(FRAME.ANON))).toBe(true);
    expect(hot.has(f.alloc(FRAME.ANON))).toBe(false);
  });

  it("counts page-table pages reused as data and data pages reused as page tables", () => {
    const f = allocator();
    const t = f.alloc(FRAME.PAGETABLE);
    f.free(t);
    expect(f.alloc(FRAME.ANON)).toBe(t);
    f.free(t);
    expect(f.alloc(FRAME.PAGETABLE)).toBe(t);
    expect(f.stats).toMatchObject({ dataFromTable: 1, tableFromData: 1 });
  });

  it("refuses to free a frame twice", () => {
    const f = allocator();
    const a = f.alloc(FRAME.ANON);
    f.free(a);
    expect(() => f.free(a)).toThrow(/free/);
    expect(f.useOf(a)).toBe("free");
  });
});
