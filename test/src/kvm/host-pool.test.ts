/**
 * The host-table pool (src/kvm/host-pool.ts): pages handed out zeroed at
 * host-physical POOL_HPA + offset, exhaustion as a clean "no page" that
 * stays so, and no page ever handed out twice.
 */
import { describe, expect, it } from "vitest";
import { createMachine } from "../../../src/index.js";
import { HostPool } from "../../../src/kvm/host-pool.js";

async function pool(poolBytes: number): Promise<HostPool> {
  const m = await createMachine({ arch: "x86_64", memoryBytes: 1 << 20, poolBytes });
  return new HostPool(m.memory.wasmMemory, m.layout);
}

describe("the host-table pool", () => {
  it("runs out cleanly: every allocation past the last page is undefined, and pages in use keep their entries", async () => {
    const p = await pool(16 * 4096);
    const pages: bigint[] = [];
    for (let i = 0; i < 16; i++) {
      const hpa = p.alloc();
      expect(hpa).toBeDefined();
      p.write(hpa!, 7, 0x1000n + BigInt(i));
      pages.push(hpa!);
    }
    expect(new Set(pages).size).toBe(16);
    for (let i = 0; i < 5; i++) expect(p.alloc()).toBeUndefined();
    pages.forEach((hpa, i) => expect(p.read(hpa, 7)).toBe(0x1000n + BigInt(i)));
    expect(p.inUse).toBe(16);
  });

  it("hands a released page out again, zeroed", async () => {
    const p = await pool(2 * 4096);
    const a = p.alloc()!, b = p.alloc()!;
    p.write(a, 0, 0xffn);
    p.release(a);
    expect(p.alloc()).toBe(a);
    expect(p.read(a, 0)).toBe(0n);
    expect(p.alloc()).toBeUndefined();
    expect(b).not.toBe(a);
  });

  it("refuses to release a page twice, so no page is ever handed out to two owners", async () => {
    const p = await pool(4 * 4096);
    const a = p.alloc()!;
    p.release(a);
    expect(() => p.release(a)).toThrow(/^vmmu: pool page 0x[0-9a-f]+ released while not in use/);
    expect(() => p.release(p.hpaBase + 3n * 4096n)).toThrow(/released while not in use/);
    expect(() => p.release(p.hpaBase + 4n * 4096n)).toThrow(/is not a pool page/);
    const got = [p.alloc(), p.alloc(), p.alloc(), p.alloc()];
    expect(new Set(got).size).toBe(4);
    expect(p.alloc()).toBeUndefined();
  });
});

describe("the host-table pool's compare-exchange", () => {
  it("writes an entry only while it holds the expected value, and the walker-visible word is the one written", async () => {
    const p = await pool(2 * 4096);
    const a = p.alloc()!;
    const n = p.entryBase(a) + 5;
    p.setEntry(n, 0x1234n);
    expect(p.cmpxchg(n, 0x1235n, 0xdeadn)).toBe(false);
    expect(p.entry(n)).toBe(0x1234n);
    expect(p.cmpxchg(n, 0x1234n, 0x8000_0000_0000_0a07n)).toBe(true);
    expect(p.read(a, 5)).toBe(0x8000_0000_0000_0a07n);
    expect(p.cmpxchg(n, 0x8000_0000_0000_0a07n, 0n)).toBe(true);
    expect(p.read(a, 5)).toBe(0n);
    expect(p.read(a, 4)).toBe(0n);
    expect(p.read(a, 6)).toBe(0n);
  });
});
