/**
 * The legacy direct MMU (KVM arch/x86/kvm/mmu/mmu.c before the TDP MMU:
 * __direct_map, kvm_mmu_get_page with direct roles, mmu_free_root_page,
 * kvm_unmap_rmapp, kvm_mmu_zap_all_fast, kvm_mmu_zap_oldest_mmu_pages),
 * checked against the hardware walker: a vCPU with guest paging off runs
 * under EPTP = the MMU's root, so every translate() is a walk of the tables
 * the MMU built.
 */
import { describe, expect, it } from "vitest";
import { createMachine, type X86Vcpu } from "../../../src/index.js";
import { HostPool } from "../../../src/kvm/host-pool.js";
import { LegacyDirectMmu } from "../../../src/kvm/legacy-direct-mmu.js";
import { ROLE_SMM, directEptp } from "../../../src/kvm/direct-mmu.js";
import { SPTE_X, spteHpa } from "../../../src/kvm/ept-spte.js";
import { ACC_ALL, ROLE_CR0_WP, ROLE_EFER_NX, ROLE_GUEST_MODE, ROLE_SMAP_ANDNOT_WP, ROLE_SMEP_ANDNOT_WP, roleAt } from "../../../src/kvm/shadow-mmu.js";
import { disposeAfterAll } from "../../helpers/machine.js";
import { Rng, fuzzCount, seedNote, testSeed } from "../../helpers/rng.js";

const MiB = 1 << 20;
/** Guest RAM whose tail (the last 20 KiB) is not a whole 2 MiB page. */
const RAM = 6 * MiB + 20 * 1024;
const GFNS = RAM / 4096;

interface World {
  mmu: LegacyDirectMmu;
  pool: HostPool;
  vcpu: X86Vcpu;
  levels: 4 | 5;
  /** Loads root `hpa` as the vCPU's EPTP (VPID 1). */
  load(hpa: bigint): void;
  /** The host-physical address the hardware walker gives for `gpa`, or undefined on an EPT violation. */
  hw(gpa: bigint, access?: "read" | "write" | "fetch"): bigint | undefined;
}

async function world(opts: { levels?: 4 | 5; poolBytes?: number; ramBytes?: number; hostLevel?: 1 | 2 | 3; nxHugePages?: boolean } = {}): Promise<World> {
  const levels = opts.levels ?? 4;
  const ramBytes = opts.ramBytes ?? RAM;
  const machine = disposeAfterAll(await createMachine({
    arch: "x86_64", memoryBytes: ramBytes, vcpus: 1, maxPhysAddrBits: 52, poolBytes: opts.poolBytes ?? 4 * MiB, tlbEntries: 512,
  }));
  const pool = new HostPool(machine.memory.wasmMemory, machine.layout);
  const mmu = new LegacyDirectMmu(pool, { ramBytes: BigInt(ramBytes), levels, hostLevel: opts.hostLevel ?? 2, ...(opts.nxHugePages !== undefined ? { nxHugePages: opts.nxHugePages } : {}) });
  const vcpu = machine.vcpu(0) as X86Vcpu;
  return {
    mmu, pool, vcpu, levels,
    load: (hpa) => vcpu.setVmcs({ eptp: directEptp(hpa, levels, true), vpid: 1 }),
    hw: (gpa, access = "read") => {
      const r = vcpu.translate(gpa, access);
      if ("fault" in r) {
        if (r.fault.kind !== "ept-violation") throw new Error(`unexpected ${r.fault.kind} for ${gpa.toString(16)}`);
        return undefined;
      }
      return r.pa;
    },
  };
}

/** Root roles of a 64-bit guest with EFER.NX: CR0.WP 1 and 0, and SMM with CR0.WP 1. */
const role = (levels: number, bits: number) => roleAt(ROLE_EFER_NX | bits, levels, ACC_ALL, true);
const WP1 = (levels = 4) => role(levels, ROLE_CR0_WP);
const WP0 = (levels = 4) => role(levels, 0);
const SMM = (levels = 4) => role(levels, ROLE_CR0_WP | ROLE_SMM);

/** The pool page an EPT walk from `root` reaches at `level` for `gpa` (the table the level-`level` SPTE lives in). */
function tableAt(pool: HostPool, root: bigint, levels: number, gpa: bigint, level: number): bigint {
  let table = root;
  for (let l = levels; l > level; l--) table = spteHpa(pool.read(table, Number((gpa >> BigInt(12 + 9 * (l - 1))) & 511n)));
  return table;
}

describe("the hardware walker agrees with the legacy direct MMU", () => {
  it.each([4, 5] as const)("on random faults, zaps, invalidations and root switches between CR0.WP 1 and 0 (%i-level EPT)", async (levels) => {
    const seed = testSeed();
    const note = seedNote(seed, `levels=${levels}`);
    const rng = new Rng(seed);
    const w = await world({ levels });
    const { mmu } = w;
    const roles = [WP1(levels), WP0(levels)];
    /** Per role: gfns faulted in and not zapped since (a mapping of anything else is wrong). */
    const allowed = roles.map(() => new Set<number>());
    /** Per role: gfns that must be mapped (faulted in; nothing since could have removed them). */
    const must = roles.map(() => new Set<number>());
    let cur = 0;
    let root = mmu.acquireRoot(roles[cur]!).hpa;
    w.load(root);
    w.vcpu.invept(2);
    const flushIf = (f: boolean) => { if (f) w.vcpu.invept(2); };
    const dropAligned = (set: Set<number>, s: number, e: number) => {
      for (let g = s & ~511; g < Math.min(GFNS, (e + 511) & ~511); g++) set.delete(g);
    };
    const check = (gfns: Iterable<number>, step: number, what: string) => {
      for (const g of gfns) {
        const gpa = BigInt(g) * 4096n + BigInt(rng.int(4096));
        const pa = w.hw(gpa, rng.pick(["read", "write", "fetch"] as const));
        const where = `${note} step ${step} after ${what}: gfn ${g.toString(16)} role ${cur}`;
        if (pa !== undefined) {
          expect(pa, where).toBe(gpa);
          expect(allowed[cur]!.has(g), `${where} mapped without a fault since its last zap`).toBe(true);
        } else {
          expect(must[cur]!.has(g), `${where} faulted in but not mapped`).toBe(false);
        }
      }
    };
    const STEPS = 300;
    let faults = 0, spurious = 0, drops = 0;
    for (let step = 0; step < STEPS; step++) {
      const r = rng.int(100);
      let what: string;
      if (r < 50) {
        const g = rng.chance(0.15) ? GFNS - 1 - rng.int(8) : rng.int(GFNS);
        const gpa = BigInt(g) * 4096n + BigInt(rng.int(4096));
        const res = mmu.pageFault(root, gpa, rng.chance(0.5), rng.chance(0.3));
        faults++;
        if (res.flush) { drops++; dropAligned(must[cur]!, g, g + 1); }
        flushIf(res.flush);
        const span = 1 << (9 * (res.level - 1));
        for (let x = g & ~(span - 1); x < (g & ~(span - 1)) + span; x++) { allowed[cur]!.add(x); must[cur]!.add(x); }
        expect(w.hw(gpa), `${note} step ${step}: the faulted gpa ${gpa.toString(16)} translates`).toBe(gpa);
        what = `fault ${gpa.toString(16)} → level ${res.level}`;
      } else if (r < 62) {
        const mapped = [...must[cur]!];
        const g = mapped.length > 0 ? rng.pick(mapped) : rng.int(GFNS);
        const gpa = BigInt(g) * 4096n;
        const first = mmu.pageFault(root, gpa, false, false);
        flushIf(first.flush);
        if (first.flush) dropAligned(must[cur]!, g, g + 1);
        const span = 1 << (9 * (first.level - 1));
        for (let x = g & ~(span - 1); x < (g & ~(span - 1)) + span; x++) { allowed[cur]!.add(x); must[cur]!.add(x); }
        const again = mmu.pageFault(root, gpa, false, false);
        expect(again, `${note} step ${step}: a refault of an unchanged SPTE`).toMatchObject({ spurious: true, spteInstalled: 0, spAllocated: 0, flush: false });
        spurious++;
        what = `refault ${gpa.toString(16)}`;
      } else if (r < 74) {
        const s = rng.int(GFNS);
        const e = rng.chance(0.1) ? GFNS + 100 : s + 1 + rng.int(rng.chance(0.5) ? 4 : 700);
        const z = mmu.zapGfnRange(BigInt(s), BigInt(e));
        expect(z.flush, note).toBe(z.zapped > 0);
        flushIf(z.flush);
        for (const a of allowed) for (let g = s; g < Math.min(e, GFNS); g++) a.delete(g);
        for (const m of must) dropAligned(m, s, e);
        what = `zap [${s.toString(16)}, ${e.toString(16)})`;
      } else if (r < 86) {
        mmu.releaseRoot(root);
        cur ^= 1;
        const got = mmu.acquireRoot(roles[cur]!);
        if (got.built) { allowed[cur]!.clear(); must[cur]!.clear(); }
        root = got.hpa;
        w.load(root);
        // kvm_mmu_load flushes the current context after loading a new root (a freed root's hpa may come back).
        if (got.built || got.flush) w.vcpu.invept(2);
        what = `switch to role ${cur} (${got.built ? "built" : "reused"})`;
      } else if (r < 90) {
        mmu.invalidateAllRoots();
        expect(mmu.isValidRoot(root), note).toBe(false);
        w.vcpu.invept(2);
        for (const s of [...allowed, ...must]) s.clear();
        check(Array.from({ length: 32 }, () => rng.int(GFNS)), step, "invalidate (before reload)");
        mmu.releaseRoot(root);
        const got = mmu.acquireRoot(roles[cur]!);
        expect(got.built, `${note} an obsolete root is never found again`).toBe(true);
        root = got.hpa;
        w.load(root);
        w.vcpu.invept(2);
        what = "invalidate + reload";
      } else {
        mmu.hostLevel = mmu.hostLevel === 2 ? 1 : 2;
        what = `hostLevel ${mmu.hostLevel}`;
      }
      expect(mmu.audit(), `${note} step ${step} after ${what}`).toEqual([]);
      check(step % 25 === 24 ? Array.from({ length: GFNS }, (_, i) => i) : Array.from({ length: 48 }, () => rng.int(GFNS)), step, what);
    }
    fuzzCount("legacy-direct-mmu", STEPS);
    expect(mmu.stats.faults, note).toBe(faults + 2 * spurious);
    expect(mmu.stats.spurious, note).toBeGreaterThanOrEqual(spurious);
    expect(drops, `${note} the sequence dropped huge leaves or tables`).toBeGreaterThan(0);
    expect(mmu.stats.rootsReused, `${note} the sequence found cached roots again`).toBeGreaterThan(0);
    expect(mmu.stats.splits, "the legacy MMU never splits: it drops the huge SPTE and refaults").toBe(0);
  });
});

describe("roots survive their last release (why the legacy MMU has no CR0.WP pathology)", () => {
  it("acquire WP=1, fault, release, acquire WP=0, fault, release, acquire WP=1: the same root with every mapping, no fault needed", async () => {
    const w = await world({ hostLevel: 1 });
    const { mmu } = w;
    const gpas = Array.from({ length: 40 }, (_, i) => BigInt(i * 37 + 3) * 4096n);
    const a = mmu.acquireRoot(WP1());
    expect(a.built).toBe(true);
    for (const gpa of gpas) mmu.pageFault(a.hpa, gpa, true, false);
    const inUse = mmu.pagesInUse();
    mmu.releaseRoot(a.hpa);
    expect(mmu.pagesInUse()).toBe(inUse);
    expect(mmu.isValidRoot(a.hpa)).toBe(true);

    const b = mmu.acquireRoot(WP0());
    expect(b.built).toBe(true);
    expect(b.hpa).not.toBe(a.hpa);
    mmu.pageFault(b.hpa, gpas[0]!, false, false);
    mmu.releaseRoot(b.hpa);

    const faults = mmu.stats.faults, reused = mmu.stats.rootsReused, freed = mmu.stats.rootsFreed;
    const again = mmu.acquireRoot(WP1());
    expect(again).toMatchObject({ hpa: a.hpa, built: false });
    expect(mmu.stats.rootsReused).toBe(reused + 1);
    expect(mmu.stats.rootsFreed).toBe(freed);
    w.load(again.hpa);
    w.vcpu.invept(2);
    for (const gpa of gpas) expect(w.hw(gpa + 0x123n, "write"), `gpa ${gpa.toString(16)}`).toBe(gpa + 0x123n);
    expect(mmu.stats.faults).toBe(faults);
    // Every gfn of WP=0's tree is separate: the one it faulted is not in WP=1's … and WP=1's others are not in WP=0's.
    const other = mmu.acquireRoot(WP0());
    expect(other).toMatchObject({ hpa: b.hpa, built: false });
    w.load(other.hpa);
    expect(w.hw(gpas[0]!)).toBe(gpas[0]);
    expect(w.hw(gpas[1]!)).toBeUndefined();
  });

  it("SMM entry and RSM find both roots again", async () => {
    const { mmu } = await world();
    const normal = mmu.acquireRoot(WP1());
    mmu.pageFault(normal.hpa, 0x1000n, false, false);
    mmu.releaseRoot(normal.hpa);
    const smm = mmu.acquireRoot(SMM());
    expect(smm.built).toBe(true);
    mmu.releaseRoot(smm.hpa);
    expect(mmu.acquireRoot(WP1())).toMatchObject({ hpa: normal.hpa, built: false });
    expect(mmu.acquireRoot(SMM())).toMatchObject({ hpa: smm.hpa, built: false });
    expect(mmu.stats).toMatchObject({ rootsBuilt: 2, rootsReused: 2, rootsFreed: 0 });
  });

  it("two vCPUs acquiring the same role share one root; it stays after both release", async () => {
    const { mmu } = await world();
    const a = mmu.acquireRoot(WP1()), b = mmu.acquireRoot(WP1());
    expect(b).toMatchObject({ hpa: a.hpa, built: false });
    mmu.releaseRoot(a.hpa);
    mmu.releaseRoot(b.hpa);
    expect(() => mmu.releaseRoot(a.hpa)).toThrow(/vmmu: hpa .* is not a root this MMU holds a reference to/);
    expect(mmu.acquireRoot(WP1())).toMatchObject({ hpa: a.hpa, built: false });
  });
});

describe("direct shadow pages are hashed by (base gfn, role)", () => {
  it("the same gfn range under CR0.WP 1, CR0.WP 0 and SMM has its own tables; one role's faults share them", async () => {
    const w = await world({ hostLevel: 1 });
    const { mmu, pool } = w;
    const gpa = 0x40_3000n, near = 0x40_7000n;
    const roots = [WP1(), WP0(), SMM()].map((r) => mmu.acquireRoot(r).hpa);
    for (const root of roots) mmu.pageFault(root, gpa, false, false);
    expect(new Set(roots).size).toBe(3);
    for (const level of [3, 2, 1]) {
      const tables = roots.map((root) => tableAt(pool, root, 4, gpa, level));
      expect(new Set(tables).size, `level ${level} tables`).toBe(3);
    }
    const before = mmu.stats.spAllocated;
    const r = mmu.pageFault(roots[0]!, near, false, false);
    expect(r).toMatchObject({ spAllocated: 0, spteInstalled: 1, level: 1 });
    expect(mmu.stats.spAllocated).toBe(before);
    expect(tableAt(pool, roots[0]!, 4, near, 1)).toBe(tableAt(pool, roots[0]!, 4, gpa, 1));
  });

  it("the role is normalised as kvm_mmu_get_page does (direct, ACC_ALL): the same root either way", async () => {
    const { mmu } = await world();
    const full = mmu.acquireRoot(WP1());
    const bare = mmu.acquireRoot(ROLE_EFER_NX | ROLE_CR0_WP | 4);
    expect(bare).toMatchObject({ hpa: full.hpa, built: false });
  });

  it("a table unlinked by a huge leaf stays hashed and is linked again, mappings and all, when the huge leaf goes", async () => {
    const w = await world({ hostLevel: 1 });
    const { mmu } = w;
    const root = mmu.acquireRoot(WP1()).hpa;
    w.load(root);
    const a = 0x20_5000n, b = 0x20_9000n, other = 0x2f_f000n;
    mmu.pageFault(root, a, false, false);
    const pt = tableAt(w.pool, root, 4, a, 1);
    const pages = mmu.pagesInUse();

    // The host now backs the range with a 2 MiB page: the PT at the goal level is dropped for a huge leaf.
    mmu.hostLevel = 2;
    const huge = mmu.pageFault(root, b, false, false);
    expect(huge).toMatchObject({ level: 2, flush: true, spAllocated: 0 });
    w.vcpu.invept(2);
    expect(w.hw(other)).toBe(other);
    expect(mmu.pagesInUse()).toBe(pages);

    // Back to 4 KiB: the huge leaf is dropped (drop_large_spte, a flush) and kvm_mmu_get_page finds the old PT.
    mmu.hostLevel = 1;
    expect(w.hw(other)).toBe(other);
    const small = mmu.pageFault(root, b, false, false);
    expect(small).toMatchObject({ level: 1, flush: true, spAllocated: 0, split: false });
    expect(tableAt(w.pool, root, 4, b, 1)).toBe(pt);
    expect(w.hw(other), "the stale 2 MiB translation until the flush the fault asked for").toBe(other);
    w.vcpu.invept(2);
    expect(w.hw(other), "dropped with the huge leaf").toBeUndefined();
    expect(w.hw(a), "the orphaned PT's mapping, back without a fault").toBe(a);
    expect(w.hw(b)).toBe(b);
    expect(mmu.audit()).toEqual([]);
  });
});

describe("hugepage adjust", () => {
  it("maps a 2 MiB leaf where the 2 MiB range is in RAM and 4 KiB leaves in the unaligned tail", async () => {
    const w = await world();
    const root = w.mmu.acquireRoot(WP1()).hpa;
    w.load(root);
    expect(w.mmu.pageFault(root, 0x40_1234n, true, false).level).toBe(2);
    expect(w.hw(0x5f_f000n)).toBe(0x5f_f000n);
    const tail = BigInt(RAM) - 0x1000n;
    expect(w.mmu.pageFault(root, tail, false, true).level).toBe(1);
    expect(w.hw(tail)).toBe(tail);
    expect(w.hw(tail - 0x1000n)).toBeUndefined();
  });

  it("pre-sets A and D on every leaf with EPT A/D on (make_spte, pte_access ACC_ALL); neither with it off", async () => {
    const w = await world({ hostLevel: 1 });
    const root = w.mmu.acquireRoot(WP1()).hpa;
    w.mmu.pageFault(root, 0x1000n, false, false);
    w.mmu.pageFault(root, 0x2000n, true, false);
    const pt = tableAt(w.pool, root, 4, 0x1000n, 1);
    expect(w.pool.read(pt, 1) & 0x307n).toBe(0x307n);
    expect(w.pool.read(pt, 2) & 0x307n).toBe(0x307n);
    const off = new LegacyDirectMmu(w.pool, { ramBytes: BigInt(RAM), adEnabled: false, hostLevel: 1 });
    const r2 = off.acquireRoot(WP1()).hpa;
    off.pageFault(r2, 0x2000n, true, true);
    expect(w.pool.read(tableAt(w.pool, r2, 4, 0x2000n, 1), 2) & 0x307n).toBe(0x7n);
  });
});

describe("the NX huge page mitigation (nxHugePages, KVM nx_huge_pages)", () => {
  /** The leaf SPTE for `gpa` at `level` under `root` (the walk assumes tables above it). */
  const leaf = (w: World, root: bigint, gpa: bigint, level: number) => w.pool.read(tableAt(w.pool, root, w.levels, gpa, level), Number((gpa >> BigInt(12 + 9 * (level - 1))) & 511n));
  const exec = (spte: bigint) => (spte & SPTE_X) !== 0n;

  it("maps a data access with a 2 MiB leaf without X; a fetch drops it (flush) for an executable 4 KiB leaf, and the rest of the region comes back at 4 KiB", async () => {
    const w = await world({ nxHugePages: true });
    expect(w.mmu.nxHugePages).toBe(true);
    const root = w.mmu.acquireRoot(WP1()).hpa;
    w.load(root);
    expect(w.mmu.pageFault(root, 0x40_1234n, true, false)).toMatchObject({ level: 2, flush: false });
    expect(exec(leaf(w, root, 0x40_1234n, 2))).toBe(false);
    for (const p of [0x40_0000n, 0x4a_b000n, 0x5f_f000n]) {
      expect(w.hw(p, "write")).toBe(p);
      expect(w.hw(p, "fetch")).toBeUndefined();
    }
    // __direct_map: goal 4 KiB (huge_page_disallowed), drop_large_spte on the 2 MiB leaf (a flush), a new page linked.
    expect(w.mmu.pageFault(root, 0x4a_b123n, false, true)).toMatchObject({ level: 1, flush: true, spAllocated: 1, spurious: false });
    w.vcpu.invept(2);
    expect(w.hw(0x4a_b000n, "fetch")).toBe(0x4a_b000n);
    expect(exec(leaf(w, root, 0x4a_b000n, 1))).toBe(true);
    expect(w.hw(0x40_0000n, "read")).toBeUndefined();
    // A data fault in the region meets the disallowed page at its goal level and maps 4 KiB (disallowed_hugepage_adjust).
    expect(w.mmu.pageFault(root, 0x40_0000n, true, false)).toMatchObject({ level: 1, flush: false, spAllocated: 0 });
    expect(w.hw(0x40_0000n, "write")).toBe(0x40_0000n);
    expect(w.hw(0x40_0000n, "fetch")).toBe(0x40_0000n);
    expect(w.hw(0x40_1000n, "read")).toBeUndefined();
    // Another region still gets a huge page for data.
    expect(w.mmu.pageFault(root, 0x20_0000n, false, false).level).toBe(2);
    expect(w.mmu.stats.nxLpageSplits).toBe(1);
    expect(w.mmu.possibleNxHugePages()).toBe(1);
    expect(w.mmu.audit()).toEqual([]);
  });

  it("still replaces a page no fetch linked by a 2 MiB leaf (the nx_huge_page_disallowed check of 76901e56fb51)", async () => {
    const w = await world({ nxHugePages: true, hostLevel: 1 });
    const root = w.mmu.acquireRoot(WP1()).hpa;
    w.load(root);
    w.mmu.pageFault(root, 0x20_3000n, false, false);
    w.mmu.pageFault(root, 0x40_3000n, false, true);
    w.mmu.hostLevel = 2;
    expect(w.mmu.pageFault(root, 0x20_7000n, false, false)).toMatchObject({ level: 2, flush: true });
    expect(w.mmu.pageFault(root, 0x40_7000n, false, false)).toMatchObject({ level: 1, flush: false });
    expect(exec(leaf(w, root, 0x20_7000n, 2))).toBe(false);
    // hostLevel 1 at the fetch: req_level 1, so the page is disallowed but no possible NX huge page.
    expect(w.mmu.stats.nxLpageSplits).toBe(0);
    w.vcpu.invept(2);
    expect(w.hw(0x3f_f000n, "read")).toBe(0x3f_f000n);
    expect(w.hw(0x3f_f000n, "fetch")).toBeUndefined();
    expect(w.mmu.audit()).toEqual([]);
  });

  it("forgets disallowed pages when they are zapped (kvm_mmu_zap_all_fast), and the next root maps huge again", async () => {
    const w = await world({ nxHugePages: true });
    const root = w.mmu.acquireRoot(WP1()).hpa;
    w.mmu.pageFault(root, 0x40_3000n, false, true);
    w.mmu.pageFault(root, 0x20_3000n, false, true);
    expect(w.mmu.possibleNxHugePages()).toBe(2);
    w.mmu.invalidateAllRoots();
    expect(w.mmu.possibleNxHugePages()).toBe(0);
    expect(w.mmu.audit()).toEqual([]);
    w.mmu.releaseRoot(root);
    const again = w.mmu.acquireRoot(WP1()).hpa;
    expect(w.mmu.pageFault(again, 0x40_5000n, false, false).level).toBe(2);
    expect(w.mmu.audit()).toEqual([]);
  });

  it("without nxHugePages a fetch maps and executes from the 2 MiB leaf", async () => {
    const w = await world();
    expect(w.mmu.nxHugePages).toBe(false);
    const root = w.mmu.acquireRoot(WP1()).hpa;
    w.load(root);
    expect(w.mmu.pageFault(root, 0x40_1234n, false, true)).toMatchObject({ level: 2, flush: false });
    expect(exec(leaf(w, root, 0x40_1234n, 2))).toBe(true);
    for (const p of [0x40_0000n, 0x5f_f000n]) expect(w.hw(p, "fetch")).toBe(p);
    expect(w.mmu.stats.nxLpageSplits).toBe(0);
  });

  it("refuses a non-boolean nxHugePages by name", async () => {
    const w = await world();
    expect(() => new LegacyDirectMmu(w.pool, { ramBytes: BigInt(RAM), nxHugePages: 1 as never })).toThrow(/vmmu: opts\.nxHugePages/);
  });
});

describe("zapGfnRange", () => {
  it("zaps the leaves of every hashed root, a huge leaf whole, and tells the caller to flush", async () => {
    const w = await world();
    const { mmu } = w;
    const a = mmu.acquireRoot(WP1()).hpa;
    mmu.hostLevel = 1;
    mmu.pageFault(a, 0x1000n, false, false);
    mmu.releaseRoot(a);
    const b = mmu.acquireRoot(WP0()).hpa;
    mmu.hostLevel = 2;
    mmu.pageFault(b, 0x20_0000n, false, false);
    mmu.pageFault(b, 0x1000n, false, false);
    w.load(b);
    expect(w.hw(0x3f_f000n)).toBe(0x3f_f000n);
    expect(mmu.zapGfnRange(0x201n, 0x202n)).toEqual({ zapped: 1, flush: true });
    w.vcpu.invept(2);
    expect(w.hw(0x3f_f000n), "the whole 2 MiB leaf went").toBeUndefined();
    expect(mmu.zapGfnRange(0x201n, 0x202n)).toEqual({ zapped: 0, flush: false });
    expect(mmu.zapGfnRange(0n, 1n << 40n)).toEqual({ zapped: 2, flush: true });
    expect(w.hw(0x1000n)).toBeUndefined();
    mmu.releaseRoot(b);
    const again = mmu.acquireRoot(WP1());
    expect(again).toMatchObject({ hpa: a, built: false });
    w.load(a);
    w.vcpu.invept(2);
    expect(w.hw(0x1000n), "the cached WP=1 root's leaf was zapped too").toBeUndefined();
  });
});

describe("invalidateAllRoots (kvm_mmu_zap_all_fast)", () => {
  it("makes every root obsolete: new roots are built, unreferenced trees are freed now, a held root when released", async () => {
    const w = await world({ hostLevel: 1 });
    const { mmu, pool } = w;
    const baseline = pool.inUse;
    const cached = mmu.acquireRoot(WP0()).hpa;
    mmu.pageFault(cached, 0x5000n, false, false);
    mmu.releaseRoot(cached);
    const held = mmu.acquireRoot(WP1()).hpa;
    for (let i = 0n; i < 3n; i++) mmu.pageFault(held, i * 0x20_0000n + 0x3000n, true, false);
    w.load(held);
    w.vcpu.invept(2);
    expect(w.hw(0x3000n)).toBe(0x3000n);
    const pages = mmu.pagesInUse();
    expect(pool.inUse - baseline).toBe(pages);
    const freed = mmu.stats.spFreed;

    mmu.invalidateAllRoots();
    expect(mmu.isValidRoot(held)).toBe(false);
    expect(mmu.isValidRoot(cached)).toBe(false);
    expect(mmu.pagesInUse(), "only the held root page is left").toBe(1);
    expect(mmu.stats.spFreed - freed).toBe(pages - 1);
    expect(mmu.stats.rootsFreed).toBe(1);
    w.vcpu.invept(2);
    expect(w.hw(0x3000n), "the held root was emptied").toBeUndefined();
    expect(() => mmu.pageFault(held, 0x3000n, false, false)).toThrow(/vmmu: rootHpa .* is an invalid root/);

    const fresh = mmu.acquireRoot(WP1());
    expect(fresh.built).toBe(true);
    expect(fresh.hpa).not.toBe(held);
    mmu.releaseRoot(held);
    expect(mmu.stats.rootsFreed).toBe(2);
    expect(mmu.pagesInUse()).toBe(1);
    expect(pool.inUse - baseline).toBe(1);
    expect(mmu.isValidRoot(fresh.hpa)).toBe(true);
    expect(mmu.acquireRoot(WP0()).built, "the cached WP=0 root is gone too").toBe(true);
    expect(mmu.audit()).toEqual([]);
  });
});

describe("pool exhaustion", () => {
  it("zaps the oldest unreferenced pages to make room (make_mmu_pages_available) and keeps every translation right", async () => {
    const ramBytes = 64 * MiB;
    const w = await world({ poolBytes: 16 * 4096, ramBytes, hostLevel: 1 });
    const { mmu } = w;
    const root = mmu.acquireRoot(WP1()).hpa;
    w.load(root);
    let reclaimed = 0;
    const faulted: bigint[] = [];
    for (let i = 0n; i < 32n; i++) {
      const gpa = i * 0x20_0000n + 0x7000n;
      const r = mmu.pageFault(root, gpa, false, false);
      if (r.flush) { reclaimed++; w.vcpu.invept(2); }
      faulted.push(gpa);
      expect(w.hw(gpa)).toBe(gpa);
      expect(w.pool.inUse).toBeLessThanOrEqual(16);
      for (const f of faulted) { const pa = w.hw(f); if (pa !== undefined) expect(pa).toBe(f); }
      expect(mmu.audit()).toEqual([]);
    }
    expect(reclaimed).toBeGreaterThan(0);
    expect(mmu.stats.spFreed).toBeGreaterThan(0);
    expect(mmu.isValidRoot(root), "a held root is never reclaimed").toBe(true);
    expect(mmu.stats.rootsFreed).toBe(0);
  });

  it("a partial reclaim leaves the newest tables hashed as orphans, linked again by later faults", async () => {
    const ramBytes = 128 * MiB;
    const w = await world({ poolBytes: 40 * 4096, ramBytes, hostLevel: 1 });
    const { mmu } = w;
    const root = mmu.acquireRoot(WP1()).hpa;
    w.load(root);
    const gpaOf = (i: number) => BigInt(i) * 0x20_0000n + 0x5000n;
    let reclaimedAt = -1;
    for (let i = 0; i < 40; i++) {
      const r = mmu.pageFault(root, gpaOf(i), false, false);
      if (r.flush) { w.vcpu.invept(2); if (reclaimedAt < 0) reclaimedAt = i; }
      expect(mmu.audit(), `fault ${i}`).toEqual([]);
    }
    expect(reclaimedAt).toBeGreaterThan(0);
    // The PTs allocated last before the reclaim survived it, unlinked: a fault next to their gfn finds each one again.
    const allocated = mmu.stats.spAllocated;
    const r = mmu.pageFault(root, gpaOf(reclaimedAt - 1) + 0x1000n, false, false);
    expect(r.spAllocated, "the orphaned PT is found in the hash").toBe(0);
    expect(mmu.stats.spAllocated).toBe(allocated);
    w.vcpu.invept(2);
    expect(w.hw(gpaOf(reclaimedAt - 1)), "its old mapping is back without its own fault").toBe(gpaOf(reclaimedAt - 1));
    expect(mmu.audit()).toEqual([]);
    mmu.invalidateAllRoots();
    expect(mmu.audit()).toEqual([]);
    expect(mmu.pagesInUse()).toBe(1);
  });

  it("an unreferenced cached root is reclaimed like any old page", async () => {
    const w = await world({ poolBytes: 8 * 4096, hostLevel: 1 });
    const { mmu } = w;
    const old = mmu.acquireRoot(WP0()).hpa;
    mmu.pageFault(old, 0x1000n, false, false);
    mmu.releaseRoot(old);
    const root = mmu.acquireRoot(WP1()).hpa;
    for (let i = 0n; i < 3n; i++) mmu.pageFault(root, i * 0x20_0000n, false, false);
    expect(mmu.stats.rootsFreed).toBe(1);
    expect(mmu.acquireRoot(WP0()).built).toBe(true);
  });

  it("throws a clear error when every pool page is a held root", async () => {
    const w = await world({ poolBytes: 8 * 4096 });
    const { mmu } = w;
    const bits = [ROLE_CR0_WP, ROLE_SMM, ROLE_GUEST_MODE, ROLE_SMEP_ANDNOT_WP, ROLE_SMAP_ANDNOT_WP];
    const held: bigint[] = [];
    for (let m = 0; m < 8; m++) held.push(mmu.acquireRoot(role(4, bits.filter((_, i) => (m >> i) & 1).reduce((x, y) => x | y, 0))).hpa);
    expect(() => mmu.acquireRoot(role(4, ROLE_SMAP_ANDNOT_WP | ROLE_SMM))).toThrow(/vmmu: host-table pool exhausted/);
    expect(() => mmu.pageFault(held[0]!, 0x1000n, false, false)).toThrow(/vmmu: host-table pool exhausted/);
    expect(mmu.pagesInUse()).toBe(8);
    mmu.releaseRoot(held[1]!);
    mmu.invalidateAllRoots();
    for (const hpa of held.slice(2, 5)) mmu.releaseRoot(hpa);
    const r = mmu.acquireRoot(WP1());
    expect(r.built).toBe(true);
    expect(mmu.pageFault(r.hpa, 0x1000n, false, false).level).toBe(2);
  });
});

describe("audit", () => {
  it("reports an SPTE the MMU does not account for, a lost link and a lost leaf", async () => {
    const w = await world({ hostLevel: 1 });
    const { mmu, pool } = w;
    const root = mmu.acquireRoot(WP1()).hpa;
    mmu.pageFault(root, 0x3000n, false, false);
    expect(mmu.audit()).toEqual([]);
    const pt = tableAt(pool, root, 4, 0x3000n, 1);
    pool.write(pt, 9, 0x9007n);
    expect(mmu.audit().join("\n")).toMatch(/\[9\] holds 0x9007 the MMU does not account for/);
    pool.write(pt, 9, 0n);
    pool.write(pt, 3, 0n);
    expect(mmu.audit().join("\n")).toMatch(/\[3\] leaf 0x0 does not map gfn 0x3/);
    pool.write(root, 0, 0n);
    expect(mmu.audit().join("\n")).toMatch(/\[0\] does not link its child/);
  });
});

describe("bad input", () => {
  it("is refused with a message naming the parameter, and changes nothing", async () => {
    const w = await world();
    const { mmu, pool } = w;
    expect(() => new LegacyDirectMmu(pool, { ramBytes: 4097n })).toThrow(/vmmu: opts.ramBytes must be a positive multiple of 4096/);
    expect(() => new LegacyDirectMmu(pool, { ramBytes: 4096 as unknown as bigint })).toThrow(/vmmu: opts.ramBytes must be a bigint/);
    expect(() => new LegacyDirectMmu(pool, { ramBytes: 4096n, levels: 3 as 4 })).toThrow(/vmmu: opts.levels must be 4 or 5/);
    expect(() => new LegacyDirectMmu(pool, { ramBytes: 4096n, hostLevel: 4 as 1 })).toThrow(/vmmu: opts.hostLevel must be an integer 1..3/);
    expect(() => new LegacyDirectMmu(pool, { ramBytes: 4096n, adEnabled: 1 as unknown as boolean })).toThrow(/vmmu: opts.adEnabled must be a boolean/);
    expect(() => { mmu.hostLevel = 0 as 1; }).toThrow(/vmmu: hostLevel must be an integer 1..3/);
    expect(() => mmu.acquireRoot(WP1(5))).toThrow(/vmmu: role must have level 4/);
    expect(() => mmu.acquireRoot(WP1() | (1 << 11))).toThrow(/vmmu: role must not have role.invalid/);
    expect(() => mmu.acquireRoot("4" as unknown as number)).toThrow(TypeError);
    expect(() => mmu.acquireRoot(-1)).toThrow(/vmmu: role must be a role word/);
    expect(mmu.pagesInUse()).toBe(0);

    const root = mmu.acquireRoot(WP1()).hpa;
    expect(() => mmu.pageFault(root, BigInt(RAM), false, false)).toThrow(RangeError);
    expect(() => mmu.pageFault(root, BigInt(RAM), false, false)).toThrow(/vmmu: gpa must lie in guest RAM/);
    expect(() => mmu.pageFault(root, -1n, false, false)).toThrow(/vmmu: gpa/);
    expect(() => mmu.pageFault(root, 0x1000 as unknown as bigint, false, false)).toThrow(/vmmu: gpa must be a bigint/);
    expect(() => mmu.pageFault(root, 0x1000n, "yes" as unknown as boolean, false)).toThrow(/vmmu: write must be a boolean/);
    expect(() => mmu.pageFault(root + 0x1000n, 0x1000n, false, false)).toThrow(/vmmu: rootHpa .* is not a root/);
    expect(() => mmu.releaseRoot(0x1234n)).toThrow(/vmmu: hpa .* is not a root/);
    expect(() => mmu.zapGfnRange(5n, 4n)).toThrow(/vmmu: zapGfnRange needs 0 ≤ start ≤ end/);
    expect(() => mmu.zapGfnRange(0 as unknown as bigint, 4n)).toThrow(/vmmu: start must be a bigint/);
    expect(mmu.isValidRoot(0x1234n)).toBe(false);
    expect(mmu.stats).toMatchObject({ faults: 0, spteInstalled: 0, rootsBuilt: 1 });
    expect(mmu.pagesInUse()).toBe(1);
  });
});
