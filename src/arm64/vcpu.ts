// One arm64 vCPU (EL1&0 regime, with EL2's stage 2): its system registers,
// its TLB contexts (VMID × ASID, the VMID's global entries, the VMID's
// stage-2-only entries), and TLB maintenance by instruction name with the
// real operand encoding (Arm ARM C5.5 TLBI and chapter D8 TLB maintenance).
// The wasm core walks and invalidates; this file decides which contexts and
// pages each TLBI covers.

import { RIGHTS, type Core } from "../core/load.js";
import type { GuestMemory } from "../memory.js";
import { VcpuBase, checkFastArgs, type Batch } from "../core/vcpu-base.js";
import { hex } from "../addr.js";
import { decodeTlbi, decodeTlbiFields, tlbiFields, TLBI_CODE, TLBI_KIND, TLBI_NAMES, type DecodedTlbi, type TlbiFields, type TlbiName } from "./tlbi.js";
import { ARM_ACCESS_CODE, TCR, VTCR, type Arm64Access } from "./regs.js";
import { bigintArg, boolArg, intArg, optBoolArg, optionsObject, reg64Arg, show, u64ArrayArg, u8ArrayArg } from "../validate.js";

export interface Arm64SystemRegisters {
  ttbr0: bigint; ttbr1: bigint; tcr: bigint; sctlr: bigint; mair: bigint;
  vttbr: bigint; vtcr: bigint; hcr: bigint;
  /** PSTATE.PAN. */
  pan: boolean | bigint;
}

export type Arm64FaultKind = "translation" | "address-size" | "access-flag" | "permission" | "abort";

/** An abort as ESR/HPFAR would report it. */
export interface Arm64Fault {
  stage: 1 | 2;
  /** Fault status code, ESR_ELx.ISS[5:0] (DFSC/IFSC). */
  fsc: number;
  level: number;
  kind: Arm64FaultKind;
  /** ESR.S1PTW: the stage-2 fault happened on a stage-1 table access. */
  s1ptw: boolean;
  /** ESR.WnR. */
  write: boolean;
  /** Faulting IPA (HPFAR_EL2), stage-2 faults only. */
  ipa?: bigint;
}

export type Arm64Translation = { pa: bigint; pageSize: number; level: number };
/** A translation with its effective rights word (RIGHTS.*) and the vCPU's invalidation epoch after it (translate(…, { rights: true })). */
export type Arm64TranslationWithRights = Arm64Translation & { rights: number; epoch: number };
export type Arm64TranslateResult = Arm64Translation | { fault: Arm64Fault };

/** Fault kind of an R_KIND value (assembly/layout.ts FK_*). */
function kindOf(L: Core["layout"], k: number): Arm64FaultKind {
  if (k === L.FK_ADDRESS_SIZE) return "address-size";
  if (k === L.FK_ACCESS_FLAG) return "access-flag";
  if (k === L.FK_PERMISSION) return "permission";
  if (k === L.FK_EXTERNAL) return "abort";
  return "translation";
}

/** Fault kind of a DFSC/IFSC (ESR_ELx.ISS[5:0], Arm ARM D24.2.40) by its bits 5:2: 0x00 address size, 0x04 translation, 0x08 access flag, 0x0c permission, 0x14 synchronous external abort on a walk. */
const FSC_KIND: Record<number, Arm64FaultKind> = { 0: "address-size", 1: "translation", 2: "access-flag", 3: "permission", 5: "abort" };

/** Counts of TLB maintenance operations executed on (or broadcast to) a vCPU. */
export interface TlbiStats {
  ops: Record<string, number>;
  /** Operations the architecture lets do nothing (reserved or mismatched TG). */
  ignored: number;
  /** TLB contexts invalidated whole, and page ranges invalidated. */
  contextFlushes: number;
  rangeFlushes: number;
  /** TLB context slots replaced (flushed) to make room (C_SLOT_EVICTIONS). */
  contextEvictions: number;
}

export class Arm64Vcpu extends VcpuBase<boolean> {
  /** MMU context records: stage 1 (c0) and stage 2 (c1). */
  private readonly c0: number;
  private readonly c1: number;
  private peers: Arm64Vcpu[] = [this];
  /** TLBIs executed or received, by TLBI_CODE. */
  private readonly opCounts: number[] = TLBI_NAMES.map(() => 0);
  /** Decode record reused by every TLBI (no allocation per op). */
  private readonly fields = tlbiFields();
  /** VMID and TCR_EL1.AS in force, refreshed at every register load. */
  private curVmid = 0;
  private asid16 = false;
  private ignoredOps = 0;
  private ctxFlushes = 0;
  private rangeFlushes = 0;
  protected readonly privName = "el0";

  /** Binds wasm instance `core` to vCPU block `index` (see VcpuBase). */
  constructor(index: number, core: Core, memory: GuestMemory, readonly paBits = 48, fresh = true) {
    super(index, core, memory, fresh);
    this.c0 = this.ctxAddr(this.L.MMU_ROOT);
    this.c1 = this.ctxAddr(this.L.MMU_STAGE2);
    if (fresh) this.dv().setUint32(this.base + this.L.S_PA_BITS, paBits, true);
    this.load();
  }

  /** @internal The vCPUs an Inner-Shareable TLBI reaches (the machine's vCPUs on this thread). */
  setPeers(peers: Arm64Vcpu[]): void {
    this.peers = peers;
  }

  /** @internal Machine.dispose: also forgets the peers (see VcpuBase.release). */
  release(): void {
    super.release();
    this.peers = [];
  }

  protected reload(): void {
    this.load();
  }

  protected runBatch(count: number, el0: boolean): number {
    return this.ex.armTranslateBatch(this.c0, count, el0 ? 1 : 0);
  }

  /** Decodes the stage-2 record, then the stage-1 record (translated by it under HCR_EL2.VM), from the STATE registers. */
  private load(): void {
    const L = this.L, b = this.base;
    this.ex.armDecodeS2(this.c1, b, b);
    const s2 = (this.dv().getBigUint64(b + L.S_HCR, true) & 1n) !== 0n;
    this.ex.armDecodeS1(this.c0, b, b, s2 ? L.MMU_STAGE2 : L.MMU_NONE);
    this.curVmid = this.vmid();
    this.asid16 = (this.dv().getBigUint64(b + L.S_TCR, true) & TCR.AS) !== 0n;
  }

  /** The registers in force. */
  systemRegisters(): Arm64SystemRegisters {
    this.lifetime.check();
    const dv = this.dv(), b = this.base, L = this.L;
    const r = (o: number) => dv.getBigUint64(b + o, true);
    return {
      ttbr0: r(L.S_TTBR0), ttbr1: r(L.S_TTBR1), tcr: r(L.S_TCR), sctlr: r(L.S_SCTLR), mair: r(L.S_MAIR),
      vttbr: r(L.S_VTTBR), vtcr: r(L.S_VTCR), hcr: r(L.S_HCR), pan: dv.getUint32(b + L.S_PAN, true) !== 0,
    };
  }

  /** VMID in force: VTTBR_EL2[63:48], 16 bits if VTCR.VS else 8. */
  vmid(): number {
    this.lifetime.check();
    const r = this.systemRegisters();
    return Number((r.vttbr >> 48n) & ((r.vtcr & VTCR.VS) !== 0n ? 0xffffn : 0xffn));
  }

  /** ASID in force: from TTBR1 if TCR.A1 else TTBR0, 16 bits if TCR.AS else 8. */
  asid(): number {
    this.lifetime.check();
    const r = this.systemRegisters();
    const ttbr = (r.tcr & TCR.A1) !== 0n ? r.ttbr1 : r.ttbr0;
    return Number((ttbr >> 48n) & ((r.tcr & TCR.AS) !== 0n ? 0xffffn : 0xffn));
  }

  /**
   * Loads system registers (bigint fields; omitted ones keep their value),
   * as an exception return or a context switch would. No TLB maintenance is
   * implied: entries are tagged by VMID and ASID. HCR_EL2.VM turns stage 2 on.
   * Every register value is taken as a PE takes it (docs/arm64-walk-contract.md,
   * "Registers": any TG walks as 4 KiB, TnSZ is clamped to 16..39, an invalid
   * VTCR.SL0 faults each stage-2 walk); only a value that is not a register
   * value is refused, and a refused call changes nothing.
   */
  setSystemRegisters(r: Partial<Arm64SystemRegisters>): void {
    this.lifetime.check();
    const o = optionsObject(r, "registers");
    for (const k of SYSREG_FIELDS) if (o[k] !== undefined) reg64Arg(o[k], k);
    if (o.pan !== undefined && typeof o.pan !== "boolean") reg64Arg(o.pan, "pan");
    const dv = this.dv(), b = this.base, L = this.L;
    const w = (o: number, v: bigint | undefined) => { if (v !== undefined) dv.setBigUint64(b + o, BigInt.asUintN(64, v), true); };
    w(L.S_TTBR0, r.ttbr0); w(L.S_TTBR1, r.ttbr1); w(L.S_TCR, r.tcr); w(L.S_SCTLR, r.sctlr); w(L.S_MAIR, r.mair);
    w(L.S_VTTBR, r.vttbr); w(L.S_VTCR, r.vtcr); w(L.S_HCR, r.hcr);
    if (r.pan !== undefined) dv.setUint32(b + L.S_PAN, r.pan === true || (typeof r.pan === "bigint" && r.pan !== 0n) ? 1 : 0, true);
    this.load();
  }

  private result(status: number): Arm64TranslateResult {
    const L = this.L;
    if (status === L.STATUS_OK) {
      const w = this.st32;
      return { pa: this.st64[L.R_PA >> 3]!, pageSize: 1 << w[L.R_SHIFT >> 2]!, level: w[L.R_LEVEL >> 2]! };
    }
    const dv = this.dv(), b = this.base;
    const stage = dv.getUint32(b + L.R_STAGE, true) as 1 | 2;
    const flags = dv.getUint32(b + L.R_FFLAGS, true);
    const fault: Arm64Fault = {
      stage, fsc: dv.getUint32(b + L.R_FSC, true), level: dv.getUint32(b + L.R_LEVEL, true),
      kind: kindOf(L, dv.getUint32(b + L.R_KIND, true)), s1ptw: (flags & 1) !== 0, write: (flags & 2) !== 0,
    };
    if (stage === 2) fault.ipa = dv.getBigUint64(b + L.R_IPA, true);
    return { fault };
  }

  /**
   * Translates `va` for an access at EL0 if `el0` else EL1 (with PSTATE.PAN):
   * TLB, stage 1 with every table access translated by stage 2 when
   * HCR_EL2.VM = 1, stage 2 of the output, hardware AF/DBM updates, fill.
   * pageSize is min(stage-1 block, stage-2 block); level is the stage-1 leaf level.
   */
  translate(va: bigint, access: Arm64Access, el0: boolean, opts: { rights: true }): Arm64TranslationWithRights | { fault: Arm64Fault };
  translate(va: bigint, access?: Arm64Access, el0?: boolean, opts?: { rights?: boolean }): Arm64TranslateResult;
  translate(va: bigint, access: Arm64Access = "read", el0 = false, opts?: { rights?: boolean }): Arm64TranslateResult {
    if (this.lifetime.disposed || typeof va !== "bigint" || typeof el0 !== "boolean") this.refuse(va, el0);
    if (opts !== undefined && optBoolArg(optionsObject(opts, "opts").rights, "opts.rights", false)) {
      const x = BigInt.asUintN(64, va);
      return this.withRights(this.ex.armTranslateFast(this.c0, Number(x & 0xffff_ffffn), Number(x >> 32n), armAccessCode(access), el0 ? 1 : 0));
    }
    return this.result(this.ex.armTranslate(this.c0, BigInt.asUintN(64, va), armAccessCode(access), el0 ? 1 : 0));
  }

  /** The object form of a fast-path result: pa, size and level from the rights word, plus the word and the epoch; or the fault. */
  private withRights(pa: number): Arm64TranslationWithRights | { fault: Arm64Fault } {
    if (pa < 0) return { fault: this.lastFault() };
    const r = this.lastRights(), R = RIGHTS;
    return { pa: BigInt(pa), pageSize: 2 ** ((r >>> R.PSHIFT_SHIFT) & 31), level: (r >>> R.LEVEL_SHIFT) & 7, rights: r, epoch: this.invalidationEpoch() };
  }

  /**
   * The Number fast path for interpreters: translate() with the address as
   * two 32-bit halves, the access as 0 read / 1 write / 2 fetch and `el0` as
   * 0/1, returning the pa as a Number (exact: pa < 2^48) or −1 on a fault,
   * which lastFault() then describes. No BigInt and no object on either side.
   * After a success lastRights() is the effective rights word (RIGHTS.*: S =
   * EL1 under the current PAN, U = EL0) and invalidationEpoch() says how long
   * a cached copy holds.
   */
  translateFast(vaLo: number, vaHi: number, access: 0 | 1 | 2, el0: 0 | 1 | boolean): number {
    if ((vaLo >>> 0) !== vaLo && (vaLo | 0) !== vaLo || (vaHi >>> 0) !== vaHi && (vaHi | 0) !== vaHi
        || (access !== 0 && access !== 1 && access !== 2) || (el0 !== 0 && el0 !== 1 && el0 !== true && el0 !== false)) {
      checkFastArgs(vaLo, vaHi, access, el0, "el0");
    }
    return this.ex.armTranslateFast(this.c0, vaLo, vaHi, access, el0 ? 1 : 0);
  }

  /** The fault of the last translateFast() that returned −1. */
  lastFault(): Arm64Fault {
    this.lifetime.check();
    const r = this.result(this.u32()[(this.base + this.L.R_STATUS) >> 2]!);
    if (!("fault" in r)) throw new Error("vmmu: lastFault() without a faulting translateFast()");
    return r.fault;
  }

  /**
   * The debugger view (QEMU gva2gpa): stage 1 only, a data read at the given
   * EL and PAN (defaults: EL1, the vCPU's PAN), no hardware updates, no TLB.
   */
  peek(va: bigint, opts: { el0?: boolean; pan?: boolean } = {}): Arm64TranslateResult {
    this.lifetime.check();
    bigintArg(va, "va");
    optionsObject(opts, "opts");
    if (opts.el0 !== undefined) boolArg(opts.el0, "opts.el0");
    if (opts.pan !== undefined) boolArg(opts.pan, "opts.pan");
    const dv = this.dv(), o = this.base + this.L.S_PAN;
    const saved = dv.getUint32(o, true);
    if (opts.pan !== undefined) { dv.setUint32(o, opts.pan ? 1 : 0, true); this.load(); }
    try {
      return this.result(this.ex.armWalk(this.c0, BigInt.asUintN(64, va), 0, opts.el0 ? 1 : 0, this.L.AWALK_DEBUG));
    } finally {
      if (opts.pan !== undefined) { dv.setUint32(o, saved, true); this.load(); }
    }
  }

  /**
   * A full translation that bypasses every TLB (stage-1 and stage-2-only
   * entries); `update: false` leaves descriptors untouched and reports the
   * outcome as if the hardware updates had been made (so it does not check the
   * stage-2 write permission a stage-1 AF/DBM update would need).
   */
  walk(va: bigint, access: Arm64Access = "read", el0 = false, opts: { update?: boolean } = {}): Arm64TranslateResult {
    this.lifetime.check();
    bigintArg(va, "va");
    boolArg(el0, "el0");
    optionsObject(opts, "opts");
    if (opts.update !== undefined) boolArg(opts.update, "opts.update");
    const flags = opts.update === false ? 0 : this.L.AWALK_UPDATE;
    return this.result(this.ex.armWalk(this.c0, BigInt.asUintN(64, va), armAccessCode(access), el0 ? 1 : 0, flags));
  }

  /** Stage-2 walk of one IPA (no TLB), with hardware updates. */
  walkStage2(ipa: bigint, access: Arm64Access = "read", el0 = false): Arm64TranslateResult {
    this.lifetime.check();
    bigintArg(ipa, "ipa");
    boolArg(el0, "el0");
    return this.result(this.ex.armWalkStage2(this.c1, BigInt.asUintN(64, ipa), armAccessCode(access), el0 ? 1 : 0));
  }

  /** Batch translation (see X86Vcpu.translateBatch); `el0` for the whole batch. */
  translateBatch(va: BigUint64Array, access: Uint8Array | Arm64Access, el0: boolean,
    out?: { pa: BigUint64Array; status: Uint32Array }): number {
    this.lifetime.check();
    u64ArrayArg(va, "va");
    if (typeof access !== "string") {
      u8ArrayArg(access, "access");
      for (let i = 0; i < va.length && i < access.length; i++) {
        if (access[i]! > 2) throw new TypeError(`vmmu: access code ${access[i]} at index ${i} is not 0 (read), 1 (write) or 2 (fetch)`);
      }
    }
    if (out === undefined) out = { pa: new BigUint64Array(va.length), status: new Uint32Array(va.length) };
    return this.batchInto(va, typeof access === "string" ? armAccessCode(access) : access, el0, out);
  }

  /** Decodes a batch status word (and its pa slot) into a translate() result. */
  decodeStatus(status: number, pa: bigint): Arm64TranslateResult {
    this.lifetime.check();
    intArg(status, "status", 0, 0xffff_ffff);
    bigintArg(pa, "pa");
    const L = this.L;
    const s = status >>> L.BS_STATUS_SHIFT;
    const level = (status >>> L.BS_LEVEL_SHIFT) & 0xff;
    if (s === L.STATUS_OK) return { pa, pageSize: 1 << ((status >>> L.BS_PSHIFT_SHIFT) & 31), level };
    if (s === L.STATUS_EACCESS) throw new TypeError("vmmu: batch entry had an access code other than 0, 1, 2");
    const fsc = status & 0x3f;
    const stage = (status & 0x40) !== 0 ? 2 : 1;
    const fault: Arm64Fault = {
      stage, fsc, level, kind: FSC_KIND[fsc >> 2] ?? "translation", s1ptw: (status & 0x80) !== 0, write: (status & (1 << 16)) !== 0,
    };
    if (stage === 2) fault.ipa = pa;
    return { fault };
  }

  /**
   * Executes TLBI `op` (an Arm name, IS or local form, any case) with its
   * 64-bit operand Xt, as this PE would: decoded for the current TCR_EL1.AS
   * (ASID width) and VMID, applied to this vCPU's TLB — and, for …IS forms,
   * to every vCPU of the machine on this thread. Returns the decoded operation.
   */
  tlbi(op: TlbiName | string, operand: bigint = 0n): DecodedTlbi {
    this.lifetime.check();
    reg64Arg(operand, "operand");
    const d = decodeTlbi(op, BigInt.asUintN(64, operand), { asid16: this.asid16 });
    const x = BigInt.asUintN(64, operand);
    this.tlbiFast(TLBI_CODE[d.name], Number(x & 0xffff_ffffn), Number(x >> 32n));
    return d;
  }

  /**
   * tlbi() with Numbers only, for interpreters: instruction `code`
   * (TLBI_CODE.VAE1IS …) and the operand as two 32-bit halves (signed or
   * unsigned). No BigInt, no allocation: the same effect as
   * tlbi(TLBI_NAMES[code], hi:lo).
   */
  tlbiFast(code: number, opLo = 0, opHi = 0): void {
    this.lifetime.check();
    if (!(code >= 0 && code < TLBI_NAMES.length && (code | 0) === code)
        || (opLo >>> 0) !== opLo && (opLo | 0) !== opLo || (opHi >>> 0) !== opHi && (opHi | 0) !== opHi) {
      if (typeof code !== "number" || !Number.isInteger(code) || code < 0 || code >= TLBI_NAMES.length) {
        throw new RangeError(`vmmu: code must be a TLBI_CODE value (0..${TLBI_NAMES.length - 1}), got ${show(code)}`);
      }
      checkFastArgs(opLo, opHi, 0, 0, "", ["opLo", "opHi"]);
    }
    const f = this.fields;
    decodeTlbiFields(f, code, opLo, opHi, this.asid16);
    const vmid = this.curVmid;
    if (f.broadcast) {
      const peers = this.peers;
      for (let i = 0; i < peers.length; i++) peers[i]!.applyTlbi(f, vmid);
    } else {
      this.applyTlbi(f, vmid);
    }
  }

  /** @internal Applies a decoded TLBI (Numbers) for `vmid` to this vCPU's TLB (the wasm core does the key matching). */
  applyTlbi(f: TlbiFields, vmid: number): void {
    this.opCounts[f.code]!++;
    if (f.ignored !== 0) { this.ignoredOps++; return; }
    const ex = this.ex, b = this.base;
    switch (f.kind) {
      case TLBI_KIND.all:
        ex.tlbFlushAll(b);
        this.ctxFlushes++;
        break;
      case TLBI_KIND.vmalls12:
        ex.armFlushVmid(b, vmid, 1);
        this.ctxFlushes++;
        break;
      case TLBI_KIND.vmall:
        ex.armFlushVmid(b, vmid, 0);
        this.ctxFlushes++;
        break;
      case TLBI_KIND.asid:
        ex.armFlushAsid(b, vmid, f.asid);
        this.ctxFlushes++;
        break;
      case TLBI_KIND.va:
        ex.armInvalidateVa(b, vmid, f.asid, f.vpn, f.pages, f.level < 0 ? 0 : f.level);
        this.rangeFlushes++;
        break;
      case TLBI_KIND.ipa:
        ex.armInvalidateIpa(b, vmid, f.vpn, f.pages, f.level < 0 ? 0 : f.level);
        this.rangeFlushes++;
        break;
    }
  }

  /** Counts of TLBI operations this vCPU executed or received. */
  tlbiStats(): TlbiStats {
    this.lifetime.check();
    return {
      ops: Object.fromEntries(TLBI_NAMES.flatMap((n, i) => (this.opCounts[i] ? [[n, this.opCounts[i]!]] : []))), ignored: this.ignoredOps, contextFlushes: this.ctxFlushes,
      rangeFlushes: this.rangeFlushes, contextEvictions: Number(this.counterView()[this.L.C_SLOT_EVICTIONS]!),
    };
  }

  toString(): string {
    if (this.lifetime.disposed) return `arm64 vCPU ${this.index} (machine disposed)`;
    const r = this.systemRegisters();
    return `arm64 vCPU ${this.index} ttbr0=${hex(r.ttbr0)} ttbr1=${hex(r.ttbr1)} tcr=${hex(r.tcr)} vttbr=${hex(r.vttbr)} hcr=${hex(r.hcr)}`;
  }
}

/** The wasm access code of an access kind; TypeError for anything else. */
export function armAccessCode(access: Arm64Access): number {
  const code = typeof access === "string" && Object.hasOwn(ARM_ACCESS_CODE, access) ? ARM_ACCESS_CODE[access] : undefined;
  if (code === undefined) throw new TypeError(`vmmu: access must be 'read' | 'write' | 'fetch', got ${show(access)}`);
  return code;
}

const SYSREG_FIELDS = ["ttbr0", "ttbr1", "tcr", "sctlr", "mair", "vttbr", "vtcr", "hcr"] as const;

/** Batch views of an arm64 vCPU: `run(count, el0)`. */
export type Arm64Batch = Batch<boolean>;
