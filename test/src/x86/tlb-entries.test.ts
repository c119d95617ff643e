/**
 * X86Vcpu.tlbEntries(): the live TLB contents, decoded. A translation fills
 * one 4 KiB piece per page touched (large pages piece by piece), tagged by the
 * PCID in force or global (G leaf with CR4.PGE); the list follows every
 * invalidation of Intel SDM Vol.3A §4.10.4.1 and always has tlbStats().live entries.
 */
import { describe, expect, it } from "vitest";
import { CR3_NOFLUSH, CR4, LONG_MODE, type X86TlbEntry } from "../../../src/index.js";
import { x86Fixture } from "../../helpers/machine.js";

const USER = 0x0000_0000_0040_0000n;
const KERNEL = 0xffff_ffff_8100_0000n;

async function setup() {
  const { machine, builder } = await x86Fixture({ vcpus: 2 });
  builder.mapRange(USER, 0x200_0000n, 4, "4K", { user: true, write: true });
  builder.map(KERNEL, 0x120_0000n, "2M", { global: true });
  const vcpu = machine.vcpu(0);
  vcpu.setControl({ ...LONG_MODE, cr4: LONG_MODE.cr4 | CR4.PGE | CR4.PCIDE, cr3: builder.root | 1n });
  return { machine, builder, vcpu };
}

const brief = (e: X86TlbEntry) => `${e.global ? "G" : `pcid${e.pcid}`} ${e.va.toString(16)}→${e.pa.toString(16)} ${e.pageSize >> 10}K L${e.level}`;

describe("X86Vcpu.tlbEntries", () => {
  it("is empty on a fresh vCPU, and a walk outside the TLB adds nothing", async () => {
    const { vcpu } = await setup();
    expect(vcpu.tlbEntries()).toEqual([]);
    vcpu.walk(USER, "read", true);
    vcpu.peek(KERNEL);
    expect(vcpu.tlbEntries()).toEqual([]);
  });

  it("lists each translated 4 KiB piece with its pa, page size, leaf level, PCID or global", async () => {
    const { vcpu } = await setup();
    vcpu.translate(USER + 0x123n, "read", true);
    vcpu.translate(USER + 0x2ff8n, "write", true);
    vcpu.translate(KERNEL + 0x1_5000n, "read", false);
    vcpu.translate(KERNEL + 0x1_5008n, "read", false); // a hit: no second entry
    expect(vcpu.tlbEntries().map(brief)).toEqual([
      "pcid1 400000→2000000 4K L1",
      "pcid1 402000→2002000 4K L1",
      "G ffffffff81015000→1215000 2048K L2",
    ]);
    expect(vcpu.tlbEntries()[2]).toEqual({ va: KERNEL + 0x1_5000n, pa: 0x121_5000n, pageSize: 2 << 20, level: 2, global: true, pcid: undefined, vpid: 0 });
    expect(vcpu.tlbEntries()).toHaveLength(vcpu.tlbStats().live);
  });

  it("drops the page INVLPG names and keeps the others", async () => {
    const { vcpu } = await setup();
    for (let i = 0n; i < 4n; i++) vcpu.translate(USER + i * 0x1000n, "read", true);
    vcpu.translate(KERNEL, "read", false);
    vcpu.invlpg(USER + 0x1000n);
    expect(vcpu.tlbEntries().map((e) => e.va)).toEqual([USER, USER + 0x2000n, USER + 0x3000n, KERNEL]);
    vcpu.invlpg(KERNEL + 0x1234n);
    expect(vcpu.tlbEntries().map((e) => e.va)).toEqual([USER, USER + 0x2000n, USER + 0x3000n]);
    expect(vcpu.tlbEntries()).toHaveLength(vcpu.tlbStats().live);
  });

  it("keeps other PCIDs' and global entries across MOV CR3, drops the new PCID's unless NOFLUSH", async () => {
    const { vcpu, builder } = await setup();
    vcpu.translate(USER, "read", true);                // pcid 1
    vcpu.translate(KERNEL, "read", false);             // global
    expect(vcpu.writeCr3(builder.root | 2n | CR3_NOFLUSH)).toBeNull();
    vcpu.translate(USER + 0x1000n, "read", true);      // pcid 2
    expect(vcpu.tlbEntries().map(brief)).toEqual([
      "pcid1 400000→2000000 4K L1",
      "pcid2 401000→2001000 4K L1",
      "G ffffffff81000000→1200000 2048K L2",
    ]);
    expect(vcpu.writeCr3(builder.root | 1n)).toBeNull(); // flushes pcid 1's non-global entries
    expect(vcpu.tlbEntries().map(brief)).toEqual(["pcid2 401000→2001000 4K L1", "G ffffffff81000000→1200000 2048K L2"]);
    vcpu.invpcid(2, 0);                                  // everything, globals too
    expect(vcpu.tlbEntries()).toEqual([]);
  });

  it("reads only its own vCPU's TLB", async () => {
    const { machine, vcpu, builder } = await setup();
    vcpu.translate(USER, "read", true);
    const other = machine.vcpu(1);
    other.setControl({ ...LONG_MODE, cr3: builder.root });
    expect(other.tlbEntries()).toEqual([]);
    other.translate(USER + 0x3000n, "read", true);
    expect(other.tlbEntries().map(brief)).toEqual(["pcid0 403000→2003000 4K L1"]);
    expect(vcpu.tlbEntries().map(brief)).toEqual(["pcid1 400000→2000000 4K L1"]);
  });
});
