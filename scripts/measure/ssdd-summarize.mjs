#!/usr/bin/env node
// Turns the raw logs of scripts/measure/ssdd.sh (rt-tests' ssdd on this
// machine, timed under /usr/bin/time -v and counted under perf stat) into
// bench/data/ssdd-native.json: the machine, every raw run, and per size and
// placement the median/min/max of ns per PTRACE_SINGLESTEP step. No
// dependencies.
//
//   node scripts/measure/ssdd-summarize.mjs --results DIR --out FILE.json
//
// DIR holds env.txt (key: value lines) and runs/, one set per run NAME =
// KIND-PLACEMENT-PAIRSxITERS-REP: NAME.txt (key: value: command, wall_ns,
// load averages), NAME.out (ssdd's output), and NAME.time-v.txt (KIND time)
// or NAME.perf.csv (KIND perf, `perf stat -x,`).
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";

const round = (x, d = 3) => (x == null || !Number.isFinite(x) ? null : Math.round(x * 10 ** d) / 10 ** d);

/** median, min, max (and n) of a list of numbers; null when empty. */
function mmm(xs, d = 1) {
  const s = xs.filter((x) => x != null && Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return null;
  const m = s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  return { n: s.length, median: round(m, d), min: round(s[0], d), max: round(s[s.length - 1], d) };
}

/** "key: value" lines into an object (first colon splits). */
function keyValues(text) {
  const o = {};
  for (const line of text.split("\n")) {
    const i = line.indexOf(":");
    if (i <= 0) continue;
    o[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return o;
}

/** `/usr/bin/time -v` output: the fields used here. */
function parseTimeV(text) {
  const kv = keyValues(text.replace(/^\s+/gm, ""));
  const num = (k) => (kv[k] === undefined ? null : Number(kv[k]));
  // "Elapsed (wall clock) time (h:mm:ss or m:ss): M:SS.ss": the key has colons of its own.
  const line = text.split("\n").find((l) => l.includes("Elapsed (wall clock) time")) ?? "";
  const m = /(\d+(?::\d+)*(?:\.\d+)?)\s*$/.exec(line);
  const elapsed = m ? m[1].split(":").reduce((acc, x) => acc * 60 + Number(x), 0) : null;
  return {
    userS: num("User time (seconds)"),
    systemS: num("System time (seconds)"),
    elapsedS: elapsed,
    voluntaryCs: num("Voluntary context switches"),
    involuntaryCs: num("Involuntary context switches"),
    minorFaults: num("Minor (reclaiming a frame) page faults"),
    maxRssKb: num("Maximum resident set size (kbytes)"),
    exitStatus: num("Exit status"),
  };
}

/** `perf stat -x,` output: event name → { value, unit } ("<not supported>" and "<not counted>" as null). */
function parsePerf(text) {
  const o = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const f = line.split(",");
    if (f.length < 3) continue;
    const v = Number(f[0]);
    o[f[2]] = { value: Number.isFinite(v) && f[0] !== "" ? v : null, unit: f[1] || null };
  }
  return o;
}

/**
 * The whole machine during a run, from /proc/stat's "cpu" lines before and
 * after (user nice system idle iowait irq softirq steal, in CLK_TCK ticks):
 * busy CPU ms (all but idle and iowait, steal excluded) and steal ms.
 */
function procStat(meta) {
  if (!meta.proc_stat_cpu_before || !meta.proc_stat_cpu_after) return {};
  const f = (line) => line.trim().split(/\s+/).slice(1).map(Number);
  const a = f(meta.proc_stat_cpu_before), b = f(meta.proc_stat_cpu_after), ms = 1000 / (Number(meta.clk_tck) || 100);
  const d = (i) => ((b[i] ?? 0) - (a[i] ?? 0)) * ms;
  return { machineBusyMs: round(d(0) + d(1) + d(2) + d(5) + d(6), 0), machineStealMs: round(d(7), 0) };
}

function main() {
  const args = process.argv.slice(2);
  const arg = (name) => {
    const i = args.indexOf(name);
    if (i < 0 || i + 1 >= args.length) throw new Error(`ssdd-summarize: ${name} is required`);
    return args[i + 1];
  };
  const results = arg("--results"), out = arg("--out");
  const env = keyValues(readFileSync(path.join(results, "env.txt"), "utf8"));
  const runsDir = path.join(results, "runs");
  const names = readdirSync(runsDir).filter((f) => f.endsWith(".txt") && !f.endsWith(".time-v.txt")).map((f) => f.slice(0, -4)).sort();
  const mhz = Number(env.tsc_mhz || env.cpu_mhz) || null;

  const runs = names.map((name) => {
    const meta = keyValues(readFileSync(path.join(runsDir, `${name}.txt`), "utf8"));
    const pairs = Number(meta.pairs), iters = Number(meta.iters), steps = pairs * iters;
    const wallNs = Number(meta.wall_ns);
    const r = {
      name, kind: meta.kind, placement: meta.placement, pairs, iters, steps, rep: Number(meta.rep), command: meta.command,
      wallMs: round(wallNs / 1e6, 3), wallNsPerStep: round(wallNs / steps, 1),
      loadavgBefore: meta.loadavg_before, loadavgAfter: meta.loadavg_after,
      procsRunningBefore: meta.procs_running_before === undefined ? null : Number(meta.procs_running_before),
      ...procStat(meta),
    };
    if (meta.kind === "time") {
      const t = parseTimeV(readFileSync(path.join(runsDir, `${name}.time-v.txt`), "utf8"));
      Object.assign(r, {
        timeElapsedS: t.elapsedS, userS: t.userS, systemS: t.systemS,
        userSysNsPerStep: t.userS == null || t.systemS == null ? null : round(((t.userS + t.systemS) * 1e9) / steps, 1),
        voluntaryCs: t.voluntaryCs, involuntaryCs: t.involuntaryCs, minorFaults: t.minorFaults, maxRssKb: t.maxRssKb,
      });
    } else {
      const p = parsePerf(readFileSync(path.join(runsDir, `${name}.perf.csv`), "utf8"));
      const v = (k) => p[k]?.value ?? null;
      const taskMs = p["task-clock"]?.unit === "msec" ? v("task-clock") : v("task-clock") == null ? null : v("task-clock") / 1e6;
      Object.assign(r, {
        taskClockMs: round(taskMs, 3),
        taskClockNsPerStep: taskMs == null ? null : round((taskMs * 1e6) / steps, 1),
        contextSwitches: v("context-switches"), cpuMigrations: v("cpu-migrations"), pageFaults: v("page-faults"),
        contextSwitchesPerStep: v("context-switches") == null ? null : round(v("context-switches") / steps, 4),
      });
    }
    return r;
  });

  const configs = [];
  const key = (r) => `${r.placement} ${r.pairs}x${r.iters}`;
  for (const k of [...new Set(runs.map(key))]) {
    const t = runs.filter((r) => key(r) === k && r.kind === "time");
    const p = runs.filter((r) => key(r) === k && r.kind === "perf");
    const r0 = t[0] ?? p[0];
    const wall = mmm(t.map((r) => r.wallNsPerStep));
    configs.push({
      placement: r0.placement, pairs: r0.pairs, iters: r0.iters, steps: r0.steps, command: r0.command,
      timing: t.length === 0 ? null : {
        runs: t.length,
        wallNsPerStep: wall,
        wallCyclesPerStepAtNominal: wall && mhz ? round((wall.median * mhz) / 1000, 0) : null,
        userSysNsPerStep: mmm(t.map((r) => r.userSysNsPerStep)),
        voluntaryCsPerStep: mmm(t.map((r) => r.voluntaryCs / r.steps), 4),
        involuntaryCsPerStep: mmm(t.map((r) => r.involuntaryCs / r.steps), 4),
      },
      perf: p.length === 0 ? null : {
        runs: p.length,
        taskClockNsPerStep: mmm(p.map((r) => r.taskClockNsPerStep)),
        contextSwitchesPerStep: mmm(p.map((r) => r.contextSwitchesPerStep), 4),
        cpuMigrations: mmm(p.map((r) => r.cpuMigrations), 0),
        pageFaults: mmm(p.map((r) => r.pageFaults), 0),
        cpusUtilized: mmm(p.map((r) => (r.taskClockMs == null ? null : r.taskClockMs / r.wallMs)), 3),
      },
    });
  }

  // Per placement and pair count with two or more iteration counts: the cost of one more step, from the
  // smallest and largest iteration counts' medians (start-up and teardown cancel out).
  const marginal = [];
  for (const place of [...new Set(configs.map((c) => c.placement))]) {
    for (const pairs of [...new Set(configs.filter((c) => c.placement === place).map((c) => c.pairs))]) {
      const cs = configs.filter((c) => c.placement === place && c.pairs === pairs).sort((a, b) => a.iters - b.iters);
      if (cs.length < 2) continue;
      const lo = cs[0], hi = cs[cs.length - 1], dSteps = hi.steps - lo.steps;
      const wallNs = (c) => (c.timing?.wallNsPerStep ? c.timing.wallNsPerStep.median * c.steps : null);
      const taskNs = (c) => (c.perf?.taskClockNsPerStep ? c.perf.taskClockNsPerStep.median * c.steps : null);
      const d = (f) => (f(lo) == null || f(hi) == null ? null : round((f(hi) - f(lo)) / dSteps, 1));
      const w = d(wallNs);
      marginal.push({
        placement: place, pairs, fromIters: lo.iters, toIters: hi.iters,
        wallNsPerStep: w, wallCyclesPerStepAtNominal: w != null && mhz ? round((w * mhz) / 1000, 0) : null,
        taskClockNsPerStep: d(taskNs),
      });
    }
  }

  const vulns = Object.fromEntries(Object.entries(env).filter(([k]) => k.startsWith("vuln_")).map(([k, v]) => [k.slice(5), v]));
  const data = {
    what: "rt-tests' ssdd (tracer/tracee pairs, PTRACE_SINGLESTEP + waitpid per step) measured natively on this project's machine: ns per step, CPU time and context switches per step, per size and CPU placement. Ground truth for the bare-metal cost per step of the guest model src/guest/ssdd.ts. Generated by scripts/measure/ssdd.sh + scripts/measure/ssdd-summarize.mjs.",
    date: env.date,
    machine: {
      cpu: env.cpu, vendor: env.cpu_vendor, family: Number(env.cpu_family), model: Number(env.cpu_model),
      cpus: Number(env.cpus), cpuMHz: Number(env.cpu_mhz) || null, tscMHz: Number(env.tsc_mhz) || null,
      hypervisor: env.hypervisor || null, memKb: Number(env.mem_kb), kernel: env.uname,
      cmdlineMitigations: env.cmdline_mitigations || null, vulnerabilities: vulns,
      loadavgBefore: env.loadavg_before, loadavgAfter: env.loadavg_after ?? null,
    },
    software: { rtTests: env.rt_tests, ssdd: env.ssdd, time: env.time, perf: env.perf, perfEventParanoid: env.perf_event_paranoid, perfHwCycles: env.perf_hw_cycles },
    clock: {
      nominalMHz: mhz,
      source: env.tsc_mhz ? "the TSC frequency the kernel detected (dmesg 'tsc: Detected … MHz processor')" : "/proc/cpuinfo 'cpu MHz'",
      note: "cycles here are ns × the nominal clock; the core's real clock (boost) is not observable in this guest, so they are a lower bound on core cycles if the core ran faster",
    },
    method: {
      timing: "/usr/bin/time -v around ssdd; wall time from date +%s%N around it (includes time's own fork/exec, < 1 ms). user/system time and context switches are RUSAGE_CHILDREN of ssdd's main: main and the tracers; the tracees are reaped by init (each dies of its pending SIGTRAP when its tracer exits), so their CPU time and switches are missing there",
      perf: "perf stat -e task-clock,context-switches,cpu-migrations,page-faults: inherited counters, every descendant folded in at its exit (tracees included); perf's per-switch bookkeeping perturbs the run, so perf runs give counts and CPU time, not the wall time",
      placement: { pinned: "taskset -c 0: every task on CPU 0 (a 1-vCPU guest's situation)", free: "no affinity: the scheduler spreads pairs over all CPUs" },
      nsPerStep: "run's time / (pairs × iters); includes start-up (fork, exec, attach, check_sigchld's usleep after the attach stop) and teardown, which weigh on the small sizes",
      marginal: "per placement and pair count: (median wall of the largest iteration count × its steps − the same for the smallest) / the difference in steps, and the same for perf's task-clock: the cost of one more step without start-up and teardown",
      machine: "per run, machineBusyMs and machineStealMs: the whole machine's busy (user+nice+system+irq+softirq) and steal time during the run, from /proc/stat (10 ms ticks); busy time beyond the run's own CPU time (perf task-clock) is other work sharing the machine",
      order: "repetition-major: each repetition runs every size and placement once, so a burst of other work on the shared machine spreads over all of them",
    },
    configs,
    marginal,
    runs,
  };
  writeFileSync(out, `${JSON.stringify(data, null, 2)}\n`);
}

if (process.argv[1] && import.meta.url === new URL(`file://${path.resolve(process.argv[1])}`).href) main();
