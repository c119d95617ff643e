// `npm run fuzz`: soaks the randomized suites with fresh seeds until the time is up.
// Each round runs one suite's test file in its own vitest child process (a crash or
// hang costs one round, not the soak) with VMMU_SEED set to a seed drawn from
// node:crypto; suites take turns. Every failing seed is printed with a one-line
// replay command and its full output is kept under .fuzz/; the summary gives, per
// suite, rounds, seeds tried, random cases run (reported by the tests through
// fuzzCount() in test/helpers/rng.ts) and failures. CI keeps its pinned seed
// (.ci/run); this is for soaks.
//
//   npm run fuzz                                  every suite, 5 minutes
//   npm run fuzz -- --minutes 30 --suite shadow   one suite, 30 minutes
//   npm run fuzz -- --suite x86-walk,arm64-walk --scale 4 --jobs 2
//   npm run fuzz -- --suite tlb --seeds 12,34     re-check two seeds, then fresh ones
//
// Exit status: 0 if every round passed, 1 if any failed, 2 on a bad argument,
// 130 when interrupted (Ctrl-C) without a failure.
import { spawn } from "node:child_process";
import { randomInt } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const vitestBin = path.join(root, "node_modules", "vitest", "vitest.mjs");
const outDir = path.join(root, ".fuzz");

/**
 * The randomized suites: the test file, the vitest name filter that selects its
 * randomized tests, the unit of the cases it reports, and the environment that
 * scales one round (`scale` is --scale).
 */
const SUITES = {
  "x86-walk": {
    file: "test/differential/x86-walk.test.ts", filter: "wasm x86-64 walker against the reference walker",
    unit: "translations", what: "wasm x86-64 walker vs the reference walker on random trees",
    env: (scale) => (scale > 1 ? { VMMU_DIFF_SCALE: String(scale) } : {}),
  },
  "arm64-walk": {
    file: "test/differential/arm64-walk.test.ts", filter: "wasm arm64 walker against the reference walker",
    unit: "translations", what: "wasm arm64 walker vs the reference walker on random tables",
    env: (scale) => (scale > 1 ? { VMMU_DIFF_SCALE: String(scale) } : {}),
  },
  "x86-ept-walk": {
    file: "test/differential/x86-ept-walk.test.ts", filter: "wasm 2D walk",
    unit: "translations", what: "wasm 2D walk (guest paging x EPT) vs the reference walker on random EPT x guest trees",
    env: (scale) => (scale > 1 ? { VMMU_DIFF_SCALE: String(scale) } : {}),
  },
  tlb: {
    file: "test/scenarios/tlb-semantics.test.ts", filter: "random guest sequences",
    unit: "steps", what: "x86 TLB and invalidation semantics on random guest sequences", env: () => ({}),
  },
  "tlb-vmx": {
    file: "test/scenarios/tlb-semantics-vmx.test.ts", filter: "random VMX sequences",
    unit: "steps", what: "VPID/EPTP-tagged TLB, INVEPT and INVVPID on random VMX sequences", env: () => ({}),
  },
  tlbi: {
    file: "test/scenarios/arm64-tlbi.test.ts", filter: "random TLBI sequences",
    unit: "steps", what: "arm64 TLBI semantics on random TLBI sequences", env: () => ({}),
  },
  shadow: {
    file: "test/scenarios/shadow-correctness.test.ts", filter: undefined,
    unit: "steps", what: "shadow MMU under every policy vs the reference walker, random guest kernel",
    env: (scale) => (scale > 1 ? { GM_STEPS: String(3000 * scale) } : {}),
  },
  "kernel-compile": {
    file: "test/src/guest/kernel-compile.test.ts", filter: "reaches, on every user access",
    unit: "accesses", what: "kernel-compile guest: every user access reaches the mapped frame", env: () => ({}),
  },
  "linux-tlb": {
    file: "test/src/arm64/linux-tlb.test.ts", filter: "tiling property over random ranges",
    unit: "ranges", what: "Linux arm64 TLBI range encoder tiles random ranges", env: () => ({}),
  },
  cr0wp: {
    file: "test/scenarios/cr0wp-correctness.test.ts", filter: undefined,
    unit: "steps", what: "TDP, legacy direct and shadow MMUs under every CR0.WP policy vs the reference walker, random guest kernel with WP toggles and SMM",
    env: (scale) => (scale > 1 ? { GM_STEPS: String(1500 * scale) } : {}),
  },
  "tdp-mmu": {
    file: "test/src/kvm/tdp-mmu.test.ts", filter: "TDP MMU against the hardware walker",
    unit: "steps", what: "TDP MMU faults, zaps, splits, write protection and root lifecycle vs the hardware EPT walker", env: () => ({}),
  },
  "tdp-iter": {
    file: "test/src/kvm/tdp-iter.test.ts", filter: "the TDP iterator",
    unit: "walks", what: "tdp_iter pre-order walks and restarts vs a recursive enumeration", env: () => ({}),
  },
  "legacy-direct-mmu": {
    file: "test/src/kvm/legacy-direct-mmu.test.ts", filter: "the hardware walker agrees with the legacy direct MMU",
    unit: "steps", what: "legacy direct MMU faults, zaps, invalidations and role switches vs the hardware EPT walker, audited", env: () => ({}),
  },
  "sim-lock": {
    file: "test/src/kvm/sim-lock.test.ts", filter: "brute-force search",
    unit: "grants", what: "mmu_lock's simulated-time calendar vs a brute-force search over every granted interval", env: () => ({}),
  },
  "x86-fast-cache": {
    file: "test/src/x86/fast-path.test.ts", filter: "never serves a translation the core would not",
    unit: "accesses", what: "an embedder page cache on the x86 fast path's rights and epoch vs the core", env: () => ({}),
  },
  "arm64-fast-cache": {
    file: "test/src/arm64/fast-path.test.ts", filter: "never serves a translation the core would not",
    unit: "accesses", what: "an embedder page cache on the arm64 fast path's rights and epoch vs the core", env: () => ({}),
  },
};

const HELP = `usage: npm run fuzz -- [--minutes N] [--suite NAME[,NAME...]]... [options]

Runs the randomized suites with fresh seeds until the time is up, one suite per
round in turn, each round a vitest child with VMMU_SEED=<seed>. Prints every
failing seed with a one-line replay command, then a summary per suite.

  --minutes N       time budget, fractions allowed (default 5); a round started
                    before the end runs to completion
  --suite NAME      a suite to run (repeatable or comma-separated; default all)
  --scale N         scale each round up: VMMU_DIFF_SCALE=N for the walkers,
                    GM_STEPS=3000*N for shadow, 1500*N for cr0wp (default 1)
  --jobs N          rounds at a time (default 1)
  --rounds N        stop after N rounds, even with time left
  --seeds A,B,...   use these seeds for the first rounds, then fresh ones
  --file PATH       also run this test file as a suite (e.g. one being written);
                    its tests report cases with fuzzCount() from test/helpers/rng.ts
  --round-timeout S kill a round after S seconds and count it failed (default 900)
  --list            list the suites and exit
  --help            this text

Full output of each failing round: .fuzz/<suite>-seed<seed>.log`;

/** Parses argv into options; throws `vmmu fuzz: ...` naming the flag on a bad value. */
function parseArgs(argv) {
  const o = { minutes: 5, suites: [], scale: 1, jobs: 1, rounds: Infinity, seeds: [], files: [], roundTimeout: 900, list: false, help: false };
  const num = (flag, v, { int = false, min = 0, open = false } = {}) => {
    const n = Number(v);
    const bad = v === undefined || v === "" || !Number.isFinite(n) || (int && !Number.isInteger(n)) || (open ? n <= min : n < min);
    if (bad) throw new Error(`vmmu fuzz: ${flag} needs ${int ? "an integer" : "a number"} ${open ? ">" : "≥"} ${min} (got ${JSON.stringify(v ?? null)})`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].startsWith("--") && argv[i].includes("=") ? argv[i].split(/=(.*)/s, 2) : [argv[i], undefined];
    const value = () => inline ?? argv[++i];
    switch (flag) {
      case "--minutes": o.minutes = num(flag, value(), { open: true }); break;
      case "--suite": o.suites.push(...String(value() ?? "").split(",").map((s) => s.trim()).filter(Boolean)); break;
      case "--scale": o.scale = num(flag, value(), { int: true, min: 1 }); break;
      case "--jobs": o.jobs = num(flag, value(), { int: true, min: 1 }); break;
      case "--rounds": o.rounds = num(flag, value(), { int: true, min: 1 }); break;
      case "--seeds": o.seeds.push(...String(value() ?? "").split(",").filter(Boolean).map((s) => num("--seeds", s, { int: true }) >>> 0)); break;
      case "--file": {
        const f = value();
        if (!f || !existsSync(path.resolve(root, f))) throw new Error(`vmmu fuzz: --file needs an existing test file (got ${JSON.stringify(f ?? null)})`);
        o.files.push(path.relative(root, path.resolve(root, f)).split(path.sep).join("/"));
        break;
      }
      case "--round-timeout": o.roundTimeout = num(flag, value(), { open: true }); break;
      case "--list": o.list = true; break;
      case "--help": case "-h": o.help = true; break;
      default: throw new Error(`vmmu fuzz: unknown argument ${JSON.stringify(argv[i])} (see --help)`);
    }
  }
  for (const s of o.suites) {
    if (!(s in SUITES)) throw new Error(`vmmu fuzz: --suite ${JSON.stringify(s)} is not a suite; suites: ${Object.keys(SUITES).join(", ")}`);
  }
  return o;
}

let opts;
try {
  opts = parseArgs(process.argv.slice(2));
} catch (e) {
  console.error(e.message);
  process.exit(2);
}
if (opts.help) {
  console.log(HELP);
  process.exit(0);
}
if (opts.list) {
  const w = Math.max(...Object.keys(SUITES).map((k) => k.length));
  for (const [name, s] of Object.entries(SUITES)) console.log(`${name.padEnd(w)}  ${s.what}\n${" ".repeat(w)}  ${s.file}`);
  process.exit(0);
}
if (!existsSync(vitestBin)) {
  console.error(`vmmu fuzz: vitest is not installed (${path.relative(root, vitestBin)}); run npm ci`);
  process.exit(2);
}

/** The suites of this run, in round-robin order. */
const plan = [
  ...[...new Set(opts.suites.length || opts.files.length ? opts.suites : Object.keys(SUITES))].map((name) => ({ name, ...SUITES[name] })),
  ...opts.files.map((file) => ({
    name: path.basename(file).replace(/\.(test|spec)\.[cm]?[jt]s$/, ""), file, filter: undefined, unit: "cases", env: () => ({}),
  })),
];
const stats = new Map(plan.map((s) => [s.name, { rounds: 0, seeds: new Set(), cases: 0, reported: 0, failures: 0, interrupted: 0 }]));
const failures = [];
const t0 = Date.now();
const deadline = t0 + opts.minutes * 60_000;
const running = new Set();
let started = 0;
let stopping = false;
mkdirSync(outDir, { recursive: true });

const fmtInt = (n) => n.toLocaleString("en-US");
const clock = (ms) => {
  const s = Math.floor(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
};
const stripAnsi = (s) => s.replace(/\x1b\[[0-9;]*[A-Za-z]/g, "");
const shellQuote = (s) => (/^[\w./:=@%+,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

/** Environment variables a replay needs besides VMMU_SEED: the round's scale and any VMMU_ / GM_ setting inherited. */
function replayEnv(suiteEnv) {
  const inherited = Object.entries(process.env).filter(([k]) => /^(VMMU_|GM_)/.test(k) && k !== "VMMU_SEED" && k !== "VMMU_FUZZ_COUNTS");
  return Object.entries({ ...Object.fromEntries(inherited), ...suiteEnv }).sort(([a], [b]) => a.localeCompare(b));
}

function replayLine(suite, seed, suiteEnv) {
  const env = [["VMMU_SEED", String(seed)], ...replayEnv(suiteEnv)].map(([k, v]) => `${k}=${shellQuote(v)}`).join(" ");
  return `${env} npx vitest run ${suite.file}${suite.filter ? ` -t ${shellQuote(suite.filter)}` : ""}`;
}

/** The lines that say what failed: vitest's FAIL headers and error lines, else the output's tail. */
function firstAssertionLines(output, max = 4) {
  const lines = stripAnsi(output).split("\n");
  const start = lines.findIndex((l) => /Failed Tests \d+/.test(l));
  const picked = lines.slice(Math.max(0, start)).filter((l) => /^\s*FAIL\s/.test(l) || /^\s*(\w+Error|Error)\b.*:/.test(l) || /^\s*Error:/.test(l));
  const out = picked.length ? picked : lines.filter((l) => l.trim()).slice(-3);
  return [...new Set(out.map((l) => l.trim()))].slice(0, max);
}

/** Runs one round: `suite` under `seed` in a vitest child; resolves to its verdict. */
function runRound(suite, seed, id) {
  const suiteEnv = suite.env(opts.scale);
  const countsFile = path.join(outDir, `counts-${process.pid}-${id}.jsonl`);
  rmSync(countsFile, { force: true });
  const args = [vitestBin, "run", suite.file, ...(suite.filter ? ["-t", suite.filter] : [])];
  const child = spawn(process.execPath, args, {
    cwd: root, detached: true, stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...suiteEnv, VMMU_SEED: String(seed), VMMU_FUZZ_COUNTS: countsFile, NO_COLOR: "1", FORCE_COLOR: "0" },
  });
  const round = { child, killedBy: undefined };
  running.add(round);
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  const timer = setTimeout(() => kill(round, "timeout"), opts.roundTimeout * 1000);
  const began = Date.now();
  return new Promise((resolve) => {
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      running.delete(round);
      let cases = 0, reported = 0;
      if (existsSync(countsFile)) {
        for (const line of readFileSync(countsFile, "utf8").split("\n")) {
          if (!line.trim()) continue;
          try {
            cases += Number(JSON.parse(line).cases) || 0;
            reported++;
          } catch { /* a line cut short by a killed child */ }
        }
        rmSync(countsFile, { force: true });
      }
      resolve({
        ok: code === 0, code, signal, killedBy: round.killedBy, output, cases, reported,
        seconds: (Date.now() - began) / 1000, replay: replayLine(suite, seed, suiteEnv),
      });
    });
  });
}

/** Ends a running round's process group (the vitest child and its workers). */
function kill(round, why, signal = "SIGTERM") {
  round.killedBy ??= why;
  try {
    process.kill(-round.child.pid, signal);
  } catch { /* already gone */ }
}

function record(suite, seed, r) {
  const s = stats.get(suite.name);
  const at = `[${clock(Date.now() - t0)}]`;
  if (r.killedBy === "interrupt") {
    s.interrupted++;
    console.log(`${at} ${suite.name} seed=${seed} interrupted`);
    return;
  }
  s.rounds++;
  s.seeds.add(seed);
  s.cases += r.cases;
  s.reported += r.reported;
  const cases = r.reported ? `, ${fmtInt(r.cases)} ${suite.unit}` : "";
  if (r.ok) {
    console.log(`${at} ${suite.name} seed=${seed} ok ${r.seconds.toFixed(1)} s${cases}`);
    return;
  }
  s.failures++;
  const log = path.join(outDir, `${suite.name}-seed${seed}.log`);
  writeFileSync(log, `# ${r.replay}\n# exit ${r.code ?? r.signal}${r.killedBy ? `, killed: ${r.killedBy}` : ""}\n\n${stripAnsi(r.output)}`);
  const why = r.killedBy === "timeout" ? [`round timed out after ${opts.roundTimeout} s`] : firstAssertionLines(r.output);
  const line = `FAIL ${suite.name} seed=${seed}  replay: ${r.replay}`;
  failures.push(line);
  console.log(`${at} ${line}`);
  for (const w of why) console.log(`    ${w}`);
  console.log(`    log: ${path.relative(root, log)}`);
}

function canStart() {
  return !stopping && started < opts.rounds && Date.now() < deadline;
}

async function worker() {
  while (canStart()) {
    const id = started++;
    const suite = plan[id % plan.length];
    const seed = id < opts.seeds.length ? opts.seeds[id] : randomInt(0, 2 ** 32);
    record(suite, seed, await runRound(suite, seed, id));
  }
}

function summary() {
  const wall = (Date.now() - t0) / 1000;
  const rounds = [...stats.values()].reduce((n, s) => n + s.rounds, 0);
  const head = ["suite", "rounds", "seeds tried", "cases run", "failures"];
  const rows = plan.map(({ name, unit }) => {
    const s = stats.get(name);
    return [name, fmtInt(s.rounds), fmtInt(s.seeds.size), s.reported ? `${fmtInt(s.cases)} ${unit}` : s.rounds ? "not reported" : "0", fmtInt(s.failures)];
  });
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const fmt = (r) => r.map((c, i) => (i === 0 || i === 3 ? c.padEnd(w[i]) : c.padStart(w[i]))).join("  ").trimEnd();
  const m = Math.floor(wall / 60), sec = (wall - m * 60).toFixed(1);
  console.log(`\nvmmu fuzz summary: ${rounds} round${rounds === 1 ? "" : "s"}, ${failures.length} failed, wall time ${m ? `${m} min ` : ""}${sec} s${stopping ? " (interrupted)" : ""}`);
  console.log(`  ${fmt(head)}`);
  for (const r of rows) console.log(`  ${fmt(r)}`);
  const interrupted = [...stats.values()].reduce((n, s) => n + s.interrupted, 0);
  if (interrupted) console.log(`  (${interrupted} round${interrupted > 1 ? "s" : ""} stopped by the interrupt not counted)`);
  if (failures.length) {
    console.log("\nfailing seeds:");
    for (const f of failures) console.log(`  ${f}`);
  }
}

let interrupts = 0;
const onInterrupt = () => {
  interrupts++;
  stopping = true;
  if (interrupts === 1) {
    console.log(`\nvmmu fuzz: interrupted; stopping ${running.size} running round${running.size === 1 ? "" : "s"} (again to quit at once)`);
    for (const r of running) kill(r, "interrupt");
    return;
  }
  for (const r of running) kill(r, "interrupt", "SIGKILL");
  summary();
  process.exit(failures.length ? 1 : 130);
};
process.on("SIGINT", onInterrupt);
process.on("SIGTERM", onInterrupt);

const limit = Number.isFinite(opts.rounds) ? `, at most ${opts.rounds} rounds` : "";
console.log(`vmmu fuzz: ${plan.map((s) => s.name).join(", ")} for ${opts.minutes} min${limit} `
  + `(${opts.jobs} job${opts.jobs > 1 ? "s" : ""}, scale ${opts.scale}); Ctrl-C stops and prints the summary`);
await Promise.all(Array.from({ length: opts.jobs }, worker));
summary();
process.exit(failures.length ? 1 : stopping ? 130 : 0);
