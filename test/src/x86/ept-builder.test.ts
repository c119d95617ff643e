/**
 * X86EptBuilder writes the EPT entries and EPTP of Intel SDM Vol.3C §29.3.2 and §25.6.11:
 * every tree it builds is checked by walking it with the reference EPT walker
 * (src/ref/ept-walk.ts) over the machine's own memory. Entry bits are spelled out here, not
 * imported, so a wrong constant in the builder cannot hide.
 */
import { beforeAll, describe, expect, it } from "vitest";
import {
  createMachine, X86EptBuilder, X86PageTableBuilder, LONG_MODE,
  type EptBuilderOptions, type EptLeafFlags, type EptPageSize, type GuestMemory,
} from "../../../src/index.js";
import { refDecodeEptp, refTranslateX86Ept, refWalkEpt, type RefEptAccess, type RefEptOptions, type RefEptResult } from "../../../src/ref/ept-walk.js";
import type { RefMemory } from "../../../src/ref/x86-walk.js";
import { disposeAfterAll, refMemoryOf } from "../../helpers/machine.js";
import { Rng, seedNote, testSeed } from "../../helpers/rng.js";
import { A, D, IPAT, PS, Q_FETCH, Q_GVA, Q_R, Q_READ, Q_WRITE, Q_X, R, UX, W, X, mt } from "../../helpers/ept-bits.js";


const M = 46;
const OPTS: RefEptOptions = { maxPhysAddrBits: M, executeOnly: true, adSupported: true, fiveLevel: true };
const MBEC: RefEptOptions = { ...OPTS, mbec: true };
const SIZES: EptPageSize[] = ["4K", "2M", "1G"];
const BYTES: Record<EptPageSize, bigint> = { "4K": 1n << 12n, "2M": 1n << 21n, "1G": 1n << 30n };
const LEVEL: Record<EptPageSize, number> = { "4K": 1, "2M": 2, "1G": 3 };

let mem: GuestMemory;
let ref: RefMemory;
let nextArea = 0x10_0000n;

beforeAll(async () => {
  const m = disposeAfterAll(await createMachine({ arch: "x86_64", memoryBytes: 64 << 20, maxPhysAddrBits: M }));
  mem = m.memory;
  ref = refMemoryOf(mem);
});

/** A fresh area of `bytes` of the machine's memory, aligned to `align`. */
function area(bytes: bigint, align = 0x1000n): bigint {
  const base = (nextArea + align - 1n) & ~(align - 1n);
  nextArea = base + bytes;
  return base;
}

/** A builder with a fresh 64 KiB table area. */
function builder(opts: Partial<EptBuilderOptions> = {}): X86EptBuilder {
  const tableBase = area(0x1_0000n);
  return new X86EptBuilder(mem, { tableBase, tableLimit: tableBase + 0x1_0000n, ...opts });
}

function walk(b: X86EptBuilder, gpa: bigint, access: RefEptAccess | RefEptAccess["type"], opts = OPTS): RefEptResult {
  return refWalkEpt(ref, b.eptp, gpa, typeof access === "string" ? { type: access } : access, opts);
}

describe("the EPTP", () => {
  it("names the root, the walk length, the A/D enable and the memory type as VM entry decodes them", () => {
    for (const levels of [4, 5] as const) {
      for (const accessedDirty of [false, true]) {
        for (const memType of [0, 6] as const) {
          const b = builder({ levels, accessedDirty, memType });
          expect(b.eptp).toBe(b.root | (BigInt(levels - 1) << 3n) | BigInt(memType) | (accessedDirty ? 1n << 6n : 0n));
          expect(refDecodeEptp(b.eptp, OPTS)).toEqual({ ok: true, memType, levels, ad: accessedDirty, root: b.root });
        }
      }
    }
  });

  it("defaults to a 4-level walk of write-back tables without A/D flags", () => {
    const b = builder();
    expect(b.levels).toBe(4);
    expect(b.eptp).toBe(b.root | 0x1en);
    expect(b.tablesAllocated).toBe(1);
  });
});

describe("leaves of every size at every walk length", () => {
  for (const levels of [4, 5] as const) {
    for (const size of SIZES) {
      it(`a ${size} page in a ${levels}-level tree translates to the hpa it was mapped to, with its memory type and IPAT`, () => {
        const b = builder({ levels });
        const gpa = levels === 5 ? (1n << 56n) | (0x1ffn << 39n) | (3n << 30n) : (0x1ffn << 39n) | (3n << 30n);
        const hpa = 0x2_4000_0000n;
        const at = b.map(gpa, hpa, size, { memType: 4, ipat: true });
        expect(b.tablesAllocated).toBe(levels - LEVEL[size] + 1);
        expect(at).toBe(b.leafHpa(gpa));
        expect(at).toBe(b.entryAt(gpa, LEVEL[size]));
        expect(mem.read64(at)).toBe(X86EptBuilder.leaf(hpa, size, { memType: 4, ipat: true }));
        expect(mem.read64(at)).toBe(hpa | R | W | X | mt(4) | IPAT | (size === "4K" ? 0n : PS));
        for (const offset of [0n, 0x123n, BYTES[size] - 8n]) {
          for (const type of ["read", "write", "fetch"] as const) {
            expect(walk(b, gpa + offset, type)).toEqual({
              ok: true, hpa: hpa + offset, pageSize: Number(BYTES[size]), level: LEVEL[size], memType: 4, ipat: true, rwx: 7,
            });
          }
        }
        expect(walk(b, gpa + BYTES[size], "read")).toMatchObject({ ok: false, kind: "ept-violation" });
      });
    }
  }

  it("a 5-level tree tells gpas apart by bits 56:48, which a 4-level tree refuses", () => {
    const b = builder({ levels: 5 });
    b.map(0x1000n, 0x10_0000n);
    b.map((1n << 48n) | 0x1000n, 0x20_0000n);
    expect(walk(b, 0x1008n, "read")).toMatchObject({ ok: true, hpa: 0x10_0008n });
    expect(walk(b, (1n << 48n) | 0x1008n, "read")).toMatchObject({ ok: true, hpa: 0x20_0008n });
    expect(() => builder({ levels: 4 }).map(1n << 48n, 0n)).toThrow(/vmmu: gpa .*below 2\^48/);
  });

  it("tables are shared: neighbours reuse every level but the last", () => {
    const b = builder();
    b.map(0x4000_0000n, 0x1000n);
    expect(b.tablesAllocated).toBe(4);
    b.map(0x4000_1000n, 0x2000n);
    expect(b.tablesAllocated).toBe(4);
    b.map(0x4020_0000n, 0x20_0000n, "2M");
    expect(b.tablesAllocated).toBe(4);
    b.map(0x8000_0000n, 0x4000_0000n, "1G");
    expect(b.tablesAllocated).toBe(4);
    expect(b.tableFor(0x4000_1000n, 1)).toBe(b.tableFor(0x4000_0000n, 1));
  });
});

describe("leaf flags", () => {
  const bools = [false, true];
  it("each combination of R, W, X and UX gives the rights the walk enforces, with and without MBEC", () => {
    for (const mbec of [false, true]) {
      for (const read of bools) for (const write of bools) for (const exec of bools) for (const userExec of bools) {
        const b = builder({ tableFlags: R | W | X | UX });
        const gpa = 0x7000_0000n;
        b.map(gpa, 0x5000n, "4K", { read, write, exec, userExec });
        const what = JSON.stringify({ mbec, read, write, exec, userExec });
        const opts = mbec ? MBEC : OPTS;
        const present = read || write || exec || (mbec && userExec);
        const cases: [RefEptAccess, boolean][] = [
          [{ type: "read" }, read], [{ type: "write" }, write],
          [{ type: "fetch" }, exec], [{ type: "fetch", userLinear: true }, mbec ? userExec : exec],
        ];
        for (const [access, allowed] of cases) {
          const r = walk(b, gpa, access, opts);
          if (!present) expect(r, what).toMatchObject({ ok: false, kind: "ept-violation", level: 1 });
          else if (write && !read) expect(r, what).toEqual({ ok: false, kind: "ept-misconfig", gpa, level: 1 });
          else if (allowed) expect(r, what).toMatchObject({ ok: true, hpa: 0x5000n });
          else expect(r, what).toMatchObject({ ok: false, kind: "ept-violation", level: 1 });
        }
        expect(b.leafHpa(gpa) !== undefined, what).toBe(read || write || exec || userExec);
      }
    }
  });

  it("every memory type goes to bits 5:3, and 2, 3 and 7 make the leaf a misconfiguration", () => {
    for (const size of SIZES) {
      for (let type = 0; type < 8; type++) {
        const b = builder();
        b.map(0x4000_0000n, 0x8000_0000n, size, { memType: type });
        expect(mem.read64(b.leafHpa(0x4000_0000n)!) & mt(7)).toBe(mt(type));
        const r = walk(b, 0x4000_0000n, "read");
        if (type === 2 || type === 3 || type === 7) expect(r).toEqual({ ok: false, kind: "ept-misconfig", gpa: 0x4000_0000n, level: LEVEL[size] });
        else expect(r).toMatchObject({ ok: true, memType: type, ipat: false });
      }
    }
  });

  it("accessed and dirty are written as asked; with EPTP.AD the walk sets the rest in the builder's entries", () => {
    expect(X86EptBuilder.leaf(0x1000n, "4K", { accessed: true, dirty: true }) & (A | D)).toBe(A | D);
    expect(X86EptBuilder.leaf(0x1000n, "4K") & (A | D)).toBe(0n);

    const b = builder({ accessedDirty: true });
    const leaf = b.map(0x4000_0000n, 0x8000n);
    expect(walk(b, 0x4000_0000n, "read")).toMatchObject({ ok: true });
    for (const level of [4, 3, 2]) expect(mem.read64(b.entryAt(0x4000_0000n, level)!) & A).toBe(A);
    expect(mem.read64(leaf) & (A | D)).toBe(A);
    expect(walk(b, 0x4000_0000n, "write")).toMatchObject({ ok: true });
    expect(mem.read64(leaf) & (A | D)).toBe(A | D);

    const plain = builder();
    const leaf2 = plain.map(0x4000_0000n, 0x8000n);
    walk(plain, 0x4000_0000n, "write");
    expect(mem.read64(leaf2)).toBe(X86EptBuilder.leaf(0x8000n, "4K"));
    expect(mem.read64(plain.entryAt(0x4000_0000n, 4)!)).toBe(plain.tableFor(0x4000_0000n, 3) | R | W | X);
  });

  it("raw bits are ORed in verbatim: an ignored bit changes nothing, a reserved one is a misconfiguration at that level", () => {
    const cases: [EptPageSize, bigint, "ok" | "misconfig"][] = [
      ["4K", 1n << 11n, "ok"], ["4K", 1n << 52n, "ok"], ["4K", 1n << 51n, "misconfig"], ["4K", 1n << BigInt(M), "misconfig"],
      ["2M", 1n << 12n, "misconfig"], ["2M", 1n << 20n, "misconfig"], ["1G", 1n << 29n, "misconfig"], ["1G", 1n << 12n, "misconfig"],
    ];
    for (const [size, raw, outcome] of cases) {
      const b = builder();
      const at = b.map(0x4000_0000n, 0x4000_0000n, size, { raw });
      expect(mem.read64(at) & raw).toBe(raw);
      const r = walk(b, 0x4000_0000n, "read");
      if (outcome === "ok") expect(r).toMatchObject({ ok: true, hpa: 0x4000_0000n });
      else expect(r).toEqual({ ok: false, kind: "ept-misconfig", gpa: 0x4000_0000n, level: LEVEL[size] });
    }
  });

  it("tableFlags are the rights of every table entry the builder creates, ANDed into the walk", () => {
    const b = builder({ tableFlags: R | X });
    b.map(0x4000_0000n, 0x8000n);
    for (const level of [4, 3, 2]) expect(mem.read64(b.entryAt(0x4000_0000n, level)!) & 0xfffn).toBe(R | X);
    expect(walk(b, 0x4000_0000n, "read")).toMatchObject({ ok: true, rwx: 5 });
    expect(walk(b, 0x4000_0000n, "write")).toEqual({ ok: false, kind: "ept-violation", gpa: 0x4000_0000n, level: 1, qualification: Q_WRITE | Q_R | Q_X });
  });

  it("under MBEC the default tables allow no user-mode fetch; tableFlags with UX do", () => {
    const plain = builder();
    plain.map(0x4000_0000n, 0x8000n, "4K", { userExec: true });
    expect(walk(plain, 0x4000_0000n, { type: "fetch", userLinear: true }, MBEC)).toMatchObject({ ok: false, kind: "ept-violation", level: 1 });
    const ux = builder({ tableFlags: R | W | X | UX });
    ux.map(0x4000_0000n, 0x8000n, "4K", { userExec: true });
    expect(walk(ux, 0x4000_0000n, { type: "fetch", userLinear: true }, MBEC)).toMatchObject({ ok: true, hpa: 0x8000n });
  });
});

describe("unmap, entryAt, leafHpa and tableFor", () => {
  it("unmap clears the leaf and returns its old value; the walk then faults at that level", () => {
    const b = builder();
    b.map(0x4020_0000n, 0x60_0000n, "2M", { ipat: true });
    expect(b.unmap(0x4030_0000n)).toBe(X86EptBuilder.leaf(0x60_0000n, "2M", { ipat: true }));
    expect(b.leafHpa(0x4020_0000n)).toBeUndefined();
    expect(walk(b, 0x4020_0000n, "fetch")).toEqual({ ok: false, kind: "ept-violation", gpa: 0x4020_0000n, level: 2, qualification: Q_FETCH });
    expect(b.unmap(0x4020_0000n)).toBeUndefined();
    expect(b.entryAt(0x4020_0000n, 2)).toBeDefined();
  });

  it("entryAt and leafHpa are undefined where no path exists, and stop at a large page", () => {
    const b = builder();
    expect(b.entryAt(0x4000_0000n, 1)).toBeUndefined();
    expect(b.leafHpa(0x4000_0000n)).toBeUndefined();
    expect(b.entryAt(0x4000_0000n, 4)).toBe(b.root + 8n * ((0x4000_0000n >> 39n) & 511n));
    b.map(0x4000_0000n, 0x4000_0000n, "1G");
    expect(b.entryAt(0x4000_0000n, 2)).toBeUndefined();
    expect(b.leafHpa(0x4012_3000n)).toBe(b.entryAt(0x4000_0000n, 3));
  });

  it("a page inside a 2M or 1G page is refused, naming the level", () => {
    const b = builder();
    b.map(0x4000_0000n, 0x4000_0000n, "1G");
    b.map(0x8020_0000n, 0x20_0000n, "2M");
    expect(() => b.map(0x4000_1000n, 0x1000n)).toThrow(/vmmu: gpa 0x40001000 is inside a large page at EPT level 3/);
    expect(() => b.map(0x4020_0000n, 0x20_0000n, "2M")).toThrow(/EPT level 3/);
    expect(() => b.map(0x8020_1000n, 0x1000n)).toThrow(/EPT level 2/);
  });

  it("a full table area is a RangeError, and the tree built so far still translates", () => {
    const tableBase = area(0x4000n);
    const b = new X86EptBuilder(mem, { tableBase, tableLimit: tableBase + 0x4000n });
    b.map(0x1000n, 0x1000n);
    expect(() => b.map(1n << 39n, 0x2000n)).toThrow(/vmmu: EPT table area .* exhausted/);
    expect(walk(b, 0x1000n, "read")).toMatchObject({ ok: true, hpa: 0x1000n });
  });
});

describe("a seeded random tree", () => {
  it("every mapping translates as mapped, none clobbers another, and unmapping half leaves the rest", () => {
    const seed = testSeed();
    const rng = new Rng(seed);
    const levels = rng.pick([4, 5] as const);
    const tableBase = area(0x20_0000n);
    const b = new X86EptBuilder(mem, { levels, tableBase, tableLimit: tableBase + 0x20_0000n });
    const top = levels === 5 ? 57n : 48n;
    const regions = Array.from({ length: 4 }, () => (rng.u64() & ((1n << top) - 1n)) & ~((1n << 32n) - 1n));
    const maps: { gpa: bigint; hpa: bigint; size: EptPageSize; flags: EptLeafFlags }[] = [];
    const overlaps = (gpa: bigint, size: EptPageSize) =>
      maps.some((m) => gpa < m.gpa + BYTES[m.size] && m.gpa < gpa + BYTES[size]);
    while (maps.length < 150) {
      const size = rng.pick(["4K", "4K", "4K", "2M", "2M", "1G"] as const);
      const gpa = rng.pick(regions) + (BigInt(rng.int(4096)) << 20n) & ~(BYTES[size] - 1n);
      if (overlaps(gpa, size)) continue;
      const hpa = (rng.u64() & ((1n << BigInt(M)) - 1n)) & ~(BYTES[size] - 1n);
      const flags: EptLeafFlags = { read: true, write: rng.chance(0.5), exec: rng.chance(0.5), memType: rng.pick([0, 1, 4, 5, 6]), ipat: rng.chance(0.5) };
      b.map(gpa, hpa, size, flags);
      maps.push({ gpa, hpa, size, flags });
    }
    const check = (m: (typeof maps)[number], i: number) => {
      const offset = (rng.u64() % BYTES[m.size]) & ~7n;
      const note = seedNote(seed, `mapping ${i} ${m.size} gpa 0x${m.gpa.toString(16)}`);
      expect(walk(b, m.gpa + offset, "read"), note).toEqual({
        ok: true, hpa: m.hpa + offset, pageSize: Number(BYTES[m.size]), level: LEVEL[m.size], memType: m.flags.memType, ipat: m.flags.ipat,
        rwx: Number(R | (m.flags.write ? W : 0n) | (m.flags.exec ? X : 0n)),
      });
      expect(walk(b, m.gpa + offset, "write").ok, note).toBe(m.flags.write);
      expect(walk(b, m.gpa + offset, "fetch").ok, note).toBe(m.flags.exec);
    };
    maps.forEach(check);
    const kept = maps.filter((m, i) => {
      if (i % 2 === 0) return true;
      expect(b.unmap(m.gpa), seedNote(seed)).toBe(X86EptBuilder.leaf(m.hpa, m.size, m.flags));
      expect(walk(b, m.gpa, "read"), seedNote(seed)).toMatchObject({ ok: false, kind: "ept-violation", level: LEVEL[m.size], qualification: Q_READ });
      return false;
    });
    kept.forEach(check);
  });
});

describe("guest tables behind EPT", () => {
  it("an X86PageTableBuilder's tables, identity-mapped by EPT, and a page remapped by EPT translate as the 2D walk says", () => {
    const guestTables = area(0x20_0000n, 0x20_0000n);
    const guest = new X86PageTableBuilder(mem, { tableBase: guestTables, tableLimit: guestTables + 0x20_0000n });
    guest.map(0x7000_0000n, 0x4000_0000n, "4K", { write: true });
    const ept = builder();
    ept.map(guestTables, guestTables, "2M");
    ept.map(0x4000_0000n, 0x60_0000n, "2M", { memType: 0 });
    const state = { ...LONG_MODE, cr3: guest.root, pkru: 0n, rflags: 0n, maxPhysAddrBits: M };
    expect(refTranslateX86Ept(ref, state, ept.eptp, 0x7000_0abcn, "write", false, OPTS)).toEqual({
      ok: true, pa: 0x60_0abcn, gpa: 0x4000_0abcn, pageSize: 4096, level: 1, eptPageSize: 2 << 20, eptLevel: 2,
    });

    const va = 0x7000_1000n;
    guest.map(va, 0x4000_1000n, "4K", { write: true });
    const pte = guest.leafGpa(va)!;
    ept.unmap(guestTables);
    ept.map(guestTables, guestTables, "2M", { write: false });
    expect(refTranslateX86Ept(ref, state, ept.eptp, va, "read", false, OPTS)).toMatchObject({
      ok: false, kind: "ept-violation", gpa: pte, gva: va, level: 2, qualification: Q_WRITE | Q_R | Q_X | Q_GVA,
    });
  });
});

describe("bad input", () => {
  function thrown(call: () => unknown): Error {
    try {
      call();
    } catch (e) {
      return e as Error;
    }
    throw new Error("did not throw");
  }
  const NOT_BIGINT = ["0x1000", 4096, null, {}, true];
  const probes: [string, string, () => unknown][] = [];
  const each = (what: string, param: string, values: unknown[], call: (v: never) => unknown) => {
    for (const v of values) probes.push([`${what} with ${param} = ${String(v)}`, param, () => call(v as never)]);
  };
  const good = () => ({ tableBase: 0x3f0_0000n, tableLimit: 0x400_0000n });
  const mk = (o: unknown) => new X86EptBuilder(mem, o as never);
  each("new X86EptBuilder", "memory", [null, {}, "m", undefined], (m) => new X86EptBuilder(m, good()));
  each("new X86EptBuilder", "options", [null, "x", 1, [], undefined], (o) => mk(o));
  each("new X86EptBuilder", "levels", [3, 6, "4", null, 4n], (l) => mk({ ...good(), levels: l }));
  each("new X86EptBuilder", "tableBase", [0x3f0_0000, undefined, -4096n, 0x3f0_0800n, 1n << 64n], (b) => mk({ ...good(), tableBase: b }));
  each("new X86EptBuilder", "tableLimit", [0x400_0000, undefined, 0x3f0_0000n, (1n << 52n) + 0x2000n], (l) => mk({ ...good(), tableLimit: l }));
  each("new X86EptBuilder", "tableFlags", [7, "7", 1n << 64n, -1n, 0n, 1n << 8n, 7n | (1n << 12n), 7n | (1n << 51n)], (f) => mk({ ...good(), tableFlags: f }));
  each("new X86EptBuilder", "accessedDirty", ["true", 1, null], (a) => mk({ ...good(), accessedDirty: a }));
  each("new X86EptBuilder", "memType", [1, 4, 7, 8, "6", 6n, null], (t) => mk({ ...good(), memType: t }));
  each("X86EptBuilder.leaf", "hpa", [...NOT_BIGINT, undefined, -4096n, 1n << 52n, 0x1800n], (h) => X86EptBuilder.leaf(h, "4K"));
  each("X86EptBuilder.leaf", "hpa", [0x10_1000n, 0x2000_0000n + (1n << 21n)], (h) => X86EptBuilder.leaf(h, "1G"));
  each("X86EptBuilder.leaf", "size", ["4k", "512G", "__proto__", 4096, null], (s) => X86EptBuilder.leaf(0n, s));
  each("X86EptBuilder.leaf", "flags", [null, "x", 1, []], (f) => X86EptBuilder.leaf(0n, "4K", f));
  for (const k of ["read", "write", "exec", "userExec", "ipat", "accessed", "dirty"]) {
    each("X86EptBuilder.leaf", `flags.${k}`, ["false", 1, null], (x) => X86EptBuilder.leaf(0n, "4K", { [k]: x }));
  }
  each("X86EptBuilder.leaf", "flags.memType", [8, -1, 1.5, "6", null, 6n], (t) => X86EptBuilder.leaf(0n, "4K", { memType: t }));
  each("X86EptBuilder.leaf", "flags.raw", [1, "1", null, -1n, 1n << 64n], (r) => X86EptBuilder.leaf(0n, "4K", { raw: r }));
  let b4: X86EptBuilder | undefined;
  let b5: X86EptBuilder | undefined;
  const four = () => (b4 ??= builder());
  const five = () => (b5 ??= builder({ levels: 5 }));
  each("map", "gpa", [...NOT_BIGINT, undefined, -4096n, 1n << 48n, 0x1800n], (g) => four().map(g, 0x1000n));
  each("map", "gpa", [0x20_1000n], (g) => four().map(g, 0x20_0000n, "2M"));
  each("5-level map", "gpa", [1n << 57n, 1n << 63n], (g) => five().map(g, 0x1000n));
  each("map", "hpa", [...NOT_BIGINT, 1n << 52n, 0x20_1000n], (h) => four().map(0x20_0000n, h, "2M"));
  each("map", "size", ["2m", 4096, null], (s) => four().map(0n, 0n, s));
  each("map", "flags.memType", [9], (t) => four().map(0n, 0n, "4K", { memType: t }));
  each("mapRange", "count", ["1", 1.5, -1, NaN, null], (n) => four().mapRange(0n, 0n, n));
  each("mapRange", "gpa + count pages", [2], (n) => four().mapRange((1n << 48n) - 0x1000n, 0n, n));
  each("mapRange", "hpa + count pages", [2], (n) => four().mapRange(0n, (1n << 52n) - 0x1000n, n));
  each("tableFor", "level", [0, 5, 1.5, "1"], (l) => four().tableFor(0n, l));
  each("5-level tableFor", "level", [0, 6], (l) => five().tableFor(0n, l));
  each("entryAt", "level", [0, 5, null], (l) => four().entryAt(0n, l));
  each("entryAt", "gpa", [...NOT_BIGINT, 1n << 48n], (g) => four().entryAt(g, 1));
  each("leafHpa", "gpa", [...NOT_BIGINT, 1n << 48n], (g) => four().leafHpa(g));
  each("unmap", "gpa", [...NOT_BIGINT, 1n << 48n], (g) => four().unmap(g));

  it("each bad argument is a TypeError or RangeError whose 'vmmu: ' message names the parameter", () => {
    const failures: string[] = [];
    for (const [what, param, call] of probes) {
      let e: Error;
      try {
        e = thrown(call);
      } catch {
        failures.push(`${what}: did not throw`);
        continue;
      }
      if (!(e instanceof TypeError || e instanceof RangeError)) failures.push(`${what}: ${e.constructor.name}: ${e.message}`);
      else if (!e.message.startsWith("vmmu: ") || !e.message.includes(param)) failures.push(`${what}: ${e.message}`);
    }
    expect(failures).toEqual([]);
    expect(probes.length).toBeGreaterThan(100);
  });

  it("a refused map writes nothing", () => {
    const b = builder();
    expect(() => b.map(0x1000n, 0x1000n, "4K", { memType: 8 })).toThrow(RangeError);
    expect(() => b.map(0x1800n, 0x1000n)).toThrow(RangeError);
    expect(b.tablesAllocated).toBe(1);
    expect(b.leafHpa(0x1000n)).toBeUndefined();
  });
});
