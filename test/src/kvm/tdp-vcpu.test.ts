/**
 * Scenarios for a guest under EPT on a direct MMU (src/kvm/tdp-vcpu.ts): what a
 * CR0.WP toggle, an SMI and an RSM cost under each policy and MMU, and that the
 * guest's CR0.WP semantics hold. KVM x86.c kvm_post_set_cr0, mmu.c
 * kvm_mmu_reset_context / kvm_mmu_load, tdp_mmu.c root refcounts, vmx.c CR0
 * guest/host mask; Intel SDM Vol.3A §4.6 (CR0.WP), Vol.3C §32.5.1 (SMM entry).
 */
import { describe, expect, it, onTestFinished } from "vitest";
import { CR0, CR4, LONG_MODE, X86PageTableBuilder, type GuestMemory } from "../../../src/index.js";
import { createTdpVm, type TdpVm } from "../../../src/kvm/tdp-vm.js";
import type { TdpVcpu } from "../../../src/kvm/tdp-vcpu.js";
import { CR0WP_POLICIES } from "../../../src/kvm/cr0wp-policy.js";
import { DEFAULT_COSTS, type CostModel } from "../../../src/kvm/cost-model.js";

const DIRECT = 0xffff_8880_0000_0000n;
const RO = 0xffff_c900_0000_0000n;
const U = 0x40_0000n;
const F = (i: number): bigint => 0x100_0000n + BigInt(i) * 0x1000n;
const WP_ON = LONG_MODE.cr0;
const WP_OFF = LONG_MODE.cr0 & ~CR0.WP;
/** CR0.CD: host-owned, so changing it exits even when WP is guest-owned; not a role bit. */
const CR0_CD = 1n << 30n;

interface World {
  vm: TdpVm;
  mem: GuestMemory;
  cpu: TdpVcpu;
  pages: bigint[];
}

/**
 * A guest with a 2 MiB direct map of its first 16 MiB, a read-only kernel page
 * at RO (KERNEXEC's protected data) and 8 user pages at U.., on one vCPU.
 */
async function world(mmu: "tdp" | "legacy", policy: string, hostLevel: 1 | 2 = 1, vcpus = 1, costs?: CostModel): Promise<World> {
  const vm = await createTdpVm({ vcpus, mmu, memoryBytes: 32 << 20, policy, poolBytes: 4 << 20, hostLevel, ...(costs ? { costs } : {}) });
  onTestFinished(() => vm.machine.dispose());
  const mem = vm.machine.memory;
  const a = new X86PageTableBuilder(mem, { tableBase: 0x10_0000n, tableLimit: 0x18_0000n });
  a.mapRange(DIRECT, 0n, 8, "2M", { write: true, nx: true, global: true, accessed: true, dirty: true });
  a.map(RO, F(100), "4K", { write: false, global: true, accessed: true, dirty: true });
  const pages: bigint[] = [];
  for (let i = 0; i < 8; i++) {
    a.map(U + BigInt(i) * 0x1000n, F(i), "4K", { user: true, write: true, accessed: true, dirty: true });
    pages.push(U + BigInt(i) * 0x1000n);
  }
  const cpu = vm.vcpus[0]!;
  for (const c of vm.vcpus) c.start({ ...LONG_MODE, cr4: LONG_MODE.cr4 | CR4.PGE, cr3: a.root });
  return { vm, mem, cpu, pages };
}

/** Touches every user page and the RO page; returns the EPT violations it took. */
function touch(w: World): number {
  const before = w.cpu.exits["ept-violation"];
  for (const va of w.pages) expect(w.cpu.access(va, "read", true)).toBe(F(w.pages.indexOf(va)));
  expect(w.cpu.access(RO, "read", false)).toBe(F(100));
  return w.cpu.exits["ept-violation"] - before;
}

function toggle(w: World): void {
  expect(w.cpu.writeCr0(WP_OFF)).toBeNull();
  expect(w.cpu.writeCr0(WP_ON)).toBeNull();
}

describe("CR0.WP semantics through EPT", () => {
  for (const mmu of ["tdp", "legacy"] as const) {
    it(`a kernel write to read-only data faults with WP = 1 and succeeds with WP = 0 (${mmu})`, async () => {
      const w = await world(mmu, "baseline");
      expect(w.cpu.access(RO, "write", false)).toEqual({ cr2: RO, errorCode: 0b11 });
      expect(w.cpu.writeCr0(WP_OFF)).toBeNull();
      expect(w.cpu.access(RO, "write", false)).toBe(F(100));
      expect(w.cpu.writeCr0(WP_ON)).toBeNull();
      expect(w.cpu.access(RO, "write", false)).toEqual({ cr2: RO, errorCode: 0b11 });
      expect(w.cpu.access(RO, "write", true)).toEqual({ cr2: RO, errorCode: 0b111 });
    });
  }
});

describe("a CR0.WP toggle under each policy", () => {
  it("baseline TDP: every toggle exits, frees the root with its whole tree, and every page faults in again", async () => {
    const w = await world("tdp", "baseline");
    const first = touch(w);
    expect(first).toBeGreaterThan(9);
    const s0 = { ...w.vm.mmu.stats };
    toggle(w);
    expect(w.cpu.exits.cr0).toBe(2);
    expect(w.vm.mmu.stats.rootsFreed - s0.rootsFreed).toBe(2);
    expect(w.vm.mmu.stats.rootsBuilt - s0.rootsBuilt).toBe(2);
    expect(w.vm.mmu.stats.spteZapped).toBeGreaterThan(s0.spteZapped);
    expect(touch(w)).toBe(first);
  });

  it("baseline legacy: the roots of both WP values stay hashed, so after one round no toggle faults anything in", async () => {
    const w = await world("legacy", "baseline");
    touch(w);
    toggle(w);
    touch(w);
    const s0 = { ...w.vm.mmu.stats };
    toggle(w);
    expect(w.cpu.exits.cr0).toBe(4);
    expect(touch(w)).toBe(0);
    expect(w.vm.mmu.stats.rootsBuilt).toBe(s0.rootsBuilt);
    expect(w.vm.mmu.stats.rootsReused - s0.rootsReused).toBe(2);
    expect(w.vm.mmu.stats.spteZapped).toBe(0);
  });

  it("preserve-roots TDP: the MMU's own reference keeps both roots alive, so toggling back faults nothing in", async () => {
    const w = await world("tdp", "preserve-roots");
    touch(w);
    toggle(w);
    touch(w);
    const s0 = { ...w.vm.mmu.stats };
    toggle(w);
    expect(touch(w)).toBe(0);
    expect(w.vm.mmu.stats.rootsFreed).toBe(s0.rootsFreed);
    expect(w.vm.mmu.stats.rootsReused - s0.rootsReused).toBe(2);
  });

  for (const mmu of ["tdp", "legacy"] as const) {
    it(`krause-p1-3 (${mmu}): a toggle still exits but only re-initialises the MMU`, async () => {
      const w = await world(mmu, "krause-p1-3");
      touch(w);
      const root = w.cpu.currentRoot();
      toggle(w);
      expect(w.cpu.exits.cr0).toBe(2);
      expect(w.cpu.stats.reinitOnly).toBe(2);
      expect(w.cpu.stats.resets).toBe(0);
      expect(w.cpu.currentRoot()).toEqual(root);
      expect(touch(w)).toBe(0);
    });

    it(`krause2023 (${mmu}): CR0.WP is guest-owned, a toggle does not exit`, async () => {
      const w = await world(mmu, "krause2023");
      touch(w);
      const c0 = w.cpu.cycles;
      toggle(w);
      expect(w.cpu.exits.cr0).toBe(0);
      expect(w.cpu.stats.nativeCr0).toBe(2);
      expect(w.cpu.cycles - c0).toBeLessThan(w.vm.costs.vmExit);
      expect(touch(w)).toBe(0);
      expect(w.cpu.writeCr0(WP_ON | CR0_CD)).toBeNull();
      expect(w.cpu.exits.cr0).toBe(1);
      expect(w.cpu.stats.resets).toBe(0);
    });
  }

  it("the toggle costs are ordered as the seed's table: baseline TDP ≫ baseline legacy > krause-p1-3 > krause2023", async () => {
    const cost: Record<string, number> = {};
    for (const [mmu, policy] of [["tdp", "baseline"], ["legacy", "baseline"], ["tdp", "krause-p1-3"], ["tdp", "krause2023"]] as const) {
      const w = await world(mmu, policy);
      touch(w);
      toggle(w);
      touch(w);
      const c0 = w.cpu.cycles;
      for (let i = 0; i < 4; i++) { toggle(w); touch(w); }
      cost[`${mmu}/${policy}`] = w.cpu.cycles - c0;
    }
    expect(cost["tdp/baseline"]!).toBeGreaterThan(3 * cost["legacy/baseline"]!);
    expect(cost["legacy/baseline"]!).toBeGreaterThan(cost["tdp/krause-p1-3"]!);
    expect(cost["tdp/krause-p1-3"]!).toBeGreaterThan(cost["tdp/krause2023"]!);
  });
});

describe("keep-roots: the TDP root role without CR0.WP (2ba676774dfc), a toggle still unloading the root", () => {
  it("alone on its root, a TDP vCPU's unload frees the tree, so every toggle still rebuilds it (edbdb43fc96b's 1-vCPU case)", async () => {
    const w = await world("tdp", "keep-roots");
    const first = touch(w);
    toggle(w);
    expect(w.cpu.stats.resets).toBe(2);
    expect(w.vm.mmu.stats.rootsFreed).toBe(2);
    expect(touch(w)).toBe(first);
  });

  it("with a second vCPU holding the same root, a toggle unloads and reloads that root: same tree, no fault, one local flush per load", async () => {
    const w = await world("tdp", "keep-roots", 1, 2);
    touch(w);
    const root = w.cpu.currentRoot();
    expect(w.vm.vcpus[1]!.currentRoot()).toEqual(root);
    const flushes = w.cpu.stats.localFlushes;
    toggle(w);
    expect(w.cpu.currentRoot()).toEqual(root);
    expect(w.cpu.stats.localFlushes - flushes).toBe(2);
    expect(w.vm.mmu.stats.rootsFreed).toBe(0);
    expect(touch(w)).toBe(0);
  });

  it("under baseline the same two vCPUs hold different roots once WP differs, and the one left alone dies", async () => {
    const w = await world("tdp", "baseline", 1, 2);
    touch(w);
    expect(w.cpu.writeCr0(WP_OFF)).toBeNull();
    expect(w.cpu.currentRoot()!.hpa).not.toBe(w.vm.vcpus[1]!.currentRoot()!.hpa);
    expect(w.vm.mmu.stats.rootsFreed).toBe(0);
    expect(w.cpu.writeCr0(WP_ON)).toBeNull();
    expect(w.vm.mmu.stats.rootsFreed).toBe(1);
    expect(touch(w)).toBe(0);
  });

  it("the legacy MMU finds the same hashed root again after every unload", async () => {
    const w = await world("legacy", "keep-roots");
    touch(w);
    const root = w.cpu.currentRoot();
    toggle(w);
    expect(w.cpu.currentRoot()).toEqual(root);
    expect(touch(w)).toBe(0);
  });
});

describe("SMM entry and RSM", () => {
  it("an SMI runs SMM code with paging off on a separate (smm) root, and RSM returns to the guest's translations", async () => {
    const w = await world("tdp", "preserve-roots");
    touch(w);
    const normal = w.cpu.currentRoot()!;
    w.cpu.smi();
    expect(w.cpu.inSmm).toBe(true);
    expect(w.cpu.currentRoot()!.hpa).not.toBe(normal.hpa);
    expect(w.cpu.access(0x3_0000n, "write", false)).toBe(0x3_0000n);
    expect(w.cpu.access(U, "read", false)).toBe(U);
    w.cpu.rsm();
    expect(w.cpu.inSmm).toBe(false);
    expect(w.cpu.currentRoot()).toEqual(normal);
    expect(touch(w)).toBe(0);
    expect(w.cpu.exits.smi).toBe(1);
    expect(w.cpu.exits.rsm).toBe(1);
  });

  it("baseline TDP rebuilds the whole tree after every SMM round trip; Sean's preserve-roots does not", async () => {
    const faults: Record<string, number> = {};
    for (const policy of ["baseline", "preserve-roots", "krause2023"]) {
      const w = await world("tdp", policy);
      touch(w);
      w.cpu.smi();
      w.cpu.rsm();
      faults[policy] = touch(w);
    }
    expect(faults.baseline).toBeGreaterThan(9);
    expect(faults["preserve-roots"]).toBe(0);
    expect(faults.krause2023).toBe(faults.baseline);
  });

  it("SMI in SMM and RSM outside SMM are refused", async () => {
    const w = await world("tdp", "baseline");
    expect(() => w.cpu.rsm()).toThrow(/RSM outside SMM/);
    w.cpu.smi();
    expect(() => w.cpu.smi()).toThrow(/SMI while in SMM/);
  });
});

describe("other control registers", () => {
  it("a CR4.PGE toggle is guest-owned; a CR4.SMEP change exits and resets the MMU", async () => {
    const w = await world("tdp", "keep-roots");
    touch(w);
    const cr4 = LONG_MODE.cr4 | CR4.PGE;
    expect(w.cpu.writeCr4(cr4 & ~CR4.PGE)).toBeNull();
    expect(w.cpu.writeCr4(cr4)).toBeNull();
    expect(w.cpu.exits.cr4).toBe(0);
    expect(w.cpu.writeCr4(cr4 | CR4.SMEP)).toBeNull();
    expect(w.cpu.exits.cr4).toBe(1);
    expect(w.cpu.stats.resets).toBe(1);
  });

  it("MOV CR3, INVLPG and INVPCID run without exits under EPT", async () => {
    const w = await world("legacy", "baseline");
    touch(w);
    const cr3 = w.cpu.hw.control().cr3;
    expect(w.cpu.writeCr3(cr3)).toBeNull();
    w.cpu.invlpg(U);
    expect(w.cpu.invpcid(2, 0)).toBeNull();
    expect(Object.values(w.cpu.exits).reduce((a, b) => a + b, 0)).toBe(w.cpu.exits["ept-violation"]);
  });
});

describe("exceptions", () => {
  it("a #DB (single-step trap) exits and is reinjected, as KVM on VMX intercepts it; a #BP does not exit", async () => {
    const w = await world("tdp", "krause2023");
    const c0 = w.cpu.cycles;
    w.cpu.exception(1);
    expect(w.cpu.exits.exception).toBe(1);
    expect(w.cpu.cycles - c0).toBe(w.vm.costs.vmExit);
    w.cpu.exception(3);
    expect(w.cpu.exits.exception).toBe(1);
  });
});

describe("mmu_lock (v5.10's spinlock, in simulated time)", () => {
  it("one vCPU never waits for it, however many faults and root rebuilds it does", async () => {
    const w = await world("tdp", "baseline");
    for (let i = 0; i < 5; i++) { touch(w); toggle(w); }
    expect(w.cpu.stats.mmuLockWait).toBe(0);
    expect(w.vm.mmuLock.acquisitions).toBeGreaterThan(10);
  });

  it("a vCPU that faults while another holds it for its own fault spins until the holder is done; one that faults later does not", async () => {
    for (const mmu of ["tdp", "legacy"] as const) {
      const w = await world(mmu, "baseline", 1, 2);
      const [a, b] = [w.vm.vcpus[0]!, w.vm.vcpus[1]!];
      const t = Math.max(a.cycles, b.cycles) + 1e6;
      a.cycles = t;
      b.cycles = t;
      expect(a.access(w.pages[0]!, "read", true)).toBe(F(0));
      expect(b.access(w.pages[1]!, "read", true)).toBe(F(1));
      expect(a.stats.mmuLockWait, mmu).toBe(0);
      expect(b.stats.mmuLockWait, mmu).toBeGreaterThan(0);
      expect(b.stats.mmuLockWait, mmu).toBeLessThan(a.cycles - t);
      const waited = b.stats.mmuLockWait;
      b.cycles = a.cycles + 1e6;
      expect(b.access(w.pages[2]!, "read", true)).toBe(F(2));
      expect(b.stats.mmuLockWait, mmu).toBe(waited);
    }
  });
});

describe("remote flushes and guest mode", () => {
  it("a vCPU is outside guest mode from its exit to its re-entry, and a remote flush at that time does not wait for it; at any other time it does", async () => {
    // An EPT violation that takes 100 000 cycles to handle: a window wide enough for the other vCPU's whole CR0 exit.
    const w = await world("tdp", "baseline", 1, 2, { ...DEFAULT_COSTS, tdpFault: 100_000 });
    const [a, b] = [w.vm.vcpus[0]!, w.vm.vcpus[1]!];
    const openWindow = (): void => {
      expect(a.writeCr0(WP_OFF)).toBeNull();
      expect(a.access(w.pages[0]!, "read", true)).toBe(F(0)); // builds tables in the WP = 0 tree
    };
    const closeWindow = (): number => {
      expect(a.writeCr0(WP_ON)).toBeNull(); // its last reference goes: a v5.10 free with per-table flushes
      return a.stats.flushIpis + a.stats.flushIpisSkipped;
    };
    openWindow();
    // B's exit starts just before A's close: the access's 2D walk (a few hundred cycles) runs in guest mode first.
    const t = a.cycles - 1000;
    b.cycles = t;
    expect(b.access(w.pages[1]!, "read", true)).toBe(F(1));
    expect(b.outsideGuestAt(t + 1000)).toBe(true);
    expect(b.outsideGuestAt(t + 99_000)).toBe(true);
    expect(b.outsideGuestAt(t - 1)).toBe(false);
    expect(b.outsideGuestAt(b.cycles)).toBe(false);
    const inExit = closeWindow();
    expect(inExit).toBeGreaterThan(0);
    expect(a.stats.flushIpis).toBe(0);
    expect(a.stats.flushIpisSkipped).toBe(inExit);
    expect(b.exits.kick).toBe(0);
    a.cycles = b.cycles + 1e6;
    openWindow();
    const b0 = b.cycles, tClose = a.cycles;
    const inGuest = closeWindow() - inExit;
    expect(inGuest).toBeGreaterThan(0);
    expect(a.stats.flushIpis).toBe(inGuest);
    // Each IPI kicks B out of guest mode: an exit, the flush and the re-entry, charged to B and remembered as host time.
    expect(b.exits.kick).toBe(inGuest);
    expect(b.cycles - b0).toBe(inGuest * (DEFAULT_COSTS.vmExit + DEFAULT_COSTS.localFlush));
    expect(b.outsideGuestAt(tClose + 3000)).toBe(true);
  });
});

describe("policies", () => {
  it("every policy names its switches and the names are the contract", () => {
    expect(Object.keys(CR0WP_POLICIES)).toEqual(["baseline", "keep-roots", "preserve-roots", "krause-p1-3", "krause2023"]);
    expect(CR0WP_POLICIES.krause2023!.wpGuestOwned).toBe(true);
    expect(CR0WP_POLICIES.baseline!.wpInDirectRootRole).toBe(true);
  });
});
