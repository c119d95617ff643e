// A guest vCPU running under EPT on a direct MMU (KVM with tdp_enabled): the
// guest's own CR0/CR3/CR4 are in hardware, its tables walked by the hardware's
// 2D walk; the VM exits that remain are EPT violations (the direct MMU builds
// the EPT tables on demand), intercepted CR0/CR4 bits, SMI/RSM and IPIs. The
// CR0.WP and SMM paths follow the selected policy (src/kvm/cr0wp-policy.ts):
// KVM arch/x86/kvm/x86.c kvm_set_cr0, kvm_post_set_cr0, kvm_set_cr4,
// enter_smm / emulator RSM (kvm_smm_changed); arch/x86/kvm/mmu/mmu.c
// kvm_mmu_reset_context, kvm_mmu_unload, kvm_mmu_load (which flushes the
// current context after loading a root), kvm_mmu_new_pgd (root cache);
// arch/x86/kvm/vmx/vmx.c CR0/CR4 guest/host masks under EPT.
//
// Implements the guest's CPU (src/guest/cpu.ts), so any guest model runs on
// it unchanged.

import type { X86Vcpu } from "../x86/vcpu.js";
import type { GuestMemory } from "../memory.js";
import type { X86Access } from "../x86/regs.js";
import { CR0, CR4, EFER } from "../x86/regs.js";
import type { GuestCpu, GuestException } from "../guest/cpu.js";
import { INTERCEPTED_VECTORS, type CostModel } from "./cost-model.js";
import type { Cr0WpPolicy } from "./cr0wp-policy.js";
import { type DirectMmu, type DirectMmuStats, ROLE_SMM, directEptp } from "./direct-mmu.js";
import { accessManyOnHardware } from "./batch-access.js";
import { HwMeter } from "./hw-meter.js";
import type { SimLock } from "./sim-lock.js";
import { GuestModeLog, flushRemoteTlbs, type KickTarget } from "./guest-mode.js";
import { roleAt, ACC_ALL, ROLE_CR0_WP, ROLE_EFER_NX } from "./shadow-mmu.js";

/** Why the guest exited to the hypervisor. */
export type TdpExitReason = "ept-violation" | "mmio" | "cr0" | "cr4" | "smi" | "rsm" | "ipi" | "exception" | "kick";

/** CR4 bits in the MMU role (KVM_MMU_CR4_ROLE_BITS): changing one exits and resets the MMU; the rest are guest-owned under EPT. */
const CR4_ROLE_BITS = CR4.PSE | CR4.PAE | CR4.SMEP | CR4.SMAP | CR4.PKE | CR4.LA57 | CR4.PCIDE;

/** CR0 bits cleared on SMM entry (SDM Vol.3C §32.5.1, Table 32-4: PE, EM, TS, PG). */
const CR0_SMM_CLEAR = CR0.PE | (1n << 2n) | (1n << 3n) | CR0.PG;

const GP: GuestException = { gp: true };

/** CR0 bits the guest owns under EPT on VMX (KVM_POSSIBLE_CR0_GUEST_BITS: TS; WP joins with fb509f76acc8). */
const CR0_TS = 1n << 3n;

/** The remote-flush side of a VM: every vCPU flushes its EPT-derived TLB entries. */
export type TdpFlushTarget = KickTarget;

/** What the vCPU needs from its VM. */
export interface TdpVmContext {
  readonly mmu: DirectMmu;
  readonly policy: Cr0WpPolicy;
  readonly costs: CostModel;
  readonly memory: GuestMemory;
  /** Guest RAM [0, ramBytes): the one memslot; other gpas are MMIO. */
  readonly ramBytes: bigint;
  /** EPT walk length of every root (4 or 5). */
  readonly levels: 4 | 5;
  readonly adEnabled: boolean;
  /** All vCPUs of the VM (remote TLB flushes). */
  readonly vcpus: TdpFlushTarget[];
  /** kvm->mmu_lock, a v5.10 spinlock in simulated time (src/kvm/sim-lock.ts). */
  readonly mmuLock: SimLock;
}

interface Root {
  hpa: bigint;
  role: number;
}

/** Per-vCPU counters beside the exits (the MMU's own are VM-wide). */
export interface TdpVcpuStats {
  /** kvm_mmu_reset_context runs. */
  resets: number;
  /** WP-only toggles handled by kvm_init_mmu alone (krause-p1-3). */
  reinitOnly: number;
  /** CR0 writes the guest did without an exit (guest-owned WP). */
  nativeCr0: number;
  /** Local flushes of the current EPT context (kvm_mmu_load, root switches). */
  localFlushes: number;
  /** Remote flushes received. */
  remoteFlushes: number;
  smmEntries: number;
  /** Cycles spent spinning on mmu_lock (charged to this vCPU's time). */
  mmuLockWait: number;
  /** Remote-flush requests this vCPU sent that waited for a target in guest mode (per target). */
  flushIpis: number;
  /** Remote-flush requests that found the target outside guest mode and did not wait for it. */
  flushIpisSkipped: number;
}


export class TdpVcpu implements GuestCpu, TdpFlushTarget {
  cycles = 0;
  readonly exits: Record<TdpExitReason, number> = { "ept-violation": 0, mmio: 0, cr0: 0, cr4: 0, smi: 0, rsm: 0, ipi: 0, exception: 0, kick: 0 };
  readonly stats: TdpVcpuStats = { resets: 0, reinitOnly: 0, nativeCr0: 0, localFlushes: 0, remoteFlushes: 0, smmEntries: 0, mmuLockWait: 0, flushIpis: 0, flushIpisSkipped: 0 };
  /** Guest #PFs delivered. */
  injected = 0;
  accesses = 0;
  readonly hasInvpcid = true;
  private root: Root | undefined;
  private smm = false;
  /** Control state saved in SMRAM on SMM entry (restored by RSM). */
  private smramState: { cr0: bigint; cr3: bigint; cr4: bigint; efer: bigint } | undefined;
  /** The hardware's hits and walk references, charged as simulated time. */
  private readonly meter: HwMeter;
  private readonly vpid: number;
  /** Time spent handling exits, for remote flushes (outsideGuestAt). */
  private readonly guestMode = new GuestModeLog();
  /** Remote-flush requests sent: waited for, or skipped (target outside guest mode). */
  private readonly ipiCount = { ipis: 0, skipped: 0 };

  constructor(
    readonly index: number,
    private readonly vm: TdpVmContext,
    readonly hw: X86Vcpu,
    cHits: number,
    cRefs: number,
  ) {
    this.meter = new HwMeter(hw, cHits, cRefs);
    this.vpid = index + 1;
  }

  charge(cycles: number): void {
    this.cycles += cycles;
  }

  work(n: number): void {
    this.cycles += n;
  }

  /**
   * A VM exit for `reason`, handled by `f`: the exit round trip charged, the
   * handling run, and the interval from the exit to the re-entry remembered
   * as time outside guest mode.
   */
  private handled<T>(reason: TdpExitReason, f: () => T): T {
    const from = this.cycles;
    this.exits[reason]++;
    this.cycles += this.vm.costs.vmExit;
    const r = f();
    this.guestMode.record(from, this.cycles);
    return r;
  }

  /**
   * `times` KVM_REQ_TLB_FLUSH IPIs received in guest mode at `t`: each an exit
   * (reason "kick"), the flush (kvm_vcpu_flush_tlb_all: INVEPT all-context,
   * done by flushHardwareAll) and the re-entry, charged to this vCPU and
   * remembered as time outside guest mode from `t`.
   */
  kicked(t: number, times: number): void {
    this.exits.kick += times;
    this.cycles += this.guestMode.kicked(t, times, this.vm.costs);
  }

  outsideGuestAt(t: number): boolean {
    return this.guestMode.outsideAt(t, this.cycles);
  }

  /** Whether the vCPU is in SMM. */
  get inSmm(): boolean {
    return this.smm;
  }

  /** The root the vCPU runs on now (undefined between an unload and the next entry). */
  currentRoot(): { hpa: bigint; role: number } | undefined {
    return this.root ? { ...this.root } : undefined;
  }

  // ---- roots -------------------------------------------------------------------

  /** The root role of the current guest mode (KVM kvm_calc_tdp_mmu_root_page_role; v5.10 copied the CPU's WP/SMEP/SMAP/NX bits). */
  rootRole(): number {
    const c = this.hw.control();
    let base: number;
    if (this.vm.policy.wpInDirectRootRole) {
      // v5.10 kvm_calc_tdp_mmu_root_page_role → kvm_calc_mmu_role_common: nxe and
      // cr0_wp as the CPU has them (the *_andnot_wp bits are shadow-only).
      base = (c.efer & EFER.NXE) !== 0n ? ROLE_EFER_NX : 0;
      if ((c.cr0 & CR0.WP) !== 0n) base |= ROLE_CR0_WP;
    } else {
      // The root_role of a TDP MMU after the cpu_role split: cr0_wp and efer_nx fixed to 1.
      base = ROLE_EFER_NX | ROLE_CR0_WP;
    }
    if (this.smm) base |= ROLE_SMM;
    return roleAt(base, this.vm.levels, ACC_ALL, true);
  }

  /** Starts the guest with control registers `c`: loads them into hardware and loads the first root. No exits are counted. */
  start(c: { cr0: bigint; cr3: bigint; cr4: bigint; efer: bigint }): void {
    this.hw.setControl({ ...c, pkru: 0n, rflags: 2n });
    this.hw.setTlbEnabled(true);
    this.mmuLoad();
  }

  /**
   * kvm_mmu_load: a root for the current role (found or built by the MMU),
   * the EPTP loaded, and the current context flushed (a new or switched root
   * may have entries cached from a previous life of the same EP4TA).
   */
  private mmuLoad(): void {
    this.acquireRoot();
    this.enterRoot();
  }

  /** The part of kvm_mmu_load under mmu_lock: the root for the current role found or built. */
  private acquireRoot(): void {
    const role = this.rootRole();
    const { hpa, flush } = this.vm.mmu.acquireRoot(role);
    this.charge(this.vm.costs.hashLookup);
    if (flush) this.flushRemote();
    this.root = { hpa, role };
  }

  private enterRoot(): void {
    const eptp = directEptp(this.root!.hpa, this.vm.levels, this.vm.adEnabled);
    this.hw.setVmcs({ eptp, vpid: this.vpid });
    this.flushCurrent();
  }

  /** KVM_REQ_TLB_FLUSH_CURRENT under EPT: INVEPT single-context of the loaded EPTP. */
  private flushCurrent(): void {
    const eptp = this.hw.vmcs().eptp;
    if (eptp !== null && this.hw.invept(1, eptp)) throw new Error("vmmu: INVEPT refused for a direct-MMU EPTP (bug)");
    this.stats.localFlushes++;
    this.charge(this.vm.costs.localFlush);
  }

  /** Remote flush target: drop every EPT-derived entry (INVEPT all-context). */
  flushHardwareAll(): void {
    if (this.hw.invept(2)) throw new Error("vmmu: INVEPT all-context refused (bug)");
    this.stats.remoteFlushes++;
  }

  /** KVM_REQ_MMU_FREE_OBSOLETE_ROOTS + kvm_mmu_load at entry: a root invalidated (fast zap) or unloaded is replaced. */
  private reloadIfNeeded(): void {
    if (this.root && this.vm.mmu.isValidRoot(this.root.hpa)) return;
    this.locked(() => this.unloadAll());
    this.locked(() => this.acquireRoot());
    this.enterRoot();
  }

  /**
   * kvm_mmu_unload: the vCPU's root released. (prev_roots stay empty for a
   * direct MMU outside nested guests: MOV CR3 does not exit under EPT, so
   * kvm_mmu_new_pgd never caches one.)
   */
  private unloadAll(): void {
    if (!this.root) return;
    const flushes = this.vm.mmu.releaseRoot(this.root.hpa);
    this.root = undefined;
    this.flushRemote(flushes);
  }

  /**
   * kvm_mmu_reset_context after a role-relevant change (every KVM version the
   * policies cover):
   * 1. kvm_init_mmu (mmuReinit);
   * 2. kvm_mmu_unload: every root released (a v5.10 TDP root dies at refcount 0
   *    with its whole tree unless another vCPU holds it or the MMU does under
   *    preserve-roots; a legacy root stays hashed);
   * 3. kvm_mmu_load at the next entry: the root for the (new) role, found or
   *    built, and the current context flushed.
   */
  private resetContext(): void {
    this.stats.resets++;
    this.charge(this.vm.costs.mmuReinit);
    this.locked(() => this.unloadAll());
    this.locked(() => this.acquireRoot());
    this.enterRoot();
  }

  /**
   * Runs `f` under mmu_lock: its simulated cost — the MMU's work (pages
   * allocated and freed, SPTEs installed and zapped: mmuWork) and the remote
   * flushes it waits for — is the hold; the lock's calendar says how long the
   * vCPU spun before it got the lock, charged on top. (So the flushes inside
   * see the other vCPUs' guest mode as of the request, not of the grant.)
   */
  private locked<T>(f: () => T): T {
    const t = this.cycles;
    const r = this.mmuWork(f);
    const wait = this.vm.mmuLock.acquire(t, this.cycles - t);
    this.cycles += wait;
    this.stats.mmuLockWait += wait;
    return r;
  }

  /** Runs a direct-MMU operation and charges what it did (pages allocated and freed, SPTEs installed and zapped). */
  private mmuWork<T>(f: () => T): T {
    const s = this.vm.mmu.stats;
    const b: DirectMmuStats = { ...s };
    const r = f();
    const k = this.vm.costs;
    this.charge(k.spAlloc * (s.spAllocated - b.spAllocated) + k.spteInstall * (s.spteInstalled - b.spteInstalled)
      + k.spteZap * (s.spteZapped - b.spteZapped) + k.zap * (s.spFreed - b.spFreed));
    return r;
  }

  /**
   * `times` kvm_flush_remote_tlbs calls (KVM_REQ_TLB_FLUSH, a waiting
   * request): every vCPU flushes (INVEPT all-context), the ones in guest mode
   * are IPI'd and waited for (flushRemoteTlbs, src/kvm/guest-mode.ts), and
   * the caller flushes once (its request bit coalesces until it enters).
   */
  private flushRemote(times = 1): void {
    if (times <= 0) return;
    this.charge(flushRemoteTlbs(this, this.vm.vcpus, this.cycles, times, this.vm.costs.remoteFlush, this.ipiCount));
    this.stats.flushIpis = this.ipiCount.ipis;
    this.stats.flushIpisSkipped = this.ipiCount.skipped;
    this.charge(this.vm.costs.localFlush);
  }

  // ---- EPT violations ------------------------------------------------------------

  /** An EPT-violation exit: the direct MMU maps the gpa (kvm_tdp_mmu_page_fault / direct_page_fault). */
  private eptViolation(gpa: bigint, qualification: number): void {
    this.handled("ept-violation", () => {
      this.charge(this.vm.costs.tdpFault);
      this.locked(() => {
        const r = this.vm.mmu.pageFault(this.root!.hpa, gpa, (qualification & 2) !== 0, (qualification & 4) !== 0);
        if (r.flush) this.flushRemote();
      });
    });
  }

  /**
   * An access to a gpa outside every memslot: KVM emulates it as MMIO (exit to
   * the device model). The final access reaches the gpa (its result); a guest
   * paging structure in MMIO space is not something a walk can use.
   */
  private mmio(gpa: bigint, qualification: number, va: bigint): bigint {
    if ((qualification & 0x100) === 0) {
      throw new Error(`vmmu: the guest's paging structure for 0x${va.toString(16)} is at gpa 0x${gpa.toString(16)}, outside guest RAM (MMIO page tables are not modelled)`);
    }
    this.handled("mmio", () => this.charge(this.vm.costs.emulate));
    return gpa;
  }

  // ---- memory accesses -------------------------------------------------------------

  /** The host-physical address of `va` for `access`, handling EPT violations; a guest exception otherwise. */
  private resolve(va: bigint, access: X86Access, user: boolean): bigint | GuestException {
    for (let tries = 0; tries < 16; tries++) {
      this.reloadIfNeeded();
      this.meter.mark();
      const hpa = this.hw.translatePa(va, access, user);
      this.cycles += this.meter.single(this.vm.costs);
      if (hpa !== undefined) return hpa;
      const f = this.hw.lastFault();
      if (f.kind === "ept-violation") {
        if (f.gpa >= this.vm.ramBytes) return this.mmio(f.gpa, f.qualification, va);
        this.eptViolation(f.gpa, f.qualification);
        continue;
      }
      if (f.kind === "page-fault") { this.injected++; return { cr2: va, errorCode: f.errorCode }; }
      if (f.kind === "general-protection") return GP;
      throw new Error(`vmmu: ${f.kind} on ${access} of 0x${va.toString(16)} under a direct MMU (bug)`);
    }
    throw new Error(`vmmu: direct MMU did not converge on ${access} of 0x${va.toString(16)} (bug)`);
  }

  access(va: bigint, access: X86Access, user: boolean): bigint | GuestException {
    this.accesses++;
    return this.resolve(va, access, user);
  }

  accessMany(va: BigUint64Array, kinds: Uint8Array, n: number, user: boolean): { done: number; exception?: GuestException } {
    return accessManyOnHardware(this.hw, va, kinds, n, (i, m) => {
      this.reloadIfNeeded();
      this.meter.mark();
      const stop = this.hw.translateUntilFault(i, m, user);
      this.cycles += this.meter.run(this.vm.costs);
      this.accesses += stop - i;
      return stop;
    }, (a, k) => this.access(a, k, user));
  }

  store64(va: bigint, value: bigint): GuestException | null {
    const hpa = this.resolve(va, "write", false);
    if (typeof hpa !== "bigint") return hpa;
    this.vm.memory.write64(hpa, value);
    return null;
  }

  zeroPage(va: bigint): GuestException | null {
    const hpa = this.resolve(va & ~0xfffn, "write", false);
    if (typeof hpa !== "bigint") return hpa;
    this.vm.memory.fill(hpa, 4096, 0);
    this.charge(512);
    return null;
  }

  readPhys64(gpa: bigint): bigint {
    return this.vm.memory.read64(gpa);
  }

  // ---- control registers and TLB instructions ----------------------------------------

  /** MOV CR3: not intercepted under EPT (CR3-load exiting off while paging). */
  writeCr3(value: bigint): GuestException | null {
    this.charge(this.vm.costs.nativeCr3);
    return this.hw.writeCr3(value) ? GP : null;
  }

  /**
   * MOV CR4: guest-owned bits (PGE, …) run natively; a change of a role bit
   * exits (CR4 guest/host mask) and resets the MMU (kvm_post_set_cr4).
   */
  writeCr4(value: bigint): GuestException | null {
    const old = this.hw.control().cr4;
    if (((old ^ BigInt.asUintN(64, value)) & CR4_ROLE_BITS) === 0n) {
      this.charge(this.vm.costs.nativeCr3);
      return this.hw.writeCr4(value) ? GP : null;
    }
    return this.handled("cr4", () => {
      if (this.hw.writeCr4(value)) return GP;
      this.resetContext();
      return null;
    });
  }

  /**
   * MOV CR0 (VMX CR0 guest/host mask, kvm_set_cr0 + kvm_post_set_cr0), per policy:
   * 1. Only guest-owned bits change (TS; WP too under krause2023): no exit, the
   *    CPU writes it.
   * 2. Otherwise a VM exit; the write is checked as the CPU would (#GP).
   * 3. WP-only change: with paging off nothing more (p3); with p2 only kvm_init_mmu.
   * 4. A change of PG or WP: kvm_mmu_reset_context.
   */
  writeCr0(value: bigint): GuestException | null {
    const old = this.hw.control().cr0;
    const changed = (old ^ BigInt.asUintN(64, value)) & ~(1n << 4n);
    const p = this.vm.policy;
    const guestOwned = CR0_TS | (p.wpGuestOwned ? CR0.WP : 0n);
    if ((changed & ~guestOwned) === 0n) {
      this.stats.nativeCr0++;
      this.charge(this.vm.costs.nativeCr3);
      return this.hw.writeCr0(value) ? GP : null;
    }
    return this.handled("cr0", () => {
      if (this.hw.writeCr0(value)) return GP;
      if (changed === CR0.WP) {
        if (p.ignoreWpNonPaging && (old & CR0.PG) === 0n) return null;
        if (p.wpOnlyReinit) {
          this.stats.reinitOnly++;
          this.charge(this.vm.costs.mmuReinit);
          return null;
        }
      }
      if ((changed & (CR0.PG | CR0.WP)) !== 0n) this.resetContext();
      return null;
    });
  }

  invlpg(va: bigint): void {
    this.charge(this.vm.costs.nativeCr3);
    this.hw.invlpg(va);
  }

  invpcid(type: number, pcid: number, va?: bigint): GuestException | null {
    this.charge(this.vm.costs.nativeCr3);
    return this.hw.invpcid(type, pcid, va) ? GP : null;
  }

  sendIpi(_target: number): void {
    this.handled("ipi", () => undefined);
  }

  /** An intercepted exception vector (INTERCEPTED_VECTORS) exits and is reinjected; others are delivered without KVM. */
  exception(vector: number): void {
    if (INTERCEPTED_VECTORS.has(vector)) this.handled("exception", () => undefined);
  }

  // ---- SMM ---------------------------------------------------------------------------

  /**
   * An SMI (KVM enter_smm): the state is saved to SMRAM, CR0.PE/EM/TS/PG, CR4
   * and EFER are cleared (SDM Vol.3C §32.5.1), the role's smm bit is set and
   * kvm_smm_changed resets the MMU. SMM code then runs with paging off.
   * Throws if already in SMM (SMIs are latched, not nested).
   */
  smi(): void {
    if (this.smm) throw new Error("vmmu: SMI while in SMM (SMIs are blocked in SMM)");
    this.handled("smi", () => {
      this.charge(this.vm.costs.smmStateSave);
      const c = this.hw.control();
      this.smramState = { cr0: c.cr0, cr3: c.cr3, cr4: c.cr4, efer: c.efer };
      this.smm = true;
      this.stats.smmEntries++;
      this.hw.setControl({ cr0: c.cr0 & ~CR0_SMM_CLEAR, cr4: 0n, efer: 0n });
      this.resetContext();
    });
  }

  /**
   * RSM (emulated by KVM, em_rsm): the smm bit clears (kvm_smm_changed: an MMU
   * reset), then the emulator reloads CR4, CR0, CR4 and EFER, each re-initialising
   * the MMU once more (charged as mmuReinit; the unloads find no root). Throws
   * outside SMM (RSM raises #UD there).
   */
  rsm(): void {
    if (!this.smm) throw new Error("vmmu: RSM outside SMM (#UD)");
    this.handled("rsm", () => {
      this.charge(this.vm.costs.smmStateSave);
      const s = this.smramState!;
      this.smm = false;
      this.smramState = undefined;
      this.hw.setControl(s);
      this.resetContext();
      this.charge(3 * this.vm.costs.mmuReinit);
    });
  }

  /** Releases every root (VM teardown). */
  destroy(): void {
    this.unloadAll();
  }
}
