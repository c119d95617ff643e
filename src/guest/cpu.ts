// The CPU as a guest operating system sees it: memory accesses by virtual
// address, page-table stores, and the privileged instructions that touch the
// MMU. Under virtualization every one of these may cause a VM exit; the guest
// cannot tell, except through time. Implemented by the hypervisor model
// (src/kvm/shadow-vcpu.ts); guest models (src/guest/) only ever use this.

import type { X86Access } from "../x86/regs.js";

/** A page fault delivered to the guest (vector 14): what its #PF handler sees. */
export interface GuestPageFault {
  /** CR2: the faulting linear address. */
  cr2: bigint;
  /** #PF error code (SDM §4.7). */
  errorCode: number;
}

/** A #GP delivered to the guest. */
export interface GuestGeneralProtection {
  gp: true;
}

export type GuestException = GuestPageFault | GuestGeneralProtection;

export interface GuestCpu {
  /** vCPU index. */
  readonly index: number;

  /**
   * One memory access by the guest at `va` (CPL 3 if `user`). Returns the
   * guest-physical address it reached, or the exception the guest must handle
   * (its #PF handler then fixes its tables and retries, or kills the process).
   */
  access(va: bigint, access: X86Access, user: boolean): bigint | GuestException;

  /**
   * Accesses `va[0..n)` with kinds `kinds[i]` (0 read, 1 write, 2 fetch) in
   * order at CPL 3 if `user`, stopping at the first that raises an exception:
   * returns how many completed and that exception. The fast path for
   * user-space access streams (one call per batch, not per access).
   */
  accessMany(va: BigUint64Array, kinds: Uint8Array, n: number, user: boolean): { done: number; exception?: GuestException };

  /**
   * A 64-bit store of `value` at `va` by the kernel (CPL 0): how the guest
   * writes its own page-table entries (through its direct map). The store is
   * performed (or the exception returned); if the target is a page table the
   * hypervisor write-protects, this exits and the hypervisor emulates it.
   */
  store64(va: bigint, value: bigint): GuestException | null;

  /** The kernel zeroes the 4 KiB page at `va` (a new page-table page, a fresh anonymous page). */
  zeroPage(va: bigint): GuestException | null;

  /** Reads the 64-bit word at guest-physical `gpa` without translation (the guest kernel reading its own tables through the direct map, which cannot fault). */
  readPhys64(gpa: bigint): bigint;

  /** MOV to CR3 (bit 63 = NOFLUSH when CR4.PCIDE = 1). */
  writeCr3(value: bigint): GuestException | null;
  /** MOV to CR4. */
  writeCr4(value: bigint): GuestException | null;
  /** MOV to CR0. */
  writeCr0(value: bigint): GuestException | null;
  /** INVLPG. */
  invlpg(va: bigint): void;
  /** INVPCID (the guest only uses it if `hasInvpcid`). */
  invpcid(type: number, pcid: number, va?: bigint): GuestException | null;
  /** Whether CPUID advertises INVPCID to the guest (under shadow paging it depends on the hypervisor). */
  readonly hasInvpcid: boolean;
  /**
   * The guest raises exception `vector` (not #PF: that is `access`'s business),
   * e.g. the #DB of a single-step trap. The delivery and the handler are the
   * guest's own work (charged by the guest model); a hypervisor that intercepts
   * the vector exits and reinjects it.
   */
  exception(vector: number): void;
  /** Sends an IPI to vCPU `target` (the guest's TLB shootdowns): costs time; the target's handler runs when the caller makes it. */
  sendIpi(target: number): void;
  /** Simulated time spent so far on this vCPU, in cycles. */
  readonly cycles: number;
  /** Charges `n` cycles of guest work that involves no memory access (instructions, syscall bodies). */
  work(n: number): void;
  /**
   * Runs `cycles` of user code, not simulated access by access, that touches
   * `pages` distinct 4 KiB pages: charges the cycles, and a page walk per page
   * if the TLB lost the current address space's translations since the last
   * call for it (a CPU that does not track that charges the cycles only).
   * Optional: callers fall back to `work`.
   */
  runUser?(cycles: number, pages: number): void;
}
