// A worker_threads body for concurrency tests: attaches to one vCPU of a
// machine through the bundled library (dist/vmmu.mjs, built by `npm run
// build`) and runs one role over the machine's shared guest memory.
// Plain JS on purpose: a worker loads it without the test transpiler.
//
// Protocol: the parent posts one message { role, handle, sync, ...args };
// the worker answers { ok: true, result } or { ok: false, error }.
// `sync` is an Int32Array over a SharedArrayBuffer: [arrived, go, stop, lost].
// Every role announces itself in `arrived`, waits for `go`, and the looping
// roles run until `stop` is set, so all workers overlap in time; the toggler
// publishes its lost compare-exchanges in `lost` as it goes.

import { parentPort } from "node:worker_threads";
import { attachVcpu } from "../../dist/vmmu.mjs";

const ARRIVED = 0, GO = 1, STOP = 2, LOST = 3;
const A = 1n << 5n, D = 1n << 6n;
const HI_SHIFT = 52n, HI_MASK = 0x7fn << HI_SHIFT;

/** Signals arrival and blocks until the parent opens the start gate. */
function startBarrier(sync) {
  Atomics.add(sync, ARRIVED, 1);
  Atomics.notify(sync, ARRIVED);
  while (Atomics.load(sync, GO) === 0) Atomics.wait(sync, GO, 0, 1000);
}

const stopped = (sync) => Atomics.load(sync, STOP) !== 0;

/** Atomically replaces the entry at `gpa` by f(old); returns the number of lost compare-exchanges. */
function update(memory, gpa, f) {
  let lost = 0;
  for (;;) {
    const old = memory.read64(gpa);
    if (memory.cmpxchg64(gpa, old, f(old))) return lost;
    lost++;
  }
}

/**
 * Translates the same addresses twice (a cold pass that walks and fills the
 * TLB, then a warm pass served from it); returns pa and status words of both.
 */
async function translate({ handle, sync, index, groups }) {
  const vcpu = await attachVcpu(handle, index);
  startBarrier(sync);
  const passes = [];
  for (let pass = 0; pass < 2; pass++) {
    passes.push(groups.map(({ va, access, user }) => {
      const out = { pa: new BigUint64Array(va.length), status: new Uint32Array(va.length) };
      vcpu.translateBatch(va, access, user, out);
      return out;
    }));
  }
  return { passes, stats: vcpu.tlbStats() };
}

/**
 * The vCPU side of the A/D race. Each round, for every leaf it owns: clear
 * A and D (compare-exchange), INVLPG, translate for a write, and check that
 * the entry now has A and D and the translation the expected pa. Leaves it
 * does not own get a TLB-less read walk (A set by compare-exchange). With
 * `clearUpper`, it also clears A of the non-leaf entries every round.
 */
async function adVcpu({ handle, sync, index, leaves, upper, clearUpper }) {
  const vcpu = await attachVcpu(handle, index);
  const memory = vcpu.memory;
  vcpu.resetStats();
  let rounds = 0, writes = 0, reads = 0, adMissing = 0, wrongPa = 0, faults = 0, clearLost = 0;
  const firstError = [];
  startBarrier(sync);
  while (!stopped(sync)) {
    if (clearUpper) for (const g of upper) clearLost += update(memory, g, (e) => e & ~A);
    for (const { va, pa, gpa, owner } of leaves) {
      if (owner === index) {
        clearLost += update(memory, gpa, (e) => e & ~(A | D));
        vcpu.invlpg(va);
        const r = vcpu.translate(va, "write", false);
        writes++;
        if ("fault" in r) { faults++; if (!firstError.length) firstError.push(JSON.stringify(r.fault, big)); continue; }
        if (r.pa !== pa) wrongPa++;
        const e = memory.read64(gpa);
        if ((e & (A | D)) !== (A | D)) { adMissing++; if (!firstError.length) firstError.push(`entry ${e.toString(16)} after write to ${va.toString(16)}`); }
      } else {
        const r = vcpu.walk(va, "read", false);
        reads++;
        if ("fault" in r) { faults++; if (!firstError.length) firstError.push(JSON.stringify(r.fault, big)); continue; }
        if (r.pa !== pa) wrongPa++;
      }
    }
    rounds++;
  }
  return { rounds, writes, reads, adMissing, wrongPa, faults, clearLost, firstError: firstError[0], stats: vcpu.tlbStats() };
}

/**
 * The software side of the race: until stopped, visits the entries
 * round-robin and, with compare-exchange loops, either flips one of ignored
 * bits 11:9 or increments the 7-bit counter kept in ignored bits 58:52 (in
 * turn, per entry). Counts every operation per entry and bit, and every lost
 * compare-exchange. `index` must name a vCPU no one drives: the toggler only
 * needs its memory.
 */
async function toggler({ handle, sync, index, entries }) {
  const vcpu = await attachVcpu(handle, index);
  const memory = vcpu.memory;
  const bumps = entries.map(() => 0);
  const flips = entries.map(() => [0, 0, 0]);
  let lost = 0, ops = 0;
  startBarrier(sync);
  while (!stopped(sync)) {
    for (let i = 0; i < entries.length; i++) {
      const gpa = entries[i];
      const k = (bumps[i] + flips[i][0] + flips[i][1] + flips[i][2]) % 4;
      if (k === 3) {
        lost += update(memory, gpa, (e) => (e & ~HI_MASK) | ((((e >> HI_SHIFT) + 1n) & 0x7fn) << HI_SHIFT));
        bumps[i]++;
      } else {
        lost += update(memory, gpa, (e) => e ^ (1n << BigInt(9 + k)));
        flips[i][k]++;
      }
      ops++;
    }
    Atomics.store(sync, LOST, Math.min(lost, 0x7fff_ffff));
  }
  return { ops, lost, bumps, flips };
}

function big(_k, v) {
  return typeof v === "bigint" ? "0x" + v.toString(16) : v;
}

const roles = { translate, adVcpu, toggler };

parentPort.on("message", async (msg) => {
  try {
    const role = roles[msg.role];
    if (!role) throw new Error(`unknown role ${msg.role}`);
    parentPort.postMessage({ ok: true, result: await role(msg) });
  } catch (e) {
    parentPort.postMessage({ ok: false, error: e instanceof Error ? e.stack ?? e.message : String(e) });
  }
});
