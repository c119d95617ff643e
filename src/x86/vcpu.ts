// One x86-64 vCPU: its control registers, its TLB, and the instructions that
// change either, with their architectural effects. The wasm core does the
// walks and flushes; this file decides which flush each instruction implies
// (Intel SDM Vol.3A §4.10.4.1, CR3 per §4.5 / §4.10.1) and raises
// #GP where the SDM does.

import { RIGHTS, type Core } from "../core/load.js";
import type { GuestMemory } from "../memory.js";
import { hex } from "../addr.js";
import { VcpuBase, checkFastArgs, type Batch } from "../core/vcpu-base.js";
import {
  CR0, CR0_DEFINED, CR3_NOFLUSH, CR3_PCID_MASK, CR4, EFER, ACCESS_CODE, cr0Invalid, cr4Invalid, type X86Access,
} from "./regs.js";
import { bigintArg, boolArg, intArg, integerArg, optBoolArg, optionsObject, reg64Arg, show, u64ArrayArg, u8ArrayArg } from "../validate.js";

export interface X86Control {
  cr0: bigint; cr3: bigint; cr4: bigint; efer: bigint; pkru: bigint; rflags: bigint;
}

/** An architectural fault: #PF (14), #GP (13), or an abort (-1): a table pointer outside every memslot. */
export interface X86Fault {
  vector: number;
  errorCode: number;
  /** Paging level where the walk stopped (KVM numbering, 1 = PTE); 0 for #GP. */
  level: number;
  kind: "page-fault" | "general-protection" | "abort";
  /** For an abort: the guest-physical address of the entry the walk could not read. */
  gpa?: bigint;
  /** For an abort under EPT: which table the entry was in, and its host-physical address. */
  stage?: "guest" | "ept";
  hpa?: bigint;
}

/**
 * An EPT violation (exit reason 48) of a translation in VMX non-root operation:
 * `qualification` is the exit qualification (bits 0–8 as the SDM's table
 * "Exit Qualification for EPT Violations"), `gpa` the guest-physical address
 * whose EPT translation failed, `gva` the guest linear address, `level` the
 * EPT level of the entry that stopped the walk.
 */
export interface X86EptViolation {
  kind: "ept-violation"; vector: -1; errorCode: 0; qualification: number; gpa: bigint; gva: bigint; level: number;
}

/** An EPT misconfiguration (exit reason 49) at the EPT entry of `level` for `gpa`. */
export interface X86EptMisconfig { kind: "ept-misconfig"; vector: -1; errorCode: 0; gpa: bigint; level: number }

/** The VMfail of an INVEPT / INVVPID: VM-instruction error 28, invalid operand. */
export interface X86VmFail { kind: "vmfail"; vector: -1; errorCode: 28; level: 0; reason: string }

/** VMX controls of an x86 vCPU (setVmcs). */
export interface X86Vmcs {
  /** EPT pointer, or null: translations are not VMX non-root. */
  eptp: bigint | null;
  /** VPID, 0 = VPID off. */
  vpid: number;
  /** Mode-based execute control for EPT. */
  mbec: boolean;
}

/** A translation; under EPT `gpa` is the guest-physical address (`pa` the host-physical one). */
export type X86Translation = { pa: bigint; pageSize: number; level: number; gpa?: bigint };
/** A translation with its effective rights word (RIGHTS.*) and the vCPU's invalidation epoch after it (translate(…, { rights: true })). */
export type X86TranslationWithRights = X86Translation & { rights: number; epoch: number };
export type X86TranslateResult = X86Translation | { fault: X86Fault | X86EptViolation | X86EptMisconfig };

/** One live TLB entry: a cached 4 KiB piece of a page (larger pages are cached piece by piece). */
export interface X86TlbEntry {
  /** Linear address of the piece (canonical, 4 KiB aligned). */
  va: bigint;
  /** Guest-physical address of the piece. */
  pa: bigint;
  /** Size of the page the piece belongs to: 4 KiB, 2 MiB or 1 GiB. */
  pageSize: number;
  /** Level of the leaf that mapped it (1 = PTE, 2 = PDE, 3 = PDPTE). */
  level: number;
  /** Filled into the global context (a G leaf under CR4.PGE): survives MOV CR3. */
  global: boolean;
  /** The PCID it was filled under; undefined for a global entry. */
  pcid: number | undefined;
  /** The VPID it was filled under (0 outside VMX non-root or with VPID off). */
  vpid: number;
  /** Under EPT (a combined mapping): the guest-physical address of the piece. */
  gpa?: bigint;
}

const GP: X86Fault = Object.freeze({ vector: 13, errorCode: 0, level: 0, kind: "general-protection" });

function vmfail(reason: string): X86VmFail {
  return { kind: "vmfail", vector: -1, errorCode: 28, level: 0, reason: `vmmu: ${reason}` };
}

/** Batch views of an x86 vCPU: `run(count, user)`. */
export type X86Batch = Batch<boolean>;

export class X86Vcpu extends VcpuBase<boolean> {
  private lastStatus = 0;
  protected readonly privName = "user";
  /**
   * Binds wasm instance `core` to vCPU block `index`. `fresh` initialises the
   * block (TLB on, MAXPHYADDR); a worker attaching to a running vCPU passes
   * false. One instance drives a vCPU at a time.
   */
  /** MMU context records: the guest's paging (c0) and its EPT (c1). */
  private readonly c0: number;
  private readonly c1: number;
  /** The register block this object's regime is decoded from: the vCPU's STATE, or a context view's own (MC_REGS). */
  private readonly regs: number;
  /** True for a context view (walkerContext()): no TLB, no EPT, its own registers and counters. */
  private readonly view: boolean;
  private core: Core | undefined;

  /**
   * Binds wasm instance `core` to vCPU block `index`. `fresh` initialises the
   * block (TLB on, MAXPHYADDR); a worker attaching to a running vCPU passes
   * false. One instance drives a vCPU at a time. `context` (internal): the
   * MMU context record a walkerContext() view uses.
   */
  constructor(index: number, core: Core, memory: GuestMemory, readonly maxPhysAddrBits: number, fresh = true, context?: number) {
    super(index, core, memory, fresh && context === undefined);
    this.core = core;
    this.view = context !== undefined;
    this.c0 = this.ctxAddr(context ?? this.L.MMU_ROOT);
    this.c1 = this.ctxAddr(this.L.MMU_STAGE2);
    this.regs = this.view ? this.c0 + this.L.MC_REGS : this.base;
    if (this.view) {
      this.countersAt = this.ex.mmuOwnCounters(this.c0);
      const dv = this.dv();
      dv.setUint32(this.regs + this.L.S_MAXPHY, maxPhysAddrBits, true);
      dv.setUint32(this.regs + this.L.S_TLB_ON, 0, true);
    } else if (fresh) this.dv().setUint32(this.base + this.L.S_MAXPHY, maxPhysAddrBits, true);
    this.load();
  }

  /**
   * A second MMU context of this vCPU (record MMU_WALKER), as KVM keeps
   * walk_mmu beside root_mmu: its own control registers (setControl, MOV CR*
   * with their #GP checks) decoded into its own record, walks through the
   * same guest memory and the same wasm instance, and no TLB — every access
   * walks, and its invalidation instructions have nothing to drop. Its walks
   * count in its own counters (tlbStats()), not the vCPU's. A shadow MMU uses
   * it to walk the guest's tables while the vCPU runs on shadow tables.
   */
  walkerContext(): X86Vcpu {
    this.lifetime.check();
    if (this.view) throw new Error("vmmu: walkerContext() of a context view");
    return new X86Vcpu(this.index, this.core!, this.memory, this.maxPhysAddrBits, false, this.L.MMU_WALKER);
  }

  /** @internal Machine.dispose: also drops the wasm instance kept for walkerContext() (see VcpuBase.release). */
  release(): void {
    super.release();
    this.core = undefined;
  }

  protected setContextTlb(_on: boolean): boolean {
    return this.view;
  }

  protected reload(): void {
    this.load();
  }

  protected runBatch(count: number, user: boolean): number {
    return this.ex.x86TranslateBatch(this.c0, count, user ? 1 : 0);
  }

  /** Decodes the EPT record (under EPT) and then the guest-paging record from the STATE registers. */
  private load(): void {
    const L = this.L, b = this.base;
    const ept = !this.view && this.dv().getUint32(b + L.S_EPTP_ON, true) !== 0;
    if (ept && this.ex.eptDecodeContext(this.c1, b, b) !== L.EPTP_OK) throw new Error("vmmu: invalid EPTP in the vCPU state (unreachable: setVmcs checks it)");
    const rc = this.ex.x86DecodeContext(this.c0, b, this.regs, ept ? L.MMU_STAGE2 : L.MMU_NONE);
    if (rc === this.L.CONTROL_EMODE) throw new Error("vmmu: CR0.PG=1 requires long mode (EFER.LME and CR4.PAE); 32-bit and PAE paging are not modelled");
    if (rc === this.L.CONTROL_EMAXPHY) throw new Error("vmmu: MAXPHYADDR must be 32..52");
  }

  /** The control registers in force. */
  control(): X86Control {
    this.lifetime.check();
    const dv = this.dv(), b = this.regs, L = this.L;
    const r = (o: number) => dv.getBigUint64(b + o, true);
    return { cr0: r(L.S_CR0), cr3: r(L.S_CR3), cr4: r(L.S_CR4), efer: r(L.S_EFER), pkru: r(L.S_PKRU), rflags: r(L.S_RFLAGS) };
  }

  /**
   * Loads control state as a VM entry or state restore would: the given
   * fields replace the current ones; no TLB invalidation is implied. EFER.LMA
   * is derived (LME && CR0.PG). Throws a RangeError on a CR0 or CR4 a MOV
   * would #GP on (cr0Invalid, cr4Invalid; KVM kvm_is_valid_sregs) and an
   * Error on a mode this core does not model; a refused call changes nothing.
   */
  setControl(c: Partial<X86Control>): void {
    this.lifetime.check();
    const o = optionsObject(c, "control");
    for (const k of CONTROL_FIELDS) if (o[k] !== undefined) reg64Arg(o[k], k);
    const before = this.control();
    const invalid = cr0Invalid(c.cr0 !== undefined ? BigInt.asUintN(64, c.cr0) : before.cr0)
      ?? cr4Invalid(c.cr4 !== undefined ? BigInt.asUintN(64, c.cr4) : before.cr4);
    if (invalid !== null) throw new RangeError(`vmmu: ${invalid} (a MOV would raise #GP)`);
    try {
      this.writeControl(c);
    } catch (e) {
      this.writeControl(before);
      throw e;
    }
  }

  private writeControl(c: Partial<X86Control>): void {
    const dv = this.dv(), b = this.regs, L = this.L;
    const w = (o: number, v: bigint | undefined) => { if (v !== undefined) dv.setBigUint64(b + o, BigInt.asUintN(64, v), true); };
    w(L.S_CR0, c.cr0); w(L.S_CR3, c.cr3); w(L.S_CR4, c.cr4); w(L.S_EFER, c.efer); w(L.S_PKRU, c.pkru); w(L.S_RFLAGS, c.rflags);
    const cr0 = dv.getBigUint64(b + L.S_CR0, true);
    const efer = dv.getBigUint64(b + L.S_EFER, true);
    const lma = (efer & EFER.LME) !== 0n && (cr0 & CR0.PG) !== 0n;
    dv.setBigUint64(b + L.S_EFER, lma ? efer | EFER.LMA : efer & ~EFER.LMA, true);
    this.load();
  }

  private result(status: number): X86TranslateResult {
    const L = this.L, w = this.st32;
    if (status === L.STATUS_OK) {
      const q = this.st64;
      const r: X86Translation = { pa: q[L.R_PA >> 3]!, pageSize: 1 << w[L.R_SHIFT >> 2]!, level: w[L.R_LEVEL >> 2]! };
      if (!this.view && w[L.S_EPTP_ON >> 2] !== 0) r.gpa = q[L.R_IPA >> 3]!;
      return r;
    }
    return { fault: this.faultOf(status, w[L.R_ERROR >> 2]!, w[L.R_LEVEL >> 2]!, this.st64[L.R_GPA >> 3]!) };
  }

  private eptOn(): boolean {
    return !this.view && this.st32[this.L.S_EPTP_ON >> 2] !== 0;
  }

  private faultOf(status: number, errorCode: number, level: number, gpa: bigint): X86Fault | X86EptViolation | X86EptMisconfig {
    const L = this.L, b = this.base;
    if (status === L.STATUS_PF) return { vector: 14, errorCode, level, kind: "page-fault" };
    if (status === L.STATUS_GP) return GP;
    if (status === L.STATUS_EPT_VIOLATION) {
      return { kind: "ept-violation", vector: -1, errorCode: 0, qualification: errorCode, gpa, gva: this.dv().getBigUint64(b + L.R_GVA, true), level };
    }
    if (status === L.STATUS_EPT_MISCONFIG) return { kind: "ept-misconfig", vector: -1, errorCode: 0, gpa, level };
    const f: X86Fault = { vector: -1, errorCode: 0, level, kind: "abort", gpa };
    const stage = this.dv().getUint32(b + L.R_ASTAGE, true);
    if (stage !== 0) {
      f.stage = stage === 2 ? "ept" : "guest";
      f.hpa = this.dv().getBigUint64(b + L.R_HPA, true);
    }
    return f;
  }

  /**
   * Translates `va` for an access as the CPU would: canonical check, TLB,
   * walk with reserved-bit and rights checks, A/D updates, TLB fill.
   * `user` means CPL 3.
   */
  translate(va: bigint, access: X86Access, user: boolean, opts: { rights: true }): X86TranslationWithRights | { fault: X86Fault };
  translate(va: bigint, access?: X86Access, user?: boolean, opts?: { rights?: boolean }): X86TranslateResult;
  translate(va: bigint, access: X86Access = "read", user = false, opts?: { rights?: boolean }): X86TranslateResult {
    if (this.lifetime.disposed || typeof va !== "bigint" || typeof user !== "boolean") this.refuse(va, user);
    if (opts !== undefined && optBoolArg(optionsObject(opts, "opts").rights, "opts.rights", false)) {
      const x = BigInt.asUintN(64, va);
      return this.withRights(this.ex.x86TranslateFast(this.c0, Number(x & 0xffff_ffffn), Number(x >> 32n), accessCode(access), user ? 1 : 0));
    }
    return this.result(this.ex.x86Translate(this.c0, BigInt.asUintN(64, va), accessCode(access), user ? 1 : 0));
  }

  /** The object form of a fast-path result: pa, size and level from the rights word, plus the word and the epoch; or the fault. */
  private withRights(pa: number): X86TranslationWithRights | { fault: X86Fault | X86EptViolation | X86EptMisconfig } {
    if (pa < 0) {
      this.lastStatus = this.u32()[(this.base + this.L.R_STATUS) >> 2]!;
      return { fault: this.lastFault() };
    }
    const r = this.lastRights(), R = RIGHTS;
    const out: X86TranslationWithRights = { pa: BigInt(pa), pageSize: 2 ** ((r >>> R.PSHIFT_SHIFT) & 31), level: (r >>> R.LEVEL_SHIFT) & 7, rights: r, epoch: this.invalidationEpoch() };
    if (this.eptOn()) out.gpa = this.u64()[(this.base + this.L.R_IPA) >> 3]!;
    return out;
  }

  /**
   * translate() for hot paths: the pa on success, without building a result;
   * undefined on a fault, which lastFault() then describes (until the next
   * translation or walk).
   */
  translatePa(va: bigint, access: X86Access = "read", user = false): bigint | undefined {
    if (this.lifetime.disposed || typeof va !== "bigint" || typeof user !== "boolean") this.refuse(va, user);
    const status = this.ex.x86Translate(this.c0, BigInt.asUintN(64, va), accessCode(access), user ? 1 : 0);
    if (status === this.L.STATUS_OK) return this.st64[this.L.R_PA >> 3]!;
    this.lastStatus = status;
    return undefined;
  }

  /**
   * The Number fast path for interpreters: translate() with the address as
   * two 32-bit halves, the access as 0 read / 1 write / 2 fetch and `user`
   * as 0/1 (CPL 3), returning the pa as a Number (exact: pa < 2^52) or −1 on
   * a fault, which lastFault() then describes. No BigInt and no object on
   * either side. After a success lastRights() is the effective rights word
   * (RIGHTS.*) and invalidationEpoch() says how long a cached copy holds.
   */
  translateFast(vaLo: number, vaHi: number, access: 0 | 1 | 2, user: 0 | 1 | boolean): number {
    if ((vaLo >>> 0) !== vaLo && (vaLo | 0) !== vaLo || (vaHi >>> 0) !== vaHi && (vaHi | 0) !== vaHi
        || (access !== 0 && access !== 1 && access !== 2) || (user !== 0 && user !== 1 && user !== true && user !== false)) {
      checkFastArgs(vaLo, vaHi, access, user, "user");
    }
    const pa = this.ex.x86TranslateFast(this.c0, vaLo, vaHi, access, user ? 1 : 0);
    if (pa < 0) this.lastStatus = this.st32[this.L.R_STATUS >> 2]!;
    return pa;
  }

  /** The fault of the last translatePa() that returned undefined, or translateFast() that returned −1. */
  lastFault(): X86Fault | X86EptViolation | X86EptMisconfig {
    this.lifetime.check();
    const r = this.result(this.lastStatus);
    if (!("fault" in r)) throw new Error("vmmu: lastFault() without a faulting translatePa()");
    return r.fault;
  }

  /**
   * The debugger view (QEMU gva2gpa): canonical check, then present and
   * page-size bits only. No rights or reserved-bit checks, no A/D writes, no TLB.
   */
  peek(va: bigint): X86TranslateResult {
    this.lifetime.check();
    bigintArg(va, "va");
    return this.result(this.ex.x86Walk(this.c0, BigInt.asUintN(64, va), 0, 0, this.L.WALK_DEBUG));
  }

  /**
   * A full architectural walk without the TLB that also returns the walk
   * record: for each level walked, the entry's gpa and its value as read
   * (before any A/D update) — KVM's struct guest_walker. Levels are listed
   * from the root down to where the walk stopped.
   */
  walkRecorded(va: bigint, access: X86Access, user: boolean, setAD: boolean): { result: X86TranslateResult; levels: { level: number; gpa: bigint; pte: bigint }[] } {
    this.lifetime.check();
    bigintArg(va, "va");
    boolArg(user, "user");
    boolArg(setAD, "setAD");
    const L = this.L;
    const flags = L.WALK_CHECK | L.WALK_RECORD | (setAD ? L.WALK_AD : 0);
    const result = this.result(this.ex.x86Walk(this.c0, BigInt.asUintN(64, va), accessCode(access), user ? 1 : 0, flags));
    const levels: { level: number; gpa: bigint; pte: bigint }[] = [];
    if ("fault" in result && result.fault.kind !== "page-fault" && result.fault.kind !== "abort") return { result, levels };
    const u64 = this.u64(), b = this.base;
    const top = this.u32()[(b + L.R_WALK_TOP) >> 2]!;
    const stop = "fault" in result ? result.fault.level : result.level;
    if (top === 0 || stop === 0) return { result, levels };
    for (let l = top; l >= stop; l--) {
      const r = (b + L.R_WALK + (l - 1) * 16) >> 3;
      levels.push({ level: l, gpa: u64[r]!, pte: u64[r + 1]! });
    }
    return { result, levels };
  }

  /** A full architectural walk without the TLB; `setAD: false` leaves memory untouched. */
  walk(va: bigint, access: X86Access = "read", user = false, opts: { setAD?: boolean } = {}): X86TranslateResult {
    this.lifetime.check();
    bigintArg(va, "va");
    boolArg(user, "user");
    const setAD = optBoolArg(optionsObject(opts, "opts").setAD, "opts.setAD", true);
    const flags = this.L.WALK_CHECK | (setAD ? this.L.WALK_AD : 0);
    return this.result(this.ex.x86Walk(this.c0, BigInt.asUintN(64, va), accessCode(access), user ? 1 : 0, flags));
  }

  /**
   * MOV to CR3. With CR4.PCIDE = 1, bits 11:0 select the PCID and bit 63 set
   * means "do not flush"; otherwise the new PCID's (or PCID 0's) non-global
   * entries are invalidated. Reserved bits (M..62, and 63 when PCIDE = 0) #GP.
   */
  writeCr3(value: bigint): X86Fault | null {
    this.lifetime.check();
    reg64Arg(value, "value");
    value = BigInt.asUintN(64, value);
    const pcide = (this.cr4() & CR4.PCIDE) !== 0n;
    const noflush = pcide && (value & CR3_NOFLUSH) !== 0n;
    if (pcide) value &= ~CR3_NOFLUSH;
    if (value >> BigInt(this.maxPhysAddrBits) !== 0n) return GP;
    this.u64()[(this.regs + this.L.S_CR3) >> 3] = value;
    this.ex.x86ReloadCr3(this.c0, this.base, this.regs);
    if (!noflush && !this.view) this.ex.x86FlushPcid(this.c0, pcide ? Number(value & CR3_PCID_MASK) : 0);
    return null;
  }

  /**
   * MOV to CR4, with the checks of KVM's kvm_set_cr4 (a reserved bit, see
   * CR4_VALID; PAE cleared or LA57 changed in long mode; PCIDE 0→1 outside
   * long mode or with CR3[11:0] ≠ 0; CET without CR0.WP: #GP) and the flushes
   * of SDM §4.10.4.1: PGE change or PCIDE 1→0 flush everything; PAE change or
   * SMEP 0→1 flush the current context (and, conservatively, globals).
   */
  writeCr4(value: bigint): X86Fault | null {
    this.lifetime.check();
    reg64Arg(value, "value");
    value = BigInt.asUintN(64, value);
    const old = this.control();
    const lma = (old.efer & EFER.LMA) !== 0n;
    const changed = old.cr4 ^ value;
    if (cr4Invalid(value) !== null) return GP;
    if ((value & CR4.CET) !== 0n && (old.cr0 & CR0.WP) === 0n) return GP;
    if (lma && (value & CR4.PAE) === 0n) return GP;
    if (lma && (changed & CR4.LA57) !== 0n) return GP;
    if ((value & CR4.PCIDE) !== 0n && (old.cr4 & CR4.PCIDE) === 0n && (!lma || (old.cr3 & CR3_PCID_MASK) !== 0n)) return GP;
    this.dv().setBigUint64(this.regs + this.L.S_CR4, value, true);
    this.load();
    if (this.view) return null;
    if ((changed & CR4.PGE) !== 0n || ((old.cr4 & CR4.PCIDE) !== 0n && (value & CR4.PCIDE) === 0n)) {
      this.ex.tlbFlushAll(this.base);
    } else if ((changed & CR4.PAE) !== 0n || ((value & CR4.SMEP) !== 0n && (old.cr4 & CR4.SMEP) === 0n)) {
      this.ex.x86FlushPcid(this.c0, this.currentPcid());
      this.ex.x86FlushPcid(this.c0, this.L.KEY_GLOBAL);
    }
    return null;
  }

  /**
   * MOV to CR0, with the checks of KVM's kvm_set_cr0: bits 63:32, NW without
   * CD, PG without PE (cr0Invalid), PG 0→1 with EFER.LME and CR4.PAE = 0,
   * clearing PG with CR4.PCIDE = 1, clearing WP with CR4.CET = 1: #GP. The
   * reserved bits of 31:0 are ignored (dropped). PG 1→0 flushes the whole TLB;
   * WP is applied at access time, so toggling it flushes nothing.
   */
  writeCr0(value: bigint): X86Fault | null {
    this.lifetime.check();
    reg64Arg(value, "value");
    value = BigInt.asUintN(64, value);
    const old = this.control();
    if (cr0Invalid(value) !== null) return GP;
    value &= CR0_DEFINED;
    const wasPg = (old.cr0 & CR0.PG) !== 0n;
    if ((value & CR0.PG) === 0n && (old.cr4 & CR4.PCIDE) !== 0n) return GP;
    if ((value & CR0.PG) !== 0n && !wasPg && (old.efer & EFER.LME) !== 0n && (old.cr4 & CR4.PAE) === 0n) return GP;
    if ((value & CR0.WP) === 0n && (old.cr4 & CR4.CET) !== 0n) return GP;
    this.setControl({ cr0: value });
    if (wasPg && (value & CR0.PG) === 0n && !this.view) this.ex.tlbFlushAll(this.base);
    return null;
  }

  /** INVLPG: the current PCID's entries and all global entries for the page of `va`. Non-canonical: no-op. */
  invlpg(va: bigint): void {
    this.lifetime.check();
    bigintArg(va, "va");
    if (!this.view) this.ex.x86Invlpg(this.c0, BigInt.asUintN(64, va));
  }

  /**
   * INVPCID with descriptor (pcid, va). #GP if type > 3, pcid > 4095 (descriptor
   * bits 63:12), types 0/1 with pcid ≠ 0 while CR4.PCIDE = 0, or type 0 with a
   * non-canonical `va`.
   * 0: one address of one PCID (globals kept); 1: all of one PCID (globals kept);
   * 2: everything including globals; 3: everything but globals.
   */
  invpcid(type: number, pcid: number, va: bigint = 0n): X86Fault | null {
    this.lifetime.check();
    integerArg(type, "type");
    integerArg(pcid, "pcid");
    bigintArg(va, "va");
    if (!Number.isInteger(type) || type < 0 || type > 3) return GP;
    if (!Number.isInteger(pcid) || pcid < 0 || pcid > 0xfff) return GP;
    const cr4 = this.cr4();
    if ((type === 0 || type === 1) && pcid !== 0 && (cr4 & CR4.PCIDE) === 0n) return GP;
    if (type === 0 && !isCanonical(BigInt.asUintN(64, va), (cr4 & CR4.LA57) !== 0n)) return GP;
    if (this.view) return null;
    if (type === 0) {
      va = BigInt.asUintN(64, va);
      if (!isCanonical(va, (cr4 & CR4.LA57) !== 0n)) return GP;
      this.ex.x86InvalidatePcidAddr(this.c0, pcid, va);
    } else if (type === 1) {
      this.ex.x86FlushPcid(this.c0, pcid);
    } else {
      this.ex.x86FlushVpid(this.c0, type === 2 ? 1 : 0);
    }
    return null;
  }

  /** The PCID in force (CR3[11:0] when CR4.PCIDE = 1, else 0). */
  currentPcid(): number {
    this.lifetime.check();
    return (this.cr4() & CR4.PCIDE) !== 0n ? Number(this.u64()[(this.regs + this.L.S_CR3) >> 3]! & CR3_PCID_MASK) : 0;
  }

  /**
   * The live TLB entries of this vCPU, decoded (read-only; for debuggers and
   * the browser demo, not a hot path: it scans the whole array). Entries of
   * flushed contexts, still in the array but never matched, are left out;
   * the count equals tlbStats().live. Ordered by PCID (global last), then va.
   * Entry format: assembly/layout.ts, "TLB entry".
   */
  tlbEntries(): X86TlbEntry[] {
    this.lifetime.check();
    const L = this.L, dv = this.dv(), b = this.base;
    const epoch = dv.getUint32(b + L.T_EPOCH, true);
    const n = dv.getUint32(L.MACHINE_BASE + L.M_TLB_ENTRIES, true);
    const GLOBAL = BigInt(L.KEY_GLOBAL), S2 = BigInt(L.KEY_S2);
    const out: X86TlbEntry[] = [];
    for (let i = 0, e = b + L.VCPU_TLB; i < n; i++, e += L.TLB_ENTRY) {
      const key = dv.getBigUint64(e + L.E_KEY, true);
      if (key === 0n) continue;
      const slot = dv.getUint32(e + L.E_CTX, true);
      if (slot >= L.CTX_SLOTS) continue;
      const ctx = b + L.VCPU_CTX + slot * L.CTX_STRIDE;
      const tag = key >> 48n;
      if (dv.getUint32(ctx + L.CTX_EPOCH, true) !== epoch || BigInt(dv.getUint32(ctx + L.CTX_TAG, true)) !== tag) continue;
      const skey = dv.getBigUint64(ctx + L.CTX_KEY, true);
      if ((skey & S2) !== 0n) continue;
      const status = dv.getUint32(e + L.E_STATUS, true);
      const vpn = key & ((1n << 48n) - 1n);
      const global = (skey & GLOBAL) !== 0n;
      const entry: X86TlbEntry = {
        va: BigInt.asUintN(64, BigInt.asIntN(57, vpn << 12n)),
        pa: dv.getBigUint64(e + L.E_PA, true),
        pageSize: 2 ** ((status >>> L.BS_PSHIFT_SHIFT) & 31),
        level: (status >>> L.BS_LEVEL_SHIFT) & 0xff,
        global,
        pcid: global ? undefined : Number(skey & 0xffffn),
        vpid: Number((skey >> BigInt(L.KEY_SPACE_SHIFT)) & 0xffffn),
      };
      if (((skey >> BigInt(L.KEY_EPT_SHIFT)) & 0xffn) !== 0n) entry.gpa = BigInt(dv.getUint32(e + L.E_GFN, true)) << 12n;
      out.push(entry);
    }
    const rank = (x: X86TlbEntry) => x.vpid * 0x20000 + (x.pcid ?? 0x10000);
    return out.sort((x, y) => rank(x) - rank(y) || (x.va < y.va ? -1 : x.va > y.va ? 1 : 0));
  }

  /**
   * Loads the VMX controls translations run under (as VM entry would load
   * them from the VMCS): `eptp` a bigint — VMX non-root with EPT, checked as
   * VM entry checks it (memory type 0 or 6, walk length 4 or 5, bits 11:7
   * and 63:MAXPHYADDR zero; RangeError otherwise) — or null (no EPT:
   * translations are not VMX non-root); `vpid` 0..65535 (0 = VPID off);
   * `mbec` mode-based execute control. Omitted fields keep their value. No
   * TLB flush is implied (as setControl): entries are tagged by VPID and EP4TA.
   */
  setVmcs(v: { eptp?: bigint | null; vpid?: number; mbec?: boolean }): void {
    this.lifetime.check();
    if (this.view) throw new Error("vmmu: setVmcs on a walkerContext() view (it has no VMX controls)");
    const o = optionsObject(v, "vmcs");
    const L = this.L, b = this.base, dv = this.dv();
    let eptp: bigint | null | undefined = undefined;
    if (o.eptp !== undefined) {
      if (o.eptp !== null) {
        eptp = BigInt.asUintN(64, reg64Arg(o.eptp, "eptp") as bigint);
        const rc = this.ex.eptpCheck(eptp, this.maxPhysAddrBits);
        if (rc !== L.EPTP_OK) {
          const why = rc === L.EPTP_EMEMTYPE ? "memory type (bits 2:0) must be 0 (UC) or 6 (WB)"
            : rc === L.EPTP_EWALK ? "page-walk length - 1 (bits 5:3) must be 3 or 4"
            : `bits 11:7 and 63:${this.maxPhysAddrBits} are reserved`;
          throw new RangeError(`vmmu: invalid EPTP ${hex(eptp)}: ${why} (VM entry would fail)`);
        }
      } else eptp = null;
    }
    if (o.vpid !== undefined) intArg(o.vpid, "vpid", 0, 0xffff);
    const mbec = optBoolArg(o.mbec, "mbec", dv.getUint32(b + L.S_MBEC, true) !== 0);
    if (eptp !== undefined) {
      dv.setUint32(b + L.S_EPTP_ON, eptp === null ? 0 : 1, true);
      if (eptp !== null) dv.setBigUint64(b + L.S_EPTP, eptp, true);
    }
    if (o.vpid !== undefined) dv.setUint32(b + L.S_VPID, o.vpid as number, true);
    dv.setUint32(b + L.S_MBEC, mbec ? 1 : 0, true);
    this.load();
  }

  /** The VMX controls in force (setVmcs). */
  vmcs(): X86Vmcs {
    this.lifetime.check();
    const L = this.L, b = this.base, dv = this.dv();
    return {
      eptp: dv.getUint32(b + L.S_EPTP_ON, true) !== 0 ? dv.getBigUint64(b + L.S_EPTP, true) : null,
      vpid: dv.getUint32(b + L.S_VPID, true),
      mbec: dv.getUint32(b + L.S_MBEC, true) !== 0,
    };
  }

  /**
   * INVEPT (SDM Vol.3C §29.4.3.3, instruction reference): type 1
   * (single-context) invalidates the guest-physical and combined mappings of
   * the EP4TA of `eptp` (every VPID and PCID); type 2 (all-context) those of
   * every EP4TA. Returns null, or the VMfail (VM-instruction error 28) for an
   * unsupported type or, for type 1, an EPTP that fails the VM-entry checks;
   * a refused INVEPT invalidates nothing.
   */
  invept(type: number, eptp?: bigint): X86VmFail | null {
    this.lifetime.check();
    if (this.view) throw new Error("vmmu: invept on a walkerContext() view (it has no TLB)");
    integerArg(type, "type");
    if (eptp !== undefined) reg64Arg(eptp, "eptp");
    if (type !== 1 && type !== 2) return vmfail(`INVEPT type ${type} is not supported (1 single-context, 2 all-context)`);
    if (type === 1) {
      if (eptp === undefined) return vmfail("INVEPT type 1 needs an EPTP");
      const v = BigInt.asUintN(64, eptp);
      if (this.ex.eptpCheck(v, this.maxPhysAddrBits) !== this.L.EPTP_OK) return vmfail(`INVEPT type 1 with invalid EPTP ${hex(v)}`);
      this.ex.vmxInvept(this.base, 1, v & 0x000f_ffff_ffff_f000n);
    } else {
      this.ex.vmxInvept(this.base, 2, 0n);
    }
    return null;
  }

  /**
   * INVVPID (SDM Vol.3C §29.4.3.3, instruction reference) on linear and
   * combined mappings (every EP4TA): type 0 (individual-address) those of
   * `vpid` for the page of `gva`, every PCID, globals too; 1 (single-context)
   * every mapping of `vpid`; 2 (all-context) every VPID but 0; 3
   * (single-context-retaining-globals) every mapping of `vpid` but globals.
   * Returns null, or the VMfail (error 28) for an unsupported type, a `vpid`
   * outside 0..65535 (descriptor bits 63:16), `vpid` 0 with type 0, 1 or 3,
   * or type 0 with a non-canonical `gva`; a refused INVVPID invalidates nothing.
   */
  invvpid(type: number, vpid: number, gva: bigint = 0n): X86VmFail | null {
    this.lifetime.check();
    if (this.view) throw new Error("vmmu: invvpid on a walkerContext() view (it has no TLB)");
    integerArg(type, "type");
    integerArg(vpid, "vpid");
    bigintArg(gva, "gva");
    if (type < 0 || type > 3) return vmfail(`INVVPID type ${type} is not supported (0..3)`);
    if (vpid < 0 || vpid > 0xffff) return vmfail(`INVVPID descriptor bits 63:16 must be 0 (vpid ${vpid})`);
    if (vpid === 0 && type !== 2) return vmfail(`INVVPID type ${type} with VPID 0`);
    const va = BigInt.asUintN(64, gva);
    if (type === 0 && !isCanonical(va, (this.cr4() & CR4.LA57) !== 0n)) return vmfail(`INVVPID type 0 with non-canonical address ${hex(va)}`);
    this.ex.vmxInvvpid(this.base, type, vpid, va);
    return null;
  }

  private cr4(): bigint {
    return this.u64()[(this.regs + this.L.S_CR4) >> 3]!;
  }

  /**
   * Translates batch-area entries from `start` until the first that does not
   * translate; returns its index, or `count` when all did (one wasm call).
   * Fill the areas with batch() first.
   */
  translateUntilFault(start: number, count: number, user: boolean): number {
    this.lifetime.check();
    boolArg(user, "user");
    const n = this.L.BATCH_MAX;
    intArg(count, "count", 0, n);
    intArg(start, "start", 0, count);
    return this.ex.x86TranslateUntilFault(this.c0, start, count, user ? 1 : 0);
  }

  /**
   * Translates every address of `va` (access kinds from `access`: one code per
   * address, 0 read / 1 write / 2 fetch, or one kind for all) in order, in
   * chunks through the batch area. Writes `pa` and the status words (see
   * decodeStatus) into the output arrays; returns the number of faults.
   */
  translateBatch(va: BigUint64Array, access: Uint8Array | X86Access, user: boolean,
    out?: { pa: BigUint64Array; status: Uint32Array }): number {
    this.lifetime.check();
    u64ArrayArg(va, "va");
    if (typeof access !== "string") checkAccessCodes(u8ArrayArg(access, "access"), va.length);
    if (out === undefined) out = { pa: new BigUint64Array(va.length), status: new Uint32Array(va.length) };
    return this.batchInto(va, typeof access === "string" ? accessCode(access) : access, user, out);
  }

  /**
   * Decodes a batch status word (and its pa slot) into a translate() result;
   * `va`, the batch entry's address, fills an EPT violation's `gva` (0 without it).
   * Throws a TypeError for an entry whose access code was not 0..2.
   */
  decodeStatus(status: number, pa: bigint, va?: bigint): X86TranslateResult {
    this.lifetime.check();
    intArg(status, "status", 0, 0xffff_ffff);
    bigintArg(pa, "pa");
    if (va !== undefined) bigintArg(va, "va");
    const L = this.L;
    const s = status >>> L.BS_STATUS_SHIFT;
    if (s === L.STATUS_EACCESS) throw new TypeError("vmmu: batch entry had an access code other than 0, 1, 2");
    const level = (status >>> L.BS_LEVEL_SHIFT) & 0xff;
    if (s === L.STATUS_OK) return { pa, pageSize: 1 << ((status >>> L.BS_PSHIFT_SHIFT) & 31), level };
    if (s === L.STATUS_EPT_VIOLATION) {
      return { fault: { kind: "ept-violation", vector: -1, errorCode: 0, qualification: (status >>> L.BS_QUAL_SHIFT) & 0x1ff, gpa: pa, gva: va ?? 0n, level } };
    }
    if (s === L.STATUS_EPT_MISCONFIG) return { fault: { kind: "ept-misconfig", vector: -1, errorCode: 0, gpa: pa, level } };
    return { fault: this.faultOf(s, status & 0xff, level, pa) };
  }

  toString(): string {
    if (this.lifetime.disposed) return `x86 vCPU ${this.index} (machine disposed)`;
    const c = this.control();
    return `x86 vCPU ${this.index} cr0=${hex(c.cr0)} cr3=${hex(c.cr3)} cr4=${hex(c.cr4)} efer=${hex(c.efer)}`;
  }
}

/** Canonical for 48-bit (4-level) or 57-bit (5-level) linear addresses. */
export function isCanonical(va: bigint, la57: boolean): boolean {
  const bits = la57 ? 57 : 48;
  return BigInt.asIntN(bits, va) === BigInt.asIntN(64, va);
}

/** The wasm access code of an access kind; TypeError for anything else. */
export function accessCode(access: X86Access): number {
  if (access === "read") return ACCESS_CODE.read;
  if (access === "write") return ACCESS_CODE.write;
  if (access === "fetch") return ACCESS_CODE.fetch;
  throw new TypeError(`vmmu: access must be 'read' | 'write' | 'fetch', got ${show(access)}`);
}

const CONTROL_FIELDS = ["cr0", "cr3", "cr4", "efer", "pkru", "rflags"] as const;

/** Throws a TypeError if any of the first `n` access codes is not 0, 1 or 2. */
export function checkAccessCodes(codes: Uint8Array, n: number): void {
  for (let i = 0; i < n && i < codes.length; i++) {
    if (codes[i]! > 2) throw new TypeError(`vmmu: access code ${codes[i]} at index ${i} is not 0 (read), 1 (write) or 2 (fetch)`);
  }
}
