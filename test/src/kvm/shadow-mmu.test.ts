/**
 * The shadow MMU's gpte → SPTE rule (KVM arch/x86/kvm/mmu/paging_tmpl.h
 * FNAME(sync_spte), FNAME(prefetch_invalid_gpte), protect_clean_gpte;
 * spte.c make_spte), stated once here and checked on random gptes against
 * every path that applies it: leafSpte, syncSpte (one SPTE, INVLPG) and
 * syncPage (a whole unsync page, kvm_sync_page) give the same SPTE bits.
 */
import { describe, expect, it } from "vitest";
import { PTE } from "../../../src/index.js";
import { createShadowVm, type ShadowVm } from "../../../src/kvm/shadow-vm.js";
import { ACC_EXEC, ACC_USER, ACC_WRITE, roleAt, type ShadowPage } from "../../../src/kvm/shadow-mmu.js";
import { Rng, fuzzCount, seedNote, testSeed } from "../../helpers/rng.js";

const RAM = 64 << 20;
const ADDR = 0x000f_ffff_ffff_f000n;
const RIGHTS = PTE.RW | PTE.US | PTE.XD;
/** The unsync guest table under test and the frames its gptes map. */
const TABLE_GFN = 0x80n;

interface Case {
  roleAccess: number;
  /** gfns some upper-level shadow page shadows (write-tracked: never writable). */
  tracked: bigint[];
  gptes: bigint[];
  /** The SPTE installed at each index before the sync (0: none). */
  olds: bigint[];
}

function randomCase(rng: Rng): Case {
  const roleAccess = rng.int(8);
  const frames = Array.from({ length: 24 }, () => 0x100n + BigInt(rng.int(0x3f00)));
  const tracked = frames.filter(() => rng.chance(0.3));
  const gptes: bigint[] = [], olds: bigint[] = [];
  for (let i = 0; i < 512; i++) {
    // Outside RAM now and then; every other bit random (P, A, D, rights, PWT/PCD/G, ignored, protection key).
    const gfn = rng.chance(0.1) ? BigInt(RAM / 4096) + BigInt(rng.int(1 << 20)) : rng.pick(frames);
    const bits = rng.u64() & ~ADDR;
    const gpte = (gfn << 12n) | (rng.chance(0.85) ? bits | PTE.P | PTE.A : bits);
    gptes.push(gpte);
    const oldGfn = rng.chance(0.8) ? gfn : rng.pick(frames);
    // What the hardware may have left in an SPTE: rights, A/D, nothing else of the gpte's.
    olds.push(rng.chance(0.15) || oldGfn >= BigInt(RAM / 4096) ? 0n
      : (oldGfn << 12n) | PTE.P | (rng.u64() & (RIGHTS | PTE.A | PTE.D)));
  }
  return { roleAccess, tracked, gptes, olds };
}

/** The SPTE a sync leaves for `gpte` over `old` (0: zapped), from the rule itself. */
function expectedSync(c: Case, gpte: bigint, old: bigint): bigint {
  const gfn = (gpte & ADDR) >> 12n;
  if ((gpte & PTE.P) === 0n || (gpte & PTE.A) === 0n || gfn >= BigInt(RAM / 4096)) return 0n;
  if ((old & ADDR) !== (gpte & ADDR)) return 0n;
  const user = (c.roleAccess & ACC_USER) !== 0 && (gpte & PTE.US) !== 0n;
  const exec = (c.roleAccess & ACC_EXEC) !== 0 && (gpte & PTE.XD) === 0n;
  const write = (c.roleAccess & ACC_WRITE) !== 0 && (gpte & PTE.RW) !== 0n && (gpte & PTE.D) !== 0n && !c.tracked.includes(gfn);
  // set_spte(speculative): A cleared (access tracking), D kept only on a writable SPTE.
  return (old & ~(RIGHTS | PTE.A | (write ? 0n : PTE.D))) | (user ? PTE.US : 0n) | (exec ? 0n : PTE.XD) | (write ? PTE.RW : 0n);
}

/** A VM holding the case: the guest table written, its leaf shadow page with the old SPTEs, now unsync. */
async function build(c: Case): Promise<{ vm: ShadowVm; sp: ShadowPage }> {
  const vm = await createShadowVm({ vcpus: 1, memoryBytes: RAM, poolBytes: 4 << 20 });
  const { mmu } = vm;
  for (const gfn of c.tracked) mmu.getPage(gfn, roleAt(0, 2, 7, false), -1, vm.vcpus[0]!);
  c.gptes.forEach((g, i) => vm.machine.memory.write64((TABLE_GFN << 12n) + BigInt(i) * 8n, g));
  const { sp } = mmu.getPage(TABLE_GFN, roleAt(0, 1, c.roleAccess, false), -1, vm.vcpus[0]!);
  c.olds.forEach((old, i) => { if (old !== 0n) mmu.setLeaf(sp, i, (old & ADDR) >> 12n, old); });
  expect(mmu.tryUnsync(TABLE_GFN)).toBe(true);
  expect(sp.unsync).toBe(true);
  return { vm, sp };
}

const sptes = (vm: ShadowVm, sp: ShadowPage): bigint[] => Array.from({ length: 512 }, (_, i) => vm.pool.entry(sp.entryBase + i));

describe("one gpte → SPTE rule for every shadow path", () => {
  it("leafSpte, syncSpte and syncPage derive the same SPTEs from random gptes", async () => {
    const seed = testSeed();
    const rng = new Rng(seed);
    const rounds = 6;
    for (let round = 0; round < rounds; round++) {
      const c = randomCase(rng);
      const note = seedNote(seed, `round ${round}, role access ${c.roleAccess}`);
      const want = c.gptes.map((g, i) => (c.olds[i] === 0n ? 0n : expectedSync(c, g, c.olds[i]!)));

      const page = await build(c);
      for (let i = 0; i < 512; i++) {
        const fresh = page.vm.mmu.leafSpte(c.gptes[i]!, c.roleAccess);
        const full = (c.gptes[i]! & ADDR) | PTE.P | RIGHTS;
        const rule = expectedSync(c, c.gptes[i]!, full);
        expect(fresh ? fresh.spte : 0n, `${note} leafSpte index ${i}`).toBe(rule === 0n ? 0n : rule & ~PTE.D);
        if (fresh) expect(fresh.gfn, note).toBe((c.gptes[i]! & ADDR) >> 12n);
      }
      const dropped = want.some((w, i) => c.olds[i] !== 0n && w === 0n);
      const asksFlush = want.filter((w, i) => w !== 0n && (c.olds[i]! & ~w & (PTE.A | PTE.RW | PTE.D)) !== 0n).length;
      expect(page.vm.mmu.syncPage(page.sp, page.vm.vcpus[0]!), note).toBe(dropped);
      expect(page.vm.mmu.stats.syncSpteFlushes, `${note} SPTEs whose rewrite asks for a flush`).toBe(asksFlush);
      expect(sptes(page.vm, page.sp), `${note} syncPage`).toEqual(want);
      expect(page.sp.unsync).toBe(false);

      const one = await build(c);
      for (let i = 0; i < 512; i++) if (c.olds[i] !== 0n) one.vm.mmu.syncSpte(one.sp, i);
      expect(sptes(one.vm, one.sp), `${note} syncSpte`).toEqual(want);
      expect(one.vm.mmu.stats.spteSynced).toBe(page.vm.mmu.stats.spteSynced);
      page.vm.machine.dispose();
      one.vm.machine.dispose();
    }
    fuzzCount("shadow-sync", rounds * 512);
  });
});
