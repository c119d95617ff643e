import { it, expect } from "vitest";
import { createShadowVm } from "../../../src/kvm/shadow-vm.js";
import { X86PageTableBuilder, LONG_MODE, CR4, CR3_NOFLUSH } from "../../../src/index.js";
import { verbose } from "../../helpers/note.js";

for (const policy of ["baseline", "shahid2018", "lai2021", "alon2018"]) {
  it(`a guest runs under shadow paging (${policy})`, async () => {
    const vm = await createShadowVm({ vcpus: 1, memoryBytes: 64 << 20, policy, poolBytes: 8 << 20 });
    const mem = vm.machine.memory;
    const b = new X86PageTableBuilder(mem, { tableBase: 0x10_0000n, tableLimit: 0x80_0000n });
    b.map(0x40_0000n, 0x100_0000n, "4K", { user: true, write: true });
    b.map(0x40_1000n, 0x100_1000n, "4K", { user: true });
    b.map(0xffff_8880_0000_0000n, 0n, "1G", { write: true, nx: true });
    const v = vm.vcpus[0]!;
    v.start({ ...LONG_MODE, cr4: LONG_MODE.cr4 | CR4.PCIDE, cr3: b.root | 1n });
    expect(v.access(0x40_0123n, "read", true)).toBe(0x100_0123n);
    expect(v.access(0x40_0123n, "write", true)).toBe(0x100_0123n);
    expect(v.access(0x40_1000n, "write", true)).toMatchObject({ cr2: 0x40_1000n, errorCode: 7 });
    expect(v.access(0x50_0000n, "read", true)).toMatchObject({ cr2: 0x50_0000n });
    // The guest remaps 0x400000 through its direct map (a page-table store).
    const leaf = b.leafGpa(0x40_0000n)!;
    expect(v.store64(0xffff_8880_0000_0000n + leaf, X86PageTableBuilder.leaf(0x200_0000n, "4K", { user: true, write: true }))).toBeNull();
    v.invlpg(0x40_0000n);
    expect(v.access(0x40_0000n, "read", true)).toBe(0x200_0000n);
    // CR3 switches with and without NOFLUSH.
    expect(v.writeCr3(b.root | 2n)).toBeNull();
    expect(v.access(0x40_0000n, "read", true)).toBe(0x200_0000n);
    expect(v.writeCr3(b.root | 1n | CR3_NOFLUSH)).toBeNull();
    expect(v.access(0x40_0000n, "read", true)).toBe(0x200_0000n);
    verbose(`${policy}: exits ${JSON.stringify(v.exits)}, ${vm.mmu.stats.spLive} shadow pages live, ${vm.mmu.stats.syncs} syncs, `
      + `${vm.mmu.stats.emulatedWrites} emulated writes, ${vm.mmu.stats.unsyncs} unsyncs, ${v.cycles} cycles`);
  });
}
