#!/usr/bin/env node
// Turns the raw logs of scripts/measure/kernel-compile.sh (a real `make -j lib/`
// of the Linux kernel, measured three ways) into bench/data/kernel-compile-lib.json,
// the data the guest workload model (src/guest/kernel-compile.ts) is grounded in.
// No dependencies; reads large traces line by line.
//
//   node scripts/measure/summarize.mjs --results DIR --out FILE.json [--cc1-csv FILE.csv]
//
// DIR holds (any may be missing, what it feeds is then null; any may be gzipped as NAME.gz):
//   env.txt               key: value lines (versions, machine)
//   run-{a,b,c}.txt       key: value lines (wall time, objects built, load average after each run)
//   time-v.txt            run a: `/usr/bin/time -v` of the whole make
//   gcc-time-a.txt        run a: gcc -time=FILE lines "<user s> <sys s> <prog> <args…>"
//   strace-syscalls.txt   run b: `strace -f -C -q -s 0`: the trace, then the -c count table
//   strace-process.txt    run c: `strace -f -q -ttt -e trace=process -e abbrev=execve,execveat`
import { createReadStream, existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { createGunzip, gunzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";

// ---------------------------------------------------------------------------
// helpers

const round = (x, d = 3) => (x == null || !Number.isFinite(x) ? null : Math.round(x * 10 ** d) / 10 ** d);
const div = (a, b) => (a == null || b == null || b === 0 ? null : a / b);
const base = (p) => p.slice(p.lastIndexOf("/") + 1);
const inc = (o, k, n = 1) => { o[k] = (o[k] ?? 0) + n; };
const sortObj = (o) => Object.fromEntries(Object.entries(o).sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : 1)));

/** mean, median, p10, p90, min, max of a list of numbers (null when empty). */
export function stats(xs, d = 3) {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => {
    const i = (s.length - 1) * p;
    const lo = Math.floor(i), hi = Math.ceil(i);
    return s[lo] + (s[hi] - s[lo]) * (i - lo);
  };
  const sum = s.reduce((a, b) => a + b, 0);
  return { n: s.length, sum: round(sum, d), mean: round(sum / s.length, d), median: round(q(0.5), d),
    p10: round(q(0.1), d), p90: round(q(0.9), d), min: round(s[0], d), max: round(s[s.length - 1], d) };
}

/** FILE, or FILE.gz if only that exists (the raw logs kept in the repository are gzipped). */
function found(file) {
  if (existsSync(file)) return file;
  if (existsSync(`${file}.gz`)) return `${file}.gz`;
  return null;
}
function readText(file) {
  const f = found(file);
  return f.endsWith(".gz") ? gunzipSync(readFileSync(f)).toString("utf8") : readFileSync(f, "utf8");
}

async function* lines(file) {
  const f = found(file);
  const input = f.endsWith(".gz") ? createReadStream(f).pipe(createGunzip()) : createReadStream(f);
  const rl = readline.createInterface({ input, crlfDelay: Infinity });
  for await (const line of rl) yield line;
}

/** Splits a strace argv array literal `["a", "b\"c", …]` into strings (escapes kept simple). */
export function parseArgv(s) {
  const out = [];
  const re = /"((?:[^"\\]|\\.)*)"(\.\.\.)?/g;
  let m;
  while ((m = re.exec(s))) out.push(m[1].replace(/\\"/g, '"').replace(/\\\\/g, "\\"));
  return out;
}

// Options of gcc/cc1 that take the next word as their argument (so that word is not the input).
const ARG_OPTS = new Set(["-o", "-dumpbase", "-dumpdir", "-auxbase", "-auxbase-strip", "-dumpbase-ext", "-MF", "-MT",
  "-MQ", "-include", "-imacros", "-isystem", "-idirafter", "-iprefix", "-iquote", "-I", "-D", "-U", "-x",
  "-imultiarch", "-imultilib", "-iplugindir", "-plugin", "-specs", "-wrapper", "--param", "-aux-info", "-Xassembler"]);

/** The source file a gcc driver or cc1 command line compiles (a word ending in .c/.S/.s not following an option that takes it). */
export function sourceOf(argv) {
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i];
    if (ARG_OPTS.has(argv[i - 1])) continue;
    if (!a.startsWith("-") && /\.(c|S|s)$/.test(a)) return a;
  }
  return null;
}

// ---------------------------------------------------------------------------
// env.txt, time -v, gcc -time

export function parseEnv(text) {
  const env = {};
  for (const line of text.split("\n")) {
    const m = /^([A-Za-z0-9_]+):\s?(.*)$/.exec(line);
    if (m) env[m[1]] = m[2];
  }
  return env;
}

/** GNU time -v report → numbers (seconds, counts, kB). */
export function parseTimeV(text) {
  const get = (label) => {
    const m = new RegExp(`^\\s*${label.replace(/[()]/g, "\\$&")}:\\s*(.+)$`, "m").exec(text);
    return m ? m[1].trim() : null;
  };
  const num = (label) => { const v = get(label); return v == null ? null : Number(v.replace("%", "")); };
  const wall = get("Elapsed (wall clock) time (h:mm:ss or m:ss)");
  let wallS = null;
  if (wall) wallS = wall.split(":").reduce((acc, p) => acc * 60 + Number(p), 0);
  return {
    userS: num("User time (seconds)"), systemS: num("System time (seconds)"), cpuPercent: num("Percent of CPU this job got"),
    wallS, maxRssKb: num("Maximum resident set size (kbytes)"),
    majorFaults: num("Major (requiring I/O) page faults"), minorFaults: num("Minor (reclaiming a frame) page faults"),
    voluntaryCtxSw: num("Voluntary context switches"), involuntaryCtxSw: num("Involuntary context switches"),
    fsInputs: num("File system inputs"), fsOutputs: num("File system outputs"), exitStatus: num("Exit status"),
  };
}

/** gcc -time=FILE: one line per subprocess, "<user s> <sys s> <prog> <args…>". */
export function parseGccTime(text) {
  const byProg = {};
  const cc1 = [];
  let malformed = 0;
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    const m = /^(\d+(?:\.\d+)?(?:e-?\d+)?) (\d+(?:\.\d+)?(?:e-?\d+)?) (\S+)(.*)$/.exec(line);
    if (!m) { malformed++; continue; }
    const prog = base(m[3]);
    const argv = [m[3], ...m[4].trim().split(/\s+/)];
    // cc1 of a compiled file names a relative .c/.S source; without one it compiled stdin or
    // /dev/null for the build system (scripts/checksyscalls.sh, probes): "cc1 (probe)".
    const kind = prog !== "cc1" ? prog : argv.includes("-E") ? "cc1 -E" : sourceOf(argv) && !sourceOf(argv).startsWith("/") ? "cc1" : "cc1 (probe)";
    const u = Number(m[1]) * 1000, s = Number(m[2]) * 1000;
    const p = (byProg[kind] ??= { count: 0, userMs: 0, systemMs: 0 });
    p.count++; p.userMs += u; p.systemMs += s;
    if (kind === "cc1") cc1.push({ source: sourceOf(argv), userMs: u, systemMs: s });
  }
  for (const p of Object.values(byProg)) { p.userMs = round(p.userMs, 1); p.systemMs = round(p.systemMs, 1); }
  return { byProg, cc1, malformed };
}

// ---------------------------------------------------------------------------
// strace traces

// "PID [TS ]rest" (strace -f -o FILE prefixes every line with the pid; -ttt adds a timestamp).
const LINE = /^(\d+) (?:(\d+\.\d+) )?(.*)$/;

function newProc(pid) {
  return { pid, ppid: null, thread: false, progs: [], execs: 0, failedExecs: 0, argv: null, start: null, end: null,
    exit: null, rusage: null, siUtime: null, siStime: null, syscalls: 0, byKind: null };
}

class Tree {
  constructor() { this.procs = new Map(); this.pendingExec = new Map(); this.forks = {}; this.first = null; }
  get(pid) {
    let p = this.procs.get(pid);
    if (!p) { p = newProc(pid); this.procs.set(pid, p); if (this.first == null) this.first = pid; }
    return p;
  }
  /** The process a tid's syscalls belong to (threads fold into their leader). */
  owner(pid) { const p = this.get(pid); return p.thread ? this.get(p.ppid) : p; }
  child(parent, kind, childPid, args) {
    inc(this.forks, kind);
    const c = this.get(childPid);
    if (/CLONE_THREAD/.test(args)) { c.thread = true; c.ppid = this.owner(parent).pid; return; }
    c.ppid = parent;
  }
  exec(pid, pathAndArgs, ret) {
    const p = this.get(pid);
    if (ret === "0") {
      p.execs++;
      const m = /^"((?:[^"\\]|\\.)*)"/.exec(pathAndArgs);
      p.progs.push(m ? base(m[1]) : "?");
      const a = /\[(.*)\]/.exec(pathAndArgs);
      p.argv = a ? parseArgv(a[1]) : null;
    } else p.failedExecs++;
  }
  /** The program a process ran last, or "<parent's> (no exec)" for a fork that never exec'd. */
  prog(p, depth = 0) {
    if (p.progs.length) return p.progs[p.progs.length - 1];
    if (p.ppid == null || depth > 50) return "?";
    const parent = this.procs.get(p.ppid);
    if (!parent) return "?";
    const pp = this.prog(parent, depth + 1);
    return pp.endsWith(" (no exec)") ? pp : `${pp} (no exec)`;
  }
}

/** Feeds one strace line to a Tree; returns the syscall name it starts (not a resumption), or null. */
function feed(tree, line, ts) {
  const pid = Number(line.pid);
  const rest = line.rest;
  if (rest.startsWith("+++ ")) {
    const p = tree.get(pid);
    const m = /^\+\+\+ (exited with (\d+)|killed by (\S+))/.exec(rest);
    if (m) p.exit = m[2] != null ? Number(m[2]) : m[3];
    if (ts != null) p.end = ts;
    return null;
  }
  if (rest.startsWith("--- ")) {
    const m = /si_code=CLD_\w+, si_pid=(\d+),.*?si_utime=(\d+).*?si_stime=(\d+)/.exec(rest);
    if (m) { const c = tree.get(Number(m[1])); c.siUtime = Number(m[2]); c.siStime = Number(m[3]); }
    return null;
  }
  let name, args, ret, resumed = false, unfinished = false;
  let m = /^<\.\.\. (\w+) resumed>(.*)$/.exec(rest);
  if (m) { name = m[1]; args = m[2]; resumed = true; } else {
    m = /^(\w+)\((.*)$/.exec(rest);
    if (!m) return null;
    name = m[1]; args = m[2];
  }
  if (/ <unfinished \.\.\.>$/.test(args)) unfinished = true;
  else { const r = /\)\s+= (-?\d+|\?|0x[0-9a-f]+)/.exec(args); ret = r ? r[1] : null; }
  const p = tree.get(pid);
  if (p.start == null && ts != null) p.start = ts;
  if (name === "execve" || name === "execveat") {
    if (unfinished) tree.pendingExec.set(pid, args);
    else if (resumed) { tree.exec(pid, tree.pendingExec.get(pid) ?? "", ret); tree.pendingExec.delete(pid); }
    else tree.exec(pid, args, ret);
    if (ret === "0" && ts != null) p.start ??= ts;
  } else if (/^(fork|vfork|clone|clone3)$/.test(name) && !unfinished) {
    if (ret != null && /^\d+$/.test(ret) && ret !== "0") {
      const flags = resumed ? (tree.pendingClone?.get(pid) ?? "") + args : args;
      tree.child(pid, name, Number(ret), flags);
    }
  } else if (name === "wait4" && !unfinished) {
    const r = /ru_utime=\{tv_sec=(\d+), tv_usec=(\d+)\}, ru_stime=\{tv_sec=(\d+), tv_usec=(\d+)\}, ru_maxrss=(\d+).*?ru_minflt=(\d+), ru_majflt=(\d+).*?ru_nvcsw=(\d+), ru_nivcsw=(\d+)\}\) += (\d+)/.exec(args);
    if (r) {
      tree.get(Number(r[10])).rusage = {
        userMs: Number(r[1]) * 1000 + Number(r[2]) / 1000, systemMs: Number(r[3]) * 1000 + Number(r[4]) / 1000,
        maxRssKb: Number(r[5]), minorFaults: Number(r[6]), majorFaults: Number(r[7]),
        voluntaryCtxSw: Number(r[8]), involuntaryCtxSw: Number(r[9]),
      };
    }
  }
  if (unfinished && /^(clone|clone3)$/.test(name)) (tree.pendingClone ??= new Map()).set(pid, args);
  return resumed ? null : name;
}

/**
 * Names the build system's compiler probes apart from the compiles of files: a gcc driver not in
 * `compileGcc` becomes "gcc (probe)", and its cc1/as/collect2/ld children "<prog> (probe)"
 * (cc-option-style compiles of /dev/null or stdin, gcc -dM -E, gcc --version).
 */
function labelProbes(procs, compileGcc) {
  const orig = new Map(procs.map((p) => [p.pid, p.prog]));
  for (const p of procs) {
    if (p.prog === "gcc" && !compileGcc.has(p.pid)) p.prog = "gcc (probe)";
    else if (/^(cc1|as|collect2|ld)$/.test(p.prog) && orig.get(p.ppid) === "gcc" && !compileGcc.has(p.ppid)) p.prog = `${p.prog} (probe)`;
  }
}

/** The -c table at the end of a `strace -c`/`-C` output: { byKind: {name: {calls, errors, seconds}}, total }. */
export function parseCountTable(tableLines) {
  const byKind = {};
  let total = null;
  for (const l of tableLines) {
    const m = /^\s*([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s+(?:(\d+)\s+)?(\S+)\s*$/.exec(l);
    if (!m) continue;
    const row = { calls: Number(m[4]), errors: m[5] ? Number(m[5]) : 0, seconds: Number(m[2]) };
    if (m[6] === "total") total = row; else byKind[m[6]] = row;
  }
  return { byKind, total };
}

/** Run b: per-process and per-program syscall counts from the trace, and strace's own -c table. */
export async function parseSyscallTrace(file) {
  const tree = new Tree();
  const table = [];
  let inTable = false;
  for await (const raw of lines(file)) {
    if (!inTable && /^% time\s+seconds/.test(raw)) inTable = true;
    if (inTable) { table.push(raw); continue; }
    const m = LINE.exec(raw);
    if (!m) continue;
    const name = feed(tree, { pid: m[1], rest: m[3] }, m[2] != null ? Number(m[2]) : null);
    if (name) {
      const p = tree.owner(Number(m[1]));
      p.syscalls++;
      inc((p.byKind ??= {}), name);
      // A compiler opening its source: the build passes sources as relative paths (lib/x.c);
      // probes compile /dev/null or stdin. -s 0 hides argv, not paths.
      if (name === "openat" && p.source == null) {
        const o = /^openat\(AT_FDCWD, "([^/"][^"]*\.[cS])"/.exec(m[3]);
        if (o) p.source = o[1];
      }
    }
  }
  const procs = [...tree.procs.values()].filter((p) => !p.thread);
  for (const p of procs) p.prog = tree.prog(p);
  // A gcc compiles a file when its cc1 opened one (-s 0 hides argv, not paths).
  labelProbes(procs, new Set(procs.filter((p) => p.prog === "cc1" && p.source != null).map((p) => p.ppid)));
  const byKind = {};
  const byProg = {};
  let total = 0;
  for (const p of procs) {
    const prog = p.prog;
    const g = (byProg[prog] ??= { processes: 0, syscalls: 0, byKind: {} });
    g.processes++;
    g.syscalls += p.syscalls;
    for (const [k, n] of Object.entries(p.byKind ?? {})) { inc(g.byKind, k, n); inc(byKind, k, n); }
    total += p.syscalls;
  }
  return { processes: procs.length, threads: tree.procs.size - procs.length, total, byKind: sortObj(byKind), byProg,
    countTable: parseCountTable(table) };
}

/** Run c: the process tree, execs, per-process rusage of gcc's children, si_utime of every child. */
export async function parseProcessTrace(file) {
  const tree = new Tree();
  let t0 = null, t1 = null;
  for await (const raw of lines(file)) {
    const m = LINE.exec(raw);
    if (!m) continue;
    const ts = m[2] != null ? Number(m[2]) : null;
    if (ts != null) { t0 ??= ts; t1 = ts; }
    feed(tree, { pid: m[1], rest: m[3] }, ts);
  }
  const procs = [...tree.procs.values()].filter((p) => !p.thread);
  for (const p of procs) p.prog = tree.prog(p);
  return { tree, procs, forks: tree.forks, root: tree.first, spanS: t0 != null ? t1 - t0 : null };
}

// ---------------------------------------------------------------------------
// the summary

function summarizeProcesses(pt) {
  // gcc driver invocations that compile a source file (a .c/.S argument): to an object (-c), or
  // a host program compiled and linked in one go (lib/gen_crc32table).
  const compiles = pt.procs.filter((p) => p.prog === "gcc" && p.argv && sourceOf(p.argv));
  const compilePids = new Set(compiles.map((p) => p.pid));
  labelProbes(pt.procs, compilePids);
  const byProg = {};
  let execs = 0, failedExecs = 0;
  for (const p of pt.procs) {
    const g = (byProg[p.prog] ??= { processes: 0, execs: 0, siUserMs: 0, siSystemMs: 0, siCovered: 0 });
    g.processes++; g.execs += p.execs;
    execs += p.execs; failedExecs += p.failedExecs;
    if (p.siUtime != null) { g.siUserMs += p.siUtime * 10; g.siSystemMs += p.siStime * 10; g.siCovered++; }
  }
  const bySuffix = {};
  let inLib = 0, objects = 0;
  for (const p of compiles) {
    const src = sourceOf(p.argv);
    inc(bySuffix, src.slice(src.lastIndexOf(".")));
    if (/^(\.\/)?lib\//.test(src)) inLib++;
    if (p.argv.includes("-c")) objects++;
  }
  const isE = (p) => (p.argv ?? []).includes("-E");
  const cc1 = pt.procs.filter((p) => p.prog === "cc1" && !isE(p));
  const cc1E = pt.procs.filter((p) => /^cc1/.test(p.prog) && isE(p));
  const cc1Probe = pt.procs.filter((p) => p.prog === "cc1 (probe)" && !isE(p));
  const asOfFiles = pt.procs.filter((p) => p.prog === "as");
  return { byProg, execs, failedExecs, compiles, objects, bySuffix, inLib, cc1, cc1E, cc1Probe, asOfFiles };
}

function rusageStats(list) {
  const withRu = list.filter((p) => p.rusage);
  const f = (k) => stats(withRu.map((p) => p.rusage[k]), 3);
  return { n: list.length, withRusage: withRu.length, userMs: f("userMs"), systemMs: f("systemMs"),
    minorFaults: f("minorFaults"), majorFaults: f("majorFaults"), voluntaryCtxSw: f("voluntaryCtxSw"),
    involuntaryCtxSw: f("involuntaryCtxSw"), maxRssKb: f("maxRssKb"),
    wallMs: stats(withRu.filter((p) => p.start != null && p.end != null).map((p) => (p.end - p.start) * 1000), 1) };
}

const METHOD = {
  build: "`make -j$JOBS lib/` of the Linux source from Debian's linux-source package, `make defconfig` (x86_64), after `make prepare`; each run from a clean lib/ (every file the build added under lib/ removed), nice -n 19, env -i with PATH=/usr/sbin:/usr/bin:/sbin:/bin, KCFLAGS=-time=FILE in every run and in prepare. Three separate builds (runs a, b, c); the machine is shared with other work, so wall times and involuntary context switches include that interference.",
  totals: "run a: `/usr/bin/time -v make …` (getrusage(RUSAGE_CHILDREN) of make and every descendant it reaped: every process of the build). Unperturbed by tracing. Includes make's own re-checking of prepare's targets and the gcc -time=FILE bookkeeping (one open/write/close per gcc driver).",
  processes: "run c: `strace -f -e trace=process --seccomp-bpf -ttt`: one process per pid that is not a CLONE_THREAD thread; named by the basename of its last successful execve, or '<parent> (no exec)' for a fork that never exec'd (sh subshells). Execs count successful execve/execveat only; failedExecs are execve()s that returned an error (PATH lookups). The build is the same as runs a and b, but process counts can differ by a few between runs (make re-checks are deterministic, so normally they do not).",
  filesCompiled: "run c: gcc driver processes whose argv names a .c/.S source file: objects (with -c) and host programs compiled and linked in one invocation (lib/gen_crc32table); inLib = those whose source is under lib/. cc1OfCompiledFiles: cc1 processes (without -E) whose parent is such a gcc, one per file; cc1Probes: the build system's compiler probes (cc-option-style compiles of /dev/null or stdin, not files of lib/); cc1Preprocess: cc1 -E (gcc -E, -dM -E). perCc1 and perAs describe only the cc1 and as of compiled files. In run b (no argv: -s 0) a cc1 counts as one of a compiled file when it opens a relative .c/.S path (the build names its sources relative to the tree; probes compile /dev/null or stdin); the others are listed as 'cc1 (probe)', and so are their gcc and as ('gcc (probe)', 'as (probe)').",
  syscalls: "run b: `strace -f -C -s 0`: the trace, counted per process and per program by the summarizer (each call counted once: complete or '<unfinished ...>' lines, not '<... resumed>' lines), and strace's own -c table (countTable). The two totals may differ slightly (the -c table counts calls strace saw complete). strace stops every process at every syscall, so run b's wall time is inflated several times; counts are not.",
  perCc1: "run c: gcc is run with -time=FILE, so its driver reaps cc1 and as with wait4(…, &rusage); strace prints that struct in full. Each cc1's userMs, systemMs, minorFaults, majorFaults, voluntaryCtxSw, involuntaryCtxSw, maxRssKb are the kernel's accounting of exactly that process. With --seccomp-bpf, strace stops a cc1 only at execve and exit, so its numbers are barely perturbed (a few extra voluntary context switches per process). wallMs is execve→exit from strace timestamps. perCc1RunA repeats user/system time from run a's -time=FILE lines (no strace at all) for the cc1 of compiled files (a relative .c/.S source on the command line); the host program lib/gen_crc32table is built without KCFLAGS, so it has no -time line (n is one less than filesCompiled).",
  otherPrograms: "run c: programs other than gcc's children are not reaped with rusage; their CPU time comes from the SIGCHLD si_utime/si_stime the kernel sends the parent (clock ticks, 10 ms; a pending SIGCHLD may absorb another, so siCovered says for how many processes it was seen). Too coarse for short processes (most are under one tick): use for orientation only.",
  restOfBuild: "densities.restOfBuild: every process but the cc1 of compiled files (make, sh, the gcc drivers, as, fixdep, objtool, nm, awk, check-local-export, rm, probes …): user CPU = run a's total minus run a's cc1 lines of gcc -time; minor faults = run a's total minus run c's cc1 rusage; syscalls = run b's total minus run b's cc1; processes and execs from run c. Mixes runs (the same build), so it is an estimate to a few per cent.",
  densities: "ratios of the numbers above: whole-build densities divide run a's totals (faults, context switches, user CPU) and run b's syscall totals by run c's process count, by files compiled, or by run a's user CPU in ms; cc1 densities divide per-cc1 means (syscalls from run b, the rest from run c's rusage). Context switches under nice -n 19 on a shared 2-core machine are dominated by the scheduler's treatment of this build against other work (involuntary) and by pipe/wait blocking (voluntary): they are properties of this machine's load as much as of the build.",
  caveats: [
    "strace overhead: runs b and c are slowed by tracing (b greatly: every syscall stops the process twice); their wall times are not the build's. Counts (syscalls, processes, execs) are not affected, context switches are (run c: extra voluntary switches at every traced stop), so context switches are taken from run a for totals and from run c only per cc1, where the traced stops are two per process.",
    "nice -n 19 on a shared machine: wall time and involuntary context switches depend on the other load (loadavg before/after each run is in env).",
    "minor faults count first touches of anonymous and file-backed pages (page cache already warm: the source tree was just unpacked and prepare ran), so they are close to the number of distinct pages each process touches; a cold cache would add major faults.",
    "per-process user vs system split is tick-sampled: the kernel scales a process's precise runtime by the ratio of user to system ticks, so a process shorter than a tick (4 ms at HZ=250) may show 0 user ms and all its time as system (the sum is exact). Aggregates over many processes and the long cc1s are fine.",
    "involuntary context switches are preemptions by other runnable work: under nice -n 19 beside other jobs they are far more frequent than on a dedicated machine, and vary between runs with the load (run c's cc1s alone had more than run a's whole build). Voluntary switches are the build's own blocking (wait4, pipes, I/O), plus in run c about two per process for strace's stops at execve and exit.",
    "user CPU time is measured by the kernel's tick/accounting (VIRT_CPU_ACCOUNTING_GEN on Debian kernels: precise at kernel entry/exit); a guest VM's steal time is not subtracted.",
    "no hardware counters (no perf PMU in this VM): instructions, memory accesses and TLB misses per cc1 are not measured here; the model charges user work from user time and the TLB behaviour of real traces (lackey format).",
  ],
};

export async function summarize(dir) {
  const f = (n) => path.join(dir, n);
  // env.txt: the machine and versions (rewritten by each invocation); run-X.txt: one per run.
  const env = {};
  for (const n of ["env.txt", "run-a.txt", "run-b.txt", "run-c.txt"]) if (found(f(n))) Object.assign(env, parseEnv(readText(f(n))));
  const time = found(f("time-v.txt")) ? parseTimeV(readText(f("time-v.txt"))) : null;
  const gccTimeA = found(f("gcc-time-a.txt")) ? parseGccTime(readText(f("gcc-time-a.txt"))) : null;
  const sys = found(f("strace-syscalls.txt")) ? await parseSyscallTrace(f("strace-syscalls.txt")) : null;
  const pt = found(f("strace-process.txt")) ? await parseProcessTrace(f("strace-process.txt")) : null;
  const ps = pt ? summarizeProcesses(pt) : null;

  const processes = ps ? pt.procs.length : null;
  const files = ps ? ps.compiles.length : null;
  const userMs = time ? time.userS * 1000 : null;
  const num = (k) => (env[k] != null && env[k] !== "" ? Number(env[k]) : null);

  // Processes by program (run c), with syscalls by program (run b) beside them.
  const programs = {};
  if (ps) {
    for (const [prog, g] of Object.entries(ps.byProg).sort((a, b) => b[1].processes - a[1].processes)) {
      programs[prog] = { processes: g.processes, execs: g.execs, perCompiledFile: round(div(g.processes, files), 3),
        siUserMs: g.siUserMs, siSystemMs: g.siSystemMs, siCovered: g.siCovered };
    }
  }
  if (sys) {
    for (const [prog, g] of Object.entries(sys.byProg)) {
      const e = (programs[prog] ??= {});
      e.processesRunB = g.processes;
      e.syscalls = g.syscalls;
      e.syscallsPerProcess = round(div(g.syscalls, g.processes), 1);
      e.syscallsPerProcessByKind = Object.fromEntries(Object.entries(sortObj(g.byKind)).map(([k, n]) => [k, round(n / g.processes, 2)]));
    }
  }

  const cc1 = ps ? rusageStats(ps.cc1) : null;
  const as = ps ? rusageStats(ps.asOfFiles) : null;
  const cc1Sys = sys?.byProg.cc1 ?? null;
  const cc1SyscallsPerProc = cc1Sys ? cc1Sys.syscalls / cc1Sys.processes : null;
  const cc1UserMean = cc1?.userMs?.mean ?? null;

  // Everything but the cc1 of compiled files: make, sh, gcc drivers, as, fixdep, objtool, nm, awk, probes …
  // User time from run a (total minus its own gcc -time cc1 lines), faults from run a minus run c's cc1
  // rusage, syscalls from run b minus its cc1; processes from run c.
  const restProcs = ps && cc1 ? processes - ps.cc1.length : null;
  const cc1UserA = gccTimeA ? gccTimeA.cc1.reduce((a, c) => a + c.userMs, 0) : cc1?.userMs?.sum ?? null;
  const restUserMs = userMs != null && cc1UserA != null ? userMs - cc1UserA : null;
  const restFaults = time && cc1?.minorFaults ? time.minorFaults - cc1.minorFaults.sum : null;
  const restSyscalls = sys && cc1Sys ? sys.total - cc1Sys.syscalls : null;

  const out = {
    what: "A real parallel build of the Linux kernel's lib/ (make defconfig, make -jN lib/), measured on this project's machine: processes, execs, syscalls, faults, context switches and CPU time, whole build and per cc1. Generated by scripts/measure/kernel-compile.sh + scripts/measure/summarize.mjs.",
    date: env.date ?? null,
    kernel: { sourcePackage: env.kernel_source_package ?? null, version: env.kernel_version ?? null, config: env.config ?? null, target: env.target ?? null },
    toolchain: { gcc: env.gcc ?? null, as: env.as ?? null, make: env.make ?? null, strace: env.strace ?? null, time: env.time ?? null },
    machine: { cpu: env.cpu ?? null, cores: num("cpus"), jobs: num("jobs"), memKb: num("mem_kb"), kernel: env.uname ?? null,
      loadavgBefore: env.loadavg_before ?? null, shared: "yes: other work ran beside the build (nice -n 19)" },
    wallS: { runA_time: round(time?.wallS, 2), runA: round(num("run_a_wall_s"), 2), runB_strace_c: round(num("run_b_wall_s"), 2),
      runC_strace_process: round(num("run_c_wall_s"), 2), runC_traceSpan: round(pt?.spanS, 2) },
    objectsBuilt: { runA: num("run_a_objects"), runB: num("run_b_objects"), runC: num("run_c_objects") },
    filesCompiled: ps ? { total: files, inLib: ps.inLib, objects: ps.objects, hostPrograms: files - ps.objects, bySourceSuffix: ps.bySuffix,
      cc1OfCompiledFiles: ps.cc1.length, cc1Probes: ps.cc1Probe.length, cc1Preprocess: ps.cc1E.length } : null,
    processes: ps ? { total: processes, perCompiledFile: round(div(processes, files), 3), forksByCall: pt.forks,
      execs: ps.execs, execsPerCompiledFile: round(div(ps.execs, files), 3), failedExecs: ps.failedExecs,
      byProgram: programs } : (sys ? { byProgram: programs } : null),
    syscalls: sys ? { total: sys.total, processes: sys.processes, threads: sys.threads, perProcess: round(div(sys.total, sys.processes), 1),
      perCompiledFile: round(div(sys.total, files), 1), byKind: sys.byKind,
      perProcessByKind: Object.fromEntries(Object.entries(sys.byKind).map(([k, n]) => [k, round(n / sys.processes, 3)])),
      countTable: { total: sys.countTable.total, byKind: sys.countTable.byKind } } : null,
    totals: time ? { userS: time.userS, systemS: time.systemS, cpuPercent: time.cpuPercent, minorFaults: time.minorFaults, majorFaults: time.majorFaults,
      voluntaryCtxSw: time.voluntaryCtxSw, involuntaryCtxSw: time.involuntaryCtxSw, maxRssKb: time.maxRssKb,
      fsInputs: time.fsInputs, fsOutputs: time.fsOutputs, exitStatus: time.exitStatus,
      perProcess: processes ? { userMs: round(userMs / processes, 3), systemMs: round(time.systemS * 1000 / processes, 3),
        minorFaults: round(time.minorFaults / processes, 1), voluntaryCtxSw: round(time.voluntaryCtxSw / processes, 2),
        involuntaryCtxSw: round(time.involuntaryCtxSw / processes, 2) } : null,
      perCompiledFile: files ? { userMs: round(userMs / files, 1), minorFaults: round(time.minorFaults / files, 1),
        voluntaryCtxSw: round(time.voluntaryCtxSw / files, 2), involuntaryCtxSw: round(time.involuntaryCtxSw / files, 2) } : null } : null,
    perCc1: cc1 ? { ...cc1, syscalls: cc1SyscallsPerProc != null ? round(cc1SyscallsPerProc, 1) : null,
      syscallsByKind: programs.cc1?.syscallsPerProcessByKind ?? null } : null,
    perCc1RunA: gccTimeA ? { n: gccTimeA.cc1.length, userMs: stats(gccTimeA.cc1.map((c) => c.userMs), 1),
      systemMs: stats(gccTimeA.cc1.map((c) => c.systemMs), 1), byProgram: gccTimeA.byProg, malformedLines: gccTimeA.malformed } : null,
    perAs: as,
    densities: {
      wholeBuild: {
        syscallsPerProcess: round(div(sys?.total, processes), 1),
        minorFaultsPerProcess: round(div(time?.minorFaults, processes), 1),
        voluntaryCtxSwPerProcess: round(div(time?.voluntaryCtxSw, processes), 2),
        involuntaryCtxSwPerProcess: round(div(time?.involuntaryCtxSw, processes), 2),
        execsPerProcess: round(div(ps?.execs, processes), 3),
        userMsPerProcess: round(div(userMs, processes), 2),
        syscallsPerUserMs: round(div(sys?.total, userMs), 4),
        minorFaultsPerUserMs: round(div(time?.minorFaults, userMs), 4),
        voluntaryCtxSwPerUserMs: round(div(time?.voluntaryCtxSw, userMs), 4),
        involuntaryCtxSwPerUserMs: round(div(time?.involuntaryCtxSw, userMs), 4),
        processesPerUserS: round(div(processes, time?.userS), 2),
        execsPerUserS: round(div(ps?.execs, time?.userS), 2),
        userMsBetweenSyscalls: round(div(userMs, sys?.total), 4),
        userMsBetweenFaults: round(div(userMs, time?.minorFaults), 4),
      },
      cc1: cc1 ? {
        syscallsPerUserMs: round(div(cc1SyscallsPerProc, cc1UserMean), 3),
        minorFaultsPerUserMs: round(div(cc1.minorFaults?.mean, cc1UserMean), 3),
        voluntaryCtxSwPerUserMs: round(div(cc1.voluntaryCtxSw?.mean, cc1UserMean), 4),
        involuntaryCtxSwPerUserMs: round(div(cc1.involuntaryCtxSw?.mean, cc1UserMean), 4),
        systemMsPerUserMs: round(div(cc1.systemMs?.mean, cc1UserMean), 4),
        userMsBetweenSyscalls: round(div(cc1UserMean, cc1SyscallsPerProc), 4),
        userMsBetweenFaults: round(div(cc1UserMean, cc1.minorFaults?.mean), 4),
        shareOfBuildUserCpu: round(div(cc1.userMs?.sum, userMs), 3),
        shareOfBuildMinorFaults: round(div(cc1.minorFaults?.sum, time?.minorFaults), 3),
        shareOfBuildSyscalls: round(div(cc1Sys?.syscalls, sys?.total), 3),
      } : null,
      restOfBuild: restProcs ? {
        processes: restProcs,
        userMsPerProcess: round(div(restUserMs, restProcs), 3),
        minorFaultsPerProcess: round(div(restFaults, restProcs), 1),
        syscallsPerProcess: round(div(restSyscalls, restProcs), 1),
        execsPerProcess: round(div(ps.execs - ps.cc1.length, restProcs), 3),
        syscallsPerUserMs: round(div(restSyscalls, restUserMs), 3),
        minorFaultsPerUserMs: round(div(restFaults, restUserMs), 3),
      } : null,
    },
    method: METHOD,
  };
  const cc1Rows = ps ? ps.cc1.map((p) => ({ source: sourceOf(p.argv ?? []), ...p.rusage, wallMs: p.start != null && p.end != null ? (p.end - p.start) * 1000 : null })) : [];
  return { out, cc1Rows, gccTimeA };
}

/** One CSV row per cc1 (run c's rusage; run a's user/system time from gcc -time where the source matches once). */
export function cc1Csv(rows, gccTimeA) {
  const a = new Map();
  for (const c of gccTimeA?.cc1 ?? []) a.set(c.source, a.has(c.source) ? null : c);
  const head = "source,user_ms,system_ms,minor_faults,major_faults,voluntary_ctxsw,involuntary_ctxsw,max_rss_kb,wall_ms,user_ms_run_a,system_ms_run_a";
  const f = (x, d = 3) => (x == null ? "" : String(round(x, d)));
  const body = rows.filter((r) => r.userMs != null).sort((x, y) => String(x.source).localeCompare(String(y.source))).map((r) => {
    const ra = a.get(r.source);
    return [r.source ?? "", f(r.userMs), f(r.systemMs), r.minorFaults, r.majorFaults, r.voluntaryCtxSw, r.involuntaryCtxSw,
      r.maxRssKb, f(r.wallMs, 1), f(ra?.userMs), f(ra?.systemMs)].join(",");
  });
  return [head, ...body].join("\n") + "\n";
}

async function main() {
  const args = process.argv.slice(2);
  const opt = (n) => { const i = args.indexOf(n); return i >= 0 ? args[i + 1] : null; };
  const dir = opt("--results"), outFile = opt("--out"), csv = opt("--cc1-csv");
  if (!dir || !outFile) {
    console.error("usage: node scripts/measure/summarize.mjs --results DIR --out FILE.json [--cc1-csv FILE.csv]");
    process.exit(2);
  }
  const { out, cc1Rows, gccTimeA } = await summarize(dir);
  writeFileSync(outFile, JSON.stringify(out, null, 2) + "\n");
  if (csv && cc1Rows.length) writeFileSync(csv, cc1Csv(cc1Rows, gccTimeA));
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await main();
