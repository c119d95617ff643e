/**
 * The Linux guest model on bare metal: its page tables are real (the
 * reference walker reads them as the hardware does), KPTI splits them as
 * arch/x86/mm/pti.c does, CR3 carries PCIDs and NOFLUSH as
 * arch/x86/mm/tlb.c and entry/calling.h write them, and munmap/COW
 * invalidate what the TLB may hold (Intel SDM Vol.3A §4.10.4; arch/x86/mm/tlb.c).
 */
import { describe, expect, it } from "vitest";
import { CR3_NOFLUSH, CR4, PFERR, PTE, type GuestMemory } from "../../../src/index.js";
import { PTE_ADDR_MASK } from "../../../src/x86/regs.js";
import { refTranslateX86 } from "../../../src/ref/x86-walk.js";
import {
  CPU_ENTRY_AREA_BASE, KERNEL_TEXT_START, PAGE_OFFSET, USER_LAYOUT,
  type GuestEvent, type LinuxCpu, type LinuxGuest, type Task, type Vma,
} from "../../../src/guest/linux.js";
import { FRAME } from "../../../src/guest/frames.js";
import type { BareMetalCpu } from "../../../src/guest/bare-metal-cpu.js";
import { bareMetalGuest } from "../../helpers/guest.js";
import { refMemoryOf } from "../../helpers/machine.js";

const K4 = 0x1000n;
const ANON = 0x1000_0000;
const ANON_PAGES = 64;

/** What the guest's tables say for `va` from root `cr3`, walked by the reference walker. */
function refWalk(mem: GuestMemory, cpu: BareMetalCpu, cr3: bigint, va: bigint, access: "read" | "write" | "fetch", user: boolean) {
  const c = cpu.vcpu.control();
  return refTranslateX86(refMemoryOf(mem), { ...c, cr3: cr3 & ~CR3_NOFLUSH & ~0xfffn, cr4: c.cr4 & ~CR4.PCIDE, maxPhysAddrBits: 46 }, va, access, user);
}

/** The leaf entry mapping `va` under PML4 table `root` (read from RAM). */
function leafEntry(mem: GuestMemory, root: bigint, va: bigint): bigint | undefined {
  let table = root;
  for (let level = 4; level >= 1; level--) {
    const e = mem.read64(table + (((va >> BigInt(12 + 9 * (level - 1))) & 511n) << 3n));
    if ((e & PTE.P) === 0n) return undefined;
    if (level === 1 || (level <= 3 && (e & PTE.PS) !== 0n)) return e;
    table = e & PTE_ADDR_MASK;
  }
  return undefined;
}

/** A process current on `lc`, in user mode, after exec of a stack and an anonymous region at ANON. */
function startProcess(g: LinuxGuest, lc: LinuxCpu, name = "p", extra: Vma[] = []): Task {
  g.syscallEnter(lc, 57);
  const t = g.spawnInit(lc, name);
  g.switchTo(lc, t);
  g.leave(lc);
  g.syscallEnter(lc, 59);
  g.exec(lc, t, name, [
    { start: ANON, end: ANON + ANON_PAGES * 4096, read: true, write: true, exec: false, name: "anon" },
    { start: USER_LAYOUT.stackTop - USER_LAYOUT.stackBytes, end: USER_LAYOUT.stackTop, read: true, write: true, exec: false, name: "[stack]" },
    ...extra,
  ], 0x2000_0000);
  g.leave(lc);
  return t;
}

/** A process with an empty mm, current on `lc` in user mode (one ASID, no exec). */
function bareProcess(g: LinuxGuest, lc: LinuxCpu, name: string): Task {
  g.syscallEnter(lc, 57);
  const t = g.spawnInit(lc, name);
  g.switchTo(lc, t);
  g.leave(lc);
  return t;
}

function gpaOf(r: bigint | unknown): bigint {
  if (typeof r !== "bigint") throw new Error(`expected an address, got ${JSON.stringify(r)}`);
  return r;
}

function cr3Log(events: GuestEvent[]): { value: bigint; why: string; cpu: number }[] {
  return events.flatMap((e) => (e.type === "cr3" ? [{ value: e.value, why: e.why, cpu: e.cpu }] : []));
}

describe("boot", () => {
  it("maps all of RAM in the direct map with 2 MiB pages, NX, non-global under PTI with PCID", async () => {
    const { guest, cpus, machine } = await bareMetalGuest({ ramMiB: 128 });
    const cr3 = guest.cpus[0]!.cr3;
    for (const gpa of [0n, 0x0234_5678n, (128n << 20n) - 8n]) {
      expect(refWalk(machine.memory, cpus[0]!, cr3, PAGE_OFFSET + gpa, "write", false)).toMatchObject({ ok: true, pa: gpa, pageSize: 2 << 20 });
      const e = leafEntry(machine.memory, guest.initMm.pgd, PAGE_OFFSET + gpa)!;
      expect(e & (PTE.XD | PTE.G | PTE.PS | PTE.RW)).toBe(PTE.XD | PTE.PS | PTE.RW);
    }
    expect(refWalk(machine.memory, cpus[0]!, cr3, PAGE_OFFSET + (128n << 20n), "read", false)).toMatchObject({ ok: false, vector: 14 });
  });

  it("maps kernel text to the kernel image, global only for the entry text", async () => {
    const { guest, machine } = await bareMetalGuest();
    expect(guest.cpus[0]!.cpu.access(KERNEL_TEXT_START + 0x40n, "fetch", false)).toBe(guest.kernelPhys + 0x40n);
    expect(leafEntry(machine.memory, guest.initMm.pgd, KERNEL_TEXT_START)! & PTE.G).toBe(0n);
    expect(leafEntry(machine.memory, guest.initMm.pgd, guest.entryText)! & PTE.G).toBe(PTE.G);
    expect(leafEntry(machine.memory, guest.initMm.pgd, guest.ceaOf(0) + K4)! & (PTE.G | PTE.XD)).toBe(PTE.G | PTE.XD);
  });

  it("makes kernel text global when there are no PCIDs, and everything global without PTI", async () => {
    const noPcid = await bareMetalGuest({ pcid: false });
    expect(leafEntry(noPcid.machine.memory, noPcid.guest.initMm.pgd, KERNEL_TEXT_START)! & PTE.G).toBe(PTE.G);
    expect(leafEntry(noPcid.machine.memory, noPcid.guest.initMm.pgd, PAGE_OFFSET)! & PTE.G).toBe(0n);
    const noPti = await bareMetalGuest({ pti: false });
    expect(leafEntry(noPti.machine.memory, noPti.guest.initMm.pgd, PAGE_OFFSET)! & PTE.G).toBe(PTE.G);
  });

  it("leaves every CPU in init_mm on ASID 0 (kernel PCID 1) with PCIDE, PGE and SMEP", async () => {
    const { guest, cpus } = await bareMetalGuest({ vcpus: 3 });
    for (const c of cpus) {
      const ctl = c.vcpu.control();
      expect(ctl.cr3).toBe(guest.initMm.pgd | 1n);
      expect(ctl.cr4 & (CR4.PCIDE | CR4.PGE | CR4.SMEP)).toBe(CR4.PCIDE | CR4.PGE | CR4.SMEP);
    }
  });
});

describe("KPTI page tables", () => {
  it("allocates each mm an 8 KiB-aligned PGD pair, the user PGD at +4 KiB", async () => {
    const { guest } = await bareMetalGuest();
    const lc = guest.cpus[0]!;
    const t = startProcess(guest, lc);
    expect(t.mm.pgd % 0x2000n).toBe(0n);
    expect(guest.frames.useOf(Number(t.mm.pgd >> 12n) + 1)).toBe("pagetable");
    expect(lc.cr3).toBe(t.mm.pgd + K4 | BigInt(guest.userPcid(lc.loadedAsid)));
  });

  it("gives the user PGD only the cpu_entry_area and the entry text of the kernel", async () => {
    const { guest, cpus, machine } = await bareMetalGuest();
    const lc = guest.cpus[0]!;
    const t = startProcess(guest, lc);
    const mem = machine.memory;
    const userSlots: number[] = [];
    for (let i = 256; i < 512; i++) if ((mem.read64(t.mm.pgd + K4 + BigInt(i * 8)) & PTE.P) !== 0n) userSlots.push(i);
    expect(userSlots).toEqual([Number((CPU_ENTRY_AREA_BASE >> 39n) & 511n), 511]);
    const upgd = t.mm.pgd + K4, kpgd = t.mm.pgd;
    for (const [va, inUser] of [
      [PAGE_OFFSET, false], [PAGE_OFFSET + 0x40_0000n, false], [KERNEL_TEXT_START, false],
      [guest.entryText + 0x100n, true], [guest.ceaOf(0) + K4, true], [CPU_ENTRY_AREA_BASE, true],
    ] as const) {
      expect(refWalk(mem, cpus[0]!, upgd, va, "read", false).ok, `0x${va.toString(16)} through the user PGD`).toBe(inUser);
      expect(refWalk(mem, cpus[0]!, kpgd, va, "read", false).ok, `0x${va.toString(16)} through the kernel PGD`).toBe(true);
    }
  });

  it("shares swapper's kernel half: every mm's PML4 entries 256..511 point at the same tables", async () => {
    const { guest, machine } = await bareMetalGuest();
    const lc = guest.cpus[0]!;
    const a = startProcess(guest, lc, "a"), b = startProcess(guest, lc, "b");
    const mem = machine.memory, swapper = guest.initMm.pgd;
    for (let i = 256; i < 512; i++) {
      for (const off of [0n, K4]) {
        const s = mem.read64(swapper + off + BigInt(i * 8));
        expect(mem.read64(a.mm.pgd + off + BigInt(i * 8))).toBe(s);
        expect(mem.read64(b.mm.pgd + off + BigInt(i * 8))).toBe(s);
      }
    }
  });

  it("writes user PML4 entries to both PGDs (the kernel copy NX), sharing the tables below", async () => {
    const { guest, machine } = await bareMetalGuest();
    const lc = guest.cpus[0]!;
    const t = startProcess(guest, lc);
    gpaOf(guest.userAccess(lc, BigInt(ANON), "write"));
    gpaOf(guest.userAccess(lc, BigInt(USER_LAYOUT.stackTop - 8), "write"));
    const mem = machine.memory;
    let present = 0;
    for (let i = 0; i < 256; i++) {
      const k = mem.read64(t.mm.pgd + BigInt(i * 8)), u = mem.read64(t.mm.pgd + K4 + BigInt(i * 8));
      if (u === 0n) { expect(k).toBe(0n); continue; }
      present++;
      expect(u & PTE.XD).toBe(0n);
      expect(k).toBe(u | PTE.XD);
    }
    expect(present).toBe(2);
    expect(leafEntry(mem, t.mm.pgd, BigInt(ANON))).toBe(leafEntry(mem, t.mm.pgd + K4, BigInt(ANON)));
  });
});

describe("PCIDs and CR3", () => {
  it("switches CR3 on syscall entry and exit with NOFLUSH, between the kernel and user PCID", async () => {
    const events: GuestEvent[] = [];
    const { guest } = await bareMetalGuest({ trace: (e) => events.push(e) });
    const lc = guest.cpus[0]!;
    const t = startProcess(guest, lc);
    const k = BigInt(guest.kernPcid(lc.loadedAsid));
    events.length = 0;
    guest.syscallEnter(lc, 39);
    guest.leave(lc);
    expect(cr3Log(events)).toEqual([
      { cpu: 0, why: "entry", value: t.mm.pgd | k | CR3_NOFLUSH },
      { cpu: 0, why: "exit", value: t.mm.pgd | K4 | k | 0x800n | CR3_NOFLUSH },
    ]);
  });

  it("hands out 6 ASIDs per CPU round robin, reusing a valid one with NOFLUSH and recycling with a flush", async () => {
    const events: GuestEvent[] = [];
    const { guest } = await bareMetalGuest({ trace: (e) => events.push(e), ramMiB: 256 });
    const lc = guest.cpus[0]!;
    const tasks = Array.from({ length: 7 }, (_, i) => bareProcess(guest, lc, `p${i}`));
    const switchTo = (t: Task) => {
      guest.syscallEnter(lc, 24);
      events.length = 0;
      guest.switchTo(lc, t);
      guest.leave(lc);
      return cr3Log(events);
    };
    expect(tasks.map((t) => t.mm.pgd)).toHaveLength(7);
    // p0..p4 took ASIDs 1..5; p5 wrapped to ASID 0 (evicting init_mm); p6 took ASID 1 from p0.
    const b = switchTo(tasks[1]!);
    expect(b[0]).toEqual({ cpu: 0, why: "switch_mm", value: tasks[1]!.mm.pgd | 3n | CR3_NOFLUSH });
    expect(b[1]!.value).toBe(tasks[1]!.mm.pgd | K4 | 3n | 0x800n | CR3_NOFLUSH);
    const a = switchTo(tasks[0]!);
    expect(a[0]).toEqual({ cpu: 0, why: "switch_mm", value: tasks[0]!.mm.pgd | 3n });
    expect(a[1]!.value).toBe(tasks[0]!.mm.pgd | K4 | 3n | 0x800n);
    expect(lc.loadedAsid).toBe(2);
  });

  it("reloads without NOFLUSH when the mm's TLB generation moved while the CPU was away", async () => {
    const events: GuestEvent[] = [];
    const { guest } = await bareMetalGuest({ vcpus: 2, trace: (e) => events.push(e) });
    const [c0, c1] = guest.cpus as [LinuxCpu, LinuxCpu];
    const a = startProcess(guest, c0, "a");
    const asid = c0.loadedAsid;
    gpaOf(guest.userAccess(c0, BigInt(ANON), "write"));
    const other = startProcess(guest, c0, "other");
    guest.syscallEnter(c1, 24);
    guest.switchTo(c1, a);
    guest.leave(c1);
    guest.syscallEnter(c1, 11);
    guest.munmap(c1, a, ANON, 4096);
    guest.leave(c1);
    guest.syscallEnter(c1, 24);
    guest.switchTo(c1, null);
    guest.syscallEnter(c0, 24);
    events.length = 0;
    guest.switchTo(c0, a);
    expect(other.mm).not.toBe(a.mm);
    expect(c0.loadedAsid).toBe(asid);
    expect(cr3Log(events)).toEqual([{ cpu: 0, why: "switch_mm", value: a.mm.pgd | BigInt(guest.kernPcid(asid)) }]);
  });

  it("without PCIDs, every CR3 write flushes and carries PCID 0", async () => {
    const events: GuestEvent[] = [];
    const { guest, cpus } = await bareMetalGuest({ pcid: false, trace: (e) => events.push(e) });
    const lc = guest.cpus[0]!;
    const t = startProcess(guest, lc);
    guest.syscallEnter(lc, 39);
    guest.leave(lc);
    const log = cr3Log(events);
    expect(log.every((e) => (e.value & (CR3_NOFLUSH | 0xfffn)) === 0n)).toBe(true);
    expect(log.at(-1)).toEqual({ cpu: 0, why: "exit", value: t.mm.pgd | K4 });
    expect(cpus[0]!.vcpu.control().cr4 & CR4.PCIDE).toBe(0n);
  });

  it("without PTI, there are no entry/exit CR3 writes and the PGD is one page", async () => {
    const events: GuestEvent[] = [];
    const { guest } = await bareMetalGuest({ pti: false, trace: (e) => events.push(e) });
    const lc = guest.cpus[0]!;
    const t = startProcess(guest, lc);
    events.length = 0;
    guest.syscallEnter(lc, 39);
    guest.leave(lc);
    expect(cr3Log(events)).toEqual([]);
    expect(guest.frames.useOf(Number(t.mm.pgd >> 12n) + 1)).not.toBe("pagetable");
  });
});

describe("demand paging, COW and munmap", () => {
  it("maps a zeroed anonymous frame on a write fault", async () => {
    const { guest, machine } = await bareMetalGuest();
    const lc = guest.cpus[0]!;
    const t = startProcess(guest, lc);
    const gpa = gpaOf(guest.userAccess(lc, BigInt(ANON + 0x10), "write"));
    expect(guest.frames.useOf(Number(gpa >> 12n))).toBe("anon");
    expect(guest.lookup(t.mm, ANON)).toEqual({ pfn: Number(gpa >> 12n), pte: leafEntry(machine.memory, t.mm.pgd, BigInt(ANON)) });
    expect(machine.memory.read(gpa & ~0xfffn, 4096).every((x) => x === 0)).toBe(true);
  });

  it("maps the zero page on a read fault, and copies it on the first write with INVLPG + INVPCID", async () => {
    const events: GuestEvent[] = [];
    const { guest } = await bareMetalGuest({ trace: (e) => events.push(e) });
    const lc = guest.cpus[0]!;
    const t = startProcess(guest, lc);
    const va = BigInt(ANON + 0x2000);
    expect(gpaOf(guest.userAccess(lc, va, "read")) >> 12n).toBe(BigInt(guest.zeroPfn));
    events.length = 0;
    const gpa = gpaOf(guest.userAccess(lc, va, "write"));
    expect(gpa >> 12n).not.toBe(BigInt(guest.zeroPfn));
    const inval = events.filter((e) => e.type === "invlpg" || e.type === "invpcid");
    expect(inval).toEqual([
      { type: "invlpg", cpu: 0, va },
      { type: "invpcid", cpu: 0, kind: 0, pcid: guest.userPcid(lc.loadedAsid), va },
    ]);
    expect(guest.stats.cowFaults).toBe(1);
    expect(guest.lookup(t.mm, ANON + 0x2000)!.pte & (PTE.RW | PTE.D)).toBe(PTE.RW | PTE.D);
  });

  for (const invpcid of [true, false]) {
    for (const pages of [4, 40]) {
      it(`makes an unmapped address fault (${invpcid ? "INVPCID" : "deferred user flush"}, ${pages} pages)`, async () => {
        const { guest, cpus } = await bareMetalGuest({ cpu: { invpcid } });
        const lc = guest.cpus[0]!, cpu = cpus[0]!;
        const t = startProcess(guest, lc);
        for (let i = 0; i < pages; i++) gpaOf(guest.userAccess(lc, BigInt(ANON + i * 4096), "write"));
        const h0 = cpu.vcpu.tlbStats().hits;
        for (let i = 0; i < pages; i++) gpaOf(cpu.access(BigInt(ANON + i * 4096), "read", true));
        expect(cpu.vcpu.tlbStats().hits - h0, "the pages are in the TLB before munmap").toBe(pages);
        const s0 = { ...guest.stats };
        guest.syscallEnter(lc, 11);
        guest.munmap(lc, t, ANON, pages * 4096);
        guest.leave(lc);
        for (let i = 0; i < pages; i++) {
          expect(cpu.access(BigInt(ANON + i * 4096), "read", true)).toEqual({ cr2: BigInt(ANON + i * 4096), errorCode: PFERR.U });
        }
        const perPage = pages <= 33;
        expect(guest.stats.invlpg - s0.invlpg).toBe(perPage ? pages : 0);
        expect(guest.stats.invpcid - s0.invpcid).toBe(invpcid && perPage ? pages : 0);
        expect(guest.stats.cr3FlushAll - s0.cr3FlushAll).toBe(perPage ? 0 : 1);
        expect(guest.stats.userFlushOnExit - s0.userFlushOnExit).toBe(!invpcid || !perPage ? 1 : 0);
      });
    }
  }

  it("needs the user-PCID flush: INVLPG alone in the kernel leaves the user translation stale", async () => {
    const { guest, cpus, machine } = await bareMetalGuest();
    const lc = guest.cpus[0]!, cpu = cpus[0]!;
    const t = startProcess(guest, lc);
    gpaOf(guest.userAccess(lc, BigInt(ANON), "write"));
    guest.syscallEnter(lc, 11);
    machine.memory.write64(guest.pteGpa(lc, t.mm, ANON, false)!, 0n);
    cpu.invlpg(BigInt(ANON));
    guest.leave(lc);
    expect(typeof cpu.access(BigInt(ANON), "read", true)).toBe("bigint");
  });

  it("frees page-table pages no VMA covers any more, and the anonymous frames", async () => {
    const { guest } = await bareMetalGuest();
    const lc = guest.cpus[0]!;
    const t = startProcess(guest, lc);
    const tables = t.mm.tablePages;
    guest.syscallEnter(lc, 9);
    const a = guest.mmap(lc, t, 8 * 4096, { write: true, exec: false });
    guest.leave(lc);
    const got = [];
    for (let i = 0; i < 8; i++) got.push(Number(gpaOf(guest.userAccess(lc, BigInt(a + i * 4096), "write")) >> 12n));
    const grown = t.mm.tablePages;
    expect(grown).toBeGreaterThan(tables);
    guest.syscallEnter(lc, 11);
    guest.munmap(lc, t, a, 8 * 4096);
    guest.leave(lc);
    expect(t.mm.tablePages).toBeLessThan(grown);
    expect(got.every((p) => guest.frames.useOf(p) === "free")).toBe(true);
    expect(t.mm.anonPages).toBe(0);
  });

  it("reports SIGSEGV for a user access outside every VMA, to a read-only VMA, or to kernel memory", async () => {
    const { guest } = await bareMetalGuest();
    const lc = guest.cpus[0]!;
    startProcess(guest, lc, "p", [{ start: 0x3000_0000, end: 0x3000_1000, read: true, write: false, exec: false, name: "ro" }]);
    expect(guest.userAccess(lc, 0x4000_0000n, "read")).toEqual({ ok: false });
    guest.leave(lc);
    expect(guest.userAccess(lc, 0x3000_0000n, "write")).toEqual({ ok: false });
    guest.leave(lc);
    expect(guest.userAccess(lc, PAGE_OFFSET, "read")).toEqual({ ok: false });
    expect(guest.stats.segv).toBe(3);
  });

  it("exit frees the mm's tables, frames and PGD, and leaves the CPU in init_mm", async () => {
    const { guest } = await bareMetalGuest();
    const lc = guest.cpus[0]!;
    const free0 = guest.frames.freeCount;
    const t = startProcess(guest, lc);
    for (let i = 0; i < 16; i++) gpaOf(guest.userAccess(lc, BigInt(ANON + i * 4096), "write"));
    guest.syscallEnter(lc, 60);
    guest.exit(lc, t);
    expect(lc.loadedMm).toBe(guest.initMm);
    expect(lc.cr3 & ~0xfffn).toBe(guest.initMm.pgd);
    expect(guest.frames.freeCount).toBe(free0);
    expect(guest.frames.use.filter((u) => u === FRAME.ANON).length).toBe(0);
  });
});
