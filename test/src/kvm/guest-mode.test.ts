/**
 * Guest mode in simulated time and the remote flush that depends on it
 * (src/kvm/guest-mode.ts; KVM kvm_make_all_cpus_request / kvm_request_needs_ipi):
 * only vCPUs in guest mode are IPI'd and waited for; every vCPU flushes.
 */
import { describe, expect, it } from "vitest";
import { GuestModeLog, flushRemoteTlbs, type KickTarget } from "../../../src/kvm/guest-mode.js";

describe("GuestModeLog", () => {
  it("knows a vCPU is outside guest mode inside a recorded interval, half-open, and in guest mode elsewhere", () => {
    const g = new GuestModeLog();
    g.record(100, 200);
    expect(g.outsideAt(100, 1000)).toBe(true);
    expect(g.outsideAt(199, 1000)).toBe(true);
    expect(g.outsideAt(200, 1000)).toBe(false);
    expect(g.outsideAt(99, 1000)).toBe(false);
  });

  it("counts an exit still being handled up to the vCPU's own clock, and closes it on re-entry", () => {
    const g = new GuestModeLog();
    g.leave(500);
    g.leave(600); // a second exit inside the first's handling changes nothing
    expect(g.outsideAt(550, 700)).toBe(true);
    expect(g.outsideAt(700, 700)).toBe(false);
    g.enter(800);
    expect(g.outsideAt(799, 0)).toBe(true);
    expect(g.outsideAt(800, 10_000)).toBe(false);
    g.enter(900); // re-entry without an exit: nothing
    expect(g.outsideAt(850, 10_000)).toBe(false);
  });

  it("remembers the last 16 intervals: a 17th forgets the oldest", () => {
    const g = new GuestModeLog();
    for (let i = 0; i < 17; i++) g.record(i * 10, i * 10 + 5);
    expect(g.outsideAt(2, 1e9)).toBe(false);
    expect(g.outsideAt(12, 1e9)).toBe(true);
    expect(g.outsideAt(162, 1e9)).toBe(true);
  });
});

/** A vCPU stub: outside guest mode over [busyFrom, busyTo). */
class Stub implements KickTarget {
  flushed = 0;
  kicks: [number, number][] = [];
  constructor(private readonly busyFrom = -1, private readonly busyTo = -1) {}
  flushHardwareAll(): void { this.flushed++; }
  outsideGuestAt(t: number): boolean { return this.busyFrom <= t && t < this.busyTo; }
  kicked(t: number, times: number): void { this.kicks.push([t, times]); }
}

describe("flushRemoteTlbs", () => {
  it("flushes every vCPU, IPIs the others in guest mode and waits for their acks in parallel, and skips those handling an exit", () => {
    const me = new Stub(), inGuest = new Stub(), inExit = new Stub(1000, 2000), later = new Stub(5000, 6000);
    const count = { ipis: 0, skipped: 0 };
    const waited = flushRemoteTlbs(me, [me, inGuest, inExit, later], 1500, 3, 2500, count);
    expect([me, inGuest, inExit, later].map((v) => v.flushed)).toEqual([1, 1, 1, 1]);
    expect(waited).toBe(3 * 2500);
    expect(count).toEqual({ ipis: 6, skipped: 3 });
    expect(me.kicks).toEqual([]);
    expect(inGuest.kicks).toEqual([[1500, 3]]);
    expect(inExit.kicks).toEqual([]);
    expect(later.kicks).toEqual([[1500, 3]]);
  });

  it("waits for nobody on a 1-vCPU VM", () => {
    const me = new Stub();
    const count = { ipis: 0, skipped: 0 };
    expect(flushRemoteTlbs(me, [me], 0, 1, 2500, count)).toBe(0);
    expect(count).toEqual({ ipis: 0, skipped: 0 });
    expect(me.flushed).toBe(1);
  });
});
