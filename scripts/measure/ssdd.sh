#!/usr/bin/env bash
# Measures rt-tests' ssdd (tracer/tracee pairs, each tracer doing `iters`
# PTRACE_SINGLESTEPs of a spinning tracee) on this machine: the native cost of
# one step, against which the guest model's bare-metal cost per step
# (src/guest/ssdd.ts on src/guest/bare-metal-cpu.ts) is compared. Seed 002
# (issue 10) ran `ssdd 10 50000` in a grsecurity guest; this measures a stock
# kernel's step, on whatever machine runs it. Writes bench/data/ssdd-native.json
# with scripts/measure/ssdd-summarize.mjs.
#
# What it does (Debian packages; run as root, or with sudo for apt-get):
#   1. installs rt-tests (ssdd), time (/usr/bin/time), util-linux (taskset)
#      and, if the archive has it, linux-perf (perf), when missing;
#   2. records the machine in RESULTS/env.txt: CPU model, family/model, CPUs,
#      nominal clock (/proc/cpuinfo "cpu MHz", and the TSC frequency the kernel
#      detected, from dmesg when readable), hypervisor vendor, kernel, the
#      kernel command line's mitigations= and every
#      /sys/devices/system/cpu/vulnerabilities/* line, package versions,
#      perf_event_paranoid and whether perf can count cycles here;
#   3. timing runs: for each repetition, each size PAIRSxITERS and each
#      placement — "pinned" (`taskset -c 0`: every task on CPU 0, like a
#      1-vCPU guest) and "free" (the scheduler's choice over all CPUs) —
#      `/usr/bin/time -v ssdd -f PAIRS -i ITERS`, its wall time also taken
#      with date +%s%N around it, the load average before and after, the
#      runnable tasks before (procs_running, this script's shell included)
#      and /proc/stat's cpu line before and after (the whole machine's busy
#      and steal time during the run: the shared machine's other work).
#      Repetitions are the outer loop so that a burst of other work on a
#      shared machine spreads over every configuration. /usr/bin/time's
#      rusage is RUSAGE_CHILDREN of its child: main and the tracers (which
#      main reaps); the tracees are not in it (at its tracer's exit each
#      tracee is detached with its SIGTRAP pending, dies of it and is reaped
#      by init), so user+sys and the context switches there miss the tracee
#      half of every step;
#   4. perf runs (if perf works): per size and placement, `perf stat -e
#      task-clock,context-switches,cpu-migrations,page-faults` of the same
#      command; perf's software counters are inherited by every descendant
#      and folded in at each exit, tracees included, so these give CPU time
#      and context switches per step for both halves; they also add perf's
#      own cost to every context switch, so their wall time is not used;
#   5. runs ssdd-summarize.mjs: raw runs, per-configuration median/min/max of
#      ns per step (wall, user+sys, perf task-clock), context switches per
#      step, into the JSON.
# Every ssdd run must print "All tests PASSED", or the script stops.
#
# Usage: bash scripts/measure/ssdd.sh [--sizes "1x2000 1x20000 10x2000 10x5000 10x50000"]
#          [--reps N] [--perf-reps N] [--results DIR] [--out JSON] [--summarize-only]
#   --sizes      PAIRSxITERS list (default above; 10x50000 is the seed's run)
#   --reps       timing repetitions per size and placement (default 5)
#   --perf-reps  perf runs per size and placement (default 2; 0: none)
#   --results    raw logs (default /tmp/vmmu-ssdd-measure)
#   --out        the JSON (default bench/data/ssdd-native.json in this repository)
#   --summarize-only   no install, no runs: rerun the summarizer on RESULTS
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SIZES="1x2000 1x20000 10x2000 10x5000 10x50000"
REPS=5
PERF_REPS=2
RESULTS=/tmp/vmmu-ssdd-measure
OUT=$ROOT/bench/data/ssdd-native.json
SUMMARIZE_ONLY=0
while [ $# -gt 0 ]; do
  case $1 in
    --sizes) SIZES=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --perf-reps) PERF_REPS=$2; shift 2 ;;
    --results) RESULTS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --summarize-only) SUMMARIZE_ONLY=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
    *) echo "ssdd.sh: unknown argument $1 (--help)" >&2; exit 2 ;;
  esac
done
for s in $SIZES; do
  [[ $s =~ ^[1-9][0-9]*x[0-9]+$ ]] || { echo "ssdd.sh: --sizes takes PAIRSxITERS words, got '$s'" >&2; exit 2; }
done
[[ $REPS =~ ^[1-9][0-9]*$ ]] || { echo "ssdd.sh: --reps must be a positive integer, got '$REPS'" >&2; exit 2; }
[[ $PERF_REPS =~ ^[0-9]+$ ]] || { echo "ssdd.sh: --perf-reps must be an integer >= 0, got '$PERF_REPS'" >&2; exit 2; }

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
summarize() {
  mkdir -p "$(dirname "$OUT")"
  node "$ROOT/scripts/measure/ssdd-summarize.mjs" --results "$RESULTS" --out "$OUT"
  log "wrote $OUT"
}
if [ $SUMMARIZE_ONLY = 1 ]; then summarize; exit 0; fi

# 1. packages -------------------------------------------------------------------------
SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo
if ! command -v ssdd >/dev/null || ! [ -x /usr/bin/time ] || ! command -v taskset >/dev/null; then
  log "installing rt-tests, time, util-linux with apt-get (needs root or sudo)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends rt-tests time util-linux >/dev/null
fi
if ! command -v perf >/dev/null; then
  if apt-cache show linux-perf >/dev/null 2>&1; then
    log "installing linux-perf"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends linux-perf >/dev/null || log "linux-perf did not install: perf runs skipped"
  else
    log "the archive has no linux-perf: perf runs skipped"
  fi
fi
command -v node >/dev/null || { echo "ssdd.sh: node (>= 20) is needed for the summary" >&2; exit 1; }
HAVE_PERF=0
if command -v perf >/dev/null && perf stat -x, -e task-clock true >/dev/null 2>&1; then HAVE_PERF=1; fi

# 2. the machine --------------------------------------------------------------------------
rm -rf "$RESULTS" && mkdir -p "$RESULTS"
hw_cycles=unavailable
if [ $HAVE_PERF = 1 ]; then
  probe=$(perf stat -x, -e cycles -- true 2>&1 >/dev/null | grep -m1 ',cycles' || true)
  case $probe in
    "<not supported>"*|"<not counted>"*|"") hw_cycles="not supported (${probe%%,*})" ;;
    *) hw_cycles=supported ;;
  esac
fi
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "uname: $(uname -srm)"
  echo "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
  echo "cpu_family: $(sed -n 's/^cpu family[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
  echo "cpu_model: $(sed -n 's/^model[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
  echo "cpu_vendor: $(sed -n 's/^vendor_id[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
  echo "cpus: $(nproc)"
  echo "cpu_mhz: $(sed -n 's/^cpu MHz[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
  echo "tsc_mhz: $( (dmesg 2>/dev/null || true) | sed -n 's/.*tsc: Detected \([0-9.]*\) MHz processor.*/\1/p' | head -n1)"
  echo "hypervisor: $(lscpu 2>/dev/null | sed -n 's/^Hypervisor vendor:[[:space:]]*//p')"
  echo "mem_kb: $(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo)"
  echo "cmdline_mitigations: $(tr ' ' '\n' < /proc/cmdline | sed -n 's/^mitigations=//p')"
  for f in /sys/devices/system/cpu/vulnerabilities/*; do
    [ -e "$f" ] && echo "vuln_$(basename "$f"): $(cat "$f")"
  done
  echo "rt_tests: $(dpkg-query -W -f='${Version}' rt-tests 2>/dev/null || echo unknown)"
  echo "ssdd: $(ssdd --help 2>&1 | head -n1)"
  echo "time: $(dpkg-query -W -f='time ${Version}' time 2>/dev/null || echo unknown)"
  echo "perf: $([ $HAVE_PERF = 1 ] && perf --version || echo unavailable)"
  echo "perf_event_paranoid: $(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo unknown)"
  echo "perf_hw_cycles: $hw_cycles"
  echo "sizes: $SIZES"
  echo "reps: $REPS"
  echo "perf_reps: $([ $HAVE_PERF = 1 ] && echo "$PERF_REPS" || echo 0)"
  echo "loadavg_before: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$RESULTS/env.txt"

# 3. timing runs, 4. perf runs ----------------------------------------------------------------
# run KIND PLACEMENT PAIRS ITERS REP: one ssdd run, its logs under RESULTS/runs/.
run() {
  local kind=$1 place=$2 pairs=$3 iters=$4 rep=$5
  local name=$kind-$place-${pairs}x$iters-$rep dir=$RESULTS/runs
  mkdir -p "$dir"
  local pin=()
  [ "$place" = pinned ] && pin=(taskset -c 0)
  local cmd=(ssdd -f "$pairs" -i "$iters")
  local wrap
  if [ "$kind" = time ]; then wrap=(/usr/bin/time -v -o "$dir/$name.time-v.txt")
  else wrap=(perf stat -x, -o "$dir/$name.perf.csv" -e task-clock,context-switches,cpu-migrations,page-faults --); fi
  local load0 stat0 run0 t0 t1
  load0=$(cut -d' ' -f1-3 /proc/loadavg)
  stat0=$(head -n1 /proc/stat)
  run0=$(sed -n 's/^procs_running //p' /proc/stat)
  t0=$(date +%s%N)
  "${wrap[@]}" "${pin[@]}" "${cmd[@]}" > "$dir/$name.out" 2>&1 || { echo "ssdd.sh: $name failed; see $dir/$name.out" >&2; exit 1; }
  t1=$(date +%s%N)
  grep -q 'All tests PASSED' "$dir/$name.out" || { echo "ssdd.sh: $name did not pass; see $dir/$name.out" >&2; exit 1; }
  {
    echo "kind: $kind"
    echo "placement: $place"
    echo "pairs: $pairs"
    echo "iters: $iters"
    echo "rep: $rep"
    echo "command: ${pin[*]}${pin:+ }${cmd[*]}"
    echo "wall_ns: $((t1 - t0))"
    echo "loadavg_before: $load0"
    echo "loadavg_after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "procs_running_before: $run0"
    echo "proc_stat_cpu_before: $stat0"
    echo "proc_stat_cpu_after: $(head -n1 /proc/stat)"
    echo "clk_tck: $(getconf CLK_TCK)"
  } > "$dir/$name.txt"
  log "$name: $(( (t1 - t0) / 1000000 )) ms"
}

for rep in $(seq 1 "$REPS"); do
  for s in $SIZES; do
    for place in pinned free; do run time "$place" "${s%x*}" "${s#*x}" "$rep"; done
  done
done
if [ $HAVE_PERF = 1 ] && [ "$PERF_REPS" -gt 0 ]; then
  for rep in $(seq 1 "$PERF_REPS"); do
    for s in $SIZES; do
      for place in pinned free; do run perf "$place" "${s%x*}" "${s#*x}" "$rep"; done
    done
  done
fi
echo "loadavg_after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$RESULTS/env.txt"

# 5. the data --------------------------------------------------------------------------------------
summarize
