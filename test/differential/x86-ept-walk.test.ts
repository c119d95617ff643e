/**
 * Differential tests of the wasm two-dimensional walk (guest x86-64 paging × EPT) against the
 * reference refTranslateX86Ept (src/ref/ept-walk.ts): Intel SDM Vol.3C §29.3.2 (EPT entries),
 * §29.3.3 (misconfigurations, violations and their priority), §29.3.4 (EPT accessed and dirty
 * flags), the "Exit Qualification for EPT Violations" table, and Vol.3A §4.5–4.8 for the guest
 * half. Random EPT trees with random guest trees behind them (test/helpers/random-ept.ts), random
 * control registers, MBEC, VPID, MAXPHYADDR and memslots, random accesses. walk() with and
 * without A/D, translate() with a flushed and a warm TLB, and translateBatch must give the
 * reference's result and leave every paging-structure word, guest and EPT, exactly as the
 * reference leaves its own copy.
 */
import { describe, expect, it } from "vitest";
import {
  X86EptBuilder, X86PageTableBuilder, X86Vcpu, createMachine, LONG_MODE, type GuestMemory, type X86Control, type X86TranslateResult,
} from "../../src/index.js";
import {
  refDecodeEptp, refEptStats, refTranslateX86Ept, type RefEptOptions, type RefEptStats, type RefX86EptResult,
} from "../../src/ref/ept-walk.js";
import type { RefAccess, RefMemory } from "../../src/ref/x86-walk.js";
import { fuzzCount, Rng, seedNote, testSeed } from "../helpers/rng.js";
import { RamMirror, hx, randomAccessVa, randomControl, refState } from "../helpers/random-tables.js";
import {
  clearWords, describeWalk2d, eptPath, randomAccessGpa, randomEptTree, type EptTree, type HostSpace,
} from "../helpers/random-ept.js";
import { verbose } from "../helpers/note.js";

const MiB = 1n << 20n;
const ACCESSES: readonly RefAccess[] = ["read", "write", "fetch"];
const CR0_PG = 1n << 31n;
const CR4_LA57 = 1n << 12n;
const seed = testSeed();
const scale = Math.max(1, Number(process.env.VMMU_DIFF_SCALE ?? 1) || 1);

/** One machine of a run: host RAM below 2^MAXPHYADDR and the vCPU under test (0, or 1 of 2). */
interface Round {
  host: HostSpace;
  memory: GuestMemory;
  vcpu: X86Vcpu;
  eagerBytes: bigint;
  tlbOn: boolean;
}

const hexNum = (n: unknown): string => (typeof n === "number" ? `0x${n.toString(16)}` : String(n));
const hexAny = (v: unknown): string => (typeof v === "bigint" ? hx(v) : String(v));

/** One line per outcome, the same for both walkers: every field the contract fixes. */
function showFault(f: Record<string, unknown>): string {
  const head = `${String(f.kind)} vector=${String(f.vector)} error=${hexNum(f.errorCode)}`;
  switch (f.kind) {
    case "ept-violation":
      return `${head} qualification=${hexNum(f.qualification)} gpa=${hexAny(f.gpa)} gva=${hexAny(f.gva)} level=${String(f.level)}`;
    case "ept-misconfig":
      return `${head} gpa=${hexAny(f.gpa)} level=${String(f.level)}`;
    case "abort":
      return `${head} stage=${String(f.stage)} level=${String(f.level)} gpa=${hexAny(f.gpa)} hpa=${hexAny(f.hpa)}`;
    default:
      return `${head} level=${String(f.level)}`;
  }
}

function showVcpu(r: X86TranslateResult): string {
  if ("fault" in r) return showFault(r.fault as unknown as Record<string, unknown>);
  const t = r as unknown as Record<string, unknown>;
  return `ok pa=${hexAny(t.pa)} gpa=${hexAny(t.gpa)} size=${String(t.pageSize)} level=${String(t.level)}`;
}

function showRef(r: RefX86EptResult): string {
  if (r.ok) return `ok pa=${hx(r.pa)} gpa=${hexAny(r.gpa)} size=${r.pageSize} level=${r.level}`;
  if (r.kind === "ept-violation" || r.kind === "ept-misconfig") return showFault({ vector: -1, errorCode: 0, ...r });
  return showFault({ ...r });
}

/**
 * What a batch status word and its pa slot can carry (README, "Batch results
 * under EPT"): an ok result without its gpa, an abort without stage and hpa.
 */
function batchView(r: RefX86EptResult): RefX86EptResult {
  if (r.ok) return { ...r, gpa: undefined as unknown as bigint };
  if (r.kind === "abort") return { ...r, stage: undefined as unknown as "ept", hpa: undefined as unknown as bigint };
  return r;
}

/** Outcome classes the generator must keep producing. */
function classes(r: RefX86EptResult, ad: boolean): string[] {
  if (r.ok) {
    const size = (n: number) => (n === 4096 ? "4K" : n === 1 << 21 ? "2M" : "1G");
    return [r.level === 0 ? "ok paging off" : `ok ${size(r.pageSize)}`, `ok EPT ${size(r.eptPageSize)}`];
  }
  switch (r.kind) {
    case "general-protection":
      return ["#GP"];
    case "abort":
      return ["abort", `abort ${r.stage}`];
    case "ept-misconfig":
      return ["misconfig", `misconfig L${r.level}`];
    case "ept-violation": {
      const q = r.qualification;
      const out = ["violation", `violation L${r.level}`];
      if (q & 1) out.push("violation read");
      if (q & 2) out.push("violation write");
      if (q & 4) out.push("violation fetch");
      if ((q & 0x38) === 0) out.push("violation not present");
      if (q & 0x40) out.push("violation UX");
      if (q & 0x100) out.push("violation final");
      else out.push("violation guest table");
      if ((q & 0x100) === 0 && !ad && (q & 2)) out.push("violation guest A/D write");
      if ((q & 0x100) === 0 && ad) out.push("violation guest table with EPT A/D");
      return out;
    }
    case "page-fault": {
      const e = r.errorCode;
      const out: string[] = [];
      if ((e & 1) === 0) out.push("#PF not present");
      else if (e & 8) out.push("#PF reserved");
      else if (e & 32) out.push("#PF key");
      else out.push("#PF rights");
      return out;
    }
  }
}

class Tally {
  readonly counts = new Map<string, number>();
  add(name: string, n = 1): void {
    this.counts.set(name, (this.counts.get(name) ?? 0) + n);
  }
  outcome(r: RefX86EptResult, ad: boolean, extra: string[] = []): void {
    for (const c of classes(r, ad)) this.add(c);
    for (const c of extra) this.add(c);
  }
  get(name: string): number {
    return this.counts.get(name) ?? 0;
  }
  toString(): string {
    return [...this.counts].sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}: ${v}`).join(", ");
  }
}

/**
 * The reference memory of walk(…, { setAD: false }): the same reads, every compare-exchange
 * succeeds without a store. So that walk gives walk()'s outcome — a guest A/D update is still
 * the EPT-checked write it would be (and may violate) — and leaves memory untouched, as
 * setAD: false does without EPT.
 */
class DryMemory implements RefMemory {
  constructor(private readonly mem: RefMemory) {}
  read64(hpa: bigint): bigint | undefined {
    return this.mem.read64(hpa);
  }
  cmpxchg64(hpa: bigint, expected: bigint): boolean {
    return this.mem.read64(hpa) === expected;
  }
}

/** Shuffled MAXPHYADDR values covering 36..52 once, plus a few repeats. */
function maxPhysSchedule(rng: Rng, extra: number): number[] {
  const ms = Array.from({ length: 17 }, (_, i) => 36 + i);
  for (let i = 0; i < extra; i++) ms.push(36 + rng.int(17));
  for (let i = ms.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [ms[i], ms[j]] = [ms[j]!, ms[i]!];
  }
  return ms;
}

/** A machine with MAXPHYADDR `m`; its TLB on with chance 0.85, or as `tlbOn` says. */
async function newRound(rng: Rng, m: number, tlbOn = rng.chance(0.85)): Promise<Round> {
  const ramBytes = rng.pick([16n, 16n, 32n]) * MiB;
  const top = 1n << BigInt(m);
  const r = rng.u32() / 0x1_0000_0000;
  const ramBase = r < 0.55 ? 0n : r < 0.85 ? (rng.u64() % ((top - ramBytes) >> 12n)) << 12n : top - ramBytes;
  const eagerBytes = rng.chance(0.75) ? ramBytes : (rng.u64() % (ramBytes >> 12n)) << 12n;
  const vcpus = rng.chance(0.2) ? 2 : 1;
  const machine = await createMachine({
    arch: "x86_64", memoryBytes: ramBytes, maxPhysAddrBits: m, ramBase, eagerBytes, vcpus, tlbEntries: rng.pick([16, 64, 4096]),
  });
  const vcpu = machine.vcpu(vcpus - 1);
  if (!tlbOn) vcpu.setTlbEnabled(false);
  return { host: { maxPhysAddrBits: m, ramBase, ramBytes }, memory: machine.memory, vcpu, eagerBytes, tlbOn };
}

function roundNote(round: Round): string {
  const h = round.host;
  return `vCPU ${round.vcpu.index} MAXPHYADDR=${h.maxPhysAddrBits} TLB ${round.tlbOn ? "on" : "off"} RAM=[${hx(h.ramBase)}, ${hx(h.ramBase + h.ramBytes)}) eager=${hx(round.eagerBytes)}`;
}

/** The first non-zero word of the eagerly backed RAM, if any (lazily backed frames are not scanned). */
function strayWord(round: Round): string | undefined {
  const bytes = round.memory.bytes();
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2);
  for (let i = 0; i < words.length; i++) {
    if (words[i] !== 0) return `hpa ${hx(round.host.ramBase + BigInt(i) * 4n)} holds ${hx(BigInt(words[i]!))}`;
  }
  return undefined;
}

/** One access's state: control registers, VMCS fields, address, kind and privilege. */
interface Access {
  c: X86Control;
  vmcs: { eptp: bigint; vpid: number; mbec: boolean };
  va: bigint;
  access: RefAccess;
  user: boolean;
}

/**
 * Drives one two-dimensional tree: every check compares the wasm outcome with the reference's
 * and then every word of host memory the trees wrote with the reference's copy.
 */
class TreeRun {
  readonly mirror: RamMirror;
  private before: Map<bigint, bigint>;

  constructor(readonly round: Round, readonly tree: EptTree, readonly tally: Tally, readonly note: string) {
    this.mirror = new RamMirror(round.host.ramBase, round.host.ramBytes, tree.words);
    this.before = new Map(this.mirror.words);
  }

  options(mbec: boolean, stats?: RefEptStats): RefEptOptions {
    return { maxPhysAddrBits: this.round.host.maxPhysAddrBits, executeOnly: true, mbec, adSupported: true, fiveLevel: true, stats };
  }

  reference(a: Access, mem: RefMemory = this.mirror, stats?: RefEptStats): RefX86EptResult {
    return refTranslateX86Ept(mem, refState(a.c, this.round.host.maxPhysAddrBits), a.vmcs.eptp, a.va, a.access, a.user, this.options(a.vmcs.mbec, stats));
  }

  describe(what: string, a: Access): string {
    const pre = new RamMirror(this.round.host.ramBase, this.round.host.ramBytes, this.before);
    const { c } = a;
    const paging = (c.cr0 & CR0_PG) !== 0n;
    return `${this.note} ${what}: va=${hx(a.va)} ${a.access} ${a.user ? "user" : "supervisor"} `
      + `vpid=${a.vmcs.vpid} MBEC ${a.vmcs.mbec ? "on" : "off"}\n  ${roundNote(this.round)} guest levels=${this.tree.guest.space.levels}\n`
      + `  cr0=${hx(c.cr0)} cr3=${hx(c.cr3)} cr4=${hx(c.cr4)} efer=${hx(c.efer)} pkru=${hx(c.pkru)} rflags=${hx(c.rflags)}\n`
      + `  walk before the access:\n${describeWalk2d(pre, this.tree, c.cr3, (c.cr4 & CR4_LA57) !== 0n, paging, a.va)}`;
  }

  expectSame(got: string, want: RefX86EptResult, context: () => string): void {
    const w = showRef(want);
    if (got !== w) expect(got, context()).toBe(w);
  }

  expectWords(context: () => string): void {
    const diffs: string[] = [];
    for (const [hpa, want] of this.mirror.words) {
      const got = this.round.memory.read64(hpa);
      if (got !== want) diffs.push(`[${hx(hpa)}] was ${hx(this.before.get(hpa) ?? 0n)}: wasm ${hx(got)}, reference ${hx(want)}`);
    }
    if (diffs.length > 0) expect(diffs, context()).toEqual([]);
    for (const [hpa, v] of this.mirror.words) {
      if (this.before.get(hpa) !== v) this.tally.add("A/D words written");
    }
    this.before = new Map(this.mirror.words);
  }

  /** Classes that need the EPT entries: the cause of a misconfiguration, a fetch through an execute-only translation. */
  causes(a: Access, r: RefX86EptResult): string[] {
    if (!r.ok && r.kind === "ept-misconfig") {
      const e = eptPath(this.mirror, this.tree, r.gpa).find((x) => x.level === r.level)?.entry ?? 0n;
      const leaf = r.level === 1 || (r.level <= 3 && (e & 0x80n) !== 0n);
      if ((e & 3n) === 2n) return ["misconfig write without read"];
      if (leaf && [2n, 3n, 7n].includes((e >> 3n) & 7n)) return ["misconfig memory type"];
      return ["misconfig reserved bit"];
    }
    if (r.ok && a.access === "fetch") {
      const rights = eptPath(this.mirror, this.tree, r.gpa).reduce((acc, x) => acc & x.entry, 7n) & 3n;
      if (rights === 0n) return ["ok fetch, execute-only EPT"];
    }
    return [];
  }

  /** Random controls for this tree: guest paging mostly on (CR3 at the guest root), sometimes off; random MBEC and VPID. */
  randomAccessState(rng: Rng): Omit<Access, "va" | "access" | "user"> {
    const c = randomControl(rng, this.tree.guest.root, this.tree.guest.space.levels);
    if (rng.chance(0.08)) c.cr0 &= ~CR0_PG;
    const vmcs = { eptp: this.tree.eptp, vpid: rng.chance(0.4) ? 0 : 1 + rng.int(0xffff), mbec: rng.chance(0.35) };
    return { c, vmcs };
  }

  randomVa(rng: Rng, c: X86Control): bigint {
    if ((c.cr0 & CR0_PG) === 0n) return randomAccessGpa(rng, this.tree);
    return randomAccessVa(rng, this.tree.guest, (c.cr4 & CR4_LA57) !== 0n);
  }

  enter(s: Omit<Access, "va" | "access" | "user">): void {
    this.round.vcpu.setControl(s.c);
    this.round.vcpu.setVmcs(s.vmcs);
  }

  /** Flushes the whole TLB (setTlbEnabled flushes), keeping it on or off as the round has it. */
  flush(): void {
    this.round.vcpu.setTlbEnabled(this.round.tlbOn);
  }

  /** One access through walk(setAD=false), walk and translate (flushed TLB) in random order, then warm translates. */
  single(rng: Rng, index: number): void {
    const { vcpu, tlbOn } = this.round;
    const s = this.randomAccessState(rng);
    this.enter(s);
    const a: Access = { ...s, va: this.randomVa(rng, s.c), access: rng.pick(ACCESSES), user: rng.chance(0.5) };
    const ctx = (what: string, x: Access = a) => () => this.describe(`case ${index} ${what}`, x);
    const ad = this.tree.eptAd;

    const dry = this.reference(a, new DryMemory(this.mirror));
    this.expectSame(showVcpu(vcpu.walk(a.va, a.access, a.user, { setAD: false })), dry, ctx("walk setAD=false"));
    this.expectWords(ctx("walk setAD=false leaves memory alone"));

    const walkFirst = rng.chance(0.5);
    for (const api of walkFirst ? ["walk", "translate"] : ["translate", "walk"]) {
      const primary = api === (walkFirst ? "walk" : "translate");
      if (api === "walk") {
        const refs0 = vcpu.tlbStats().ptRefs;
        const got = showVcpu(vcpu.walk(a.va, a.access, a.user));
        const refs = vcpu.tlbStats().ptRefs - refs0;
        const stats = refEptStats();
        const want = this.reference(a, this.mirror, stats);
        if (primary) this.tally.outcome(want, ad, this.causes(a, want));
        this.expectSame(got, want, ctx("walk"));
        if (want.ok && !tlbOn) {
          this.tally.add("load counts checked");
          const loads = stats.guestLoads + stats.eptLoads;
          if (refs !== loads) expect(refs, `${ctx("walk: paging-structure loads (tlbStats().ptRefs)")()}`).toBe(loads);
        }
        this.expectWords(ctx("A/D after walk"));
      } else {
        this.flush();
        const got = showVcpu(vcpu.translate(a.va, a.access, a.user));
        const want = this.reference(a);
        if (primary) this.tally.outcome(want, ad, this.causes(a, want));
        this.expectSame(got, want, ctx("translate with a flushed TLB"));
        this.expectWords(ctx("A/D after translate with a flushed TLB"));
        const again = showVcpu(vcpu.translate(a.va, a.access, a.user));
        const want2 = this.reference(a);
        this.expectSame(again, want2, ctx("translate again (warm TLB)"));
        this.expectWords(ctx("A/D after the warm translate"));
      }
    }

    const warm = rng.int(4);
    for (let i = 0; i < warm; i++) {
      const va2 = rng.chance(0.6) ? (a.va & ~0xfffn) | BigInt(rng.int(4096)) : this.randomVa(rng, s.c);
      const b: Access = { ...s, va: va2, access: rng.pick(ACCESSES), user: rng.chance(0.5) };
      const want = this.reference(b);
      this.expectSame(showVcpu(vcpu.translate(b.va, b.access, b.user)), want, ctx(`warm translate ${i} after va=${hx(a.va)} ${a.access}`, b));
      this.expectWords(ctx(`A/D after warm translate ${i}`, b));
      this.tally.add("warm translates");
    }
  }

  /** A batch over repeated and fresh addresses, with a flushed TLB and then again with the TLB it filled. */
  batch(rng: Rng, index: number): void {
    const { vcpu } = this.round;
    const s = this.randomAccessState(rng);
    this.enter(s);
    const user = rng.chance(0.5);
    const distinct = Array.from({ length: 2 + rng.int(6) }, () => this.randomVa(rng, s.c));
    const n = 4 + rng.int(60);
    const va = new BigUint64Array(n);
    for (let i = 0; i < n; i++) va[i] = rng.chance(0.7) ? rng.pick(distinct) : this.randomVa(rng, s.c);
    const oneKind = rng.chance(0.2) ? rng.pick(ACCESSES) : undefined;
    const codes = new Uint8Array(n);
    for (let i = 0; i < n; i++) codes[i] = oneKind ? ACCESSES.indexOf(oneKind) : rng.int(3);
    this.flush();

    for (let pass = 0; pass < 2; pass++) {
      const out = { pa: new BigUint64Array(n), status: new Uint32Array(n) };
      vcpu.translateBatch(va, oneKind ?? codes, user, out);
      const at = (i: number): Access => ({ ...s, va: va[i]!, access: ACCESSES[codes[i]!]!, user });
      for (let i = 0; i < n; i++) {
        const want = this.reference(at(i));
        if (pass === 0) this.tally.outcome(want, this.tree.eptAd, this.causes(at(i), want));
        this.expectSame(showVcpu(vcpu.decodeStatus(out.status[i]!, out.pa[i]!, va[i]!)), batchView(want),
          () => this.describe(`batch ${index} pass ${pass} (${n} addresses) element ${i}`, at(i)));
      }
      this.expectWords(() => this.describe(`batch ${index} pass ${pass} (${n} addresses) A/D writes; last element`, at(n - 1)));
      this.tally.add("batch elements", n);
    }
  }
}

/** Per round (one machine): trees to generate; per tree: single accesses and batches. */
interface RunOptions {
  trees: number;
  singles: number;
  batches: number;
}

async function runAll(rng: Rng, opts: RunOptions, label: string): Promise<Tally> {
  const tally = new Tally();
  const schedule = maxPhysSchedule(rng, 3);
  for (let r = 0; r < schedule.length; r++) {
    const round = await newRound(rng, schedule[r]!, r % 8 === 0 ? false : undefined);
    for (let t = 0; t < opts.trees * scale; t++) {
      const tree = randomEptTree(rng, round.host, round.memory, rng.chance(0.5) ? 4 : 5);
      const run = new TreeRun(round, tree, tally, seedNote(seed, `${label} round ${r} tree ${t}`));
      tally.add(`${tree.flavour} EPT trees`);
      tally.add(`EPT ${tree.eptLevels}-level × guest ${tree.guest.space.levels}-level`);
      if (tree.eptAd) tally.add("trees with EPT A/D");
      for (let b = 0; b < opts.batches; b++) run.batch(rng, b);
      for (let i = 0; i < opts.singles; i++) {
        run.single(rng, i);
        tally.add("cases");
      }
      clearWords(round.memory, tree.words);
      clearWords(round.memory, run.mirror.words);
    }
    const stray = strayWord(round);
    expect(stray, `${seedNote(seed, `${label} round ${r}`)} RAM outside the trees stays zero (${roundNote(round)})`).toBeUndefined();
  }
  return tally;
}

function expectCoverage(tally: Tally, minimums: Record<string, number>, label: string): void {
  const short = Object.entries(minimums).filter(([k, n]) => tally.get(k) < n).map(([k, n]) => `${k}: ${tally.get(k)} < ${n}`);
  expect(short, `${seedNote(seed, label)} outcome mix too thin; tally: ${tally}`).toEqual([]);
}

/** What every run at default scale must have produced, per the reference's outcomes. */
const SINGLE_COVERAGE: Record<string, number> = {
  "ok 4K": 150, "ok 2M": 50, "ok 1G": 45, "ok paging off": 150, "ok EPT 4K": 250, "ok EPT 2M": 100, "ok EPT 1G": 60,
  "#PF not present": 500, "#PF reserved": 150, "#PF rights": 300, "#PF key": 30, "#GP": 400,
  violation: 750, "violation read": 450, "violation write": 450, "violation fetch": 80, "violation not present": 300,
  "violation final": 220, "violation guest table": 500, "violation guest A/D write": 60, "violation guest table with EPT A/D": 280,
  "violation UX": 40, "violation L1": 300, "violation L2": 180, "violation L3": 100, "violation L4": 55, "violation L5": 12,
  misconfig: 250, "misconfig write without read": 120, "misconfig memory type": 40, "misconfig reserved bit": 100,
  "ok fetch, execute-only EPT": 12, "misconfig L1": 60, "misconfig L2": 50, "misconfig L3": 50, "misconfig L4": 25, "misconfig L5": 3,
  "abort ept": 8, "abort guest": 40, "A/D words written": 3500, "warm translates": 4500, "builder EPT trees": 55,
  "load counts checked": 20,
};

describe("wasm 2D walk (guest paging × EPT) against the reference walker", () => {
  it("walk, translate cold and warm give the reference's outcome and A/D writes on random EPT × guest trees", async () => {
    const tally = await runAll(new Rng(seed), { trees: 40, singles: 10, batches: 0 }, "single");
    verbose(`[x86 EPT differential, single] ${seedNote(seed)} ${tally}`);
    fuzzCount("x86-ept-walk", tally.get("cases"));
    expectCoverage(tally, SINGLE_COVERAGE, "single");
  });

  it("translateBatch gives the reference's outcome per element and its A/D writes", async () => {
    const tally = await runAll(new Rng(seed ^ 0x5bd1_e995), { trees: 8, singles: 0, batches: 3 }, "batch");
    verbose(`[x86 EPT differential, batch] ${seedNote(seed)} ${tally}`);
    fuzzCount("x86-ept-walk", tally.get("batch elements"));
    expectCoverage(tally, {
      "ok 4K": 400, "ok 2M": 150, "ok 1G": 80, "ok paging off": 300, violation: 2000, misconfig: 500, "#PF not present": 1200,
      "abort ept": 10, "abort guest": 40, "A/D words written": 1000,
    }, "batch");
  });

  it("a cold walk of a fully present tree makes (n+1)(m+1)-1 paging-structure loads: 24 for 4×4, 35 for 5×5", async () => {
    const m = await createMachine({ arch: "x86_64", memoryBytes: 64n * MiB, maxPhysAddrBits: 46 });
    const vcpu = m.vcpu(0);
    vcpu.setTlbEnabled(false);
    const got: string[] = [];
    const want: string[] = [];
    for (const [k, [guestLevels, eptLevels]] of ([[4, 4], [5, 5], [4, 5], [5, 4]] as const).entries()) {
      const base = BigInt(k + 1) * 0x40_0000n;
      const ept = new X86EptBuilder(m.memory, { levels: eptLevels, tableBase: base, tableLimit: base + 0x10_0000n, accessedDirty: true });
      const gpt = new X86PageTableBuilder(m.memory, { levels: guestLevels, tableBase: base + 0x10_0000n, tableLimit: base + 0x20_0000n });
      const va = 0x7f12_3456_7000n;
      gpt.map(va, 0x300_0000n, "4K", { user: true, write: true });
      ept.mapRange(base + 0x10_0000n, base + 0x10_0000n, 16, "4K");
      ept.map(0x300_0000n, 0x380_0000n, "4K");
      const cr4 = LONG_MODE.cr4 | (guestLevels === 5 ? CR4_LA57 : 0n);
      const c: X86Control = { ...LONG_MODE, pkru: 0n, rflags: 2n, cr4, cr3: gpt.root };
      vcpu.setControl(c);
      vcpu.setVmcs({ eptp: ept.eptp, vpid: 1, mbec: false });
      const refs0 = vcpu.tlbStats().ptRefs;
      const r = vcpu.translate(va, "read", true);
      got.push(`${guestLevels}×${eptLevels}: ${vcpu.tlbStats().ptRefs - refs0} loads, ${"fault" in r ? "fault" : hx((r as { pa: bigint }).pa)}`);
      want.push(`${guestLevels}×${eptLevels}: ${(guestLevels + 1) * (eptLevels + 1) - 1} loads, 0x3800000`);
      const mirror = new RamMirror(0n, 64n * MiB);
      for (let hpa = base; hpa < base + 0x20_0000n; hpa += 8n) {
        const v = m.memory.read64(hpa);
        if (v !== 0n) mirror.words.set(hpa, v);
      }
      const stats = refEptStats();
      refTranslateX86Ept(mirror, refState(c, 46), ept.eptp, va, "read", true, { maxPhysAddrBits: 46, stats });
      expect(stats.guestLoads + stats.eptLoads, `reference loads for ${guestLevels}×${eptLevels}`).toBe((guestLevels + 1) * (eptLevels + 1) - 1);
    }
    expect(got).toEqual(want);
  });

  it("setVmcs accepts exactly the EPTPs VM entry accepts, and a refused one names the EPTP", async () => {
    const rng = new Rng(seed ^ 0x1234_5678);
    const results: string[] = [];
    const expected: string[] = [];
    for (const maxPhysAddrBits of [36, 40, 46, 52]) {
      const m = await createMachine({ arch: "x86_64", memoryBytes: 16n * MiB, maxPhysAddrBits });
      const vcpu = m.vcpu(0);
      for (let i = 0; i < 60; i++) {
        let eptp = (rng.u64() & ((1n << BigInt(maxPhysAddrBits)) - 0x1000n)) | 6n | (3n << 3n);
        const spoil = rng.int(6);
        if (spoil === 1) eptp = (eptp & ~7n) | BigInt(rng.int(8));
        if (spoil === 2) eptp = (eptp & ~(7n << 3n)) | (BigInt(rng.int(8)) << 3n);
        if (spoil === 3) eptp |= 1n << BigInt(7 + rng.int(5));
        if (spoil === 4) eptp |= 1n << BigInt(maxPhysAddrBits + rng.int(64 - maxPhysAddrBits));
        if (spoil === 5) eptp |= 1n << 6n;
        const ok = refDecodeEptp(eptp, { maxPhysAddrBits }).ok;
        let outcome: string;
        try {
          vcpu.setVmcs({ eptp });
          outcome = vcpu.vmcs().eptp === eptp ? "accepted" : `accepted but reads back ${String(vcpu.vmcs().eptp)}`;
        } catch (e) {
          outcome = e instanceof RangeError && /^vmmu: invalid EPTP/.test(e.message) ? "refused" : `threw ${String(e)}`;
        }
        results.push(`M=${maxPhysAddrBits} eptp=${hx(eptp)}: ${outcome}`);
        expected.push(`M=${maxPhysAddrBits} eptp=${hx(eptp)}: ${ok ? "accepted" : "refused"}`);
      }
    }
    expect(results, seedNote(seed)).toEqual(expected);
  });
});
