/**
 * Machine bring-up (src/machine.ts, assembly/machine.ts, assembly/layout.ts):
 * option validation, guests far larger than the 4 GiB wasm memory with
 * frames backed on first write (assembly/phys.ts), and agreement between the
 * layout constants, the machine header machineInit writes and the views the
 * control plane builds over it.
 */
import { describe, expect, it } from "vitest";
import { createMachine, X86PageTableBuilder, LONG_MODE, CR4, EFER, PTE, type Machine, type MachineOptions, type X86MachineOptions, type X86Vcpu } from "../../src/index.js";

const KiB = 1024n, MiB = 1024n * KiB, GiB = 1024n * MiB, TiB = 1024n * GiB;
const x86 = (o: Partial<MachineOptions>): X86MachineOptions => ({ memoryBytes: 1 << 20, ...o, arch: "x86_64" });

describe("createMachine refuses bad options, naming the option", () => {
  const cases: [string, Partial<MachineOptions>, RegExp][] = [
    ["memoryBytes 0", { memoryBytes: 0 }, /memoryBytes/],
    ["memoryBytes not a multiple of 4096", { memoryBytes: 4096 * 3 + 1 }, /memoryBytes/],
    ["memoryBytes negative", { memoryBytes: -4096n }, /memoryBytes/],
    ["memoryBytes not an integer", { memoryBytes: 4096.5 }, /memoryBytes/],
    ["memoryBytes NaN", { memoryBytes: NaN }, /memoryBytes/],
    ["memoryBytes above 64 TiB", { memoryBytes: 64n * TiB + 4096n, maxPhysAddrBits: 52, eagerBytes: 0 }, /memoryBytes/],
    ["vcpus 0", { vcpus: 0 }, /vcpus/],
    ["vcpus 257", { vcpus: 257 }, /vcpus/],
    ["vcpus not an integer", { vcpus: 1.5 }, /vcpus/],
    ["maxPhysAddrBits 35", { maxPhysAddrBits: 35 }, /maxPhysAddrBits/],
    ["maxPhysAddrBits 53", { maxPhysAddrBits: 53 }, /maxPhysAddrBits/],
    ["RAM ending above 2^MAXPHYADDR", { memoryBytes: (1n << 36n) + 4096n, maxPhysAddrBits: 36, eagerBytes: 0 }, /MAXPHYADDR/],
    ["RAM based just below 2^MAXPHYADDR", { memoryBytes: 8192, ramBase: (1n << 36n) - 4096n, maxPhysAddrBits: 36 }, /MAXPHYADDR/],
    ["64 TiB of RAM with the default MAXPHYADDR 46 plus one frame", { memoryBytes: 64n * TiB + 4096n, eagerBytes: 0 }, /MAXPHYADDR/],
    ["ramBase unaligned", { ramBase: 0x1800n }, /ramBase/],
    ["tlbEntries not a power of two", { tlbEntries: 1000 }, /tlbEntries/],
    ["tlbEntries below 16", { tlbEntries: 8 }, /tlbEntries/],
    ["tlbEntries above 2^20", { tlbEntries: 1 << 21 }, /tlbEntries/],
    ["eagerBytes above memoryBytes", { memoryBytes: 1 << 20, eagerBytes: (1 << 20) + 4096 }, /eagerBytes/],
    ["eagerBytes negative", { eagerBytes: -4096 }, /eagerBytes/],
    ["eagerBytes not an integer", { eagerBytes: 0.5 }, /eagerBytes/],
    ["poolBytes unaligned", { poolBytes: 100 }, /poolBytes/],
  ];
  for (const [what, opts, name] of cases) {
    it(`rejects ${what} with a RangeError`, async () => {
      await expect(createMachine(x86(opts))).rejects.toThrow(RangeError);
      await expect(createMachine(x86(opts))).rejects.toThrow(name);
    });
  }

  it("rejects an arch other than x86_64 and arm64 with an Error naming it", async () => {
    await expect(createMachine({ arch: "riscv64" } as unknown as MachineOptions)).rejects.toThrow(/^vmmu: arch must be one of 'x86_64', 'arm64', got "riscv64"$/);
    await expect(createMachine({ memoryBytes: 4096 } as unknown as MachineOptions)).rejects.toThrow(/^vmmu: arch .* got undefined$/);
  });

  it("rejects options of the wrong type with a TypeError naming the option", async () => {
    await expect(createMachine(x86({ ramBase: 4096 as unknown as bigint }))).rejects.toThrow(new TypeError("vmmu: ramBase must be a bigint, got 4096"));
    await expect(createMachine(x86({ vcpus: "2" as unknown as number }))).rejects.toThrow(new TypeError('vmmu: vcpus must be an integer 1..256, got "2"'));
    await expect(createMachine(undefined as unknown as MachineOptions)).rejects.toThrow(new TypeError("vmmu: options must be an options object, got undefined"));
  });

  it("accepts the bounds themselves: 1 and 256 vCPUs, MAXPHYADDR 36 and 52, 16 TLB entries", async () => {
    expect((await createMachine(x86({ vcpus: 256, tlbEntries: 16 }))).vcpuCount).toBe(256);
    expect((await createMachine(x86({ maxPhysAddrBits: 36, memoryBytes: 1n << 36n, eagerBytes: 0 }))).memory.slot.size).toBe(1n << 36n);
    expect((await createMachine(x86({ maxPhysAddrBits: 52, memoryBytes: 64n * TiB, eagerBytes: 0 }))).memory.slot.size).toBe(64n * TiB);
  });

  it("refuses vcpu(i) outside 0..vcpus-1 with a RangeError naming the index", async () => {
    const m = await createMachine(x86({ vcpus: 2 }));
    expect(m.vcpu(1).index).toBe(1);
    for (const i of [2, -1, 1.5, 256]) expect(() => m.vcpu(i)).toThrow(new RangeError(`vmmu: no vCPU ${i}: index must be 0..1 (machine has 2)`));
    for (const i of ["constructor", "0", null]) expect(() => m.vcpu(i as unknown as number)).toThrow(TypeError);
  });
});

describe("a 128 GiB guest backs only the frames it touches", () => {
  const PML4 = 100n * GiB, PDPT = 3n * GiB, PD = 127n * GiB, PT = 64n * GiB + 0x5000n;
  const VA = 0x0000_7f80_1234_5000n;
  const DATA = 5n * GiB + 0x7000n;

  async function bigGuest(): Promise<Machine<X86Vcpu>> {
    const m = await createMachine({ arch: "x86_64", memoryBytes: 128n * GiB, eagerBytes: 0 });
    const mem = m.memory;
    const table = PTE.P | PTE.RW;
    mem.write64(X86PageTableBuilder.entryGpa(PML4, VA, 4), PDPT | table);
    mem.write64(X86PageTableBuilder.entryGpa(PDPT, VA, 3), PD | table);
    mem.write64(X86PageTableBuilder.entryGpa(PD, VA, 2), PT | table);
    mem.write64(X86PageTableBuilder.entryGpa(PT, VA, 1), X86PageTableBuilder.leaf(DATA, "4K", { write: true }));
    mem.write64(X86PageTableBuilder.entryGpa(PDPT, VA + GiB, 3), X86PageTableBuilder.leaf(126n * GiB, "1G"));
    mem.write64(X86PageTableBuilder.entryGpa(PD, VA + 2n * MiB, 2), X86PageTableBuilder.leaf(90n * GiB, "2M"));
    mem.write64(X86PageTableBuilder.entryGpa(PD, VA + 4n * MiB, 2), (50n * GiB) | table);
    expect(m.memory.read64(X86PageTableBuilder.entryGpa(PD, VA + 4n * MiB, 2))).toBe((50n * GiB) | table);
    m.vcpu(0).setControl({ ...LONG_MODE, cr3: PML4 });
    return m;
  }

  it("translates through tables at 100, 3, 127 and 64 GiB", async () => {
    const m = await bigGuest();
    const v = m.vcpu(0);
    expect(v.translate(VA + 0x123n, "write")).toEqual({ pa: DATA + 0x123n, pageSize: 4096, level: 1 });
    expect(v.translate(VA + GiB + 0x789n)).toEqual({ pa: 126n * GiB + ((VA + 0x789n) & (GiB - 1n)), pageSize: 1 << 30, level: 3 });
    expect(v.translate(VA + 2n * MiB + 0x1_0abcn)).toEqual({ pa: 90n * GiB + ((VA + 0x1_0abcn) & (2n * MiB - 1n)), pageSize: 2 << 20, level: 2 });
    expect(m.memory.read64(X86PageTableBuilder.entryGpa(PT, VA, 1)) & (PTE.A | PTE.D)).toBe(PTE.A | PTE.D);
  });

  it("backs exactly the four table frames, and reads unbacked frames as zero without backing them", async () => {
    const m = await bigGuest();
    const mem = m.memory;
    expect(mem.backedFrames()).toBe(4);
    expect(m.vcpu(0).translate(VA, "write")).toMatchObject({ pa: DATA });
    expect(mem.backedFrames()).toBe(4);
    expect(mem.read64(DATA)).toBe(0n);
    expect(mem.read(77n * GiB + 0xff0n, 32)).toEqual(new Uint8Array(32));
    expect(mem.read64(128n * GiB - 8n)).toBe(0n);
    expect(mem.backedFrames()).toBe(4);
    mem.write64(DATA + 8n, 0x1122_3344_5566_7788n);
    expect(mem.backedFrames()).toBe(5);
    const frame = mem.read(DATA, 4096);
    expect(frame.slice(8, 16)).toEqual(Uint8Array.of(0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11));
    expect(frame.filter((b, i) => b !== 0 && (i < 8 || i >= 16)).length).toBe(0);
  });

  it("faults not-present on a table in an unbacked frame, and the walk backs nothing", async () => {
    const m = await bigGuest();
    expect(m.vcpu(0).translate(VA + 4n * MiB)).toEqual({ fault: { vector: 14, errorCode: 0, level: 1, kind: "page-fault" } });
    expect(m.memory.backedFrames()).toBe(4);
  });

  it("aborts on a table pointer past the end of the 128 GiB", async () => {
    const m = await bigGuest();
    m.memory.write64(X86PageTableBuilder.entryGpa(PML4, 0n, 4), (128n * GiB) | PTE.P | PTE.RW);
    expect(m.memory.backedFrames()).toBe(4);
    expect(m.vcpu(0).translate(0x1000n)).toEqual({ fault: { vector: -1, errorCode: 0, level: 3, kind: "abort", gpa: 128n * GiB } });
  });
});

describe("the layout record, the machine header and the vCPU blocks agree", () => {
  function header(m: Machine<X86Vcpu>) {
    const L = m.layout, dv = new DataView(m.memory.buffer), h = L.MACHINE_BASE;
    const u32 = (o: number) => dv.getUint32(h + o, true);
    const u64 = (o: number) => dv.getBigUint64(h + o, true);
    return {
      magic: u32(L.M_MAGIC), nvcpus: u32(L.M_NVCPUS), stride: u32(L.M_VCPU_STRIDE), tlbEntries: u32(L.M_TLB_ENTRIES),
      poolBase: u32(L.M_POOL_BASE), poolBytes: u32(L.M_POOL_BYTES), frameDir: u32(L.M_FRAME_DIR), ramHost: u32(L.M_RAM_HOST),
      backNext: u64(L.M_BACK_NEXT), backEnd: u32(L.M_BACK_END), backed: u32(L.M_BACKED), maxPages: u32(L.M_MAX_PAGES),
      slotBase: u64(L.M_SLOT_BASE), slotSize: u64(L.M_SLOT_SIZE), eager: u64(L.M_EAGER_BYTES),
    };
  }

  it("places the fixed regions and the header fields without overlap", async () => {
    const L = (await createMachine(x86({}))).layout;
    expect(L.ZERO_PAGE).toBeGreaterThanOrEqual(1024);
    expect(L.ZERO_PAGE + L.PAGE_SIZE).toBeLessThanOrEqual(L.MACHINE_BASE);
    expect(L.MACHINE_BASE + L.PAGE_SIZE).toBeLessThanOrEqual(L.VCPU_AREA);
    expect(L.VCPU_AREA % L.WASM_PAGE).toBe(0);
    const fields: [number, number][] = [
      [L.M_MAGIC, 4], [L.M_NVCPUS, 4], [L.M_VCPU_STRIDE, 4], [L.M_TLB_ENTRIES, 4], [L.M_POOL_BASE, 4], [L.M_POOL_BYTES, 4],
      [L.M_FRAME_DIR, 4], [L.M_RAM_HOST, 4], [L.M_BACK_NEXT, 8], [L.M_BACK_END, 4], [L.M_BACKED, 4], [L.M_POPULATE, 4],
      [L.M_SLOT_BASE, 8], [L.M_SLOT_SIZE, 8], [L.M_EAGER_BYTES, 8], [L.M_MAX_PAGES, 4], [L.M_GROW_LOCK, 4], [L.M_POOL_HPA, 8],
    ];
    expectDisjoint(fields, L.PAGE_SIZE);
    for (const [o, w] of fields) expect(o % w).toBe(0);
  });

  it("lays out one vCPU block: state, counters, contexts, batch arrays, TLB", async () => {
    const L = (await createMachine(x86({}))).layout;
    expectDisjoint([
      [L.S_CR0, 8], [L.S_CR3, 8], [L.S_CR4, 8], [L.S_EFER, 8], [L.S_PKRU, 8], [L.S_RFLAGS, 8], [L.S_MAXPHY, 4], [L.S_TLB_ON, 4],
      [L.S_INDEX, 4], [L.R_PA, 8], [L.R_GPA, 8], [L.R_STATUS, 4], [L.R_ERROR, 4], [L.R_LEVEL, 4], [L.R_SHIFT, 4],
      [L.T_EPOCH, 4], [L.T_NEXT_TAG, 4], [L.T_TOTAL_LIVE, 4],
    ], L.VCPU_COUNTERS - L.VCPU_STATE);
    const regions: [number, number][] = [
      [L.VCPU_STATE, L.VCPU_COUNTERS - L.VCPU_STATE],
      [L.VCPU_COUNTERS, L.COUNTER_COUNT * 8],
      [L.VCPU_MMU, L.MMU_CTX_COUNT * L.MMU_STRIDE],
      [L.VCPU_CTX, L.CTX_SLOTS * L.CTX_STRIDE],
      [L.VCPU_SLOTLIST, L.CTX_SLOTS * 2],
      [L.VCPU_BATCH_VA, L.BATCH_MAX * 8],
      [L.VCPU_BATCH_PA, L.BATCH_MAX * 8],
      [L.VCPU_BATCH_STATUS, L.BATCH_MAX * 4],
      [L.VCPU_BATCH_ACCESS, L.BATCH_MAX],
    ];
    expectDisjoint(regions, L.VCPU_TLB);
    for (let i = 1; i < regions.length; i++) expect(regions[i]![0]).toBeGreaterThan(regions[i - 1]![0]);
    expect(L.VCPU_TLB % L.PAGE_SIZE).toBe(0);
  });

  for (const [what, opts] of [
    ["an all-eager machine", { memoryBytes: 16 << 20, vcpus: 2 }],
    ["a mostly lazy machine above 4 GiB with 3 vCPUs and small TLBs", { memoryBytes: 64 << 20, eagerBytes: (1 << 20) + 123, vcpus: 3, tlbEntries: 64, ramBase: 4n * GiB, poolBytes: 3 * 4096 }],
  ] as [string, Partial<MachineOptions>][]) {
    it(`orders the regions of ${what} and matches the header to the options`, async () => {
      const m = await createMachine(x86(opts));
      const L = m.layout, h = header(m), slot = m.memory.slot;
      const tlbEntries = opts.tlbEntries ?? 4096;
      expect(h.magic).toBe(L.MACHINE_MAGIC);
      expect(h.nvcpus).toBe(m.vcpuCount);
      expect(h.tlbEntries).toBe(tlbEntries);
      expect(h.poolBytes).toBe(opts.poolBytes ?? 1 << 20);
      expect([h.slotBase, h.slotSize, h.eager]).toEqual([slot.base, slot.size, slot.eagerBytes]);
      expect(slot.eagerBytes % 4096n).toBe(0n);
      expect(h.stride).toBeGreaterThanOrEqual(L.VCPU_TLB + tlbEntries * L.TLB_ENTRY);
      for (const base of [h.stride, h.poolBase, h.ramHost, ...(h.frameDir ? [h.frameDir] : [])]) expect(base % L.WASM_PAGE).toBe(0);
      expect(L.VCPU_AREA + h.nvcpus * h.stride).toBeLessThanOrEqual(h.poolBase);
      const afterPool = h.poolBase + h.poolBytes;
      if (slot.eagerBytes < slot.size) {
        expect(h.frameDir).toBeGreaterThanOrEqual(afterPool);
        expect(h.frameDir + Number((slot.size + (4n * MiB - 1n)) / (4n * MiB)) * 4).toBeLessThanOrEqual(h.ramHost);
      } else {
        expect(h.frameDir).toBe(0);
        expect(h.ramHost).toBeGreaterThanOrEqual(afterPool);
      }
      expect(BigInt(h.ramHost) + slot.eagerBytes).toBeLessThanOrEqual(h.backNext);
      expect(h.backNext).toBeLessThanOrEqual(BigInt(h.backEnd * L.WASM_PAGE));
      expect(h.backEnd * L.WASM_PAGE).toBeLessThanOrEqual(m.memory.buffer.byteLength);
      expect(h.backEnd).toBeLessThanOrEqual(h.maxPages);

      const bytes = m.memory.bytes();
      expect([bytes.byteOffset, BigInt(bytes.length)]).toEqual([h.ramHost, slot.eagerBytes]);
      for (let i = 0; i < m.vcpuCount; i++) {
        const v = m.vcpu(i), bt = v.batch();
        expect(v.base).toBe(L.VCPU_AREA + i * h.stride);
        expect([bt.va.byteOffset, bt.pa.byteOffset, bt.status.byteOffset, bt.access.byteOffset])
          .toEqual([v.base + L.VCPU_BATCH_VA, v.base + L.VCPU_BATCH_PA, v.base + L.VCPU_BATCH_STATUS, v.base + L.VCPU_BATCH_ACCESS]);
        expect(bt.capacity).toBe(L.BATCH_MAX);
      }
    });
  }

  it("reads back what setControl wrote at the STATE offsets of each vCPU, and nothing else moves", async () => {
    const m = await createMachine(x86({ vcpus: 3, maxPhysAddrBits: 40 }));
    const L = m.layout, dv = new DataView(m.memory.buffer);
    const control = (i: number) => ({
      ...LONG_MODE, cr3: 0x1000n * BigInt(i + 1), cr4: LONG_MODE.cr4 | CR4.PGE, pkru: 0x5555_0000n + BigInt(i), rflags: 0x2n | (BigInt(i) << 18n),
    });
    for (let i = 0; i < 3; i++) m.vcpu(i).setControl(control(i));
    for (let i = 0; i < 3; i++) {
      const b = m.vcpu(i).base, c = control(i);
      const r = (o: number) => dv.getBigUint64(b + o, true);
      expect([r(L.S_CR0), r(L.S_CR3), r(L.S_CR4), r(L.S_EFER), r(L.S_PKRU), r(L.S_RFLAGS)])
        .toEqual([c.cr0, c.cr3, c.cr4, c.efer | EFER.LMA, c.pkru, c.rflags]);
      expect([dv.getUint32(b + L.S_MAXPHY, true), dv.getUint32(b + L.S_INDEX, true), dv.getUint32(b + L.S_TLB_ON, true)]).toEqual([40, i, 1]);
      expect(m.vcpu(i).control()).toEqual({ ...c, efer: c.efer | EFER.LMA });
    }
    m.vcpu(1).setControl({ cr3: 0xabc000n });
    expect(dv.getBigUint64(m.vcpu(1).base + L.S_CR3, true)).toBe(0xabc000n);
    expect(m.vcpu(0).control().cr3).toBe(0x1000n);
    expect(m.vcpu(2).control().cr3).toBe(0x3000n);
  });

  it("derives EFER.LMA from LME and PG whatever the caller passes", async () => {
    const m = await createMachine(x86({}));
    const v = m.vcpu(0);
    v.setControl({ cr0: 0n, efer: EFER.LME | EFER.LMA });
    expect(v.control().efer).toBe(EFER.LME);
    v.setControl({ ...LONG_MODE, efer: EFER.LME });
    expect(v.control().efer).toBe(EFER.LME | EFER.LMA);
  });
});

/** Asserts that the [offset, width) fields lie inside [0, limit) and do not overlap. */
function expectDisjoint(fields: [number, number][], limit: number): void {
  const sorted = [...fields].sort((a, b) => a[0] - b[0]);
  for (const [o, w] of sorted) {
    expect(o).toBeGreaterThanOrEqual(0);
    expect(o + w).toBeLessThanOrEqual(limit);
  }
  for (let i = 1; i < sorted.length; i++) expect(sorted[i]![0], `field at ${sorted[i]![0]}`).toBeGreaterThanOrEqual(sorted[i - 1]![0] + sorted[i - 1]![1]);
}

