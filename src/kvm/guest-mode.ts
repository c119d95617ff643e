// Guest mode in simulated time, and the remote TLB flush that depends on it:
// KVM's kvm_make_all_cpus_request (virt/kvm/kvm_main.c) sets the request on
// every vCPU and IPIs — and, for a waiting request such as KVM_REQ_TLB_FLUSH,
// waits for — only those in guest mode (kvm_request_needs_ipi: vcpu->mode is
// IN_GUEST_MODE); a vCPU handling an exit services the request before it
// re-enters. Shared by the shadow and the EPT vCPUs.

/** Exit-handling intervals a vCPU remembers; a power of 2. */
const HOST_RING = 16;

/**
 * The last HOST_RING intervals [from, to) of simulated time a vCPU spent
 * outside guest mode (handling an exit), plus the one it may be in now.
 */
export class GuestModeLog {
  private readonly from = new Float64Array(HOST_RING).fill(-1);
  private readonly to = new Float64Array(HOST_RING).fill(-1);
  private next = 0;
  /** Start of the exit being handled now, or -1 in guest mode. */
  private open = -1;

  /** Remembers [from, to) as time outside guest mode. */
  record(from: number, to: number): void {
    const i = this.next++ & (HOST_RING - 1);
    this.from[i] = from;
    this.to[i] = to;
  }

  /** An exit begins at `t` (nothing if one is already being handled). */
  leave(t: number): void {
    if (this.open < 0) this.open = t;
  }

  /** The exit being handled ends at `t`: back in guest mode. */
  enter(t: number): void {
    if (this.open < 0) return;
    this.record(this.open, t);
    this.open = -1;
  }

  /**
   * `times` flush IPIs sent at `t` to this vCPU in guest mode: each costs it
   * an exit, the flush and the re-entry (vmExit + localFlush, returned for the
   * caller to charge). It is outside guest mode from `t` until it has acked
   * (the sender's `remoteFlush` round trip) and flushed: [t, t + times ×
   * (remoteFlush + localFlush)) is remembered, so a flush the sender issues
   * right after the ack finds it still outside and sends no IPI.
   */
  kicked(t: number, times: number, costs: { vmExit: number; localFlush: number; remoteFlush: number }): number {
    this.record(t, t + times * (costs.remoteFlush + costs.localFlush));
    return times * (costs.vmExit + costs.localFlush);
  }

  /** Whether the vCPU is known to be outside guest mode at `t` (`now`: its own clock, bounding an exit still being handled). */
  outsideAt(t: number, now: number): boolean {
    if (this.open >= 0 && this.open <= t && t < now) return true;
    for (let i = 0; i < HOST_RING; i++) if (this.from[i]! <= t && t < this.to[i]!) return true;
    return false;
  }
}

/** A vCPU as a remote flush sees it. */
export interface KickTarget {
  /** Flushes every hardware TLB context of this vCPU (it does so before it next enters). */
  flushHardwareAll(): void;
  /** Whether the vCPU is known to be outside guest mode at simulated time `t`. */
  outsideGuestAt(t: number): boolean;
  /** Kicked out of guest mode by `times` flush IPIs at `t`: an exit, the flush and the re-entry each, charged to it. */
  kicked(t: number, times: number): void;
}

/** What a remote flush did: requests that waited for an IPI round trip, and requests that found the target outside guest mode. */
export interface RemoteFlushCount {
  ipis: number;
  skipped: number;
}

/**
 * `times` kvm_flush_remote_tlbs calls by `from` at simulated time `t`:
 * 1. every vCPU of `vcpus` flushes its hardware TLB (before it next enters);
 * 2. every other vCPU in guest mode at `t` is IPI'd and gets `times` kicks
 *    (KickTarget.kicked); smp_call_function_many sends every IPI, then waits
 *    for all the acks, so the caller waits `times` round trips of
 *    `remoteFlush` cycles however many targets there are;
 * 3. a target known to be outside guest mode at `t` is neither IPI'd nor
 *    waited for; one whose state at `t` is not simulated yet counts as in
 *    guest mode.
 * Returns the cycles the caller waited; adds the counts to `count`.
 */
export function flushRemoteTlbs(from: KickTarget, vcpus: readonly KickTarget[], t: number, times: number, remoteFlush: number, count: RemoteFlushCount): number {
  let ipis = 0;
  for (const v of vcpus) {
    v.flushHardwareAll();
    if (v === from) continue;
    if (v.outsideGuestAt(t)) { count.skipped += times; continue; }
    count.ipis += times;
    ipis++;
    v.kicked(t, times);
  }
  return ipis > 0 ? remoteFlush * times : 0;
}
