// A spinlock in simulated time: KVM's kvm->mmu_lock as v5.10 had it (a
// spinlock; Ben Gardon's "KVM: x86/mmu: Use an rwlock for the x86 MMU" made it
// an rwlock in v5.12, and the TDP MMU's faults took it shared), taken by every page
// fault (direct_page_fault: after the lockless fast path, GUP and the cache
// top-up), by root allocation (mmu_alloc_direct_roots via
// kvm_tdp_mmu_get_vcpu_root_hpa) and by kvm_mmu_free_roots, which on the TDP
// MMU zaps a root's whole tree without yielding when its last reference goes.
//
// The vCPUs of a run are simulated in one thread, each with its own clock, and
// not in global time order (src/guest/ssdd.ts orders only their CR0 writes;
// the kernel-compile workload runs each vCPU for a whole time slice). So the
// lock is a calendar of busy intervals, each with the time it was requested,
// rather than an owner: a request at time t for d cycles is granted the
// earliest [s, s+d) with s ≥ t that overlaps no interval requested at or
// before t — the holders a FIFO lock (qspinlock hands over in roughly
// arrival order) would have queued it behind — and spins s − t cycles.
// Requests that arrive in time order get exactly a FIFO lock's waits. One
// that is simulated before an earlier-timed request it should have queued
// behind is not charged that wait (the later-simulated request does not
// displace what was granted): out of time order, contention is
// underestimated, never inflated without bound.

/** Busy intervals kept at most (see SimLock.prune). */
const MAX_INTERVALS = 1024;

/**
 * Busy intervals of one lock with their request times. `horizon()` is a time
 * no future request can precede (the slowest vCPU's clock): intervals ending
 * before it are dropped.
 */
export class SimLock {
  private req: number[] = [];
  private starts: number[] = [];
  private ends: number[] = [];
  /** Cycles spent spinning, summed over all requests. */
  waited = 0;
  /** Requests that had to wait. */
  contended = 0;
  acquisitions = 0;

  constructor(private readonly horizon: () => number) {}

  /**
   * Takes the lock at or after `t` for `hold` cycles; returns the cycles spun
   * before it was granted (0 when free). A hold of 0 takes nothing. Throws a
   * RangeError on a negative or non-finite time or hold.
   */
  acquire(t: number, hold: number): number {
    if (!Number.isFinite(t) || !Number.isFinite(hold) || t < 0 || hold < 0) {
      throw new RangeError(`vmmu: SimLock.acquire(${t}, ${hold}): time and hold must be finite and ≥ 0`);
    }
    if (hold === 0) return 0;
    this.acquisitions++;
    if (this.starts.length > 64) this.prune();
    const req = this.req, starts = this.starts, ends = this.ends;
    // 1. Past every interval requested at or before t that overlaps [s, s + hold), until none does.
    let s = t;
    for (let moved = true; moved;) {
      moved = false;
      for (let i = 0; i < starts.length; i++) {
        if (req[i]! <= t && starts[i]! < s + hold && ends[i]! > s) { s = ends[i]!; moved = true; }
      }
    }
    // 2. Granted [s, s + hold), requested at t.
    req.push(t);
    starts.push(s);
    ends.push(s + hold);
    const wait = s - t;
    if (wait > 0) { this.waited += wait; this.contended++; }
    return wait;
  }

  /**
   * Drops the intervals that end by the horizon; if more than MAX_INTERVALS
   * remain (a vCPU that stays idle holds the horizon back), the oldest-ending
   * beyond half of that too — a request older than those would then wait less
   * than it should.
   */
  private prune(): void {
    const h = this.horizon();
    let keep = this.ends.map((e, i) => [e, i] as const).filter(([e]) => e > h);
    if (keep.length > MAX_INTERVALS) keep = keep.sort((a, b) => a[0] - b[0]).slice(keep.length - MAX_INTERVALS / 2);
    const idx = keep.map(([, i]) => i).sort((a, b) => a - b);
    this.req = idx.map((i) => this.req[i]!);
    this.starts = idx.map((i) => this.starts[i]!);
    this.ends = idx.map((i) => this.ends[i]!);
  }

  /** Busy intervals held (for tests). */
  get size(): number {
    return this.starts.length;
  }
}
