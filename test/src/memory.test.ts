/**
 * Guest physical memory as the control plane sees it (src/memory.ts over
 * assembly/phys.ts): little-endian u64 and byte-range access at any
 * alignment, across 4 KiB frames that are contiguous (eager part) or not
 * (frames backed on first write), the byte view of the eager part, the
 * atomic compare-exchange, and the memslot bounds.
 */
import { describe, expect, it } from "vitest";
import { attachVcpu, createMachine, X86PageTableBuilder, LONG_MODE, type GuestMemory } from "../../src/index.js";
import { Rng, seedNote, testSeed } from "../helpers/rng.js";

const KiB = 1024n, MiB = 1024n * KiB, GiB = 1024n * MiB;
const RAM = 1n * MiB;
const EAGER = 64n * KiB;

/** 1 MiB of RAM, the first 64 KiB eager, the rest backed frame by frame on first write. */
async function mixed(): Promise<GuestMemory> {
  return (await createMachine({ arch: "x86_64", memoryBytes: RAM, eagerBytes: EAGER })).memory;
}

const le = (v: bigint): number[] => Array.from({ length: 8 }, (_, i) => Number((v >> BigInt(8 * i)) & 0xffn));

describe("read64 and write64", () => {
  it("round-trip at aligned addresses; a negative value is stored as its two's complement, one past 64 bits is refused", async () => {
    const mem = await mixed();
    const values = [0n, 1n, 0x8000_0000_0000_0000n, 0xffff_ffff_ffff_ffffn, 0x0123_4567_89ab_cdefn];
    values.forEach((v, i) => mem.write64(0x2000n + BigInt(i) * 8n, v));
    values.forEach((v, i) => expect(mem.read64(0x2000n + BigInt(i) * 8n)).toBe(v));
    mem.write64(0x3000n, -1n);
    expect(mem.read64(0x3000n)).toBe(0xffff_ffff_ffff_ffffn);
    expect(() => mem.write64(0x3008n, (1n << 64n) + 5n)).toThrow(new RangeError("vmmu: value must be a 64-bit value (−2^63..2^64−1), got 0x10000000000000005n"));
    expect(() => mem.write64(0x3008n, -(1n << 63n) - 1n)).toThrow(RangeError);
    expect(mem.read64(0x3008n)).toBe(0n);
  });

  it("round-trip unaligned inside a frame, little-endian, leaving the neighbours alone", async () => {
    const mem = await mixed();
    for (const gpa of [0x1003n, 0x1ff7n, EAGER + 0x2005n]) {
      mem.write(gpa - 1n, new Uint8Array(10).fill(0xee));
      mem.write64(gpa, 0x8877_6655_4433_2211n);
      expect(mem.read64(gpa)).toBe(0x8877_6655_4433_2211n);
      expect(Array.from(mem.read(gpa - 1n, 10))).toEqual([0xee, ...le(0x8877_6655_4433_2211n), 0xee]);
    }
  });

  it("round-trip across a frame boundary: eager/eager, eager/lazy and lazy/lazy", async () => {
    const mem = await mixed();
    for (const gpa of [0x1ffdn, EAGER - 3n, EAGER + 0x4ff9n, RAM - 0x1005n]) {
      mem.write(gpa - 1n, new Uint8Array(10).fill(0xee));
      mem.write64(gpa, 0xf1e2_d3c4_b5a6_9788n);
      expect(mem.read64(gpa), `gpa 0x${gpa.toString(16)}`).toBe(0xf1e2_d3c4_b5a6_9788n);
      expect(Array.from(mem.read(gpa - 1n, 10))).toEqual([0xee, ...le(0xf1e2_d3c4_b5a6_9788n), 0xee]);
    }
  });

  it("read zero from a frame never written, without backing it", async () => {
    const mem = await mixed();
    const backed = mem.backedFrames();
    expect(mem.read64(EAGER + 0x7ff8n)).toBe(0n);
    expect(mem.read64(EAGER + 0x7ffcn)).toBe(0n);
    expect(mem.read(EAGER + 0x9000n, 8192)).toEqual(new Uint8Array(8192));
    expect(mem.backedFrames()).toBe(backed);
  });
});

describe("read and write of byte ranges", () => {
  it("copy ranges spanning many frames of both kinds", async () => {
    const seed = testSeed();
    const rng = new Rng(seed);
    const mem = await mixed();
    const data = Uint8Array.from({ length: 5 * 4096 + 77 }, () => rng.int(256));
    for (const gpa of [0x123n, EAGER - 0x2345n, EAGER + 0x3_00c3n]) {
      mem.write(gpa, data);
      expect(mem.read(gpa, data.length), `${seedNote(seed)} gpa 0x${gpa.toString(16)}`).toEqual(data);
      expect(mem.read(gpa + 4093n, 8)).toEqual(data.slice(4093, 4101));
      expect(mem.read64(gpa + 4095n)).toBe(new DataView(data.buffer).getBigUint64(4095, true));
    }
  });

  it("treat a zero length as a no-op, even at the end of RAM", async () => {
    const mem = await mixed();
    expect(mem.read(RAM, 0)).toEqual(new Uint8Array(0));
    expect(() => mem.write(RAM, new Uint8Array(0))).not.toThrow();
  });
});

describe("bytes()", () => {
  it("is a view of the eager part over the shared buffer, aliasing read64 and write64", async () => {
    const mem = await mixed();
    const bytes = mem.bytes();
    expect(bytes.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(BigInt(bytes.length)).toBe(EAGER);
    bytes.set(le(0x0102_0304_0506_0708n), 0x40);
    expect(mem.read64(0x40n)).toBe(0x0102_0304_0506_0708n);
    mem.write64(0x7ffcn, 0xaabb_ccdd_1122_3344n);
    expect(Array.from(bytes.subarray(0x7ffc, 0x8004))).toEqual(le(0xaabb_ccdd_1122_3344n));
    mem.write(0x2000n, Uint8Array.of(9, 8, 7));
    expect(Array.from(bytes.subarray(0x2000, 0x2003))).toEqual([9, 8, 7]);
  });

  it("starts at ramBase when RAM does not start at 0", async () => {
    const base = 0x4000_0000n;
    const mem = (await createMachine({ arch: "x86_64", memoryBytes: RAM, ramBase: base })).memory;
    mem.write64(base + 0x18n, 0x5a5an);
    expect(new DataView(mem.bytes().buffer, mem.bytes().byteOffset).getBigUint64(0x18, true)).toBe(0x5a5an);
  });
});

describe("addresses outside guest RAM", () => {
  it("throw a RangeError naming a gpa outside", async () => {
    const mem = await mixed();
    /** The gpa the RangeError thrown by `f` names; it must lie in [from, to) and outside RAM. */
    const named = (f: () => unknown, from: bigint, to: bigint) => {
      let gpa: bigint | undefined;
      try { f(); } catch (e) {
        expect(e).toBeInstanceOf(RangeError);
        const m = /gpa (0x[0-9a-f]+) is outside guest RAM \[0x0, 0x100000\)/.exec((e as Error).message);
        expect(m, (e as Error).message).not.toBeNull();
        gpa = BigInt(m![1]!);
      }
      expect(gpa, "no RangeError").toBeDefined();
      expect(gpa! >= from && gpa! < to && !mem.contains(gpa!), `named 0x${gpa!.toString(16)}`).toBe(true);
    };
    named(() => mem.read64(RAM), RAM, RAM + 8n);
    named(() => mem.write64(RAM + 8n, 1n), RAM + 8n, RAM + 16n);
    named(() => mem.read64(RAM - 4n), RAM - 4n, RAM + 4n);
    named(() => mem.write64(RAM - 4n, 1n), RAM - 4n, RAM + 4n);
    named(() => mem.read(RAM - 2n, 4), RAM - 2n, RAM + 2n);
    named(() => mem.write(RAM + 0x1000n, Uint8Array.of(1)), RAM + 0x1000n, RAM + 0x1001n);
    named(() => mem.cmpxchg64(RAM, 0n, 1n), RAM, RAM + 8n);
    named(() => mem.read64(0xffff_ffff_ffff_fff8n), 0xffff_ffff_ffff_fff8n, 1n << 64n);
    expect(() => mem.read64(-8n)).toThrow(RangeError);
    expect(mem.contains(RAM - 1n)).toBe(true);
    expect(mem.contains(RAM)).toBe(false);
    expect(mem.contains(-1n)).toBe(false);
  });

  it("leave RAM untouched when a write runs past its end", async () => {
    const mem = await mixed();
    expect(() => mem.write(RAM - 2n, Uint8Array.of(1, 2, 3, 4))).toThrow(RangeError);
    expect(Array.from(mem.read(RAM - 2n, 2))).toEqual([0, 0]);
    mem.write64(RAM - 8n, 0x1122_3344_5566_7788n);
    expect(() => mem.write64(RAM - 4n, -1n)).toThrow(RangeError);
    expect(mem.read64(RAM - 8n)).toBe(0x1122_3344_5566_7788n);
  });

  it("start below ramBase: a gpa under the base is outside, to the memory API and to the walker", async () => {
    const base = 0x1_0000_0000n;
    const m = await createMachine({ arch: "x86_64", memoryBytes: 16n * MiB, ramBase: base });
    const mem = m.memory;
    expect([mem.contains(base - 1n), mem.contains(base), mem.contains(base + 16n * MiB - 1n), mem.contains(base + 16n * MiB)])
      .toEqual([false, true, true, false]);
    expect(() => mem.read64(base - 8n)).toThrow(/gpa 0xfffffff8 is outside guest RAM \[0x100000000, 0x101000000\)/);
    expect(() => mem.write64(0n, 1n)).toThrow(RangeError);
    expect(() => mem.read(base - 4n, 8)).toThrow(/gpa 0xfffffffc/);
    mem.write64(base, 0x77n);
    expect(mem.read64(base)).toBe(0x77n);

    const b = new X86PageTableBuilder(mem, { levels: 4, tableBase: base + 0x1000n, tableLimit: base + 0x10_0000n });
    b.map(0x40_0000n, base + 0x20_0000n, "4K");
    const v = m.vcpu(0);
    v.setControl({ ...LONG_MODE, cr3: b.root });
    expect(v.translate(0x40_0123n)).toEqual({ pa: base + 0x20_0123n, pageSize: 4096, level: 1 });
    expect(v.writeCr3(0x8000n)).toBeNull();
    expect(v.translate(0x40_0123n)).toEqual({ fault: { vector: -1, errorCode: 0, level: 4, kind: "abort", gpa: 0x8000n } });
  });
});

describe("non-bigint addresses", () => {
  it("throw a TypeError from every accessor", async () => {
    const mem = await mixed();
    const n = 0x1000 as unknown as bigint;
    const s = "0x1000" as unknown as bigint;
    for (const gpa of [n, s]) {
      expect(() => mem.read64(gpa)).toThrow(TypeError);
      expect(() => mem.write64(gpa, 1n)).toThrow(TypeError);
      expect(() => mem.read(gpa, 8)).toThrow(TypeError);
      expect(() => mem.write(gpa, Uint8Array.of(1))).toThrow(TypeError);
      expect(() => mem.cmpxchg64(gpa, 0n, 1n)).toThrow(TypeError);
    }
    expect(mem.read64(0x1000n)).toBe(0n);
  });
});

describe("cmpxchg64", () => {
  it("stores only when the word holds the expected value, including with bit 63 set", async () => {
    const mem = await mixed();
    mem.write64(0x1000n, 0xffff_ffff_ffff_fff0n);
    expect(mem.cmpxchg64(0x1000n, 0xffff_ffff_ffff_fff1n, 1n)).toBe(false);
    expect(mem.read64(0x1000n)).toBe(0xffff_ffff_ffff_fff0n);
    expect(mem.cmpxchg64(0x1000n, 0xffff_ffff_ffff_fff0n, 0x8000_0000_0000_0021n)).toBe(true);
    expect(mem.read64(0x1000n)).toBe(0x8000_0000_0000_0021n);
    expect(mem.cmpxchg64(0x1000n, -0x7fff_ffff_ffff_ffdfn, 7n)).toBe(true);
    expect(mem.read64(0x1000n)).toBe(7n);
  });

  it("backs a lazy frame and succeeds against its zero", async () => {
    const mem = await mixed();
    const backed = mem.backedFrames();
    expect(mem.cmpxchg64(EAGER + 0xa008n, 1n, 2n)).toBe(false);
    expect(mem.cmpxchg64(EAGER + 0xa008n, 0n, 2n)).toBe(true);
    expect(mem.read64(EAGER + 0xa008n)).toBe(2n);
    expect(mem.backedFrames()).toBe(backed + 1);
  });

  it("needs an 8-aligned gpa", async () => {
    const mem = await mixed();
    expect(() => mem.cmpxchg64(0x1004n, 0n, 1n)).toThrow(/8-aligned gpa, got 0x1004/);
  });
});

describe("first touches that grow the backing memory", () => {
  it("write64 to a lazy frame that makes the memory grow lands, and reads back", async () => {
    const m = await createMachine({ arch: "x86_64", memoryBytes: 8n * GiB, eagerBytes: 0 });
    const before = m.memory.buffer.byteLength;
    m.memory.write64(0x1000n, 1n);
    expect(m.memory.buffer.byteLength).toBeGreaterThan(before);
    expect(m.memory.read64(0x1000n)).toBe(1n);
    expect(m.memory.backedFrames()).toBe(1);
  });

  it("read64 sees a frame another GuestMemory backed by growing the memory", async () => {
    const m = await createMachine({ arch: "x86_64", memoryBytes: 8n * GiB, eagerBytes: 0, vcpus: 2 });
    const other = (await attachVcpu(m.handle, 1)).memory;
    expect(m.memory.read64(0x5000n)).toBe(0n);
    other.write(0x2000n, Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8));
    expect(m.memory.read64(0x2000n)).toBe(0x0807_0605_0403_0201n);
    other.write64(0x7ff8n, 0x1234n);
    expect(m.memory.cmpxchg64(0x7ff8n, 0x1234n, 0x5678n)).toBe(true);
    expect(other.read64(0x7ff8n)).toBe(0x5678n);
  });
});

describe("running out of host memory", () => {
  it("under maxHostBytes: the first frame past the cap is a clear RangeError, every later one too, and nothing written before changes", async () => {
    const m = await createMachine({ arch: "x86_64", memoryBytes: 64n * GiB, maxHostBytes: 8n * MiB });
    expect(m.memory.hostLimitBytes()).toBe(8 * 1024 * 1024);
    const written: bigint[] = [];
    let f = 0n;
    let first: unknown;
    for (; f < 10_000n; f++) {
      try { m.memory.write64(f << 12n, 0x5eed_0000n + f); written.push(f); } catch (e) { first = e; break; }
    }
    expect(first).toBeInstanceOf(RangeError);
    expect(String(first)).toMatch(/^RangeError: vmmu: out of host memory while backing gpa .*maxHostBytes/);
    expect(written.length).toBeGreaterThan(1000);
    for (const g of [f + 1n, f + 2n, f + 100n, (1n << 24n) - 1n]) {
      expect(() => m.memory.write64(g << 12n, 0xdead_0000n + g)).toThrow(/^vmmu: out of host memory/);
    }
    for (const w of written) expect(m.memory.read64(w << 12n)).toBe(0x5eed_0000n + w);
    for (const g of [f, f + 1n, f + 2n, f + 100n]) expect(m.memory.read64(g << 12n)).toBe(0n);
    expect(m.memory.backedFrames()).toBe(written.length);
    expect(m.memory.buffer.byteLength).toBeLessThanOrEqual(8 * 1024 * 1024);
  });

  it("refuses a maxHostBytes below what the machine needs at creation, or above 4 GiB, naming it", async () => {
    await expect(createMachine({ arch: "x86_64", memoryBytes: 64n * MiB, maxHostBytes: 1n * MiB })).rejects.toThrow(/^vmmu: maxHostBytes \(1048576\) is below/);
    await expect(createMachine({ arch: "x86_64", memoryBytes: 64n * GiB, maxHostBytes: 5n * GiB })).rejects.toThrow(/^vmmu: maxHostBytes .* above the 4 GiB/);
  });

  it("at the top of the 4 GiB wasm memory: the bump allocator fails rather than wrapping onto the ZERO page and the machine header", async () => {
    // White-box: move the backing cursor to 8 frames below 4 GiB instead of
    // touching 4 GiB of frames (which is what reaching it honestly costs).
    const m = await createMachine({ arch: "x86_64", memoryBytes: 64n * GiB });
    const L = m.layout;
    m.memory.write64(0n, 0x1111n);
    const dv = () => new DataView(m.memory.buffer);
    const magic = dv().getUint32(L.MACHINE_BASE + L.M_MAGIC, true);
    dv().setBigUint64(L.MACHINE_BASE + L.M_BACK_NEXT, BigInt(L.LINEAR_LIMIT) - 8n * 4096n, true);
    let ok = 0;
    let f = 1n;
    for (; f < 64n; f++) {
      try { m.memory.write64(f << 22n, 0xdead_0000n + f); ok++; } catch (e) { expect(String(e)).toMatch(/out of host memory/); break; }
    }
    // Each new 4 MiB chunk needs a frame-table leaf and a frame: 4 chunks fit in 8 frames.
    expect(ok).toBe(4);
    for (let g = f; g < f + 8n; g++) expect(() => m.memory.write64(g << 22n, 1n)).toThrow(/out of host memory/);
    expect(dv().getUint32(L.MACHINE_BASE + L.M_MAGIC, true)).toBe(magic);
    expect(new Uint8Array(m.memory.buffer, L.ZERO_PAGE, 4096).every((b) => b === 0)).toBe(true);
    expect(dv().getBigUint64(L.MACHINE_BASE + L.M_BACK_NEXT, true)).toBe(BigInt(L.LINEAR_LIMIT));
    expect(m.memory.read64(0n)).toBe(0x1111n);
    for (let g = 1n; g <= BigInt(ok); g++) expect(m.memory.read64(g << 22n)).toBe(0xdead_0000n + g);
    expect(m.memory.read64((f + 100n) << 22n)).toBe(0n);
  });
});
