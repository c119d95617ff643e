/**
 * What each TLB-affecting instruction of X86Vcpu does to the translations a
 * vCPU may still use, one scenario per rule. Intel SDM Vol.3A §4.10.2 (TLB
 * use), §4.10.4.1 (operations that invalidate TLBs), the INVLPG and INVPCID
 * instruction pages, and the MOV CR0/CR3/CR4 #GP conditions; the table of
 * Intel SDM Vol.3A §4.10.4.
 *
 * A stale translation is made by editing a leaf in guest memory without any
 * invalidation; whether it is still used shows in the address returned and in
 * the hit/walk counters.
 */
import { describe, expect, it } from "vitest";
import {
  CR0, CR3_NOFLUSH, CR4, LONG_MODE, PFERR, X86PageTableBuilder,
  type GuestMemory, type TlbStats, type X86Control, type X86TranslateResult, type X86Vcpu,
} from "../../../src/index.js";
import { x86Fixture } from "../../helpers/machine.js";

const K4 = 0x1000n;
const M2 = 0x20_0000n;
const G1 = 0x4000_0000n;

const VA = 0x0000_0040_0000_0000n;
const VB = 0x0000_0040_0000_5000n;
const V2M = 0x0000_0040_0040_0000n;
const V1G = 0x0000_0041_0000_0000n;
const KVA = 0xffff_8000_0010_0000n;

const FA = 0x100_0000n;
const FB = 0x100_1000n;
const FC = 0x100_2000n;
const F2A = 0x120_0000n;
const F2B = 0x140_0000n;
const F1A = 0x4000_0000n;
const F1B = 0x8000_0000n;
const NONCANONICAL = 0x0000_8000_0000_0000n;
const GP = { vector: 13, errorCode: 0, level: 0, kind: "general-protection" };

interface Setup {
  vcpu: X86Vcpu;
  mem: GuestMemory;
  b: X86PageTableBuilder;
}

async function setup(opts: { pcide?: boolean; pge?: boolean } = {}): Promise<Setup> {
  const { machine, builder } = await x86Fixture();
  const vcpu = machine.vcpu(0);
  const cr4 = LONG_MODE.cr4 | ((opts.pge ?? true) ? CR4.PGE : 0n) | (opts.pcide ? CR4.PCIDE : 0n);
  vcpu.setControl({ cr0: LONG_MODE.cr0, cr4, efer: LONG_MODE.efer, cr3: builder.root });
  return { vcpu, mem: machine.memory, b: builder };
}

function pa(r: X86TranslateResult): bigint {
  if ("fault" in r) throw new Error(`expected a translation, got fault ${JSON.stringify(r.fault)}`);
  return r.pa;
}

type Delta = Omit<TlbStats, "live">;

/** Runs `fn` and returns how much each counter moved. */
function counting(vcpu: X86Vcpu, fn: () => void): Delta {
  const before = vcpu.tlbStats();
  fn();
  const after = vcpu.tlbStats();
  const d = {} as Record<string, number>;
  for (const k of Object.keys(before) as (keyof TlbStats)[]) if (k !== "live") d[k] = after[k] - before[k];
  return d as unknown as Delta;
}

/** Translates `va` for a read and reports whether the TLB answered it. */
function read(vcpu: X86Vcpu, va: bigint, access: "read" | "write" | "fetch" = "read", user = false): { pa: bigint; hit: boolean } {
  let r!: X86TranslateResult;
  const d = counting(vcpu, () => { r = vcpu.translate(va, access, user); });
  return { pa: pa(r), hit: d.hits === 1 && d.walks === 0 };
}

/** Rewrites the leaf that maps `va` in place (no invalidation), keeping its size. */
function remap(s: Setup, va: bigint, frame: bigint, size: "4K" | "2M" | "1G" = "4K", flags = { write: true, user: true }): void {
  const g = s.b.leafGpa(va);
  if (g === undefined) throw new Error("not mapped");
  s.mem.write64(g, X86PageTableBuilder.leaf(frame, size, flags));
}

function cr3(s: Setup, pcid: number, noflush = false): bigint {
  return s.b.root | BigInt(pcid) | (noflush ? CR3_NOFLUSH : 0n);
}

describe("a PTE edit is not seen until the translation is invalidated", () => {
  it("a PTE edit without INVLPG keeps the old translation until INVLPG", async () => {
    const s = await setup();
    s.b.map(VA, FA, "4K", { write: true });
    expect(read(s.vcpu, VA + 0x123n)).toEqual({ pa: FA + 0x123n, hit: false });
    remap(s, VA, FB);
    expect(read(s.vcpu, VA + 0x123n)).toEqual({ pa: FA + 0x123n, hit: true });
    const d = counting(s.vcpu, () => s.vcpu.invlpg(VA + 0xfffn));
    expect(d.flushPage).toBe(1);
    expect(d.dropped).toBe(1);
    expect(read(s.vcpu, VA + 0x123n)).toEqual({ pa: FB + 0x123n, hit: false });
  });

  it("INVLPG of one page leaves another page's stale translation in use", async () => {
    const s = await setup();
    s.b.map(VA, FA);
    s.b.map(VB, FB);
    read(s.vcpu, VA);
    read(s.vcpu, VB);
    remap(s, VA, FC);
    remap(s, VB, FC);
    s.vcpu.invlpg(VA);
    expect(read(s.vcpu, VA)).toEqual({ pa: FC, hit: false });
    expect(read(s.vcpu, VB)).toEqual({ pa: FB, hit: true });
  });

  it("the batch API uses the same stale translation and sees the same INVLPG", async () => {
    const s = await setup();
    s.b.map(VA, FA);
    s.b.map(VB, FB);
    const vas = new BigUint64Array([VA + 8n, VB + 16n]);
    const run = () => {
      const out = { pa: new BigUint64Array(2), status: new Uint32Array(2) };
      expect(s.vcpu.translateBatch(vas, "read", false, out)).toBe(0);
      return [0, 1].map((i) => pa(s.vcpu.decodeStatus(out.status[i]!, out.pa[i]!)));
    };
    expect(run()).toEqual([FA + 8n, FB + 16n]);
    remap(s, VA, FC);
    remap(s, VB, FC);
    const hits = counting(s.vcpu, () => expect(run()).toEqual([FA + 8n, FB + 16n])).hits;
    expect(hits).toBe(2);
    s.vcpu.invlpg(VB);
    expect(run()).toEqual([FA + 8n, FC + 16n]);

    const bt = s.vcpu.batch();
    bt.va[0] = VA + 8n; bt.access[0] = 0;
    bt.va[1] = VB + 16n; bt.access[1] = 0;
    expect(bt.run(2, false)).toBe(0);
    expect([bt.pa[0], bt.pa[1]]).toEqual([FA + 8n, FC + 16n]);
  });

  it("a cached entry that would refuse the access re-walks, so the access sees the current PTE", async () => {
    const s = await setup();
    s.b.map(VA, FA, "4K", { write: false });
    read(s.vcpu, VA);
    remap(s, VA, FB, "4K", { write: true, user: false });
    const d = counting(s.vcpu, () => expect(pa(s.vcpu.translate(VA, "write"))).toBe(FB));
    expect(d).toMatchObject({ hits: 0, walks: 1 });
    expect(read(s.vcpu, VA)).toEqual({ pa: FB, hit: true });
  });

  it("a write through an entry cached with D=0 re-walks and faults if the PTE is gone", async () => {
    const s = await setup();
    s.b.map(VA, FA, "4K", { write: true });
    read(s.vcpu, VA);
    s.b.unmap(VA);
    expect(read(s.vcpu, VA)).toEqual({ pa: FA, hit: true });
    expect(s.vcpu.translate(VA, "write")).toEqual({ fault: { vector: 14, errorCode: PFERR.W, level: 1, kind: "page-fault" } });
  });

  it("a write through an entry cached with D=1 may still use it after the PTE is gone", async () => {
    const s = await setup();
    s.b.map(VA, FA, "4K", { write: true });
    pa(s.vcpu.translate(VA, "write"));
    s.b.unmap(VA);
    expect(read(s.vcpu, VA, "write")).toEqual({ pa: FA, hit: true });
  });
});

describe("INVLPG", () => {
  it("INVLPG of one address in a 2 MiB page drops every piece of it", async () => {
    const s = await setup();
    s.b.map(V2M, F2A, "2M", { write: true });
    const offsets = [0n, 5n * K4 + 0x10n, 511n * K4 + 0xff8n];
    for (const o of offsets) expect(read(s.vcpu, V2M + o)).toEqual({ pa: F2A + o, hit: false });
    remap(s, V2M, F2B, "2M");
    for (const o of offsets) expect(read(s.vcpu, V2M + o).hit).toBe(true);
    const d = counting(s.vcpu, () => s.vcpu.invlpg(V2M + 0x10_0000n));
    expect(d.dropped).toBe(offsets.length);
    for (const o of offsets) expect(read(s.vcpu, V2M + o)).toEqual({ pa: F2B + o, hit: false });
  });

  it("INVLPG of one address in a 1 GiB page drops every piece of it", async () => {
    const s = await setup();
    s.b.map(V1G, F1A, "1G", { write: true });
    const offsets = [0n, 0x1234_5678n, G1 - K4];
    for (const o of offsets) expect(read(s.vcpu, V1G + o)).toEqual({ pa: F1A + o, hit: false });
    remap(s, V1G, F1B, "1G");
    const d = counting(s.vcpu, () => s.vcpu.invlpg(V1G + 0x2000_0000n));
    expect(d.dropped).toBe(offsets.length);
    for (const o of offsets) expect(read(s.vcpu, V1G + o)).toEqual({ pa: F1B + o, hit: false });
  });

  it("INVLPG of an address in a 2 MiB page leaves the 2 MiB page next to it", async () => {
    const s = await setup();
    s.b.map(V2M, F2A, "2M");
    s.b.map(V2M + M2, F2B, "2M");
    read(s.vcpu, V2M);
    read(s.vcpu, V2M + M2);
    remap(s, V2M + M2, F2A, "2M");
    s.vcpu.invlpg(V2M + 0x1000n);
    expect(read(s.vcpu, V2M + M2)).toEqual({ pa: F2B, hit: true });
  });

  it("INVLPG removes a global entry in every PCID", async () => {
    const s = await setup({ pcide: true });
    s.b.map(KVA, FA, "4K", { global: true });
    expect(s.vcpu.writeCr3(cr3(s, 1))).toBeNull();
    expect(read(s.vcpu, KVA)).toEqual({ pa: FA, hit: false });
    expect(s.vcpu.writeCr3(cr3(s, 2))).toBeNull();
    expect(read(s.vcpu, KVA)).toEqual({ pa: FA, hit: true });
    remap(s, KVA, FB, "4K", { write: false, user: false });
    s.vcpu.invlpg(KVA);
    expect(s.vcpu.writeCr3(cr3(s, 1, true))).toBeNull();
    expect(read(s.vcpu, KVA)).toEqual({ pa: FB, hit: false });
  });

  it("INVLPG drops the current PCID's non-global entry and not another PCID's", async () => {
    const s = await setup({ pcide: true });
    s.b.map(VA, FA);
    s.vcpu.writeCr3(cr3(s, 1));
    read(s.vcpu, VA);
    s.vcpu.writeCr3(cr3(s, 2));
    read(s.vcpu, VA);
    remap(s, VA, FB);
    s.vcpu.invlpg(VA);
    expect(read(s.vcpu, VA)).toEqual({ pa: FB, hit: false });
    s.vcpu.writeCr3(cr3(s, 1, true));
    expect(read(s.vcpu, VA)).toEqual({ pa: FA, hit: true });
  });

  it("INVLPG of a non-canonical address does nothing", async () => {
    const s = await setup();
    s.b.map(VA, FA);
    read(s.vcpu, VA);
    remap(s, VA, FB);
    const d = counting(s.vcpu, () => s.vcpu.invlpg(NONCANONICAL | (VA & 0xffff_ffffn)));
    expect(d.dropped).toBe(0);
    expect(read(s.vcpu, VA)).toEqual({ pa: FA, hit: true });
  });
});

describe("INVPCID", () => {
  it("type 0 drops one address of one PCID and keeps global entries", async () => {
    const s = await setup({ pcide: true });
    s.b.map(VA, FA);
    s.b.map(VB, FB);
    s.b.map(KVA, FA, "4K", { global: true });
    s.vcpu.writeCr3(cr3(s, 1));
    for (const v of [VA, VB, KVA]) read(s.vcpu, v);
    s.vcpu.writeCr3(cr3(s, 2));
    read(s.vcpu, VA);
    for (const v of [VA, VB, KVA]) remap(s, v, FC);
    const d = counting(s.vcpu, () => expect(s.vcpu.invpcid(0, 1, VA)).toBeNull());
    expect(d).toMatchObject({ flushPage: 1, dropped: 1, flushCtx: 0 });
    expect(read(s.vcpu, VA)).toEqual({ pa: FA, hit: true });
    expect(read(s.vcpu, KVA)).toEqual({ pa: FA, hit: true });
    s.vcpu.writeCr3(cr3(s, 1, true));
    expect(read(s.vcpu, VA)).toEqual({ pa: FC, hit: false });
    expect(read(s.vcpu, VB)).toEqual({ pa: FB, hit: true });
    expect(s.vcpu.invpcid(0, 1, KVA)).toBeNull();
    expect(read(s.vcpu, KVA)).toEqual({ pa: FA, hit: true });
  });

  it("type 0 with an address inside a 2 MiB page drops the whole 2 MiB translation", async () => {
    const s = await setup({ pcide: true });
    s.b.map(V2M, F2A, "2M");
    read(s.vcpu, V2M);
    read(s.vcpu, V2M + 0x1f_f000n);
    remap(s, V2M, F2B, "2M");
    expect(s.vcpu.invpcid(0, 0, V2M + 0x8_0000n)).toBeNull();
    expect(read(s.vcpu, V2M)).toEqual({ pa: F2B, hit: false });
    expect(read(s.vcpu, V2M + 0x1f_f000n)).toEqual({ pa: F2B + 0x1f_f000n, hit: false });
  });

  it("type 1 drops every non-global entry of one PCID and leaves other PCIDs and globals", async () => {
    const s = await setup({ pcide: true });
    s.b.map(VA, FA);
    s.b.map(VB, FB);
    s.b.map(KVA, FA, "4K", { global: true });
    s.vcpu.writeCr3(cr3(s, 1));
    for (const v of [VA, VB, KVA]) read(s.vcpu, v);
    s.vcpu.writeCr3(cr3(s, 2));
    read(s.vcpu, VA);
    for (const v of [VA, VB, KVA]) remap(s, v, FC);
    const d = counting(s.vcpu, () => expect(s.vcpu.invpcid(1, 1)).toBeNull());
    expect(d).toMatchObject({ flushCtx: 1, dropped: 2, flushAll: 0 });
    expect(read(s.vcpu, VA)).toEqual({ pa: FA, hit: true });
    s.vcpu.writeCr3(cr3(s, 1, true));
    expect(read(s.vcpu, VA)).toEqual({ pa: FC, hit: false });
    expect(read(s.vcpu, VB)).toEqual({ pa: FC, hit: false });
    expect(read(s.vcpu, KVA)).toEqual({ pa: FA, hit: true });
  });

  it("type 2 drops every entry, global ones included", async () => {
    const s = await setup({ pcide: true });
    s.b.map(VA, FA);
    s.b.map(KVA, FA, "4K", { global: true });
    s.vcpu.writeCr3(cr3(s, 1));
    read(s.vcpu, VA);
    read(s.vcpu, KVA);
    s.vcpu.writeCr3(cr3(s, 2));
    read(s.vcpu, VA);
    remap(s, VA, FC);
    remap(s, KVA, FC);
    const d = counting(s.vcpu, () => expect(s.vcpu.invpcid(2, 0)).toBeNull());
    expect(d).toMatchObject({ flushAll: 1, dropped: 3 });
    expect(read(s.vcpu, VA)).toEqual({ pa: FC, hit: false });
    expect(read(s.vcpu, KVA)).toEqual({ pa: FC, hit: false });
    s.vcpu.writeCr3(cr3(s, 1, true));
    expect(read(s.vcpu, VA)).toEqual({ pa: FC, hit: false });
  });

  it("type 3 drops every non-global entry and keeps globals", async () => {
    const s = await setup({ pcide: true });
    s.b.map(VA, FA);
    s.b.map(KVA, FA, "4K", { global: true });
    s.vcpu.writeCr3(cr3(s, 1));
    read(s.vcpu, VA);
    read(s.vcpu, KVA);
    s.vcpu.writeCr3(cr3(s, 2));
    read(s.vcpu, VA);
    remap(s, VA, FC);
    remap(s, KVA, FC);
    const d = counting(s.vcpu, () => expect(s.vcpu.invpcid(3, 0)).toBeNull());
    expect(d).toMatchObject({ flushNonGlobal: 1, flushAll: 0, dropped: 2 });
    expect(read(s.vcpu, VA)).toEqual({ pa: FC, hit: false });
    expect(read(s.vcpu, KVA)).toEqual({ pa: FA, hit: true });
    s.vcpu.writeCr3(cr3(s, 1, true));
    expect(read(s.vcpu, VA)).toEqual({ pa: FC, hit: false });
    expect(read(s.vcpu, KVA)).toEqual({ pa: FA, hit: true });
  });

  it("types 0 and 1 for PCID 0 work with PCIDE = 0", async () => {
    const s = await setup();
    s.b.map(VA, FA);
    s.b.map(VB, FB);
    read(s.vcpu, VA);
    read(s.vcpu, VB);
    remap(s, VA, FC);
    remap(s, VB, FC);
    expect(s.vcpu.invpcid(0, 0, VA)).toBeNull();
    expect(read(s.vcpu, VA)).toEqual({ pa: FC, hit: false });
    expect(read(s.vcpu, VB)).toEqual({ pa: FB, hit: true });
    expect(s.vcpu.invpcid(1, 0)).toBeNull();
    expect(read(s.vcpu, VB)).toEqual({ pa: FC, hit: false });
  });

  it("type > 3, pcid > 4095, type 0 non-canonical, and types 0/1 with pcid ≠ 0 under PCIDE = 0 raise #GP and invalidate nothing", async () => {
    const s = await setup();
    s.b.map(VA, FA);
    read(s.vcpu, VA);
    remap(s, VA, FB);
    const d = counting(s.vcpu, () => {
      expect(s.vcpu.invpcid(4, 0)).toEqual(GP);
      expect(s.vcpu.invpcid(-1, 0)).toEqual(GP);
      expect(s.vcpu.invpcid(2, 4096)).toEqual(GP);
      expect(s.vcpu.invpcid(1, 0x1_0000)).toEqual(GP);
      expect(s.vcpu.invpcid(0, 0, NONCANONICAL)).toEqual(GP);
      expect(s.vcpu.invpcid(0, 1, VA)).toEqual(GP);
      expect(s.vcpu.invpcid(1, 1)).toEqual(GP);
    });
    expect(d).toMatchObject({ flushAll: 0, flushNonGlobal: 0, flushCtx: 0, flushPage: 0, dropped: 0 });
    expect(read(s.vcpu, VA)).toEqual({ pa: FA, hit: true });
  });

  it("types 2 and 3 accept any pcid field ≤ 4095 with PCIDE = 0", async () => {
    const s = await setup();
    expect(s.vcpu.invpcid(2, 7)).toBeNull();
    expect(s.vcpu.invpcid(3, 4095)).toBeNull();
  });

  it("type 0 with a non-canonical address raises #GP under PCIDE = 1 too", async () => {
    const s = await setup({ pcide: true });
    expect(s.vcpu.invpcid(0, 5, NONCANONICAL)).toEqual(GP);
    expect(s.vcpu.invpcid(0, 5, VA)).toBeNull();
    expect(s.vcpu.invpcid(1, 5)).toBeNull();
  });
});

describe("MOV CR3", () => {
  it("MOV CR3 with bit 63 keeps the PCID's entries", async () => {
    const s = await setup({ pcide: true });
    s.b.map(VA, FA);
    s.vcpu.writeCr3(cr3(s, 1));
    read(s.vcpu, VA);
    remap(s, VA, FB);
    s.vcpu.writeCr3(cr3(s, 2, true));
    const d = counting(s.vcpu, () => expect(s.vcpu.writeCr3(cr3(s, 1, true))).toBeNull());
    expect(d).toMatchObject({ flushCtx: 0, dropped: 0 });
    expect(s.vcpu.control().cr3).toBe(cr3(s, 1));
    expect(read(s.vcpu, VA)).toEqual({ pa: FA, hit: true });
  });

  it("MOV CR3 without bit 63 drops only the new PCID's entries", async () => {
    const s = await setup({ pcide: true });
    s.b.map(VA, FA);
    s.b.map(VB, FB);
    s.vcpu.writeCr3(cr3(s, 1));
    read(s.vcpu, VA);
    read(s.vcpu, VB);
    s.vcpu.writeCr3(cr3(s, 2, true));
    read(s.vcpu, VA);
    remap(s, VA, FC);
    const d = counting(s.vcpu, () => expect(s.vcpu.writeCr3(cr3(s, 1))).toBeNull());
    expect(d).toMatchObject({ flushCtx: 1, dropped: 2 });
    expect(read(s.vcpu, VA)).toEqual({ pa: FC, hit: false });
    s.vcpu.writeCr3(cr3(s, 2, true));
    expect(read(s.vcpu, VA)).toEqual({ pa: FA, hit: true });
  });

  it("MOV CR3 keeps global entries, with or without bit 63", async () => {
    const s = await setup({ pcide: true });
    s.b.map(KVA, FA, "4K", { global: true });
    read(s.vcpu, KVA);
    remap(s, KVA, FB);
    for (const [pcid, noflush] of [[0, false], [3, false], [3, true], [0, true]] as const) {
      s.vcpu.writeCr3(cr3(s, pcid, noflush));
      expect(read(s.vcpu, KVA)).toEqual({ pa: FA, hit: true });
    }
  });

  it("MOV CR3 with PCIDE = 0 drops PCID 0's non-global entries and keeps global ones", async () => {
    const s = await setup();
    s.b.map(VA, FA);
    s.b.map(KVA, FA, "4K", { global: true });
    read(s.vcpu, VA);
    read(s.vcpu, KVA);
    remap(s, VA, FB);
    remap(s, KVA, FB);
    const d = counting(s.vcpu, () => expect(s.vcpu.writeCr3(s.b.root | 0x18n)).toBeNull());
    expect(d).toMatchObject({ flushCtx: 1, dropped: 1 });
    expect(s.vcpu.currentPcid()).toBe(0);
    expect(read(s.vcpu, VA)).toEqual({ pa: FB, hit: false });
    expect(read(s.vcpu, KVA)).toEqual({ pa: FA, hit: true });
  });

  it("MOV CR3 with bit 63 lets a PCID reloaded with another address space keep the old space's entries", async () => {
    const s = await setup({ pcide: true });
    s.b.map(VA, FA);
    const other = new X86PageTableBuilder(s.mem, { tableBase: 0x90_0000n, tableLimit: 0xa0_0000n });
    other.map(VA, FB);
    s.vcpu.writeCr3(cr3(s, 1));
    read(s.vcpu, VA);
    s.vcpu.writeCr3(other.root | 1n | CR3_NOFLUSH);
    expect(read(s.vcpu, VA)).toEqual({ pa: FA, hit: true });
    s.vcpu.writeCr3(other.root | 1n);
    expect(read(s.vcpu, VA)).toEqual({ pa: FB, hit: false });
  });

  it("writeCr3 with bits above MAXPHYADDR raises #GP and changes nothing", async () => {
    const s = await setup({ pcide: true });
    s.b.map(VA, FA);
    s.vcpu.writeCr3(cr3(s, 1));
    read(s.vcpu, VA);
    remap(s, VA, FB);
    const d = counting(s.vcpu, () => {
      expect(s.vcpu.writeCr3(cr3(s, 2) | (1n << 46n))).toEqual(GP);
      expect(s.vcpu.writeCr3(cr3(s, 2, true) | (1n << 62n))).toEqual(GP);
    });
    expect(d).toMatchObject({ flushCtx: 0, dropped: 0 });
    expect(s.vcpu.control().cr3).toBe(cr3(s, 1));
    expect(read(s.vcpu, VA)).toEqual({ pa: FA, hit: true });
  });

  it("writeCr3 with bit 63 and PCIDE = 0 raises #GP", async () => {
    const s = await setup();
    expect(s.vcpu.writeCr3(s.b.root | CR3_NOFLUSH)).toEqual(GP);
    expect(s.vcpu.control().cr3).toBe(s.b.root);
  });
});

describe("MOV CR4", () => {
  it("toggling CR4.PGE drops global entries, in both directions", async () => {
    const s = await setup({ pcide: true });
    s.b.map(VA, FA);
    s.b.map(KVA, FA, "4K", { global: true });
    read(s.vcpu, VA);
    read(s.vcpu, KVA);
    remap(s, VA, FB);
    remap(s, KVA, FB);
    const cr4 = s.vcpu.control().cr4;
    const d = counting(s.vcpu, () => expect(s.vcpu.writeCr4(cr4 & ~CR4.PGE)).toBeNull());
    expect(d).toMatchObject({ flushAll: 1, dropped: 2 });
    expect(read(s.vcpu, VA)).toEqual({ pa: FB, hit: false });
    expect(read(s.vcpu, KVA)).toEqual({ pa: FB, hit: false });
    remap(s, KVA, FC);
    expect(s.vcpu.writeCr4(cr4)).toBeNull();
    expect(read(s.vcpu, KVA)).toEqual({ pa: FC, hit: false });
  });

  it("a G=1 leaf filled while CR4.PGE = 0 is not global", async () => {
    const s = await setup({ pcide: true, pge: false });
    s.b.map(KVA, FA, "4K", { global: true });
    s.vcpu.writeCr3(cr3(s, 1));
    read(s.vcpu, KVA);
    s.vcpu.writeCr3(cr3(s, 2, true));
    expect(read(s.vcpu, KVA).hit).toBe(false);
    remap(s, KVA, FB, "4K", { write: true, user: true });
    s.vcpu.writeCr3(cr3(s, 1));
    expect(read(s.vcpu, KVA)).toEqual({ pa: FB, hit: false });
  });

  it("clearing CR4.PCIDE drops everything; setting it keeps PCID 0's entries", async () => {
    const s = await setup();
    s.b.map(VA, FA);
    read(s.vcpu, VA);
    remap(s, VA, FB);
    const cr4 = s.vcpu.control().cr4;
    const on = counting(s.vcpu, () => expect(s.vcpu.writeCr4(cr4 | CR4.PCIDE)).toBeNull());
    expect(on).toMatchObject({ flushAll: 0, flushCtx: 0, dropped: 0 });
    expect(read(s.vcpu, VA)).toEqual({ pa: FA, hit: true });
    s.b.map(KVA, FA, "4K", { global: true });
    read(s.vcpu, KVA);
    s.vcpu.writeCr3(cr3(s, 9, true));
    read(s.vcpu, VA);
    s.vcpu.writeCr3(cr3(s, 0, true));
    remap(s, KVA, FC);
    const off = counting(s.vcpu, () => expect(s.vcpu.writeCr4(cr4)).toBeNull());
    expect(off).toMatchObject({ flushAll: 1, dropped: 3 });
    expect(read(s.vcpu, VA)).toEqual({ pa: FB, hit: false });
    expect(read(s.vcpu, KVA)).toEqual({ pa: FC, hit: false });
  });

  it("PCIDE 0→1 with CR3[11:0] ≠ 0 raises #GP and leaves CR4 as it was", async () => {
    const s = await setup();
    expect(s.vcpu.writeCr3(s.b.root | 0x8n)).toBeNull();
    const cr4 = s.vcpu.control().cr4;
    expect(s.vcpu.writeCr4(cr4 | CR4.PCIDE)).toEqual(GP);
    expect(s.vcpu.control().cr4).toBe(cr4);
    expect(s.vcpu.writeCr3(s.b.root)).toBeNull();
    expect(s.vcpu.writeCr4(cr4 | CR4.PCIDE)).toBeNull();
  });

  it("setting CR4.SMEP drops the current PCID's entries and not another PCID's", async () => {
    const s = await setup({ pcide: true });
    s.b.map(VA, FA, "4K", { user: false });
    s.vcpu.writeCr3(cr3(s, 1));
    read(s.vcpu, VA);
    s.vcpu.writeCr3(cr3(s, 2, true));
    read(s.vcpu, VA);
    remap(s, VA, FB, "4K", { write: false, user: false });
    expect(s.vcpu.writeCr4(s.vcpu.control().cr4 | CR4.SMEP)).toBeNull();
    expect(read(s.vcpu, VA)).toEqual({ pa: FB, hit: false });
    s.vcpu.writeCr3(cr3(s, 1, true));
    expect(read(s.vcpu, VA)).toEqual({ pa: FA, hit: true });
  });
});

describe("MOV CR4: reserved bits (SDM Vol.3A §2.5; KVM kvm_is_valid_cr4)", () => {
  it("a reserved CR4 bit raises #GP, invalidates nothing and leaves CR4 as it was", async () => {
    const s = await setup({ pcide: true });
    s.b.map(VA, FA);
    read(s.vcpu, VA);
    remap(s, VA, FB);
    const before = s.vcpu.control();
    const d = counting(s.vcpu, () => {
      for (const bit of [15n, 19n, 24n, 25n, 26n, 27n, 28n, 29n, 31n, 32n, 40n, 63n]) {
        expect(s.vcpu.writeCr4(before.cr4 | (1n << bit)), `CR4 bit ${bit}`).toEqual(GP);
      }
    });
    expect(d).toMatchObject({ flushAll: 0, flushCtx: 0, flushNonGlobal: 0, dropped: 0 });
    expect(s.vcpu.control()).toEqual(before);
    expect(read(s.vcpu, VA)).toEqual({ pa: FA, hit: true });
  });

  it("the bits of features a CPU has that change no translation are accepted: VME … OSXSAVE, UMIP, VMXE, SMXE, CET", async () => {
    const s = await setup();
    const extra = [0n, 1n, 2n, 3n, 6n, 8n, 9n, 10n, 11n, 13n, 14n, 16n, 18n, 23n].reduce((a, b) => a | (1n << b), 0n);
    const cr4 = s.vcpu.control().cr4 | extra | CR4.SMEP | CR4.SMAP | CR4.PKE;
    expect(s.vcpu.writeCr4(cr4)).toBeNull();
    expect(s.vcpu.control().cr4).toBe(cr4);
  });

  it("CR4.CET needs CR0.WP: setting it with WP = 0 raises #GP, and clearing WP while it is set raises #GP", async () => {
    const s = await setup();
    const { cr0, cr4 } = s.vcpu.control();
    expect(s.vcpu.writeCr0(cr0 & ~CR0.WP)).toBeNull();
    expect(s.vcpu.writeCr4(cr4 | CR4.CET)).toEqual(GP);
    expect(s.vcpu.control().cr4).toBe(cr4);
    expect(s.vcpu.writeCr0(cr0)).toBeNull();
    expect(s.vcpu.writeCr4(cr4 | CR4.CET)).toBeNull();
    expect(s.vcpu.writeCr0(cr0 & ~CR0.WP)).toEqual(GP);
    expect(s.vcpu.control().cr0).toBe(cr0);
  });
});

describe("MOV CR0", () => {
  it("CR0.WP toggle needs no flush: rights are applied at access time", async () => {
    const s = await setup();
    s.b.map(VA, FA, "4K", { write: false });
    const cr0 = s.vcpu.control().cr0;
    expect(s.vcpu.writeCr0(cr0 & ~CR0.WP)).toBeNull();
    expect(pa(s.vcpu.translate(VA, "write"))).toBe(FA);
    const d = counting(s.vcpu, () => expect(s.vcpu.writeCr0(cr0)).toBeNull());
    expect(d).toMatchObject({ flushAll: 0, flushCtx: 0, flushNonGlobal: 0, flushPage: 0, dropped: 0 });
    expect(read(s.vcpu, VA)).toEqual({ pa: FA, hit: true });
    expect(s.vcpu.translate(VA, "write")).toEqual({ fault: { vector: 14, errorCode: PFERR.P | PFERR.W, level: 1, kind: "page-fault" } });
  });

  it("clearing CR0.PG drops everything", async () => {
    const s = await setup();
    s.b.map(VA, FA);
    s.b.map(KVA, FA, "4K", { global: true });
    read(s.vcpu, VA);
    read(s.vcpu, KVA);
    remap(s, VA, FB);
    remap(s, KVA, FB);
    const cr0 = s.vcpu.control().cr0;
    const d = counting(s.vcpu, () => expect(s.vcpu.writeCr0(cr0 & ~CR0.PG)).toBeNull());
    expect(d).toMatchObject({ flushAll: 1, dropped: 2 });
    expect(s.vcpu.translate(VA)).toEqual({ pa: VA, pageSize: 4096, level: 0 });
    expect(s.vcpu.writeCr0(cr0)).toBeNull();
    expect(read(s.vcpu, VA)).toEqual({ pa: FB, hit: false });
    expect(read(s.vcpu, KVA)).toEqual({ pa: FB, hit: false });
  });

  it("clearing CR0.PG with CR4.PCIDE = 1 raises #GP", async () => {
    const s = await setup({ pcide: true });
    const cr0 = s.vcpu.control().cr0;
    expect(s.vcpu.writeCr0(cr0 & ~CR0.PG)).toEqual(GP);
    expect(s.vcpu.control().cr0).toBe(cr0);
  });
});

describe("MOV CR0: reserved bits and invalid combinations (SDM Vol.3A §2.5; KVM kvm_is_valid_cr0, kvm_set_cr0)", () => {
  it("bits 63:32, NW without CD, and PG without PE raise #GP, invalidate nothing and leave CR0 as it was", async () => {
    const s = await setup();
    s.b.map(VA, FA);
    read(s.vcpu, VA);
    const before = s.vcpu.control();
    const d = counting(s.vcpu, () => {
      for (const cr0 of [before.cr0 | (1n << 32n), before.cr0 | (1n << 63n), before.cr0 | CR0.NW, before.cr0 & ~CR0.PE, CR0.PG]) {
        expect(s.vcpu.writeCr0(cr0), `CR0 ${cr0.toString(16)}`).toEqual(GP);
      }
    });
    expect(d).toMatchObject({ flushAll: 0, flushCtx: 0, dropped: 0 });
    expect(s.vcpu.control()).toEqual(before);
    expect(read(s.vcpu, VA)).toEqual({ pa: FA, hit: true });
    expect(s.vcpu.writeCr0(before.cr0 | CR0.NW | CR0.CD)).toBeNull();
    expect(s.vcpu.control().cr0).toBe(before.cr0 | CR0.NW | CR0.CD);
  });

  it("a MOV to CR0 ignores the reserved bits of 31:0 and keeps MP, EM, TS, ET, NE and AM", async () => {
    const s = await setup();
    const cr0 = s.vcpu.control().cr0;
    const kept = cr0 | CR0.MP | CR0.EM | CR0.TS | CR0.ET | CR0.NE | CR0.AM;
    expect(s.vcpu.writeCr0(kept | (1n << 6n) | (1n << 15n) | (1n << 17n) | (1n << 28n))).toBeNull();
    expect(s.vcpu.control().cr0).toBe(kept);
  });

  it("setting CR0.PG with EFER.LME = 1 and CR4.PAE = 0 raises #GP and paging stays off", async () => {
    const s = await setup({ pge: false });
    const { cr0, cr4 } = s.vcpu.control();
    expect(s.vcpu.writeCr0(cr0 & ~CR0.PG)).toBeNull();
    expect(s.vcpu.writeCr4(cr4 & ~CR4.PAE)).toBeNull();
    const before = s.vcpu.control();
    expect(s.vcpu.writeCr0(cr0)).toEqual(GP);
    expect(s.vcpu.control()).toEqual(before);
    expect(s.vcpu.translate(VA)).toEqual({ pa: VA, pageSize: 4096, level: 0 });
    expect(s.vcpu.writeCr4(cr4)).toBeNull();
    expect(s.vcpu.writeCr0(cr0)).toBeNull();
  });
});

describe("setControl", () => {
  it("loads control state without invalidating anything", async () => {
    const s = await setup({ pcide: true });
    s.b.map(VA, FA);
    read(s.vcpu, VA);
    remap(s, VA, FB);
    const d = counting(s.vcpu, () => s.vcpu.setControl({ cr3: cr3(s, 1) }));
    expect(d).toMatchObject({ flushAll: 0, flushCtx: 0, dropped: 0 });
    s.vcpu.setControl({ cr3: cr3(s, 0) });
    expect(read(s.vcpu, VA)).toEqual({ pa: FA, hit: true });
  });

  it("refuses a state a MOV would #GP on, naming the register and bit, and changes nothing", async () => {
    const s = await setup({ pcide: true });
    s.b.map(VA, FA);
    s.vcpu.writeCr3(cr3(s, 1));
    read(s.vcpu, VA);
    remap(s, VA, FB);
    const before = s.vcpu.control();
    const cases: [Partial<X86Control>, RegExp][] = [
      [{ cr4: before.cr4 | (1n << 15n) }, /CR4 bit 15 is reserved/],
      [{ cr4: before.cr4 | (1n << 63n) }, /CR4 bit 63 is reserved/],
      [{ cr0: before.cr0 | (1n << 32n) }, /CR0 bit 32 is reserved/],
      [{ cr0: before.cr0 | CR0.NW }, /CR0\.NW = 1 needs CR0\.CD = 1/],
      [{ cr0: before.cr0 & ~CR0.PE }, /CR0\.PG = 1 needs CR0\.PE = 1/],
    ];
    for (const [c, message] of cases) {
      const d = counting(s.vcpu, () => expect(() => s.vcpu.setControl({ cr3: cr3(s, 2), ...c })).toThrow(message));
      expect(d).toMatchObject({ flushAll: 0, flushCtx: 0, dropped: 0 });
      expect(s.vcpu.control()).toEqual(before);
      expect(read(s.vcpu, VA)).toEqual({ pa: FA, hit: true });
    }
    s.vcpu.setControl({ cr3: cr3(s, 2) });
    expect(s.vcpu.currentPcid()).toBe(2);
  });

  it("a refused setControl of any other kind leaves every register as it was, and a later one works", async () => {
    const s = await setup({ pcide: true });
    s.b.map(VA, FA);
    s.vcpu.writeCr3(cr3(s, 1));
    read(s.vcpu, VA);
    const before = s.vcpu.control();
    const bad: Record<string, unknown>[] = [
      { cr3: cr3(s, 3), cr0: CR0.PE | CR0.PG, cr4: 0n, efer: 0n },
      { cr3: cr3(s, 3), efer: 0n },
      { cr3: cr3(s, 3), pkru: "0" },
      { cr3: cr3(s, 3), rflags: 1n << 64n },
      { cr3: cr3(s, 3), cr4: 5 },
    ];
    for (const c of bad) {
      expect(() => s.vcpu.setControl(c as Partial<X86Control>)).toThrow(/^vmmu: /);
      expect(s.vcpu.control()).toEqual(before);
      expect(s.vcpu.currentPcid()).toBe(1);
      expect(read(s.vcpu, VA)).toEqual({ pa: FA, hit: true });
    }
    s.vcpu.setControl({ pkru: 4n });
    expect(s.vcpu.control()).toEqual({ ...before, pkru: 4n });
  });
});
