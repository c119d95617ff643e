// The browser demo page (npm run serve): builds x86-64 page tables in the
// machine's shared guest memory, shows a walk level by level with every entry
// decoded bit by bit (Intel SDM Vol.3A §4.5), the TLB's contents and what
// INVLPG and MOV CR3 do to them (§4.10.4.1), a vCPU driven from a Web Worker
// over the same memory, and a short seed reproduction with its plot. Plain DOM.
// When everything has run, <body data-state> is "done" (or "error").

import { hex, coreHash, PFERR, type X86TranslateResult, type X86TlbEntry, type TlbStats, type X86Access } from "../src/index.js";
import { SEED_RESULTS, type KptiPolicyResult } from "../src/experiments/run-kpti.js";
import { barChart } from "../src/report/svg.js";
import {
  createDemo, readWalk, runTlbStory, MAPPINGS, WALK_PRESETS, WORKER_VAS, KPTI_RUN,
  type Demo, type WalkView, type Snapshot, type TlbStory,
} from "./scene.js";
import type { VcpuJobResult } from "./worker.js";

type Child = Node | string | number | null | undefined | false;

/** Creates an element with attributes (`class`, `data-*`, …) and children. */
function el(tag: string, attrs: Record<string, string | number | boolean | undefined> = {}, ...children: Child[]): HTMLElement {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) e.append(c instanceof Node ? c : String(c));
  return e;
}

const $ = (id: string) => document.getElementById(id)!;
const pad16 = (v: bigint) => "0x" + v.toString(16).padStart(16, "0");
const sizeName = (n: number) => (n >= 1 << 30 ? "1 GiB" : n >= 1 << 21 ? "2 MiB" : "4 KiB");

function table(head: string[], rows: HTMLElement[], attrs: Record<string, string> = {}): HTMLElement {
  return el("table", attrs, el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))), el("tbody", {}, ...rows));
}

function describe(r: X86TranslateResult): string {
  if (!("fault" in r)) return `pa ${hex(r.pa)} (${sizeName(r.pageSize)} page, level ${r.level})`;
  const f = r.fault;
  if (f.kind === "general-protection") return "#GP(0)";
  if (f.kind === "abort") return `abort: table gpa ${hex(f.gpa ?? 0n)} outside RAM`;
  const bits = Object.entries(PFERR).filter(([, b]) => (f.errorCode & b) !== 0).map(([n]) => n);
  return `#PF error code ${hex(f.errorCode)} (${bits.join("|") || "not present"}), level ${f.level}`;
}

// ---- 1. page tables ---------------------------------------------------------

function renderTables(d: Demo): void {
  const flag = (m: (typeof MAPPINGS)[number]) => Object.entries(m.flags).map(([k, v]) => (v === true ? k : `${k}=${v}`)).join(" ");
  $("tables-out").replaceChildren(
    el("p", {}, `CR3 = ${hex(d.vcpu.control().cr3)}: root table at gpa ${hex(d.builder.root)}, PCID 1; `
      + `${d.builder.tablesAllocated} table pages; CR4.PGE, PCIDE, SMEP, SMAP, PKE on; MAXPHYADDR ${d.vcpu.maxPhysAddrBits}.`),
    table(["region", "va", "→ pa", "pages", "flags"], MAPPINGS.map((m) => el("tr", {},
      el("td", {}, m.label), el("td", { class: "mono" }, hex(m.va)), el("td", { class: "mono" }, hex(m.pa)),
      el("td", {}, `${m.count} × ${m.size}`), el("td", {}, flag(m))))),
  );
}

// ---- 2. a walk --------------------------------------------------------------

/** The 64 bits of an entry as a strip of cells, grouped by field, bit 63 first. */
function bitStrip(level: WalkView["levels"][number]): HTMLElement {
  const bitsRow = el("tr", { class: "bits" });
  const namesRow = el("tr", { class: "names" });
  for (const f of level.fields) {
    if (f.hi < f.lo) continue;
    const set = f.value !== 0n;
    for (let b = f.hi; b >= f.lo; b--) {
      const v = Number((level.raw >> BigInt(b)) & 1n);
      bitsRow.append(el("td", { class: `bit ${v ? "one" : "zero"} ${f.used ? "used" : "unused"}`, title: `bit ${b}: ${f.name}` }, v));
    }
    const width = f.hi - f.lo + 1;
    const value = width === 1 ? "" : f.name === "addr" ? ` ${hex(f.value << BigInt(f.lo))}` : ` ${f.value}`;
    namesRow.append(el("td", {
      colspan: width, class: `field ${f.used ? "used" : "unused"} ${set ? "set" : ""}`, "data-field": f.name, "data-value": f.value.toString(),
      title: `${f.name} (bit${width > 1 ? `s ${f.hi}:${f.lo}` : ` ${f.lo}`}) = ${width > 1 ? hex(f.value) : f.value}: ${f.meaning}`,
    }, width === 1 && !f.used && f.name === "ign" ? "–" : f.name + (width >= 12 ? value : "")));
  }
  return el("table", { class: "strip" }, el("tbody", {}, bitsRow, namesRow));
}

function walkDetails(level: WalkView["levels"][number]): HTMLElement {
  const shown = level.fields.filter((f) => f.used && f.hi >= f.lo);
  return el("p", { class: "decoded" }, ...shown.map((f) =>
    el("span", { class: `kv ${f.value !== 0n ? "set" : ""}`, title: f.meaning }, `${f.name}=${f.name === "addr" ? hex(f.value << BigInt(f.lo)) : f.hi > f.lo ? hex(f.value) : f.value}`)));
}

function renderWalk(d: Demo, va: bigint, access: X86Access, user: boolean): void {
  const w = readWalk(d, va);
  const rights = d.vcpu.walk(va, access, user, { setAD: false });
  const peek = d.vcpu.peek(va);
  const agrees = w.pa !== undefined ? !("fault" in peek) && peek.pa === w.pa : "fault" in peek;
  const out = $("walk-out");
  out.replaceChildren(
    el("p", {}, `va ${hex(va)}: indices `, el("span", { class: "mono" }, w.levels.map((l) => `${l.name}[${l.index}]`).join(" → ") || "—"), "."),
    ...w.levels.map((l) => el("div", { class: "level", "data-level": l.level, "data-gpa": hex(l.gpa), "data-raw": hex(l.raw) },
      el("h3", {}, `${l.name} #${l.index}`, el("span", { class: "mono" }, ` at gpa ${hex(l.gpa)} = ${pad16(l.raw)}`),
        l.leaf ? el("span", { class: "tag" }, "leaf") : (l.raw & 1n) === 0n ? el("span", { class: "tag bad" }, "not present") : null),
      bitStrip(l), walkDetails(l))),
    el("p", { id: "walk-result", class: w.pa !== undefined ? "ok" : "bad", "data-pa": w.pa !== undefined ? hex(w.pa) : "", "data-agrees": String(agrees) },
      w.pa !== undefined ? `→ pa ${hex(w.pa)} (${sizeName(w.pageSize!)} page)` : `→ ${w.stop}`,
      ` · vcpu.peek(): ${agrees ? "same" : "DIFFERENT: " + describe(peek)}`),
    el("p", { id: "walk-rights" }, `rights for a ${access} at CPL ${user ? 3 : 0} (vcpu.walk, no A/D writes): ${describe(rights)}`),
  );
}

function setupWalkForm(d: Demo): void {
  const form = $("walk-form") as HTMLFormElement;
  const vaIn = $("walk-va") as HTMLInputElement, accessIn = $("walk-access") as HTMLSelectElement, userIn = $("walk-user") as HTMLInputElement;
  const presets = $("walk-presets");
  for (const p of WALK_PRESETS) {
    const b = el("button", { type: "button", class: "preset" }, p.label);
    b.addEventListener("click", () => {
      vaIn.value = hex(p.va); accessIn.value = p.access; userIn.checked = p.user;
      form.requestSubmit();
    });
    presets.append(b);
  }
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = vaIn.value.trim().replace(/_/g, "");
    if (!/^(0x)?[0-9a-f]{1,16}$/i.test(text)) {
      $("walk-out").replaceChildren(el("p", { class: "bad" }, `va must be a hex address like 0x7ffff0002ff8, got '${vaIn.value}'`));
      return;
    }
    renderWalk(d, BigInt(text.startsWith("0x") || text.startsWith("0X") ? text : "0x" + text), accessIn.value as X86Access, userIn.checked);
  });
  const p0 = WALK_PRESETS[0]!;
  vaIn.value = hex(p0.va); accessIn.value = p0.access; userIn.checked = p0.user;
  renderWalk(d, p0.va, p0.access, p0.user);
}

// ---- 3, 4. the TLB and invalidations ----------------------------------------

const entryKey = (e: X86TlbEntry) => `${e.pcid ?? "G"}:${e.va}`;

function tlbTable(s: Snapshot, id: string, mark?: Set<string>, markClass = "gone"): HTMLElement {
  return table(["context", "va (4 KiB piece)", "pa", "page", "leaf level"], s.entries.map((e) => el("tr", {
    class: `tlb-entry ${mark?.has(entryKey(e)) ? markClass : ""}`, "data-va": hex(e.va), "data-pa": hex(e.pa),
    "data-page-size": e.pageSize, "data-context": e.global ? "global" : `pcid ${e.pcid}`,
  }, el("td", {}, e.global ? "global" : `PCID ${e.pcid}`), el("td", { class: "mono" }, hex(e.va)), el("td", { class: "mono" }, hex(e.pa)),
  el("td", {}, sizeName(e.pageSize)), el("td", {}, e.level))), { id, class: "tlb" });
}

function stats(s: TlbStats): string {
  return `live ${s.live} · lookups ${s.lookups} · hits ${s.hits} · misses ${s.misses} · walks ${s.walks} · fills ${s.fills} · `
    + `page flushes ${s.flushPage} · context flushes ${s.flushCtx} · dropped ${s.dropped}`;
}

function renderTlb(story: TlbStory): void {
  $("tlb-out").replaceChildren(
    table(["access", "va", "kind", "CPL", "result"], story.accesses.map(({ access: a, result }) => el("tr", {},
      el("td", {}, a.label), el("td", { class: "mono" }, hex(a.va)), el("td", {}, a.access), el("td", {}, a.user ? 3 : 0),
      el("td", { class: "fault" in result ? "bad" : "" }, describe(result))))),
    el("p", { id: "tlb-count", "data-live": story.filled.stats.live, "data-entries": story.filled.entries.length },
      `${story.filled.entries.length} live entries (vcpu.tlbEntries()); a 2 MiB or 1 GiB page is cached as the 4 KiB pieces touched.`),
    tlbTable(story.filled, "tlb-entries"),
    el("p", { class: "stats" }, stats(story.filled.stats)),
  );
  $("inval-out").replaceChildren(...story.steps.map((s, i) => {
    const after = new Set(s.after.entries.map(entryKey));
    const gone = new Set(s.before.entries.map(entryKey).filter((k) => !after.has(k)));
    return el("div", { class: "inval-step", "data-step": i, "data-before": s.before.entries.length, "data-after": s.after.entries.length, "data-dropped": gone.size },
      el("h3", {}, s.title),
      el("p", {}, `${s.detail}. Entries ${s.before.entries.length} → ${s.after.entries.length}`
        + (gone.size ? ` (${gone.size} dropped, struck out below)` : " (none dropped)") + "."),
      s.probe ? el("p", { class: "probe", "data-pa": "fault" in s.probe.result ? "" : hex(s.probe.result.pa) },
        `then translate ${hex(s.probe.va)} → ${describe(s.probe.result)}`) : null,
      tlbTable(s.before, `inval-before-${i}`, gone),
      el("p", { class: "stats" }, "after: " + stats(s.after.stats)));
  }));
}

// ---- 5. the seed reproduction, 6. the worker ---------------------------------

function startWorker<T>(job: unknown, transfer: Transferable[] = [], onProgress?: (p: number, f: number) => void): Promise<T> {
  const w = new Worker(new URL("./worker.js", import.meta.url), { type: "module", name: "vmmu-demo" });
  return new Promise<T>((resolve, reject) => {
    w.onmessage = (e: MessageEvent) => {
      const m = e.data as { type: string; result?: T; message?: string; policy?: number; fraction?: number };
      if (m.type === "progress") onProgress?.(m.policy!, m.fraction!);
      else { w.terminate(); m.type === "done" ? resolve(m.result as T) : reject(new Error(m.message)); }
    };
    w.onerror = (e) => { w.terminate(); reject(new Error(`worker failed: ${e.message}`)); };
    w.postMessage(job, transfer);
  });
}

async function runSeed(): Promise<void> {
  const bar = $("kpti-progress") as HTMLProgressElement;
  const n = KPTI_RUN.policies.length;
  $("kpti-settings").textContent = `vmmu run kpti --vcpus ${KPTI_RUN.vcpus} --jobs ${KPTI_RUN.jobs} --accesses ${KPTI_RUN.accessesPerProcess} `
    + `--seed ${KPTI_RUN.seed} --policy ${KPTI_RUN.policies.join(",")} (guest RAM ${KPTI_RUN.memoryBytes >> 20} MiB), in a Web Worker`;
  const t0 = performance.now();
  const results = await startWorker<Record<string, KptiPolicyResult>>(
    { role: "kpti", run: { ...KPTI_RUN, policies: [...KPTI_RUN.policies] } }, [], (p, f) => { bar.value = (p + f) / n; });
  bar.value = 1;
  const wall = performance.now() - t0;
  const rows = KPTI_RUN.policies.map((p) => results[p]!);
  const seed = SEED_RESULTS[1];
  const base = results.baseline!, shahid = results.shahid2018!;
  const ours = base.cycles / shahid.cycles;
  $("kpti-out").replaceChildren(
    table(["policy", "simulated cycles", "vs baseline", "VM exits", "syncs", "shadow pages (peak)", "host ms"], rows.map((r) => el("tr", {
      class: "kpti-row", "data-policy": r.policy, "data-cycles": r.cycles, "data-ratio": r.ratioToBaseline ?? "",
    }, el("td", { title: r.title }, r.policy), el("td", {}, r.cycles.toLocaleString("en")), el("td", {}, `${r.ratioToBaseline!.toFixed(3)}×`),
    el("td", {}, r.exitsTotal.toLocaleString("en")), el("td", {}, r.syncs.toLocaleString("en")), el("td", {}, r.shadowPages.peak),
    el("td", {}, r.wallMs.toFixed(0)))), { id: "kpti-table" }),
    el("p", { id: "kpti-seed", "data-ours": ours.toFixed(4), "data-seed": seed.speedup.toFixed(4) },
      `baseline → shahid2018: ${ours.toFixed(2)}× faster here (simulated); the seed (Junaid Shahid, 1 vCPU kernel compile): `
      + `${seed.baseline} → ${seed.shahid2018} = ${seed.speedup.toFixed(2)}×. ${(wall / 1000).toFixed(1)} s in the worker.`),
  );
  const chart = el("div", { id: "kpti-chart", class: "chart" });
  chart.innerHTML = barChart({
    title: `Simulated time per policy (${KPTI_RUN.vcpus} vCPU, ${KPTI_RUN.jobs} jobs, seed ${KPTI_RUN.seed})`,
    categories: rows.map((r) => r.policy),
    series: [{ name: "simulated cycles", values: rows.map((r) => r.cycles) }],
    yLabel: "simulated cycles",
    references: [{ value: base.cycles / seed.speedup, label: `seed's ratio: baseline ÷ ${seed.speedup.toFixed(2)} (${seed.baseline} → ${seed.shahid2018})` }],
    width: 720, height: 340,
  });
  $("kpti-out").append(chart);
}

async function runVcpuWorker(d: Demo): Promise<void> {
  const probe = WORKER_VAS[2]!;
  const leaf = d.builder.leafGpa(probe)!;
  const aBefore = (d.machine.memory.read64(leaf) >> 5n) & 1n;
  const r = await startWorker<VcpuJobResult>({ role: "vcpu", handle: d.machine.handle, index: 1, vas: [...WORKER_VAS], batch: 65536 });
  const aAfter = (d.machine.memory.read64(leaf) >> 5n) & 1n;
  const mainStats = d.machine.vcpu(1).tlbStats();
  const rows = r.results.map(({ va, result }) => {
    const mine = d.vcpu.peek(va);
    const same = !("fault" in result) && !("fault" in mine) && result.pa === mine.pa;
    return el("tr", { class: "worker-row", "data-va": hex(va), "data-pa": "fault" in result ? "" : hex(result.pa), "data-match": String(same) },
      el("td", { class: "mono" }, hex(va)), el("td", {}, describe(result)), el("td", { class: same ? "ok" : "bad" }, same ? "same" : describe(mine)));
  });
  const nsEach = (r.batch.ms * 1e6) / r.batch.count;
  $("worker-out").replaceChildren(
    el("p", { id: "worker-env", "data-isolated": String(r.isolated) },
      `The page posted machine.handle (the wasm module and the shared memory) to a Web Worker; the worker (crossOriginIsolated = ${r.isolated}) `
      + `called attachVcpu(handle, 1) and translated, as a user read:`),
    table(["va", "worker, vCPU 1", "page, vcpu(0).peek()"], rows, { id: "worker-table" }),
    el("p", { id: "worker-batch", "data-count": r.batch.count, "data-faults": r.batch.faults, "data-lookups": r.stats.lookups, "data-main-lookups": mainStats.lookups },
      `then ${r.batch.count.toLocaleString("en")} addresses with translateBatch, twice; the second pass: ${r.batch.faults} faults, `
      + `${nsEach.toFixed(1)} ns each. vCPU 1's counters as the worker read them: ${r.stats.lookups.toLocaleString("en")} lookups, ${r.stats.hits.toLocaleString("en")} hits; `
      + `as this page reads them from the shared memory: ${mainStats.lookups.toLocaleString("en")} lookups.`),
    el("p", { id: "worker-abit", "data-before": String(aBefore), "data-after": String(aAfter) },
      `The A bit of the PTE for ${hex(probe)} (gpa ${hex(leaf)}), set by the worker's walk: ${aBefore} before, ${aAfter} after, read on this page.`),
  );
}

// ---- main -------------------------------------------------------------------

async function main(): Promise<void> {
  const isolated = globalThis.crossOriginIsolated === true;
  $("env").textContent = `core ${coreHash} · crossOriginIsolated = ${isolated}`
    + (isolated ? "" : " (SharedArrayBuffer needs COOP/COEP: serve with npm run serve)");
  const d = await createDemo();
  renderTables(d);
  setupWalkForm(d);
  renderTlb(runTlbStory(d));
  const tasks: [string, Promise<void>][] = [["seed reproduction", runSeed()], ["worker", runVcpuWorker(d)]];
  const failed: string[] = [];
  for (const [name, t] of tasks) {
    try { await t; } catch (e) {
      failed.push(`${name}: ${e instanceof Error ? e.message : String(e)}`);
      console.error(e);
    }
  }
  if (failed.length) throw new Error(failed.join("\n"));
  document.body.dataset.state = "done";
  $("status").textContent = "done";
}

main().catch((e: unknown) => {
  document.body.dataset.state = "error";
  $("status").textContent = `error: ${e instanceof Error ? e.message : String(e)}`;
  console.error(e);
});
