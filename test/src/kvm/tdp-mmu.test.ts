/**
 * The TDP MMU (src/kvm/tdp-mmu.ts, KVM tdp_mmu.c), judged by the hardware
 * walker: vCPU 0 runs with guest paging off under the EPTP of the MMU's root,
 * so every translation goes through the tables the MMU built. Scenarios for
 * the hugepage rules, splits, write protection, frozen SPTEs and the root
 * lifecycle of v5.10 and v6.4; a seeded random sequence of faults, zaps,
 * write protection, splits, host page-size changes and root reloads compared
 * after every step against a per-gfn model; and bad input.
 */
import { describe, expect, it } from "vitest";
import { REMOVED_SPTE, TdpMmu } from "../../../src/kvm/tdp-mmu.js";
import { HostPool } from "../../../src/kvm/host-pool.js";
import { ROLE_SMM } from "../../../src/kvm/direct-mmu.js";
import { ROLE_CR0_WP } from "../../../src/kvm/shadow-mmu.js";
import { SPTE_A, SPTE_D, SPTE_LARGE, SPTE_W, SPTE_X, isShadowPresent, spteHpa } from "../../../src/kvm/ept-spte.js";
import { pagesPerLevel, spteIndex } from "../../../src/kvm/tdp-iter.js";
import type { X86Vcpu } from "../../../src/index.js";
import { Rng, fuzzCount, seedNote, testSeed } from "../../helpers/rng.js";
import { tablesOf, tdpWorld, type TdpWorld } from "../../helpers/tdp-world.js";

const MiB = 1n << 20n;
const RAM = 64n * MiB + 5n * 4096n;
const ROLE4 = 4;

type Access = "read" | "write" | "fetch";

/**
 * The hardware's answer for `gpa`: the pa, or "violation". (With guest paging
 * off the walker reports a 4 KiB page whatever the EPT leaf; leaf sizes are
 * read from the tables with leafOf.)
 */
function hw(vcpu: X86Vcpu, gpa: bigint, access: Access): { pa: bigint } | "violation" {
  const r = vcpu.translate(gpa, access, false);
  if ("fault" in r) {
    expect(r.fault.kind).toBe("ept-violation");
    return "violation";
  }
  expect(r.gpa).toBe(gpa);
  return { pa: r.pa };
}

/** The leaf SPTE mapping `gfn` in the tree at `root` and its level, or undefined. */
function leafOf(w: TdpWorld, root: bigint, gfn: number): { spte: bigint; level: number } | undefined {
  let table = root;
  for (let level: number = w.mmu.levels; level >= 1; level--) {
    const spte = w.pool.read(table, spteIndex(gfn, level));
    if (!isShadowPresent(spte)) return undefined;
    if (level === 1 || (spte & SPTE_LARGE) !== 0n) return { spte, level };
    table = spteHpa(spte);
  }
  return undefined;
}

describe("TDP MMU faults and the hugepage level", () => {
  it("maps a 2 MiB leaf for a gpa whose 2 MiB range is in RAM and 4 KiB leaves in RAM's unaligned tail, as the walker sees them", async () => {
    const w = await tdpWorld({ ramBytes: RAM });
    const { hpa: root, built } = w.mmu.acquireRoot(ROLE4);
    expect(built).toBe(true);
    w.load(root);
    expect(hw(w.vcpu, 0x30_1234n, "read")).toBe("violation");
    const r = w.mmu.pageFault(root, 0x30_1234n, false, false);
    expect(r).toMatchObject({ spurious: false, level: 2, spAllocated: 2, spteInstalled: 3, split: false, flush: false, retry: false });
    for (const gpa of [0x20_0000n, 0x30_1234n, 0x3f_ffffn]) {
      for (const a of ["read", "write", "fetch"] as const) expect(hw(w.vcpu, gpa, a)).toEqual({ pa: gpa });
    }
    expect(leafOf(w, root, 0x200)?.level).toBe(2);
    expect(leafOf(w, root, 0x3ff)?.spte).toBe(leafOf(w, root, 0x200)?.spte);
    expect(hw(w.vcpu, 0x40_0000n, "read")).toBe("violation");
    expect(hw(w.vcpu, 0x1f_f000n, "read")).toBe("violation");
    const tail = 64n * MiB + 0x1000n;
    expect(w.mmu.pageFault(root, tail + 0x10n, true, false)).toMatchObject({ level: 1, spAllocated: 1, spteInstalled: 2 });
    expect(hw(w.vcpu, tail + 0x10n, "write")).toEqual({ pa: tail + 0x10n });
    expect(leafOf(w, root, 0x4001)?.level).toBe(1);
    expect(hw(w.vcpu, 64n * MiB, "read")).toBe("violation");
    expect(w.mmu.pagesInUse()).toBe(1 + 2 + 1);
  });

  it("maps a 1 GiB leaf with hostLevel 3 when the whole GiB is RAM, and 2 MiB below a partial last GiB", async () => {
    const ram = (1n << 30n) + 6n * MiB;
    const w = await tdpWorld({ ramBytes: ram, hostLevel: 3, poolBytes: 1 << 20 });
    const { hpa: root } = w.mmu.acquireRoot(ROLE4);
    w.load(root);
    expect(w.mmu.pageFault(root, 0x1234_5678n, false, false).level).toBe(3);
    expect(hw(w.vcpu, 0x3fff_fff0n, "write")).toEqual({ pa: 0x3fff_fff0n });
    expect(leafOf(w, root, 0x3ffff)?.level).toBe(3);
    expect(w.mmu.pageFault(root, (1n << 30n) + 5n * MiB, false, false).level).toBe(2);
    expect(leafOf(w, root, 0x40400)?.level).toBe(2);
    expect(hw(w.vcpu, (1n << 30n) + 4n * MiB, "read")).toEqual({ pa: (1n << 30n) + 4n * MiB });
  });

  it("answers a fault on an SPTE that is already what it wants as spurious, changing nothing", async () => {
    const w = await tdpWorld({ ramBytes: RAM, hostLevel: 1 });
    const { hpa: root } = w.mmu.acquireRoot(ROLE4);
    w.load(root);
    w.mmu.pageFault(root, 0x5000n, false, false);
    expect(hw(w.vcpu, 0x5000n, "write")).toEqual({ pa: 0x5000n });
    const before = leafOf(w, root, 5)!.spte;
    expect(w.mmu.pageFault(root, 0x5008n, true, true)).toMatchObject({ spurious: true, spteInstalled: 0, spAllocated: 0 });
    expect(leafOf(w, root, 5)!.spte).toBe(before);
    expect(w.mmu.stats).toMatchObject({ faults: 2, spurious: 1 });
  });

  it("maps guest RAM readable, writable and executable whatever the access, with A and D preset under EPT A/D and none without", async () => {
    for (const adEnabled of [true, false]) {
      const w = await tdpWorld({ ramBytes: RAM, adEnabled, hostLevel: 1 });
      const { hpa: root } = w.mmu.acquireRoot(ROLE4);
      w.load(root);
      w.mmu.pageFault(root, 0x7000n, false, false);
      const leaf = leafOf(w, root, 7)!.spte;
      expect(leaf & 7n).toBe(7n);
      expect(leaf & (SPTE_A | SPTE_D)).toBe(adEnabled ? SPTE_A | SPTE_D : 0n);
      expect(hw(w.vcpu, 0x7000n, "fetch")).toEqual({ pa: 0x7000n });
      expect(hw(w.vcpu, 0x7000n, "write")).toEqual({ pa: 0x7000n });
      // Without EPT A/D the walker sets no A on the table pointers the MMU wrote without it.
      expect(w.pool.read(root, 0) & SPTE_A).toBe(adEnabled ? SPTE_A : 0n);
    }
  });
});

describe("TDP MMU splits, write protection and huge pages over tables", () => {
  it("splits a 2 MiB leaf on a later 4 KiB-goal fault without a flush, and the walker's translations stay the same", async () => {
    const w = await tdpWorld({ ramBytes: RAM });
    const { hpa: root } = w.mmu.acquireRoot(ROLE4);
    w.load(root);
    w.mmu.pageFault(root, 0x60_0000n, false, false);
    const probes = [0x60_0000n, 0x60_1ff8n, 0x6a_b000n, 0x7f_f000n];
    for (const p of probes) expect(hw(w.vcpu, p, "write")).toEqual({ pa: p });
    w.mmu.hostLevel = 1;
    const r = w.mmu.pageFault(root, 0x6a_b123n, true, false);
    expect(r).toMatchObject({ split: true, flush: false, spAllocated: 1, level: 1 });
    expect(leafOf(w, root, 0x6ab)!.level).toBe(1);
    for (const p of probes) expect(leafOf(w, root, Number(p >> 12n))?.level).toBe(1);
    // Without a flush the TLB may serve what it cached from the 2 MiB leaf: the same pa; after one the walk gives it too.
    for (const p of probes) expect(hw(w.vcpu, p, "read")).toEqual({ pa: p });
    w.vcpu.invept(2);
    for (const p of probes) expect(hw(w.vcpu, p, "write")).toEqual({ pa: p });
    expect(w.mmu.stats.splits).toBe(1);
  });

  it("replaces a table by a 2 MiB leaf when the goal level rises again, frees the table and asks for a flush", async () => {
    const w = await tdpWorld({ ramBytes: RAM, hostLevel: 1 });
    const { hpa: root } = w.mmu.acquireRoot(ROLE4);
    w.load(root);
    w.mmu.pageFault(root, 0x80_3000n, false, false);
    w.mmu.pageFault(root, 0x80_5000n, false, false);
    expect(w.mmu.pagesInUse()).toBe(4);
    w.mmu.hostLevel = 2;
    const freed = w.mmu.stats.spFreed;
    const r = w.mmu.pageFault(root, 0x80_7000n, false, false);
    expect(r).toMatchObject({ level: 2, flush: true, spAllocated: 0 });
    expect(w.mmu.stats.spFreed).toBe(freed + 1);
    expect(w.mmu.pagesInUse()).toBe(3);
    expect(w.pool.inUse).toBe(3);
    expect(leafOf(w, root, 0x803)?.level).toBe(2);
    w.vcpu.invept(2);
    for (const p of [0x80_0000n, 0x80_3000n, 0x9f_f000n]) expect(hw(w.vcpu, p, "write")).toEqual({ pa: p });
  });

  it("write-protects leaves for dirty logging (the caller flushes), splits them eagerly without a flush, and a write fault makes one 4 KiB page writable again", async () => {
    const w = await tdpWorld({ ramBytes: RAM });
    const { hpa: root } = w.mmu.acquireRoot(ROLE4);
    w.load(root);
    w.mmu.pageFault(root, 0xa0_0000n, true, false);
    expect(hw(w.vcpu, 0xa0_0000n, "write")).not.toBe("violation");
    expect(w.mmu.wrprotGfnRange(0xa0n, 0xa1n, 2)).toBe(false); // the 2 MiB leaf starts at gfn 0xa00
    expect(w.mmu.wrprotGfnRange(0xa10n, 0xa11n, 3)).toBe(false); // no 1 GiB leaf
    expect(w.mmu.wrprotGfnRange(0xa10n, 0xa11n, 1)).toBe(true);
    expect(w.mmu.wrprotGfnRange(0xa10n, 0xa11n, 1)).toBe(false);
    w.vcpu.invept(2);
    expect(hw(w.vcpu, 0xa3_0000n, "write")).toBe("violation");
    expect(hw(w.vcpu, 0xa3_0000n, "read")).toEqual({ pa: 0xa3_0000n });
    expect(w.mmu.splitHugePages(0n, 0x1_0000n)).toBe(1);
    expect(w.mmu.splitHugePages(0n, 0x1_0000n)).toBe(0);
    expect(hw(w.vcpu, 0xa3_0000n, "write")).toBe("violation");
    w.vcpu.invept(2);
    expect(leafOf(w, root, 0xa30)?.level).toBe(1);
    expect(hw(w.vcpu, 0xa3_0000n, "read")).toEqual({ pa: 0xa3_0000n });
    w.mmu.hostLevel = 1;
    expect(w.mmu.pageFault(root, 0xa3_0000n, true, false)).toMatchObject({ level: 1, flush: false, spurious: false, split: false });
    expect(hw(w.vcpu, 0xa3_0000n, "write")).toEqual({ pa: 0xa3_0000n });
    expect(hw(w.vcpu, 0xa3_1000n, "write")).toBe("violation");
    expect(w.mmu.stats.wrprotected).toBe(1);
  });

  it("splits a 1 GiB leaf down to 4 KiB pages in one eager split (1 + 512 tables)", async () => {
    const w = await tdpWorld({ ramBytes: 1n << 30n, memoryBytes: 1n << 30n, hostLevel: 3, poolBytes: 4 << 20 });
    const { hpa: root } = w.mmu.acquireRoot(ROLE4);
    w.load(root);
    w.mmu.pageFault(root, 0n, false, false);
    expect(w.mmu.splitHugePages(0n, 1n << 18n)).toBe(513);
    expect(w.mmu.pagesInUse()).toBe(1 + 1 + 1 + 512);
    w.vcpu.invept(2);
    for (const p of [0n, 0x1234_5000n, 0x3fff_f000n]) {
      expect(leafOf(w, root, Number(p >> 12n))?.level).toBe(1);
      expect(hw(w.vcpu, p, "write")).toEqual({ pa: p });
    }
  });

  it("treats a frozen SPTE (REMOVED_SPTE 0x5a0) as not present in hardware and retries a fault that meets one", async () => {
    const w = await tdpWorld({ ramBytes: RAM, hostLevel: 1 });
    const { hpa: root } = w.mmu.acquireRoot(ROLE4);
    w.load(root);
    w.mmu.pageFault(root, 0x9000n, false, false);
    const l1 = spteHpa(w.pool.read(spteHpa(w.pool.read(spteHpa(w.pool.read(root, 0)), 0)), 0));
    w.pool.write(l1, 10, REMOVED_SPTE); // another thread's zap in progress
    const r = w.vcpu.translate(0xa000n, "read", false);
    expect("fault" in r && r.fault).toMatchObject({ kind: "ept-violation", gpa: 0xa000n });
    const installed = w.mmu.stats.spteInstalled;
    expect(w.mmu.pageFault(root, 0xa000n, false, false)).toMatchObject({ retry: true, spteInstalled: 0 });
    expect(w.pool.read(l1, 10)).toBe(REMOVED_SPTE);
    expect(w.mmu.stats).toMatchObject({ retries: 1, spteInstalled: installed });
    w.pool.write(l1, 10, 0n); // the zapper's final store
    expect(w.mmu.pageFault(root, 0xa000n, false, false)).toMatchObject({ retry: false, level: 1 });
    expect(hw(w.vcpu, 0xa000n, "read")).toEqual({ pa: 0xa000n });
  });

  it("frees the table it could not link when another vCPU's compare-exchange won, and retries; the retry uses the winner's table", async () => {
    const w = await tdpWorld({ ramBytes: RAM, hostLevel: 1 });
    const { hpa: root } = w.mmu.acquireRoot(ROLE4);
    w.load(root);
    const real = w.pool.cmpxchg.bind(w.pool);
    let rival: bigint | undefined;
    w.pool.cmpxchg = (n, expected, desired) => {
      // Another vCPU links its own table into the root entry just before this one's compare-exchange.
      rival = w.pool.alloc()!;
      w.pool.setEntry(n, (desired & ~0x000f_ffff_ffff_f000n) | rival);
      w.pool.cmpxchg = real;
      return real(n, expected, desired);
    };
    const r = w.mmu.pageFault(root, 0x3000n, false, false);
    expect(r).toMatchObject({ retry: true, spAllocated: 0, spteInstalled: 0 });
    expect(w.mmu.pagesInUse()).toBe(1);
    expect(w.pool.inUse).toBe(2); // the MMU's root and the rival's table
    expect(w.mmu.pageFault(root, 0x3000n, false, false)).toMatchObject({ retry: false, level: 1, spAllocated: 2 });
    expect(spteHpa(w.pool.read(root, 0))).toBe(rival);
    expect(hw(w.vcpu, 0x3000n, "read")).toEqual({ pa: 0x3000n });
  });

  it("write-protects by compare-exchange retried on a lost race, keeping what the racing writer set", async () => {
    const w = await tdpWorld({ ramBytes: RAM, hostLevel: 1 });
    const { hpa: root } = w.mmu.acquireRoot(ROLE4);
    w.load(root);
    w.mmu.pageFault(root, 0x3000n, false, false);
    const real = w.pool.cmpxchg.bind(w.pool);
    const IGNORED_BIT = 1n << 52n; // a software-available bit another writer sets meanwhile
    w.pool.cmpxchg = (n, expected, desired) => {
      w.pool.setEntry(n, w.pool.entry(n) | IGNORED_BIT);
      w.pool.cmpxchg = real;
      return real(n, expected, desired);
    };
    expect(w.mmu.wrprotGfnRange(3n, 4n, 1)).toBe(true);
    const leaf = leafOf(w, root, 3)!.spte;
    expect(leaf & SPTE_W).toBe(0n);
    expect(leaf & IGNORED_BIT).toBe(IGNORED_BIT);
    w.vcpu.invept(2);
    expect(hw(w.vcpu, 0x3000n, "write")).toBe("violation");
  });

  it("zaps leaves meeting a gfn range in every root, a huge leaf as a whole, keeps the tables, and asks for a flush only if it zapped", async () => {
    const w = await tdpWorld({ ramBytes: RAM });
    const a = w.mmu.acquireRoot(ROLE4).hpa, b = w.mmu.acquireRoot(ROLE4 | ROLE_SMM).hpa;
    w.load(a);
    for (const root of [a, b]) w.mmu.pageFault(root, 0x20_0000n, false, false);
    w.mmu.hostLevel = 1;
    w.mmu.pageFault(a, 0x40_1000n, false, false);
    expect(w.mmu.zapGfnRange(0x1000n, 0x1001n)).toEqual({ zapped: 0, flush: false });
    expect(w.mmu.zapGfnRange(0x3ffn, 0x402n)).toEqual({ zapped: 3, flush: true });
    w.vcpu.invept(2);
    expect(hw(w.vcpu, 0x20_0000n, "read")).toBe("violation");
    expect(hw(w.vcpu, 0x40_1000n, "read")).toBe("violation");
    expect(w.mmu.pagesInUse()).toBe(2 + 2 + 3); // two roots, their L3/L2 tables, and a's L1 table
    expect(w.mmu.stats.spteZapped).toBe(3);
    // A range covering whole tables still leaves them in place (kvm_tdp_mmu_zap_leafs zaps leaves only).
    w.mmu.pageFault(a, 0x40_1000n, false, false);
    expect(w.mmu.zapGfnRange(0n, 1n << 30n)).toEqual({ zapped: 1, flush: true });
    expect(w.mmu.pagesInUse()).toBe(7);
    expect(w.mmu.stats.spFreed).toBe(0);
  });
});

describe("TDP MMU roots", () => {
  it("v5.10 (no preserved roots): releasing the last reference zaps and frees the tree, and the next acquire builds a new empty root", async () => {
    const w = await tdpWorld({ ramBytes: RAM, hostLevel: 1 });
    const first = w.mmu.acquireRoot(ROLE4);
    w.load(first.hpa);
    for (const gpa of [0x1000n, 0x20_0000n, 0x4000_000n]) w.mmu.pageFault(first.hpa, gpa, false, false);
    const tables = tablesOf(w.pool, first.hpa, 4);
    expect(tables.length).toBe(w.mmu.pagesInUse());
    // One remote flush per table the zap disconnects (v5.10 __handle_changed_spte), none for the root page.
    expect(w.mmu.releaseRoot(first.hpa)).toBe(tables.length - 1);
    expect(w.mmu.stats.remoteFlushes).toBe(tables.length - 1);
    expect(w.mmu.pagesInUse()).toBe(0);
    expect(w.pool.inUse).toBe(0);
    expect(w.mmu.stats).toMatchObject({ rootsBuilt: 1, rootsFreed: 1, spteZapped: 3, spFreed: tables.length });
    expect(w.mmu.isValidRoot(first.hpa)).toBe(false);
    const second = w.mmu.acquireRoot(ROLE4);
    expect(second.built).toBe(true);
    expect(w.mmu.rootList()).toEqual([{ hpa: second.hpa, role: ROLE4, refcount: 1, invalid: false }]);
    w.load(second.hpa);
    expect(hw(w.vcpu, 0x1000n, "read")).toBe("violation");
    expect(w.mmu.pagesInUse()).toBe(1);
  });

  it("v5.10: a second vCPU on the same role shares the root; the tree survives until the last vCPU releases it", async () => {
    const w = await tdpWorld({ ramBytes: RAM });
    const a = w.mmu.acquireRoot(ROLE4), b = w.mmu.acquireRoot(ROLE4);
    expect(b).toEqual({ hpa: a.hpa, built: false });
    w.mmu.pageFault(a.hpa, 0x1000n, false, false);
    w.mmu.releaseRoot(a.hpa);
    expect(w.mmu.isValidRoot(a.hpa)).toBe(true);
    w.load(a.hpa);
    expect(hw(w.vcpu, 0x1000n, "read")).toMatchObject({ pa: 0x1000n });
    w.mmu.releaseRoot(a.hpa);
    expect(w.mmu.pagesInUse()).toBe(0);
    expect(w.mmu.stats.rootsReused).toBe(1);
  });

  it("v6.4 (preserved roots): the same root comes back with its mappings after the vCPU released it", async () => {
    const w = await tdpWorld({ ramBytes: RAM, preserveRoots: true });
    const first = w.mmu.acquireRoot(ROLE4);
    w.mmu.pageFault(first.hpa, 0x20_0000n, false, false);
    const pages = w.mmu.pagesInUse();
    expect(w.mmu.releaseRoot(first.hpa)).toBe(0);
    expect(w.mmu.pagesInUse()).toBe(pages);
    const again = w.mmu.acquireRoot(ROLE4);
    expect(again).toEqual({ hpa: first.hpa, built: false });
    w.load(again.hpa);
    expect(hw(w.vcpu, 0x20_0000n, "write")).toEqual({ pa: 0x20_0000n });
    expect(w.mmu.stats).toMatchObject({ rootsBuilt: 1, rootsReused: 1, rootsFreed: 0 });
  });

  it("gives two roles two roots (a CR0.WP toggle in a v5.10 role, SMM), each with its own tree", async () => {
    for (const preserveRoots of [false, true]) {
      const w = await tdpWorld({ ramBytes: RAM, preserveRoots });
      const roles = [ROLE4, ROLE4 | ROLE_CR0_WP, ROLE4 | ROLE_SMM];
      const roots = roles.map((r) => w.mmu.acquireRoot(r));
      expect(new Set(roots.map((r) => r.hpa)).size).toBe(3);
      expect(roots.every((r) => r.built)).toBe(true);
      w.mmu.pageFault(roots[1]!.hpa, 0x20_0000n, false, false);
      w.load(roots[0]!.hpa);
      expect(hw(w.vcpu, 0x20_0000n, "read")).toBe("violation");
      w.load(roots[1]!.hpa);
      expect(hw(w.vcpu, 0x20_0000n, "read")).toMatchObject({ pa: 0x20_0000n });
      expect(w.mmu.acquireRoot(ROLE4 | ROLE_SMM)).toEqual({ hpa: roots[2]!.hpa, built: false });
    }
  });

  it("invalidateAllRoots: under v6.4 frees a root no vCPU holds at once and one a vCPU holds when it releases it; a new acquire builds afresh", async () => {
    const w = await tdpWorld({ ramBytes: RAM, preserveRoots: true });
    const held = w.mmu.acquireRoot(ROLE4).hpa;
    const idle = w.mmu.acquireRoot(ROLE4 | ROLE_SMM).hpa;
    w.mmu.releaseRoot(idle);
    for (const r of [held, idle]) w.mmu.pageFault(r, 0x20_0000n, false, false);
    w.mmu.invalidateAllRoots();
    expect(w.mmu.isValidRoot(held)).toBe(false);
    expect(w.mmu.rootList()).toEqual([{ hpa: held, role: ROLE4, refcount: 1, invalid: true }]);
    expect(w.mmu.pagesInUse()).toBe(1); // the held root's tree was zapped; its page stays until released
    expect(() => w.mmu.pageFault(held, 0x1000n, false, false)).toThrow(/^vmmu: pageFault: root 0x[0-9a-f]+ is invalid/);
    const fresh = w.mmu.acquireRoot(ROLE4);
    expect(fresh.built).toBe(true);
    expect(fresh.hpa).not.toBe(held);
    w.mmu.releaseRoot(held);
    expect(w.mmu.pagesInUse()).toBe(1);
    expect(w.pool.inUse).toBe(1);
    expect(w.mmu.stats.rootsFreed).toBe(2);
  });

  it("invalidateAllRoots under v5.10 zaps the trees; the roots go when the last vCPU releases them", async () => {
    const w = await tdpWorld({ ramBytes: RAM });
    const r = w.mmu.acquireRoot(ROLE4).hpa;
    w.mmu.pageFault(r, 0x20_0000n, false, false);
    w.mmu.invalidateAllRoots();
    expect(w.mmu.isValidRoot(r)).toBe(false);
    expect(w.mmu.pagesInUse()).toBe(1);
    expect(w.mmu.stats.rootsFreed).toBe(0);
    w.mmu.releaseRoot(r);
    expect(w.mmu.pagesInUse()).toBe(0);
    expect(w.mmu.stats.rootsFreed).toBe(1);
  });
});

describe("TDP MMU with the NX huge page mitigation (nxHugePages, KVM nx_huge_pages)", () => {
  /** A world whose MMU is a TDP MMU with nxHugePages on, over the same pool and vCPU. */
  async function nxWorld(opts: { hostLevel?: 1 | 2 | 3; ramBytes?: bigint; poolBytes?: number } = {}): Promise<TdpWorld> {
    const w = await tdpWorld({ ramBytes: opts.ramBytes ?? RAM, poolBytes: opts.poolBytes });
    const mmu = new TdpMmu(w.pool, { ramBytes: opts.ramBytes ?? RAM, preserveRoots: false, hostLevel: opts.hostLevel, nxHugePages: true });
    return { ...w, mmu };
  }
  const exec = (spte: bigint | undefined) => spte !== undefined && (spte & SPTE_X) !== 0n;

  it("maps a data access with a 2 MiB leaf without X; a fetch in it splits the leaf, and every 4 KiB piece translates, executable", async () => {
    const w = await nxWorld();
    expect(w.mmu.nxHugePages).toBe(true);
    const { hpa: root } = w.mmu.acquireRoot(ROLE4);
    w.load(root);
    expect(w.mmu.pageFault(root, 0x30_1234n, true, false)).toMatchObject({ level: 2, split: false });
    const leaf = leafOf(w, root, 0x301)!;
    expect(leaf.level).toBe(2);
    expect(exec(leaf.spte)).toBe(false);
    const probes = [0x20_0000n, 0x30_1234n, 0x3a_b008n, 0x3f_f000n];
    for (const p of probes) {
      expect(hw(w.vcpu, p, "read")).toEqual({ pa: p });
      expect(hw(w.vcpu, p, "write")).toEqual({ pa: p });
      expect(hw(w.vcpu, p, "fetch")).toBe("violation");
    }
    // The fetch's EPT violation: goal 4 KiB, the 2 MiB leaf split into 512 executable pieces (no flush: the
    // translation only gains X); the piece at the gpa is then already what make_spte builds (RET_PF_SPURIOUS).
    const r = w.mmu.pageFault(root, 0x30_1234n, false, true);
    expect(r).toMatchObject({ level: 1, split: true, flush: false, spAllocated: 1, spurious: true, retry: false });
    for (const p of probes) {
      const l = leafOf(w, root, Number(p >> 12n))!;
      expect(l.level).toBe(1);
      expect(exec(l.spte)).toBe(true);
      for (const a of ["read", "write", "fetch"] as const) expect(hw(w.vcpu, p, a)).toEqual({ pa: p });
    }
    expect(w.mmu.stats).toMatchObject({ splits: 1, nxLpageSplits: 1 });
    expect(w.mmu.possibleNxHugePages()).toBe(1);
  });

  it("v5.10 (splitOnFault off): a fetch in a 2 MiB leaf zaps it with a remote flush and links an empty table, so the region's other pages fault again", async () => {
    const w = await tdpWorld({ ramBytes: RAM });
    const mmu = new TdpMmu(w.pool, { ramBytes: RAM, preserveRoots: false, nxHugePages: true, splitOnFault: false });
    const { hpa: root } = mmu.acquireRoot(ROLE4);
    w.load(root);
    expect(mmu.pageFault(root, 0x30_1234n, true, false)).toMatchObject({ level: 2 });
    expect(hw(w.vcpu, 0x3a_b008n, "read")).toEqual({ pa: 0x3a_b008n });
    const r = mmu.pageFault(root, 0x30_1234n, false, true);
    expect(r).toMatchObject({ level: 1, split: false, flush: true, spAllocated: 1 });
    w.vcpu.invept(2);
    expect(hw(w.vcpu, 0x30_1234n, "fetch")).toEqual({ pa: 0x30_1234n });
    expect(hw(w.vcpu, 0x3a_b008n, "read")).toBe("violation");
    expect(mmu.stats).toMatchObject({ splits: 0, remoteFlushes: 1 });
    expect(() => new TdpMmu(w.pool, { ramBytes: RAM, preserveRoots: false, splitOnFault: 1 as never })).toThrow(/opts\.splitOnFault/);
  });

  it("maps a first fetch with one executable 4 KiB leaf; data faults in the rest of the 2 MiB region then stay at 4 KiB (disallowed_hugepage_adjust)", async () => {
    const w = await nxWorld();
    const { hpa: root } = w.mmu.acquireRoot(ROLE4);
    w.load(root);
    expect(w.mmu.pageFault(root, 0x41_2345n, false, true)).toMatchObject({ level: 1, split: false, spAllocated: 3, spurious: false });
    expect(exec(leafOf(w, root, 0x412)?.spte)).toBe(true);
    expect(hw(w.vcpu, 0x41_2000n, "fetch")).toEqual({ pa: 0x41_2000n });
    expect(hw(w.vcpu, 0x41_3000n, "read")).toBe("violation");
    const r = w.mmu.pageFault(root, 0x41_3000n, true, false);
    expect(r).toMatchObject({ level: 1, flush: false, spAllocated: 0 });
    expect(leafOf(w, root, 0x413)?.level).toBe(1);
    expect(exec(leafOf(w, root, 0x413)?.spte)).toBe(true);
    for (const p of [0x41_2000n, 0x41_3000n]) expect(hw(w.vcpu, p, "write")).toEqual({ pa: p });
    // Another 2 MiB region still gets its huge page for data.
    expect(w.mmu.pageFault(root, 0x60_0000n, false, false).level).toBe(2);
    expect(w.mmu.stats.nxLpageSplits).toBe(1);
  });

  it("still replaces a table no fetch linked by a 2 MiB leaf (the nx_huge_page_disallowed check of 76901e56fb51)", async () => {
    const w = await nxWorld({ hostLevel: 1 });
    const { hpa: root } = w.mmu.acquireRoot(ROLE4);
    w.load(root);
    w.mmu.pageFault(root, 0x80_3000n, false, false);
    w.mmu.pageFault(root, 0xa0_3000n, false, true);
    w.mmu.hostLevel = 2;
    expect(w.mmu.pageFault(root, 0x80_7000n, false, false)).toMatchObject({ level: 2, flush: true });
    expect(w.mmu.pageFault(root, 0xa0_7000n, false, false)).toMatchObject({ level: 1, flush: false });
    expect(exec(leafOf(w, root, 0x807)?.spte)).toBe(false);
    // hostLevel 1 at the fetch: req_level 1 < 2, so the table is disallowed but no possible NX huge page.
    expect(w.mmu.stats.nxLpageSplits).toBe(0);
    w.vcpu.invept(2);
    expect(hw(w.vcpu, 0x9f_f000n, "read")).toEqual({ pa: 0x9f_f000n });
    expect(hw(w.vcpu, 0x9f_f000n, "fetch")).toBe("violation");
  });

  it("splits a 1 GiB leaf twice for a fetch, and eager splitting to 4 KiB gives the pieces X back", async () => {
    const ram = (1n << 30n) + 6n * MiB;
    const w = await nxWorld({ ramBytes: ram, hostLevel: 3, poolBytes: 1 << 20 });
    const { hpa: root } = w.mmu.acquireRoot(ROLE4);
    w.load(root);
    expect(w.mmu.pageFault(root, 0x1234_5000n, false, false).level).toBe(3);
    expect(exec(leafOf(w, root, 0x12345)?.spte)).toBe(false);
    expect(w.mmu.pageFault(root, 0x1234_5000n, false, true)).toMatchObject({ level: 1, split: true, spAllocated: 2 });
    expect(leafOf(w, root, 0x12345)?.level).toBe(1);
    expect(exec(leafOf(w, root, 0x12345)?.spte)).toBe(true);
    // The other 2 MiB pieces of the GiB stay huge and non-executable.
    expect(leafOf(w, root, 0x20000)?.level).toBe(2);
    expect(exec(leafOf(w, root, 0x20000)?.spte)).toBe(false);
    expect(hw(w.vcpu, 0x2000_0000n, "read")).toEqual({ pa: 0x2000_0000n });
    expect(hw(w.vcpu, 0x2000_0000n, "fetch")).toBe("violation");
    expect(w.mmu.stats.nxLpageSplits).toBe(2);
    expect(w.mmu.splitHugePages(0x20000n, 0x20001n)).toBe(1);
    expect(exec(leafOf(w, root, 0x20000)?.spte)).toBe(true);
    expect(hw(w.vcpu, 0x2000_0000n, "fetch")).toEqual({ pa: 0x2000_0000n });
  });

  it("forgets a disallowed table when it is freed: possibleNxHugePages drops with the v5.10 root's tree", async () => {
    const w = await nxWorld();
    const { hpa: root } = w.mmu.acquireRoot(ROLE4);
    w.mmu.pageFault(root, 0x41_2000n, false, true);
    w.mmu.pageFault(root, 0x61_2000n, false, true);
    expect(w.mmu.possibleNxHugePages()).toBe(2);
    w.mmu.releaseRoot(root);
    expect(w.mmu.possibleNxHugePages()).toBe(0);
    expect(w.mmu.stats.nxLpageSplits).toBe(2);
    const again = w.mmu.acquireRoot(ROLE4).hpa;
    expect(w.mmu.pageFault(again, 0x41_3000n, false, false).level).toBe(2);
  });

  it("without nxHugePages a fetch maps and executes from the 2 MiB leaf", async () => {
    const w = await tdpWorld({ ramBytes: RAM });
    expect(w.mmu.nxHugePages).toBe(false);
    const { hpa: root } = w.mmu.acquireRoot(ROLE4);
    w.load(root);
    expect(w.mmu.pageFault(root, 0x30_1234n, false, true)).toMatchObject({ level: 2, split: false });
    expect(exec(leafOf(w, root, 0x301)?.spte)).toBe(true);
    for (const p of [0x20_0000n, 0x3f_f000n]) expect(hw(w.vcpu, p, "fetch")).toEqual({ pa: p });
    expect(w.mmu.stats.nxLpageSplits).toBe(0);
  });

  it("refuses a non-boolean nxHugePages by name", async () => {
    const w = await tdpWorld({ ramBytes: RAM });
    expect(() => new TdpMmu(w.pool, { ramBytes: RAM, preserveRoots: false, nxHugePages: "auto" as never })).toThrow(/vmmu: opts\.nxHugePages/);
  });
});

describe("TDP MMU against the hardware walker, random sequences", () => {
  const seed = testSeed();
  const configs = [
    { name: "4-level, A/D, v5.10 roots", ramBytes: RAM, levels: 4 as const, adEnabled: true, preserveRoots: false, maxHost: 2, yieldEvery: 512, steps: 300 },
    { name: "5-level, no A/D, v6.4 roots, yield every 3 steps", ramBytes: RAM, levels: 5 as const, adEnabled: false, preserveRoots: true, maxHost: 2, yieldEvery: 3, steps: 300 },
    { name: "4-level, 1 GiB host pages", ramBytes: (2n << 30n) + 2n * MiB + 3n * 4096n, levels: 4 as const, adEnabled: true, preserveRoots: false, maxHost: 3, yieldEvery: 64, steps: 160 },
  ];
  for (const cfg of configs) {
    it(`after every fault, zap, write protection, split, host page-size change and root reload, the walker sees exactly the model's mappings (${cfg.name})`, async () => {
      const rng = new Rng(seed ^ cfg.steps ^ cfg.levels ^ cfg.maxHost);
      const note = seedNote(seed, cfg.name);
      const w = await tdpWorld({ ...cfg, hostLevel: 1, poolBytes: 24 << 20 });
      const mmu = w.mmu, vcpu = w.vcpu;
      const ramPages = Number(cfg.ramBytes >> 12n);
      // The model: per gfn the level of the leaf mapping it (0 = none) and whether it is writable.
      const level = new Uint8Array(ramPages), writable = new Uint8Array(ramPages);
      const role = cfg.levels;
      let root = mmu.acquireRoot(role).hpa;
      w.load(root);
      const leafRange = (g: number): [number, number] => {
        const n = pagesPerLevel(level[g]!);
        return [g - (g % n), g - (g % n) + n];
      };
      const goalOf = (g: number) => {
        for (let l = mmu.hostLevel; l > 1; l--) if (g - (g % pagesPerLevel(l)) + pagesPerLevel(l) <= ramPages) return l;
        return 1;
      };
      /** Applies `f` to every mapped gfn whose leaf meets [s, e). */
      const leavesMeeting = (s: number, e: number, f: (g: number) => void) => {
        const lo = Math.max(0, s - (s % pagesPerLevel(cfg.maxHost))), hi = Math.min(ramPages, e + pagesPerLevel(cfg.maxHost));
        const hit: number[] = [];
        for (let g = lo; g < hi;) {
          if (level[g] === 0) { g++; continue; }
          const [a, b] = leafRange(g);
          if (a < e && b > s) for (let x = g; x < b; x++) hit.push(x);
          g = b;
        }
        for (const g of hit) f(g);
      };
      /** The model's answer for gfn `g` against the tables (leaf level, W) and the walker (read, fetch, write); plain compares, one assertion per failure. */
      const check = (g: number) => {
        const gpa = (BigInt(g) << 12n) + BigInt(rng.int(4096) & ~7);
        const leaf = leafOf(w, root, g);
        const tables = leaf === undefined ? "none" : `L${leaf.level} ${(leaf.spte & SPTE_W) !== 0n ? "W" : "RO"}`;
        const model = level[g] === 0 ? "none" : `L${level[g]} ${writable[g] ? "W" : "RO"}`;
        if (tables !== model) expect.fail(`${note} gfn ${g.toString(16)}: tables hold ${tables}, the model ${model}`);
        for (const a of ["read", "fetch", "write"] as const) {
          const r = vcpu.translate(gpa, a, false);
          const got = "fault" in r ? r.fault.kind : r.pa === gpa && r.gpa === gpa ? "mapped" : `pa ${r.pa.toString(16)}`;
          const want = level[g] !== 0 && (a !== "write" || writable[g] === 1) ? "mapped" : "ept-violation";
          if (got !== want) expect.fail(`${note} gpa ${gpa.toString(16)} ${a}: the walker gives ${got}, the model ${want}`);
        }
      };
      const ops: Record<string, number> = {};
      let flushes = 0;
      for (let step = 0; step < cfg.steps; step++) {
        const k = rng.int(100);
        const s = rng.int(ramPages);
        const e = Math.min(ramPages + 10, s + 1 + rng.int(rng.pick([1, 16, 600, 3000, 300_000])));
        const near: number[] = [s, Math.max(0, s - 1), Math.min(ramPages - 1, e), Math.min(ramPages - 1, e - 1)];
        let op: string;
        if (k < 50) {
          op = "fault";
          const g = rng.chance(0.1) ? ramPages - 1 - rng.int(8) : s;
          const goal = goalOf(g);
          const cur = level[g]!;
          const gn = pagesPerLevel(goal), gBase = g - (g % gn);
          let tableAtGoal = false;
          for (let x = gBase; x < gBase + gn; x++) if (level[x]! > 0 && level[x]! < goal) tableAtGoal = true;
          const r = mmu.pageFault(root, (BigInt(g) << 12n) + BigInt(rng.int(4096)), rng.chance(0.5), rng.chance(0.2));
          expect(r.retry, note).toBe(false);
          expect(r.level, note).toBe(goal);
          if (tableAtGoal) expect(r.flush, `${note} a huge leaf replacing a table flushes`).toBe(true);
          if (cur > goal) {
            expect(r.split, note).toBe(true);
            const [a, b] = leafRange(g);
            for (let x = a; x < b; x++) {
              let l = cur - 1;
              while (l > goal && Math.floor(x / pagesPerLevel(l)) === Math.floor(g / pagesPerLevel(l))) l--;
              level[x] = l;
            }
          }
          for (let x = gBase; x < gBase + gn; x++) { level[x] = goal; writable[x] = 1; }
          near.push(g, gBase, gBase + gn - 1);
          if (r.flush) { vcpu.invept(2); flushes++; }
        } else if (k < 60) {
          op = "zap";
          const r = mmu.zapGfnRange(BigInt(s), BigInt(e));
          let n = 0;
          const seen = new Set<number>();
          leavesMeeting(s, e, (g) => { seen.add(leafRange(g)[0] * 8 + level[g]!); level[g] = 0; });
          n = seen.size;
          expect(r, note).toEqual({ zapped: n, flush: n > 0 });
          if (r.flush) { vcpu.invept(2); flushes++; }
        } else if (k < 70) {
          op = "wrprot";
          const minLevel = 1 + rng.int(cfg.maxHost);
          let any = false;
          leavesMeeting(s, e, (g) => { if (level[g]! >= minLevel && writable[g]) { writable[g] = 0; any = true; } });
          expect(mmu.wrprotGfnRange(BigInt(s), BigInt(e), minLevel), note).toBe(any);
          if (any) { vcpu.invept(2); flushes++; }
        } else if (k < 80) {
          op = "split";
          // A huge leaf meeting the range is split, and so is each of its pieces that meets it, down to 4 KiB.
          const seen = new Set<number>();
          const meets = (x: number, l: number) => {
            const n = pagesPerLevel(l), a = x - (x % n);
            return a < e && a + n > s;
          };
          leavesMeeting(s, e, (g) => {
            let l = level[g]!;
            while (l >= 2 && meets(g, l)) { seen.add(Math.floor(g / pagesPerLevel(l)) * 8 + l); l--; }
            level[g] = l;
          });
          expect(mmu.splitHugePages(BigInt(s), BigInt(e)), note).toBe(seen.size);
        } else if (k < 92) {
          op = "host";
          mmu.hostLevel = (1 + rng.int(cfg.maxHost)) as 1 | 2 | 3;
        } else {
          const invalidate = rng.chance(0.5);
          op = invalidate ? "invalidate+reload" : "reload";
          if (invalidate) mmu.invalidateAllRoots();
          const keep = cfg.preserveRoots && !invalidate;
          mmu.releaseRoot(root);
          const next = mmu.acquireRoot(role);
          expect(next.built, note).toBe(!keep);
          if (keep) expect(next.hpa, note).toBe(root);
          else { level.fill(0); writable.fill(0); }
          root = next.hpa;
          w.load(root);
        }
        ops[op] = (ops[op] ?? 0) + 1;
        expect(mmu.pagesInUse(), note).toBe(mmu.stats.spAllocated - mmu.stats.spFreed);
        expect(w.pool.inUse, note).toBe(mmu.pagesInUse());
        for (const g of near) if (g >= 0 && g < ramPages) check(g);
        for (let i = 0; i < 96; i++) check(rng.int(ramPages));
        if (step % 100 === 99) {
          if (ramPages <= 20_000) for (let g = 0; g < ramPages; g++) check(g);
          else for (let i = 0; i < 4000; i++) check(rng.int(ramPages));
        }
      }
      fuzzCount("tdp-mmu", cfg.steps);
      expect(Object.keys(ops).length, `${note} ${JSON.stringify(ops)}`).toBeGreaterThanOrEqual(6);
      expect(flushes, note).toBeGreaterThan(1);
      if (cfg.yieldEvery <= 64) expect(mmu.stats.yields, note).toBeGreaterThan(0);
    }, 60_000);
  }
});

describe("TDP MMU bad input", () => {
  it("refuses a gpa outside guest RAM, an unknown root, a bad role and an over-release with vmmu errors, changing nothing", async () => {
    const w = await tdpWorld({ ramBytes: RAM, preserveRoots: true });
    const { hpa: root } = w.mmu.acquireRoot(ROLE4);
    w.mmu.pageFault(root, 0x1000n, false, false);
    const pages = w.mmu.pagesInUse(), stats = { ...w.mmu.stats };
    expect(() => w.mmu.pageFault(root, RAM, false, false)).toThrow(RangeError);
    expect(() => w.mmu.pageFault(root, RAM, false, false)).toThrow(/^vmmu: gpa 0x4005000 is outside guest RAM/);
    expect(() => w.mmu.pageFault(root, -1n, false, false)).toThrow(/^vmmu: gpa/);
    expect(() => w.mmu.pageFault(root + 0x1000n, 0n, false, false)).toThrow(/^vmmu: pageFault: 0x[0-9a-f]+ is not a root of this TDP MMU/);
    expect(() => w.mmu.releaseRoot(root + 0x1000n)).toThrow(/^vmmu: releaseRoot: 0x[0-9a-f]+ is not a root/);
    expect(() => w.mmu.releaseRoot(12 as unknown as bigint)).toThrow(/^vmmu: releaseRoot: rootHpa must be a bigint/);
    expect(() => w.mmu.acquireRoot(5)).toThrow(/^vmmu: role 0x5 has level 5; this TDP MMU builds 4-level roots/);
    expect(() => w.mmu.acquireRoot(ROLE4 | (1 << 11))).toThrow(/role.invalid/);
    expect(() => w.mmu.acquireRoot(1.5)).toThrow(/^vmmu: role must be an integer/);
    expect(() => w.mmu.zapGfnRange(5n, 4n)).toThrow(/^vmmu: zapGfnRange: need 0 ≤ start ≤ end/);
    expect(() => w.mmu.wrprotGfnRange(0n, 4n, 0)).toThrow(/^vmmu: minLevel must be an integer 1..3/);
    expect(() => { w.mmu.hostLevel = 4 as 1; }).toThrow(/^vmmu: hostLevel must be an integer 1..3/);
    w.mmu.releaseRoot(root); // the vCPU's reference
    expect(() => w.mmu.releaseRoot(root)).toThrow(/^vmmu: releaseRoot\(0x[0-9a-f]+\): the root holds no vCPU reference/);
    expect(w.mmu.pagesInUse()).toBe(pages);
    expect(w.mmu.stats).toEqual(stats);
    expect(w.mmu.rootList()).toEqual([{ hpa: root, role: ROLE4, refcount: 1, invalid: false }]);
    w.load(root);
    expect(hw(w.vcpu, 0x1000n, "read")).toEqual({ pa: 0x1000n });
  });

  it("refuses bad options by name", async () => {
    const w = await tdpWorld({ ramBytes: RAM });
    const pool = w.pool;
    expect(() => new TdpMmu(pool, { ramBytes: 4097n, preserveRoots: false })).toThrow(/^vmmu: opts.ramBytes must be a positive multiple of 4096/);
    expect(() => new TdpMmu(pool, { ramBytes: 1n << 49n, preserveRoots: false })).toThrow(/opts.ramBytes/);
    expect(() => new TdpMmu(pool, { ramBytes: RAM, preserveRoots: "yes" as unknown as boolean })).toThrow(/^vmmu: opts.preserveRoots must be a boolean/);
    expect(() => new TdpMmu(pool, { ramBytes: RAM, preserveRoots: false, levels: 3 as 4 })).toThrow(/^vmmu: opts.levels must be 4 or 5/);
    expect(() => new TdpMmu(pool, { ramBytes: RAM, preserveRoots: false, yieldEvery: 0 })).toThrow(/^vmmu: opts.yieldEvery/);
    expect(() => new TdpMmu({} as HostPool, { ramBytes: RAM, preserveRoots: false })).toThrow(/^vmmu: pool must be a HostPool/);
  });

  it("stops with a clear error when the pool is empty, leaving the tree consistent", async () => {
    const w = await tdpWorld({ ramBytes: RAM, hostLevel: 1, poolBytes: 4 * 4096 });
    const { hpa: root } = w.mmu.acquireRoot(ROLE4);
    w.load(root);
    w.mmu.pageFault(root, 0x1000n, false, false); // root + L3 + L2 + L1: the pool is full
    expect(() => w.mmu.pageFault(root, 0x40_0000n, false, false)).toThrow(/^vmmu: the host-table pool is exhausted/);
    expect(w.mmu.pagesInUse()).toBe(4);
    expect(hw(w.vcpu, 0x1000n, "write")).toEqual({ pa: 0x1000n });
    expect(hw(w.vcpu, 0x40_0000n, "read")).toBe("violation");
    expect(w.mmu.zapGfnRange(0n, 1n << 20n)).toEqual({ zapped: 1, flush: true });
  });
});
