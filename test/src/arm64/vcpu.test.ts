/**
 * arm64 TLB maintenance, one rule per test: what each TLBI instruction must
 * invalidate and what it must leave (Arm ARM C5.5 scope, operand
 * encodings, TTL hints, reserved TG; KVM hyp/vhe/tlb.c sequences; Linux tlbflush.h
 * the v6.6 2^21-page bug, worked examples of test/src/arm64/linux-tlb.test.ts); what a cached entry grants
 * (PAN, hardware AF/dirty: Arm ARM D8.5, docs/arm64-walk-contract.md stage-1
 * rules 9–12); tagged VAs under TBI; context-slot recycling and the cost of
 * range invalidation (docs/mmu.md §6). Descriptors are edited with plain
 * stores, so a translation the TLB still holds is visibly stale: an entry
 * that "stays" answers with the old output address as a TLB hit, an entry
 * that "goes" is re-walked and answers with the new one.
 */
import { describe, expect, it } from "vitest";
import {
  Arm64Stage1Builder, Arm64Stage2Builder, HCR, SCTLR, TCR, VTCR, createMachine, encodeTlbiRange, encodeTlbiVa,
  kvmTlbFlushVmidRange, kvmVtcr, linuxFlushTlbRange,
  type Arm64Access, type Arm64SystemRegisters, type Arm64TranslateResult, type Arm64Vcpu, type GuestMemory, type Machine,
} from "../../../src/index.js";

const K4 = 0x1000n;
const M2 = 0x20_0000n;
const G1 = 0x4000_0000n;

/** TCR_EL1: 48-bit VAs in both halves, 4 KiB granules, 48-bit IPS, no hardware AF/dirty. */
const TCR48 = 16n | (16n << 16n) | TCR.TG1_4K | (5n << 32n);
/** VTCR_EL2 as KVM sets it for a 40-bit IPA space (start level 1, two concatenated tables), without hardware AF. */
const VTCR40 = kvmVtcr(40).vtcr & ~VTCR.HA;

const USER = 0x0000_0010_0000_0000n;
const KERN = 0xffff_8000_0010_0000n;
/** IPA of the guest's data pages; stage 2 maps them to PA DATA_PA + offset. */
const IPA = 0x1000_0000n;
const DATA_PA = 0x1_0000_0000n;

interface Guest {
  machine: Machine<Arm64Vcpu>;
  mem: GuestMemory;
  v0: Arm64Vcpu;
  v1: Arm64Vcpu;
  /** Stage-1 tables of two user address spaces (TTBR0) and the kernel (TTBR1). */
  user: Arm64Stage1Builder;
  user2: Arm64Stage1Builder;
  kern: Arm64Stage1Builder;
  /** Stage-2 tables of two VMs. */
  vm1: Arm64Stage2Builder;
  vm2: Arm64Stage2Builder;
}

/**
 * A 2-vCPU machine: stage-1 tables in PA [4 MiB, 8 MiB), identity-mapped by
 * both VMs' stage 2 (so stage-1 tables read the same with stage 2 on or off);
 * both vCPUs run VM 1 (VMID 1) with ASID 1 on `user` and the kernel in TTBR1.
 */
async function guest(opts: { stage2?: boolean; tlbEntries?: number; tcr?: bigint } = {}): Promise<Guest> {
  const machine = await createMachine({ arch: "arm64", memoryBytes: 16 << 20, vcpus: 2, tlbEntries: opts.tlbEntries ?? 4096 });
  const mem = machine.memory;
  const { startLevel } = kvmVtcr(40);
  const vm1 = new Arm64Stage2Builder(mem, { ipaBits: 40, startLevel, tableBase: 0x10_0000n, tableLimit: 0x20_0000n });
  const vm2 = new Arm64Stage2Builder(mem, { ipaBits: 40, startLevel, tableBase: 0x20_0000n, tableLimit: 0x30_0000n });
  for (const vm of [vm1, vm2]) vm.mapRange(0x40_0000n, 0x40_0000n, 2, "2M");
  const user = new Arm64Stage1Builder(mem, { tableBase: 0x40_0000n, tableLimit: 0x50_0000n });
  const user2 = new Arm64Stage1Builder(mem, { tableBase: 0x50_0000n, tableLimit: 0x60_0000n });
  const kern = new Arm64Stage1Builder(mem, { tableBase: 0x60_0000n, tableLimit: 0x70_0000n });
  const g: Guest = { machine, mem, v0: machine.vcpu(0), v1: machine.vcpu(1), user, user2, kern, vm1, vm2 };
  for (const v of [g.v0, g.v1]) {
    v.setSystemRegisters({
      tcr: opts.tcr ?? TCR48, sctlr: SCTLR.M, ttbr0: user.ttbr(1), ttbr1: kern.ttbr(0),
      hcr: opts.stage2 ? HCR.VM : 0n, vtcr: VTCR40, vttbr: vm1.vttbr(1),
    });
  }
  return g;
}

/** Translates and reports whether the answer came from the TLB (the hit counter moved). */
function probe(v: Arm64Vcpu, va: bigint, access: Arm64Access = "read", el0 = false): { r: Arm64TranslateResult; hit: boolean } {
  const before = v.tlbStats().hits;
  const r = v.translate(va, access, el0);
  return { r, hit: v.tlbStats().hits > before };
}

/** The physical address `va` translates to, or a description of the fault. */
function paOf(v: Arm64Vcpu, va: bigint): bigint | string {
  const r = v.translate(va);
  return "fault" in r ? `${r.fault.kind} fault` : r.pa;
}

/** Expects `va` to answer `pa` from the TLB (a cached entry that stayed). */
function expectCached(v: Arm64Vcpu, va: bigint, pa: bigint): void {
  const { r, hit } = probe(v, va);
  expect(r).toMatchObject({ pa });
  expect(hit, `${va.toString(16)} should still be a TLB hit`).toBe(true);
}

/** Expects `va` to be re-walked and answer `pa` (its cached entry went). */
function expectWalked(v: Arm64Vcpu, va: bigint, pa: bigint): void {
  const { r, hit } = probe(v, va);
  expect(r).toMatchObject({ pa });
  expect(hit, `${va.toString(16)} should have been re-walked`).toBe(false);
}

describe("stale entries and VA invalidation", () => {
  it("a descriptor edit without TLBI keeps the old translation until VAE1IS", async () => {
    const g = await guest();
    g.user.map(USER, 0x80_0000n, "4K", { nG: true });
    expect(paOf(g.v0, USER + 8n)).toBe(0x80_0008n);
    g.user.map(USER, 0x90_0000n, "4K", { nG: true });
    expectCached(g.v0, USER + 8n, 0x80_0008n);
    g.v0.tlbi("VAE1IS", encodeTlbiVa(USER, 1));
    expectWalked(g.v0, USER + 8n, 0x90_0008n);
  });

  it("an unmapped page keeps translating from the TLB until invalidated, then faults", async () => {
    const g = await guest();
    g.user.map(USER, 0x80_0000n, "4K", { nG: true });
    g.v0.translate(USER);
    g.user.unmap(USER);
    expectCached(g.v0, USER, 0x80_0000n);
    g.v0.tlbi("VALE1IS", encodeTlbiVa(USER, 1));
    expect(g.v0.translate(USER)).toMatchObject({ fault: { stage: 1, kind: "translation", level: 3 } });
  });

  it("a cached entry that does not grant the access is re-walked, so the fault is the tables' own", async () => {
    const g = await guest();
    g.user.map(USER, 0x80_0000n, "4K", { nG: true, readOnly: true });
    g.v0.translate(USER);
    const { r, hit } = probe(g.v0, USER, "write");
    expect(r).toMatchObject({ fault: { stage: 1, kind: "permission", level: 3, write: true } });
    expect(hit).toBe(false);
    g.user.map(USER, 0x80_0000n, "4K", { nG: true });
    expect(probe(g.v0, USER, "write")).toMatchObject({ r: { pa: 0x80_0000n }, hit: false });
  });

  it("a batch hit that would not grant the access is re-walked and faults as the tables say", async () => {
    const g = await guest();
    g.user.map(USER, 0x80_0000n, "4K", { nG: true, readOnly: true });
    g.v0.translate(USER);
    const out = { pa: new BigUint64Array(2), status: new Uint32Array(2) };
    expect(g.v0.translateBatch(new BigUint64Array([USER, USER + 8n]), new Uint8Array([0, 1]), false, out)).toBe(1);
    expect(g.v0.decodeStatus(out.status[0]!, out.pa[0]!)).toMatchObject({ pa: 0x80_0000n });
    expect(g.v0.decodeStatus(out.status[1]!, out.pa[1]!)).toMatchObject({ fault: { stage: 1, kind: "permission", level: 3, write: true } });
  });

  it("VAE1IS with another ASID leaves this ASID's entry", async () => {
    const g = await guest();
    g.user.map(USER, 0x80_0000n, "4K", { nG: true });
    g.v0.translate(USER);
    g.user.map(USER, 0x90_0000n, "4K", { nG: true });
    g.v0.tlbi("VAE1IS", encodeTlbiVa(USER, 2));
    expectCached(g.v0, USER, 0x80_0000n);
  });

  it("VAE1IS with any ASID drops a global entry of the page", async () => {
    const g = await guest();
    g.user.map(USER, 0x80_0000n, "4K", { nG: false });
    g.v0.translate(USER);
    g.user.map(USER, 0x90_0000n, "4K", { nG: false });
    g.v0.tlbi("VAE1IS", encodeTlbiVa(USER, 7));
    expectWalked(g.v0, USER, 0x90_0000n);
  });

  it("VAAE1IS drops every ASID's entry", async () => {
    const g = await guest();
    g.user.map(USER, 0x80_0000n, "4K", { nG: true });
    g.user2.map(USER, 0x81_0000n, "4K", { nG: true });
    g.v0.translate(USER);
    g.v0.setSystemRegisters({ ttbr0: g.user2.ttbr(2) });
    g.v0.translate(USER);
    g.user.map(USER, 0x90_0000n, "4K", { nG: true });
    g.user2.map(USER, 0x91_0000n, "4K", { nG: true });
    g.v0.tlbi("VAAE1IS", encodeTlbiVa(USER, 0xffff));
    expectWalked(g.v0, USER, 0x91_0000n);
    g.v0.setSystemRegisters({ ttbr0: g.user.ttbr(1) });
    expectWalked(g.v0, USER, 0x90_0000n);
  });

  it("global entries survive ASIDE1IS, the ASID's non-global entries do not", async () => {
    const g = await guest();
    g.user.map(USER, 0x80_0000n, "4K", { nG: true });
    g.kern.map(KERN, 0x82_0000n, "4K", { nG: false });
    g.v0.translate(USER);
    g.v0.translate(KERN);
    g.user.map(USER, 0x90_0000n, "4K", { nG: true });
    g.kern.map(KERN, 0x92_0000n, "4K", { nG: false });
    g.v0.tlbi("ASIDE1IS", 1n << 48n);
    expectCached(g.v0, KERN, 0x82_0000n);
    expectWalked(g.v0, USER, 0x90_0000n);
  });

  it("VMALLE1IS drops global and non-global entries of every ASID", async () => {
    const g = await guest();
    g.user.map(USER, 0x80_0000n, "4K", { nG: true });
    g.kern.map(KERN, 0x82_0000n, "4K", { nG: false });
    g.v0.translate(USER);
    g.v0.translate(KERN);
    g.user.map(USER, 0x90_0000n, "4K", { nG: true });
    g.kern.map(KERN, 0x92_0000n, "4K", { nG: false });
    g.v0.tlbi("VMALLE1IS");
    expectWalked(g.v0, USER, 0x90_0000n);
    expectWalked(g.v0, KERN, 0x92_0000n);
  });

  it("an ASID switch needs no flush: each ASID keeps its own entries", async () => {
    const g = await guest();
    g.user.map(USER, 0x80_0000n, "4K", { nG: true });
    g.user2.map(USER, 0x81_0000n, "4K", { nG: true });
    g.v0.translate(USER);
    const dropped = g.v0.tlbStats().dropped;
    g.user.map(USER, 0x90_0000n, "4K", { nG: true });
    g.v0.setSystemRegisters({ ttbr0: g.user2.ttbr(2) });
    expectWalked(g.v0, USER, 0x81_0000n);
    g.v0.setSystemRegisters({ ttbr0: g.user.ttbr(1) });
    expectCached(g.v0, USER, 0x80_0000n);
    g.v0.setSystemRegisters({ ttbr0: g.user2.ttbr(2) });
    expectCached(g.v0, USER, 0x81_0000n);
    expect(g.v0.tlbStats().dropped).toBe(dropped);
  });
});

describe("rights of cached entries", () => {
  it("PSTATE.PAN applies to a cached entry without any TLB maintenance", async () => {
    const g = await guest();
    g.user.map(USER, 0x80_0000n, "4K", { nG: true, el0: true });
    expect(probe(g.v0, USER)).toMatchObject({ r: { pa: 0x80_0000n }, hit: false });
    expect(probe(g.v0, USER)).toMatchObject({ r: { pa: 0x80_0000n }, hit: true });
    g.v0.setSystemRegisters({ pan: true });
    expect(probe(g.v0, USER)).toMatchObject({ r: { fault: { stage: 1, kind: "permission", level: 3 } }, hit: false });
    expect(probe(g.v0, USER, "read", true)).toMatchObject({ r: { pa: 0x80_0000n } });
  });

  it("a clean DBM page is cached read-only: the first write re-walks and sets the dirty state, later writes hit", async () => {
    const g = await guest({ tcr: TCR48 | TCR.HA | TCR.HD });
    const leaf = g.user.map(USER, 0x80_0000n, "4K", { nG: true, readOnly: true, dbm: true });
    expect(probe(g.v0, USER)).toMatchObject({ r: { pa: 0x80_0000n }, hit: false });
    expect(g.mem.read64(leaf) & (1n << 7n)).toBe(1n << 7n);
    expect(probe(g.v0, USER, "write")).toMatchObject({ r: { pa: 0x80_0000n }, hit: false });
    expect(g.mem.read64(leaf) & (1n << 7n)).toBe(0n);
    expect(probe(g.v0, USER, "write")).toMatchObject({ r: { pa: 0x80_0000n }, hit: true });
  });

  it("an AF = 0 page is set accessed by the walk that caches it (TCR.HA), and faults without HA", async () => {
    const g = await guest({ tcr: TCR48 | TCR.HA });
    const leaf = g.user.map(USER, 0x80_0000n, "4K", { nG: true, af: false });
    expect(probe(g.v0, USER)).toMatchObject({ r: { pa: 0x80_0000n }, hit: false });
    expect(g.mem.read64(leaf) & (1n << 10n)).toBe(1n << 10n);
    g.user.map(USER + K4, 0x81_0000n, "4K", { nG: true, af: false });
    g.v0.setSystemRegisters({ tcr: TCR48 });
    expect(g.v0.translate(USER + K4)).toMatchObject({ fault: { stage: 1, kind: "access-flag", level: 3 } });
  });
});

describe("blocks and ranges", () => {
  it("VAE1IS of any page inside a 2 MiB block drops the whole block", async () => {
    const g = await guest();
    g.user.map(USER, 0x80_0000n, "2M", { nG: true });
    for (const o of [0n, 5n * K4, M2 - K4]) g.v0.translate(USER + o);
    g.user.map(USER, 0xa0_0000n, "2M", { nG: true });
    g.v0.tlbi("VAE1IS", encodeTlbiVa(USER + 0x17_3000n, 1));
    for (const o of [0n, 5n * K4, M2 - K4]) expectWalked(g.v0, USER + o, 0xa0_0000n + o);
  });

  it("RVAE1IS over 512 pages drops a 2 MiB block", async () => {
    const g = await guest();
    g.user.map(USER + M2, 0x80_0000n, "2M", { nG: true });
    g.user.map(USER + 2n * M2, 0xc0_0000n, "4K", { nG: true });
    g.v0.translate(USER + M2 + 0x1f_f000n);
    g.v0.translate(USER + 2n * M2);
    g.user.map(USER + M2, 0xa0_0000n, "2M", { nG: true });
    g.user.map(USER + 2n * M2, 0xd0_0000n, "4K", { nG: true });
    const d = g.v0.tlbi("RVAE1IS", encodeTlbiRange({ baseVa: USER + M2, asid: 1, scale: 1, num: 7, ttl: 0 }));
    expect(d.pages).toBe(512n);
    expectWalked(g.v0, USER + M2 + 0x1f_f000n, 0xbf_f000n);
    expectCached(g.v0, USER + 2n * M2, 0xc0_0000n);
  });

  it("a range covering only the last page of a 2 MiB block drops the block's first page too", async () => {
    const g = await guest();
    g.user.map(USER, 0x80_0000n, "2M", { nG: true });
    g.v0.translate(USER);
    g.user.map(USER, 0xa0_0000n, "2M", { nG: true });
    g.v0.tlbi("RVAE1IS", encodeTlbiRange({ baseVa: USER + M2 - K4, asid: 1, scale: 0, num: 0, ttl: 0 }));
    expectWalked(g.v0, USER, 0xa0_0000n);
  });

  it.each([4096, 1 << 20])("VAE1IS inside a 1 GiB block drops the pieces cached anywhere in it (%i-entry TLB)", async (tlbEntries) => {
    const g = await guest({ tlbEntries });
    g.kern.map(0xffff_8000_4000_0000n, 0x4000_0000n, "1G", {});
    const vas = [0n, 0x1234_5000n, G1 - K4].map((o) => 0xffff_8000_4000_0000n + o);
    for (const va of vas) g.v0.translate(va);
    g.kern.map(0xffff_8000_4000_0000n, 0x8000_0000n, "1G", {});
    g.v0.tlbi("VAAE1IS", encodeTlbiVa(0xffff_8000_6000_0000n, 0));
    for (const va of vas) expectWalked(g.v0, va, 0x8000_0000n + (va & (G1 - 1n)));
  });

  it("in a 2^20-entry TLB a page invalidation inside a 1 GiB block probes the block's 2^18 piece slots, not the whole TLB", async () => {
    const g = await guest({ tlbEntries: 1 << 20 });
    g.kern.map(0xffff_8000_4000_0000n, 0x4000_0000n, "1G", {});
    g.v0.translate(0xffff_8000_4000_0000n + 0x1234_5000n);
    const before = g.v0.tlbStats().flushProbes;
    g.v0.tlbi("VAAE1", encodeTlbiVa(0xffff_8000_6000_0000n, 0));
    expect(g.v0.tlbStats().flushProbes - before).toBe(1 + (1 << 18));
  });

  it("a TTL hint of level 3 may leave a level-2 block (this core keeps it)", async () => {
    const g = await guest();
    g.user.map(USER, 0x80_0000n, "2M", { nG: true });
    g.v0.translate(USER);
    g.user.map(USER, 0xa0_0000n, "2M", { nG: true });
    const d = g.v0.tlbi("VAE1IS", encodeTlbiVa(USER, 1, 3));
    expect(d.ttlLevel).toBe(3);
    expectCached(g.v0, USER, 0x80_0000n);
  });

  it("a TTL hint naming the entry's level drops it", async () => {
    const g = await guest();
    g.user.map(USER, 0x80_0000n, "2M", { nG: true });
    g.v0.translate(USER);
    g.user.map(USER, 0xa0_0000n, "2M", { nG: true });
    g.v0.tlbi("VAE1IS", encodeTlbiVa(USER + 0x10_0000n, 1, 2));
    expectWalked(g.v0, USER, 0xa0_0000n);
  });

  it("a range with TG=00 invalidates nothing and is counted as ignored", async () => {
    const g = await guest();
    g.user.map(USER, 0x80_0000n, "4K", { nG: true });
    g.v0.translate(USER);
    g.user.map(USER, 0x90_0000n, "4K", { nG: true });
    const operand = encodeTlbiRange({ baseVa: USER, asid: 1, scale: 0, num: 3, ttl: 0 }) & ~(3n << 46n);
    const before = g.v0.tlbiStats().ignored;
    const d = g.v0.tlbi("RVAE1IS", operand);
    expect(d.ignored).toMatch(/TG=0b00/);
    expectCached(g.v0, USER, 0x80_0000n);
    expect(g.v0.tlbiStats().ignored).toBe(before + 1);
    expect(g.v1.tlbiStats().ignored).toBe(1);
  });

  it("a range with the 64K granule's TG invalidates nothing either", async () => {
    const g = await guest();
    g.user.map(USER, 0x80_0000n, "4K", { nG: true });
    g.v0.translate(USER);
    g.user.map(USER, 0x90_0000n, "4K", { nG: true });
    const operand = encodeTlbiRange({ baseVa: USER, asid: 1, scale: 0, num: 3, ttl: 0 }) | (3n << 46n);
    expect(g.v0.tlbi("RVAE1IS", operand).ignored).toMatch(/64K/);
    expectCached(g.v0, USER, 0x80_0000n);
  });

  it("the worked example of 515 pages: its operation list (via linuxFlushTlbRange) invalidates exactly pages [start, start+515)", async () => {
    const g = await guest({ tlbEntries: 1 << 14 });
    const start = USER + 0x8000_0000n;
    const pages = [-2n, ...Array.from({ length: 519 }, (_, i) => BigInt(i) - 1n)];
    for (const p of pages) g.user.map(start + p * K4, 0x80_0000n + (p + 2n) * K4, "4K", { nG: true });
    for (const p of pages) g.v0.translate(start + p * K4);
    for (const p of pages) g.user.map(start + p * K4, 0x100_0000n + (p + 2n) * K4, "4K", { nG: true });
    const calls = linuxFlushTlbRange({ start, pages: 515n, asid: 1, tlbRange: true });
    expect(calls.map((c) => c.op)).toEqual(["VAE1IS", "RVAE1IS", "RVAE1IS"]);
    for (const c of calls) g.v0.tlbi(c.op, c.operand);
    const wrong: string[] = [];
    for (const p of pages) {
      const inside = p >= 0n && p < 515n;
      const { r, hit } = probe(g.v0, start + p * K4);
      const want = (inside ? 0x100_0000n : 0x80_0000n) + (p + 2n) * K4;
      if (!("pa" in r) || r.pa !== want || hit === inside) wrong.push(`page ${p}: ${JSON.stringify({ hit, pa: "pa" in r ? r.pa.toString(16) : r })}`);
    }
    expect(wrong).toEqual([]);
  });
});

describe("TLBI operands", () => {
  it("with TCR.AS = 0 only ASID[7:0] counts, in TTBR0 and in the operand", async () => {
    const g = await guest();
    g.v0.setSystemRegisters({ ttbr0: g.user.ttbr(0x1203) });
    expect(g.v0.asid()).toBe(0x03);
    g.user.map(USER, 0x80_0000n, "4K", { nG: true });
    g.v0.translate(USER);
    g.user.map(USER, 0x90_0000n, "4K", { nG: true });
    g.v0.tlbi("VAE1IS", encodeTlbiVa(USER, 0xab04));
    expectCached(g.v0, USER, 0x80_0000n);
    expect(g.v0.tlbi("VAE1IS", encodeTlbiVa(USER, 0xab03)).asid).toBe(0x03);
    expectWalked(g.v0, USER, 0x90_0000n);
  });

  it("with TCR.AS = 1 ASIDs are 16 bits: 0x1203 and 0x0003 are different address spaces", async () => {
    const g = await guest({ tcr: TCR48 | TCR.AS });
    g.v0.setSystemRegisters({ ttbr0: g.user.ttbr(0x1203) });
    expect(g.v0.asid()).toBe(0x1203);
    g.user.map(USER, 0x80_0000n, "4K", { nG: true });
    g.v0.translate(USER);
    g.user.map(USER, 0x90_0000n, "4K", { nG: true });
    g.v0.tlbi("VAE1IS", encodeTlbiVa(USER, 0x0003));
    g.v0.tlbi("ASIDE1IS", 0x0003n << 48n);
    expectCached(g.v0, USER, 0x80_0000n);
    g.v0.tlbi("ASIDE1IS", 0x1203n << 48n);
    expectWalked(g.v0, USER, 0x90_0000n);
  });

  it("with TCR.A1 the ASID comes from TTBR1: a TTBR0 switch alone keeps the old ASID and its entries", async () => {
    const g = await guest({ tcr: TCR48 | TCR.A1 });
    g.v0.setSystemRegisters({ ttbr0: g.user.ttbr(9), ttbr1: g.kern.ttbr(5) });
    expect(g.v0.asid()).toBe(5);
    g.user.map(USER, 0x80_0000n, "4K", { nG: true });
    g.user2.map(USER, 0x81_0000n, "4K", { nG: true });
    g.v0.translate(USER);
    g.v0.setSystemRegisters({ ttbr0: g.user2.ttbr(9) });
    expectCached(g.v0, USER, 0x80_0000n);
    g.v0.tlbi("VAE1IS", encodeTlbiVa(USER, 9));
    expectCached(g.v0, USER, 0x80_0000n);
    g.v0.tlbi("VAE1IS", encodeTlbiVa(USER, 5));
    expectWalked(g.v0, USER, 0x81_0000n);
  });

  it("TTBR1 (upper half) VAs in VA operands are sign-extended", async () => {
    const g = await guest();
    g.kern.map(KERN, 0x80_0000n, "4K", { nG: true });
    g.v0.translate(KERN);
    g.kern.map(KERN, 0x90_0000n, "4K", { nG: true });
    const operand = encodeTlbiVa(KERN, 1);
    expect((operand >> 36n) & 0xffn).toBe(0xffn);
    expect(g.v0.tlbi("VAE1IS", encodeTlbiVa(KERN & ((1n << 48n) - 1n), 1)).startVa).toBe(0x0000_8000_0010_0000n);
    expectCached(g.v0, KERN, 0x80_0000n);
    expect(g.v0.tlbi("VAE1IS", operand).startVa).toBe(KERN);
    expectWalked(g.v0, KERN, 0x90_0000n);
  });

  it("a range BaseADDR with VA bit 48 set is sign-extended into the upper half", async () => {
    const g = await guest();
    g.kern.map(KERN, 0x80_0000n, "4K", { nG: true });
    g.v0.translate(KERN);
    g.kern.map(KERN, 0x90_0000n, "4K", { nG: true });
    const upper = g.v0.tlbi("RVAE1IS", encodeTlbiRange({ baseVa: KERN, asid: 1, scale: 0, num: 0, ttl: 0 }));
    expect(upper.startVa).toBe(KERN);
    expectWalked(g.v0, KERN, 0x90_0000n);
  });
});

describe("top-byte-ignore (TCR.TBI0)", () => {
  const TAGGED = 0x5a00_0000_0000_0000n | USER;

  it("a tagged access fills its untagged page: the untagged VA hits, and a TLBI of it drops the entry", async () => {
    const g = await guest({ tcr: TCR48 | TCR.TBI0 });
    g.user.map(USER, 0x80_0000n, "4K", { nG: true });
    expect(g.v0.translate(TAGGED + 8n)).toMatchObject({ pa: 0x80_0008n });
    g.user.map(USER, 0x90_0000n, "4K", { nG: true });
    expectCached(g.v0, USER + 8n, 0x80_0008n);
    g.v0.tlbi("VAE1IS", encodeTlbiVa(USER, 1));
    expectWalked(g.v0, USER + 8n, 0x90_0008n);
  });

  // Performance bug: armTranslateSlow and armBatchHits skip the TLB lookup for
  // any VA whose top byte is not a sign extension of bit 55, yet fill with the
  // untagged key; so under TBI every access through a tagged pointer walks
  // (tlbStats counts no lookup) and refills — counted as an eviction — its own
  // entry. A TBI regime's TLB ignores VA[63:56] on lookup too.
  it("a tagged access hits the entry its untagged page filled", async () => {
    const g = await guest({ tcr: TCR48 | TCR.TBI0 });
    g.user.map(USER, 0x80_0000n, "4K", { nG: true });
    g.v0.translate(USER);
    expect(probe(g.v0, TAGGED + 8n)).toMatchObject({ r: { pa: 0x80_0008n }, hit: true });
  });
});

describe("vCPUs and broadcast", () => {
  it("a local VAE1 reaches only its vCPU, VAE1IS reaches both", async () => {
    const g = await guest();
    g.user.map(USER, 0x80_0000n, "4K", { nG: true });
    g.v0.translate(USER);
    g.v1.translate(USER);
    g.user.map(USER, 0x90_0000n, "4K", { nG: true });
    const d = g.v1.tlbi("VAE1", encodeTlbiVa(USER, 1));
    expect(d.broadcast).toBe(false);
    expectCached(g.v0, USER, 0x80_0000n);
    expectWalked(g.v1, USER, 0x90_0000n);
    g.v1.translate(USER);
    g.user.map(USER, 0xa0_0000n, "4K", { nG: true });
    g.v1.tlbi("VAE1IS", encodeTlbiVa(USER, 1));
    expectWalked(g.v0, USER, 0xa0_0000n);
    expectWalked(g.v1, USER, 0xa0_0000n);
  });

  it("a broadcast TLBI acts on the issuer's VMID, even on a vCPU running another VM", async () => {
    const g = await guest({ stage2: true });
    for (const vm of [g.vm1, g.vm2]) vm.map(IPA, DATA_PA, "4K");
    g.user.map(USER, IPA, "4K", { nG: true });
    g.v1.setSystemRegisters({ vttbr: g.vm2.vttbr(2) });
    g.v1.translate(USER);
    g.user.map(USER, IPA + K4, "4K", { nG: true });
    for (const vm of [g.vm1, g.vm2]) vm.map(IPA + K4, DATA_PA + K4, "4K");
    g.v0.tlbi("VMALLE1IS");
    expectCached(g.v1, USER, DATA_PA);
    g.v1.tlbi("VMALLE1");
    expectWalked(g.v1, USER, DATA_PA + K4);
  });

  it("ALLE1IS drops every VMID's entries on every vCPU", async () => {
    const g = await guest({ stage2: true });
    for (const vm of [g.vm1, g.vm2]) vm.map(IPA, DATA_PA, "4K");
    g.user.map(USER, IPA, "4K", { nG: true });
    g.v0.translate(USER);
    g.v1.setSystemRegisters({ vttbr: g.vm2.vttbr(2) });
    g.v1.translate(USER);
    for (const vm of [g.vm1, g.vm2]) vm.map(IPA, DATA_PA + M2, "4K");
    g.v0.tlbi("ALLE1IS");
    expectWalked(g.v0, USER, DATA_PA + M2);
    expectWalked(g.v1, USER, DATA_PA + M2);
  });
});

describe("stage 2", () => {
  /** A guest under stage 2 with USER → IPA (4K) and IPA → DATA_PA in VM 1. */
  async function s2guest(tlbEntries?: number): Promise<Guest> {
    const g = await guest({ stage2: true, tlbEntries });
    g.vm1.map(IPA, DATA_PA, "4K");
    g.vm2.map(IPA, DATA_PA + G1, "4K");
    g.user.map(USER, IPA, "4K", { nG: true });
    return g;
  }

  it("a stage-2-only entry that does not grant the access is re-walked, so stage-2 faults are the tables' own", async () => {
    const g = await s2guest();
    g.vm1.map(IPA, DATA_PA, "4K", { write: false });
    g.user2.map(USER, IPA, "4K", { nG: true });
    g.v0.translate(USER);
    g.v0.setSystemRegisters({ ttbr0: g.user2.ttbr(2) });
    expect(g.v0.translate(USER + 8n, "write")).toMatchObject({ fault: { stage: 2, kind: "permission", level: 3, s1ptw: false, write: true, ipa: IPA + 8n } });
    g.vm1.map(IPA, DATA_PA + M2, "4K");
    expect(g.v0.translate(USER + 8n, "write")).toMatchObject({ pa: DATA_PA + M2 + 8n });
  });

  it("the leaf-only forms IPAS2LE1IS and RIPAS2LE1IS drop stage-2 entries like the full forms (no walk caches are modelled)", async () => {
    const g = await s2guest();
    g.user2.map(USER, IPA, "4K", { nG: true });
    for (const [op, operand] of [["IPAS2LE1IS", IPA >> 12n], ["RIPAS2LE1IS", encodeTlbiRange({ baseVa: IPA, asid: 0, scale: 0, num: 0, ttl: 3 })]] as const) {
      g.v0.setSystemRegisters({ ttbr0: g.user.ttbr(1) });
      g.v0.tlbi("VMALLS12E1IS");
      g.vm1.map(IPA, DATA_PA, "4K");
      g.v0.translate(USER);
      g.vm1.map(IPA, DATA_PA + M2, "4K");
      g.v0.tlbi(op, operand);
      g.v0.tlbi("ASIDE1IS", 2n << 48n);
      g.v0.setSystemRegisters({ ttbr0: g.user2.ttbr(2) });
      expect(paOf(g.v0, USER), op).toBe(DATA_PA + M2);
    }
  });

  it("walk() bypasses the TLB, stage 2 included: it sees a stage-2 edit no TLBI has made visible", async () => {
    const g = await s2guest();
    expect(g.v0.translate(USER)).toMatchObject({ pa: DATA_PA });
    g.vm1.map(IPA, DATA_PA + M2, "4K");
    expect(g.v0.walk(USER)).toMatchObject({ pa: DATA_PA + M2 });
  });

  it("IPAS2E1IS alone leaves the combined entry; VMALLE1IS then drops it", async () => {
    const g = await s2guest();
    expect(paOf(g.v0, USER)).toBe(DATA_PA);
    g.vm1.map(IPA, DATA_PA + M2, "4K");
    g.v0.tlbi("IPAS2E1IS", IPA >> 12n);
    expectCached(g.v0, USER, DATA_PA);
    g.v0.tlbi("VMALLE1IS");
    expectWalked(g.v0, USER, DATA_PA + M2);
  });

  it("VMALLE1IS alone leaves the stage-2-only entry: the re-walk reuses the stale IPA translation", async () => {
    const g = await s2guest();
    g.v0.translate(USER);
    g.vm1.map(IPA, DATA_PA + M2, "4K");
    g.v0.tlbi("VMALLE1IS");
    const walks = g.v0.tlbStats().walks;
    expectWalked(g.v0, USER, DATA_PA);
    expect(g.v0.tlbStats().walks).toBeGreaterThan(walks);
    g.v0.tlbi("IPAS2E1IS", IPA >> 12n);
    g.v0.tlbi("VMALLE1IS");
    expectWalked(g.v0, USER, DATA_PA + M2);
  });

  it("IPAS2E1IS drops the stage-2-only entry: another ASID's first walk sees the new IPA mapping", async () => {
    const g = await s2guest();
    g.user2.map(USER, IPA, "4K", { nG: true });
    g.v0.translate(USER);
    g.vm1.map(IPA, DATA_PA + M2, "4K");
    g.v0.tlbi("IPAS2E1IS", IPA >> 12n);
    g.v0.setSystemRegisters({ ttbr0: g.user2.ttbr(2) });
    expectWalked(g.v0, USER, DATA_PA + M2);
    g.v0.setSystemRegisters({ ttbr0: g.user.ttbr(1) });
    expectCached(g.v0, USER, DATA_PA);
  });

  it("RIPAS2E1IS drops stage-2 pieces of a 2 MiB stage-2 block cached anywhere in it", async () => {
    const g = await s2guest();
    g.vm1.map(0x4000_0000n, DATA_PA, "2M");
    g.user.map(USER, 0x4000_0000n, "2M", { nG: true });
    g.user2.map(USER, 0x4000_0000n, "2M", { nG: true });
    g.v0.translate(USER + 0x1f_f000n);
    g.vm1.map(0x4000_0000n, DATA_PA + G1, "2M");
    g.v0.tlbi("RIPAS2E1IS", encodeTlbiRange({ baseVa: 0x4000_0000n, asid: 0, scale: 0, num: 0, ttl: 0 }));
    g.v0.setSystemRegisters({ ttbr0: g.user2.ttbr(2) });
    expectWalked(g.v0, USER + 0x1f_f000n, DATA_PA + G1 + 0x1f_f000n);
  });

  it("VMALLS12E1IS drops both stages of one VMID and leaves another VMID", async () => {
    const g = await s2guest();
    g.v0.translate(USER);
    g.v0.setSystemRegisters({ vttbr: g.vm2.vttbr(2) });
    g.v0.translate(USER);
    g.vm1.map(IPA, DATA_PA + M2, "4K");
    g.vm2.map(IPA, DATA_PA + G1 + M2, "4K");
    g.v0.setSystemRegisters({ vttbr: g.vm1.vttbr(1) });
    g.v0.tlbi("VMALLS12E1IS");
    expectWalked(g.v0, USER, DATA_PA + M2);
    g.v0.setSystemRegisters({ vttbr: g.vm2.vttbr(2) });
    expectCached(g.v0, USER, DATA_PA + G1);
    g.v0.tlbi("VMALLE1IS");
    expectWalked(g.v0, USER, DATA_PA + G1);
  });

  it("combined entries report min(stage-1, stage-2) size but are invalidated as the stage-1 block", async () => {
    const g = await s2guest();
    g.user.map(USER + M2, IPA, "2M", { nG: true });
    g.vm1.map(IPA + K4, DATA_PA + K4, "4K");
    expect(g.v0.translate(USER + M2 + K4)).toMatchObject({ pa: DATA_PA + K4, pageSize: 4096, level: 2 });
    g.vm1.map(IPA + K4, DATA_PA + M2, "4K");
    g.v0.tlbi("IPAS2E1IS", (IPA + K4) >> 12n);
    g.v0.tlbi("VAE1IS", encodeTlbiVa(USER + M2 + 0x1f_f000n, 1));
    expectWalked(g.v0, USER + M2 + K4, DATA_PA + M2);
  });

  it("the v6.6 2^21-page bug via kvmTlbFlushVmidRange leaves pages beyond the first two cached — but VMALLE1IS after it (as KVM does) still drops combined entries", async () => {
    const g = await guest({ stage2: true, tlbEntries: 1 << 16 });
    const base = 0x4000_0000n;
    const offs = [0n, K4, 2n * K4, 0x100_3000n, 0x1_0000_5000n];
    for (const [i, o] of offs.entries()) {
      g.vm1.map(base + o, DATA_PA + o, "4K");
      g.user.map(USER + BigInt(i) * K4, base + o, "4K", { nG: true });
    }
    for (const i of offs.keys()) g.v0.translate(USER + BigInt(i) * K4);
    for (const o of offs) g.vm1.map(base + o, DATA_PA + G1 + o, "4K");
    const calls = kvmTlbFlushVmidRange({ start: base, size: 8n << 30n, tlbRange: true, variant: "v6.6" });
    expect(calls).toEqual([{ op: "RIPAS2E1IS", operand: 0x4000_0004_0000n }, { op: "VMALLE1IS", operand: 0n }]);
    expect(g.v0.tlbi(calls[0]!.op, calls[0]!.operand).pages).toBe(2n);
    for (const i of offs.keys()) expectCached(g.v0, USER + BigInt(i) * K4, DATA_PA + offs[i]!);
    g.v0.tlbi(calls[1]!.op, calls[1]!.operand);
    expect(g.v0.tlbStats().evictions).toBe(0);
    for (const [i, o] of offs.entries()) expectWalked(g.v0, USER + BigInt(i) * K4, DATA_PA + (o < 2n * K4 ? G1 : 0n) + o);
    g.v0.tlbi("VMALLS12E1IS");
    for (const [i, o] of offs.entries()) expectWalked(g.v0, USER + BigInt(i) * K4, DATA_PA + G1 + o);
  });

  it("with VTCR.VS = 0 the VMID is 8 bits: VMIDs 0x101 and 1 share entries", async () => {
    const g = await s2guest();
    for (const v of [g.v0, g.v1]) v.setSystemRegisters({ vtcr: VTCR40 & ~VTCR.VS });
    g.v0.translate(USER);
    g.v0.setSystemRegisters({ vttbr: g.vm2.vttbr(0x101) });
    expect(g.v0.vmid()).toBe(1);
    expectCached(g.v0, USER, DATA_PA);
    g.v0.setSystemRegisters({ vtcr: VTCR40 });
    expect(g.v0.vmid()).toBe(0x101);
    expectWalked(g.v0, USER, DATA_PA + G1);
  });
});

describe("context slots", () => {
  it("more than 4096 ASIDs recycle context slots without one ASID seeing another's entries", async () => {
    const g = await guest({ tcr: TCR48 | TCR.AS, tlbEntries: 1 << 14 });
    g.user.map(USER, 0x80_0000n, "4K", { nG: true });
    g.user2.map(USER, 0x81_0000n, "4K", { nG: true });
    const odd = (asid: number) => (Math.imul(asid, 0x9e3779b1) >>> 31) === 1;
    const wrong: number[] = [];
    for (let asid = 1; asid <= 6000; asid++) {
      g.v0.setSystemRegisters({ ttbr0: (odd(asid) ? g.user2 : g.user).ttbr(asid) });
      if (paOf(g.v0, USER) !== (odd(asid) ? 0x81_0000n : 0x80_0000n)) wrong.push(asid);
    }
    expect(wrong).toEqual([]);
    expect(g.v0.tlbiStats().contextEvictions).toBeGreaterThan(0);
  });

  it("six ASIDs on a fresh vCPU take free context slots: nothing is recycled and every ASID keeps its entry", async () => {
    const g = await guest({ tcr: TCR48 | TCR.AS });
    g.user.map(USER, 0x80_0000n, "4K", { nG: true });
    const asids = [1, 2, 3, 0x42, 0x1ff, 0x2301];
    for (const asid of asids) {
      g.v0.setSystemRegisters({ ttbr0: g.user.ttbr(asid) });
      expectWalked(g.v0, USER, 0x80_0000n);
    }
    for (const asid of asids) {
      g.v0.setSystemRegisters({ ttbr0: g.user.ttbr(asid) });
      expectCached(g.v0, USER, 0x80_0000n);
    }
    expect(g.v0.tlbiStats().contextEvictions).toBe(0);
  });

  it("more ASIDs than the slot table holds replace least recently used slots: a replaced ASID walks again, the ASID in use stays cached", async () => {
    // 4096 slots in 512 sets of 8 ways (assembly/layout.ts CTX_SETS, CTX_WAYS), keyed by (VMID, ASID).
    const g = await guest({ tcr: TCR48 | TCR.AS, tlbEntries: 1 << 14 });
    g.user.map(USER, 0x80_0000n, "4K", { nG: true });
    const to = (asid: number) => g.v0.setSystemRegisters({ ttbr0: g.user.ttbr(asid) });
    for (let asid = 1; asid <= 200; asid++) { to(asid); expectWalked(g.v0, USER, 0x80_0000n); }
    expect(g.v0.tlbiStats().contextEvictions).toBe(0);
    to(7);
    expectCached(g.v0, USER, 0x80_0000n);
    for (let asid = 201; asid <= 6000; asid++) { to(asid); g.v0.translate(USER); }
    const evicted = g.v0.tlbiStats().contextEvictions;
    expect(evicted).toBeGreaterThan(6000 - 4096 - 8);
    to(6000);
    expectCached(g.v0, USER, 0x80_0000n);
    let walked = 0;
    for (let asid = 1; asid <= 200; asid++) {
      to(asid);
      const { r, hit } = probe(g.v0, USER);
      expect(r).toMatchObject({ pa: 0x80_0000n });
      if (!hit) walked++;
    }
    expect(walked, "every early ASID's slot was replaced (its set filled with later ASIDs)").toBeGreaterThan(150);
  });
});

describe("invalidation cost", () => {
  it("range TLBI cost: invalidating 1 page in a TLB with N live entries does not scan the whole TLB", async () => {
    const g = await guest({ tlbEntries: 1 << 16 });
    const n = 8192n;
    for (let i = 0n; i < n; i++) g.user.map(USER + i * K4, 0x80_0000n + i * K4, "4K", { nG: true });
    const bt = g.v0.batch();
    for (let i = 0; i < Number(n); i++) { bt.va[i] = USER + BigInt(i) * K4; bt.access[i] = 0; }
    bt.run(Number(n), false);
    expect(g.v0.tlbStats().live).toBeGreaterThan(4000);
    const before = g.v0.tlbStats().flushProbes;
    g.v0.tlbi("VAE1IS", encodeTlbiVa(USER + 100n * K4, 1));
    g.v0.tlbi("RVAE1IS", encodeTlbiRange({ baseVa: USER + 200n * K4, asid: 1, scale: 0, num: 0, ttl: 0 }));
    expect(g.v0.tlbStats().flushProbes - before).toBeLessThanOrEqual(8);
  });

  it("with 2 MiB pieces live, one page costs at most the 512 slots of its 2 MiB region", async () => {
    const g = await guest({ tlbEntries: 1 << 16 });
    g.user.map(USER + G1, 0x4000_0000n, "2M", { nG: true });
    for (let i = 0n; i < 64n; i++) g.v0.translate(USER + G1 + i * K4);
    for (let i = 0n; i < 4096n; i++) g.user.map(USER + i * K4, 0x80_0000n + i * K4, "4K", { nG: true });
    for (let i = 0n; i < 4096n; i++) g.v0.translate(USER + i * K4);
    const before = g.v0.tlbStats().flushProbes;
    g.v0.tlbi("VAE1", encodeTlbiVa(USER + 7n * K4, 1));
    expect(g.v0.tlbStats().flushProbes - before).toBeLessThanOrEqual(2 * (1 + 512));
  });
});

describe("system-register values a PE accepts (docs/arm64-walk-contract.md, Registers)", () => {
  const TG_MASK = (3n << TCR.TG0_SHIFT) | (3n << TCR.TG1_SHIFT);
  const SZ_MASK = 0x3fn | (0x3fn << TCR.T1SZ_SHIFT);
  const tsz = (t0: number, t1: number) => (TCR48 & ~SZ_MASK) | BigInt(t0) | (BigInt(t1) << TCR.T1SZ_SHIFT);

  /** What each of `vas` translates to, with a flushed TLB. */
  function outcomes(v: Arm64Vcpu, vas: bigint[]): Arm64TranslateResult[] {
    v.tlbi("VMALLE1");
    return vas.map((va) => v.translate(va));
  }

  it("a reserved TG1, or a TG0/TG1 naming the 16K or 64K granule, walks with the 4 KiB granule", async () => {
    const g = await guest();
    g.user.map(USER, 0x80_0000n, "4K");
    g.kern.map(KERN, 0x90_0000n, "4K");
    const vas = [USER + 0x123n, KERN + 0x456n, USER + G1];
    const want = outcomes(g.v0, vas);
    expect(want.slice(0, 2)).toEqual([{ pa: 0x80_0123n, pageSize: 4096, level: 3 }, { pa: 0x90_0456n, pageSize: 4096, level: 3 }]);
    for (const tg0 of [1n, 2n, 3n]) {
      for (const tg1 of [0n, 1n, 3n]) {
        const tcr = (TCR48 & ~TG_MASK) | (tg0 << TCR.TG0_SHIFT) | (tg1 << TCR.TG1_SHIFT);
        g.v0.setSystemRegisters({ tcr });
        expect(g.v0.systemRegisters().tcr).toBe(tcr);
        expect(outcomes(g.v0, vas), `TG0=${tg0} TG1=${tg1}`).toEqual(want);
      }
    }
  });

  it("T0SZ/T1SZ below 16 walk as 16 and above 39 as 39, and a later valid TCR walks as before", async () => {
    const g = await guest();
    const small = new Arm64Stage1Builder(g.mem, { tableBase: 0x70_0000n, tableLimit: 0x78_0000n, tsz: 39 });
    const high = 0xffff_ffff_ff80_0000n;
    small.map(high + 0x5000n, 0xa0_0000n, "4K");
    g.user.map(USER, 0x80_0000n, "4K");
    g.v0.setSystemRegisters({ ttbr1: small.ttbr(0) });
    const vas = [USER + 8n, 0x0001_0000_0000_0000n, high + 0x5008n, 0xffff_ffff_fc00_0000n];
    g.v0.setSystemRegisters({ tcr: tsz(16, 39) });
    const want = outcomes(g.v0, vas);
    expect(want.map((r) => ("fault" in r ? `${r.fault.kind} L${r.fault.level}` : r.pa))).toEqual([0x80_0008n, "translation L0", 0xa0_0008n, "translation L0"]);
    for (const [t0, t1] of [[0, 40], [12, 48], [15, 63]] as const) {
      g.v0.setSystemRegisters({ tcr: tsz(t0, t1) });
      expect(outcomes(g.v0, vas), `T0SZ=${t0} T1SZ=${t1}`).toEqual(want);
    }
    g.v0.setSystemRegisters({ tcr: TCR48, ttbr1: g.kern.ttbr(0) });
    expect(outcomes(g.v0, [USER + 8n])).toEqual([{ pa: 0x80_0008n, pageSize: 4096, level: 3 }]);
  });

  it("with EPD0 set T0SZ is never used: any value faults at level 0 in TTBR0 and TTBR1 still walks", async () => {
    const g = await guest();
    g.kern.map(KERN, 0x90_0000n, "4K");
    for (const t0 of [0, 16, 39, 63]) {
      g.v0.setSystemRegisters({ tcr: ((TCR48 & ~0x3fn) | BigInt(t0)) | TCR.EPD0 });
      expect(outcomes(g.v0, [USER, KERN])).toEqual([
        { fault: { stage: 1, fsc: 0x04, level: 0, kind: "translation", s1ptw: false, write: false } },
        { pa: 0x90_0000n, pageSize: 4096, level: 3 },
      ]);
    }
  });

  it("VTCR_EL2.T0SZ outside 16..39 walks as the nearest bound", async () => {
    const g = await guest();
    const s2 = new Arm64Stage2Builder(g.mem, { ipaBits: 25, startLevel: 2, tableBase: 0x70_0000n, tableLimit: 0x78_0000n });
    s2.map(0x12_3000n, 0xb0_0000n, "4K");
    const vtcr = (t0: number) => (VTCR40 & ~(0x3fn | (3n << VTCR.SL0_SHIFT))) | BigInt(t0);
    g.v0.setSystemRegisters({ sctlr: 0n, hcr: HCR.VM, vttbr: s2.vttbr(1), vtcr: vtcr(39) });
    const want = g.v0.walkStage2(0x12_3456n);
    expect(want).toEqual({ pa: 0xb0_0456n, pageSize: 4096, level: 3 });
    for (const t0 of [40, 50, 63]) {
      g.v0.setSystemRegisters({ vtcr: vtcr(t0) });
      expect(g.v0.walkStage2(0x12_3456n)).toEqual(want);
      expect(g.v0.walkStage2(0x200_0000n)).toMatchObject({ fault: { stage: 2, kind: "translation", level: 0, ipa: 0x200_0000n } });
    }
  });

  it("an SL0 of 3 or one inconsistent with T0SZ is accepted, and every stage-2 walk is a level-0 translation fault", async () => {
    const g = await guest({ stage2: true });
    g.user.map(USER, 0x7f_0000n, "4K");
    expect(g.v0.translate(USER)).toEqual({ pa: 0x7f_0000n, pageSize: 4096, level: 3 });
    const sl = (sl0: bigint) => (VTCR40 & ~(3n << VTCR.SL0_SHIFT)) | (sl0 << VTCR.SL0_SHIFT);
    for (const vtcr of [sl(3n), sl(0n), (sl(1n) & ~0x3fn) | 16n]) {
      g.v0.setSystemRegisters({ vtcr });
      g.v0.tlbi("VMALLS12E1");
      const r = g.v0.translate(USER, "write");
      expect(r).toMatchObject({ fault: { stage: 2, fsc: 0x04, level: 0, kind: "translation", s1ptw: true, write: false } });
      expect(g.v0.walkStage2(0x40_0000n)).toMatchObject({ fault: { stage: 2, kind: "translation", level: 0, s1ptw: false, ipa: 0x40_0000n } });
    }
    g.v0.setSystemRegisters({ vtcr: VTCR40 });
    expect(g.v0.translate(USER)).toEqual({ pa: 0x7f_0000n, pageSize: 4096, level: 3 });
  });
});

describe("a refused call changes nothing", () => {
  /** Registers, TLBI counters and the translation of USER (a TLB hit) before and after `fn`. */
  function unchanged(g: Guest, fn: () => void): void {
    const before = { regs: g.v0.systemRegisters(), tlbi: g.v0.tlbiStats(), vmid: g.v0.vmid(), asid: g.v0.asid() };
    expect(fn).toThrow(/^vmmu: /);
    expect({ regs: g.v0.systemRegisters(), tlbi: g.v0.tlbiStats(), vmid: g.v0.vmid(), asid: g.v0.asid() }).toEqual(before);
    expectCached(g.v0, USER, 0x80_0000n);
  }

  it("setSystemRegisters with a value that is not a 64-bit register value leaves every register as it was", async () => {
    const g = await guest();
    g.user.map(USER, 0x80_0000n, "4K", { nG: true });
    expectWalked(g.v0, USER, 0x80_0000n);
    const bad: Record<string, unknown>[] = [
      { ttbr0: g.user2.ttbr(2), tcr: 5 },
      { sctlr: 0n, vtcr: 1n << 64n },
      { hcr: 0n, ttbr0: -(1n << 64n) },
      { ttbr0: g.user2.ttbr(2), pan: "yes" },
      { vttbr: g.vm2.vttbr(2), mair: "0x44" },
    ];
    for (const r of bad) unchanged(g, () => g.v0.setSystemRegisters(r as Partial<Arm64SystemRegisters>));
    g.v0.setSystemRegisters({ pan: true });
    expect(g.v0.systemRegisters().pan).toBe(true);
    g.v0.setSystemRegisters({ pan: false, ttbr0: g.user2.ttbr(2) });
    expect(g.v0.asid()).toBe(2);
  });

  it("tlbi with an unknown operation or a bad operand invalidates nothing and counts nothing", async () => {
    const g = await guest();
    g.user.map(USER, 0x80_0000n, "4K", { nG: true });
    g.v0.translate(USER);
    g.user.map(USER, 0x90_0000n, "4K", { nG: true });
    unchanged(g, () => g.v0.tlbi("VAE9IS", encodeTlbiVa(USER, 1)));
    unchanged(g, () => g.v0.tlbi("VAE1IS", 5 as unknown as bigint));
    unchanged(g, () => g.v0.tlbi("VAE1IS", 1n << 64n));
    g.v0.tlbi("VAE1IS", encodeTlbiVa(USER, 1));
    expectWalked(g.v0, USER, 0x90_0000n);
  });
});
