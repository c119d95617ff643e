// The x86 batch loop of a record that only walks (assembly/x86/mmu.ts
// x86BatchWalks: x86 paging, no EPT, TLB off): per element it must give what
// translate() gives, with the same A/D writes and counters, and stop where
// translateUntilFault says.

import { describe, it, expect } from "vitest";
import { LONG_MODE, CR4, type X86Access } from "../../src/index.js";
import { x86Fixture } from "../helpers/machine.js";
import { Rng, testSeed, seedNote } from "../helpers/rng.js";

const KINDS: readonly X86Access[] = ["read", "write", "fetch"];
const seed = testSeed();

/** Two identical machines: 4- or 5-level tables with present, clean, read-only, NX, reserved-bit, supervisor and missing pages; TLB off. */
async function twin(levels: 4 | 5, rng: Rng) {
  const pages: bigint[] = [];
  const plan: { va: bigint; size: "4K" | "2M"; flags: object }[] = [];
  const top = levels === 5 ? 1n << 48n : 0n;
  for (let i = 0; i < 48; i++) {
    const va = top | (BigInt(1 + rng.int(3)) << 39n) | (BigInt(rng.int(4)) << 30n) | (BigInt(rng.int(8)) << 21n) | (BigInt(rng.int(512)) << 12n);
    const big = rng.chance(0.1);
    const flags = {
      user: rng.chance(0.8), write: rng.chance(0.7), nx: rng.chance(0.2), accessed: rng.chance(0.5), dirty: rng.chance(0.3),
      raw: rng.chance(0.05) ? 1n << 51n : 0n,
    };
    plan.push({ va: big ? va & ~0x1f_ffffn : va, size: big ? "2M" : "4K", flags });
    pages.push(va);
  }
  const make = async () => {
    const { machine, builder } = await x86Fixture({ levels, memoryBytes: 64 << 20 });
    for (const [i, p] of plan.entries()) {
      try {
        builder.map(p.va, (0x100_0000n + BigInt(i) * 0x20_0000n) & ~0x1f_ffffn, p.size, p.flags);
      } catch {
        // Overlapping draws (a 4 KiB page under a 2 MiB one): the first mapping stands.
      }
    }
    const v = machine.vcpu(0);
    v.setControl({ ...LONG_MODE, cr4: LONG_MODE.cr4 | (levels === 5 ? CR4.LA57 : 0n), cr3: builder.root });
    v.setTlbEnabled(false);
    v.resetStats();
    return { machine, v };
  };
  return { a: await make(), b: await make(), pages };
}

/** Addresses for a batch: mapped pages, holes beside them, non-canonical addresses, and access codes including a bad one. */
function addresses(rng: Rng, pages: bigint[], n: number) {
  const va = new BigUint64Array(n);
  const access = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const r = rng.u32() / 0x1_0000_0000;
    const page = rng.pick(pages);
    va[i] = r < 0.7 ? page + BigInt(rng.int(4096)) : r < 0.85 ? page ^ (1n << BigInt(12 + rng.int(27))) : page | 0x8000_0000_0000_0000n;
    access[i] = rng.chance(0.03) ? 3 : rng.int(3);
  }
  return { va, access };
}

const counters = (s: { walks: number; ptRefs: number; adWrites: number; faults: number; lookups: number; hits: number }) =>
  ({ walks: s.walks, ptRefs: s.ptRefs, adWrites: s.adWrites, faults: s.faults, lookups: s.lookups, hits: s.hits });

describe("x86 batch with the TLB off (the walk-only batch loop)", () => {
  for (const levels of [4, 5] as const) {
    it(`gives per element what translate() gives, with the same A/D writes and counters (${levels}-level)`, async () => {
      const rng = new Rng(seed + levels);
      const note = seedNote(seed, `${levels}-level`);
      const { a, b, pages } = await twin(levels, rng);
      for (let round = 0; round < 4; round++) {
        const n = 200;
        const { va, access } = addresses(rng, pages, n);
        const user = rng.chance(0.5);
        const bt = a.v.batch();
        bt.va.set(va);
        bt.access.set(access);
        const faults = bt.run(n, user);
        let want = 0;
        const L = a.machine.layout;
        for (let i = 0; i < n; i++) {
          if (access[i]! > 2) {
            expect(bt.status[i]! >>> L.BS_STATUS_SHIFT, `${note} element ${i} (bad access code)`).toBe(L.STATUS_EACCESS);
            want++;
            continue;
          }
          const got = a.v.decodeStatus(bt.status[i]!, bt.pa[i]!);
          const one = b.v.translate(va[i]!, KINDS[access[i]!]!, user);
          if ("fault" in one) want++;
          expect(got, `${note} round ${round} element ${i} va=0x${va[i]!.toString(16)} ${KINDS[access[i]!]} user=${user}`).toEqual(one);
        }
        expect(faults, note).toBe(want);
        expect(counters(a.v.tlbStats()), note).toEqual(counters(b.v.tlbStats()));
      }
      // Same A/D bits everywhere: the tables of both machines are byte-equal.
      const tables = (m: typeof a.machine) => Buffer.from(m.memory.read(0x10_0000n, 0x70_0000));
      expect(tables(a.machine).equals(tables(b.machine)), `${note} table bytes equal`).toBe(true);
    });
  }

  it("translateUntilFault stops at the first fault and resumes after it", async () => {
    const rng = new Rng(seed + 9);
    const note = seedNote(seed, "until fault");
    const { a, b, pages } = await twin(4, rng);
    const n = 120;
    const { va, access } = addresses(rng, pages, n);
    const bt = a.v.batch();
    bt.va.set(va);
    bt.access.set(access);
    let i = 0, stops = 0;
    while (i < n) {
      const j = a.v.translateUntilFault(i, n, true);
      for (let k = i; k < j; k++) {
        expect(b.v.translate(va[k]!, KINDS[access[k]!]!, true), `${note} element ${k}`).toMatchObject({ pa: bt.pa[k]! });
      }
      if (j === n) break;
      const one = access[j]! > 2 ? { fault: {} } : b.v.translate(va[j]!, KINDS[access[j]!]!, true);
      expect(one, `${note} stopped at ${j}`).toHaveProperty("fault");
      stops++;
      i = j + 1;
    }
    expect(stops, note).toBeGreaterThan(0);
    expect(counters(a.v.tlbStats()), note).toEqual(counters(b.v.tlbStats()));
  });
});
