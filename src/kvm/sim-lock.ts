// A spinlock in simulated time: KVM's kvm->mmu_lock as v5.10 had it (a
// spinlock; Ben Gardon's "KVM: x86/mmu: Use an rwlock for the x86 MMU" made it
// an rwlock in v5.12, and the TDP MMU's faults took it shared), taken by every page
// fault (direct_page_fault: after the lockless fast path, GUP and the cache
// top-up), by root allocation (mmu_alloc_direct_roots via
// kvm_tdp_mmu_get_vcpu_root_hpa) and by kvm_mmu_free_roots, which on the TDP
// MMU zaps a root's whole tree without yielding when its last reference goes.
//
// The vCPUs of a run are simulated in one thread, each with its own clock, and
// not in global time order (src/guest/ssdd.ts orders only their CR0 writes).
// So the lock is a calendar of busy intervals rather than an owner: a holder
// that wants it at time t for d cycles gets the earliest interval [s, s+d)
// with s ≥ t that overlaps no interval granted before, and spins s − t
// cycles. Requests that arrive in time order get exactly a FIFO lock's waits
// (qspinlock hands over in roughly arrival order); one that arrives after a
// later-timed request fills the gap before it if the gap is long enough, else
// queues behind it — an error of at most one hold per request.

/** Busy intervals kept at most (see SimLock.prune). */
const MAX_INTERVALS = 1024;

/**
 * Busy intervals of one lock, sorted and disjoint. `horizon()` is a time no
 * future request can precede (the slowest vCPU's clock): intervals ending
 * before it are dropped.
 */
export class SimLock {
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
    const starts = this.starts, ends = this.ends;
    if (starts.length > 64) this.prune();
    // 1. The first interval still busy at t (ends are sorted: the intervals are disjoint).
    let lo = 0, hi = ends.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (ends[mid]! <= t) lo = mid + 1; else hi = mid;
    }
    // 2. Past every interval that overlaps [s, s + hold).
    let s = t, i = lo;
    while (i < starts.length && starts[i]! < s + hold) {
      if (ends[i]! > s) s = ends[i]!;
      i++;
    }
    // 3. Granted [s, s + hold): every interval before i ends by s, every one from i starts at s + hold or later.
    starts.splice(i, 0, s);
    ends.splice(i, 0, s + hold);
    const wait = s - t;
    if (wait > 0) { this.waited += wait; this.contended++; }
    return wait;
  }

  /**
   * Drops the intervals that end by the horizon; if more than MAX_INTERVALS
   * remain (a vCPU that stays idle holds the horizon back), the oldest beyond
   * half of that too — a request older than those would then wait less than
   * it should.
   */
  private prune(): void {
    const h = this.horizon();
    let n = 0;
    while (n < this.ends.length && this.ends[n]! <= h) n++;
    if (this.ends.length - n > MAX_INTERVALS) n = this.ends.length - MAX_INTERVALS / 2;
    if (n > 0) { this.starts.splice(0, n); this.ends.splice(0, n); }
  }

  /** Busy intervals held (for tests). */
  get size(): number {
    return this.starts.length;
  }
}
