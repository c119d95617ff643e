#!/usr/bin/env bash
# Measures a real parallel build of the Linux kernel's lib/ directory on this
# machine, the ground truth for the guest workload of `vmmu run kpti`
# (src/guest/kernel-compile.ts; issue 13, item 2), and turns the raw logs into
# bench/data/kernel-compile-lib.json with scripts/measure/summarize.mjs.
#
# What it does (everything from the Debian archive; run as root on Debian):
#   1. installs linux-source-X.Y (the newest the archive has, 6.1 on bookworm),
#      build-essential bc flex bison libelf-dev libssl-dev strace time, if missing;
#   2. unpacks /usr/src/linux-source-X.Y.tar.xz into WORKDIR/src (outside the
#      repository), `make defconfig`, `make prepare` and lists lib/ as unpacked.
#      defconfig + `make lib/` is the minimal target set (a single-directory
#      target depends on prepare: generated headers, fixdep, objtool,
#      asm-offsets); prepare runs here, unmeasured, so the measured builds only
#      re-check it. What every `make lib/` re-runs is measured with it: the
#      compiler probes (cc-option and friends), checksyscalls, compile.h;
#      lib/ itself builds one host program (gen_crc32table) besides its objects;
#   3. builds `make -j$JOBS lib/` three times, each from a clean lib/ (every
#      file the build added under lib/ removed; prepare's outputs kept), niced
#      (nice -n 19: the machine is shared), in a fixed environment (env -i,
#      PATH=/usr/sbin:/usr/bin:/sbin:/bin, LC_ALL=C; a long PATH would add
#      failed execve()s to every exec):
#        a. `/usr/bin/time -v make …`: totals for the whole build, unperturbed
#           (user/system CPU, minor/major faults, voluntary/involuntary context
#           switches, wall time);
#        b. `strace -f -C -q -s 0 -o strace-syscalls.txt make …`: -C is -c (the
#           syscall count table, at the end of the file) plus the trace itself,
#           which the summarizer reads to count syscalls per process and per
#           program (cc1, as, sh, make, …), not just in total;
#        c. `strace -f -q -ttt -e trace=process -e abbrev=execve,execveat
#           --seccomp-bpf -o strace-process.txt make …`: every fork/vfork/clone,
#           execve, exit and wait4 with timestamps, to rebuild the process tree
#           (which programs, how many, execs per compiled file). Per-cc1 cost:
#           every gcc driver runs with `-time=FILE` (in KCFLAGS, in all three
#           runs and in `make prepare`, so the command lines and hence the
#           objects' .cmd files never differ), which makes it reap cc1 and as
#           with wait4(…, &rusage) instead of waitpid(); strace prints that
#           rusage in full (abbrev is on for execve only), so every cc1 and as
#           comes with its own user/system time, minor/major faults and
#           voluntary/involuntary context switches, measured by the kernel for
#           exactly that process. With --seccomp-bpf a cc1 stops for strace only
#           at execve and exit, so its own numbers are barely perturbed. Run a's
#           -time FILE gives each cc1's and as's user/system time again, from a
#           build without strace.
#   4. writes RESULTS/ (raw logs, env.txt, run-{a,b,c}.txt) and runs summarize.mjs, which
#      writes the JSON and a CSV with one row per cc1 (…-cc1.csv beside it); copies the
#      small raw logs, gzipped, to …-raw/ beside the JSON (run b's 130 MB trace stays in
#      RESULTS: only its -c table is copied).
#
# Why the gcc -time=FILE + wait4 rusage method for per-cc1 numbers: it needs no
# extra process (a wrapper would add a fork+exec per cc1 and as to the very
# process counts being measured), no system-wide switch (process accounting),
# and no sampling of /proc (which misses short processes and the last
# milliseconds of long ones). What it misses: only the gcc driver's children
# (cc1, as, collect2/ld) are reaped with rusage; make, sh, gcc itself, fixdep,
# objtool and the rest get only the kernel's SIGCHLD si_utime/si_stime (clock
# ticks, 10 ms) in the process trace and their share of run a's totals; the
# host program and most probes compile without KCFLAGS, so without -time; and
# -time itself costs each gcc driver one open/append/close of FILE.
#
# Usage: scripts/measure/kernel-compile.sh [--workdir DIR] [--jobs N]
#          [--results DIR] [--out JSON] [--only a|b|c]... [--prepare-only] [--summarize-only]
#   --workdir   source and build tree (default /tmp/vmmu-kernel-measure)
#   --jobs      make -j (default: nproc)
#   --results   raw logs (default WORKDIR/results)
#   --out       the JSON (default bench/data/kernel-compile-lib.json in this repository)
#   --only      run only the named measurement(s) (default a, b and c)
#   --prepare-only     steps 1 and 2 only (install, unpack, defconfig, prepare)
#   --summarize-only   no install, no build: rerun summarize.mjs on RESULTS
# Idempotent: install, unpack, defconfig and prepare are skipped when done;
# each invocation re-measures (three builds of lib/).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=/tmp/vmmu-kernel-measure
JOBS=$(nproc)
RESULTS=
OUT=$ROOT/bench/data/kernel-compile-lib.json
ONLY=()
SUMMARIZE_ONLY=0
PREPARE_ONLY=0
while [ $# -gt 0 ]; do
  case $1 in
    --workdir) WORK=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --results) RESULTS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --only) ONLY+=("$2"); shift 2 ;;
    --summarize-only) SUMMARIZE_ONLY=1; shift ;;
    --prepare-only) PREPARE_ONLY=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
    *) echo "kernel-compile.sh: unknown argument $1 (--help)" >&2; exit 2 ;;
  esac
done
[ ${#ONLY[@]} -gt 0 ] || ONLY=(a b c)
RESULTS=${RESULTS:-$WORK/results}
SRC=$WORK/src
GCC_TIME=$WORK/gcc-time.txt   # gcc -time=FILE target; fixed so command lines never change
mkdir -p "$WORK" "$RESULTS"

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# The JSON is the data of record; beside it go a CSV (one row per cc1) and the small raw logs
# (< 1 MB gzipped: everything but run b's trace, of which only strace's -c table is kept).
summarize() {
  mkdir -p "$(dirname "$OUT")"
  node "$ROOT/scripts/measure/summarize.mjs" --results "$RESULTS" --out "$OUT" \
    --cc1-csv "${OUT%.json}-cc1.csv"
  local raw=${OUT%.json}-raw
  mkdir -p "$raw"
  for f in env.txt run-a.txt run-b.txt run-c.txt time-v.txt; do
    [ -e "$RESULTS/$f" ] && cp "$RESULTS/$f" "$raw/$f"
  done
  for f in gcc-time-a.txt strace-process.txt; do
    [ -e "$RESULTS/$f" ] && gzip -9 -n -c "$RESULTS/$f" > "$raw/$f.gz"
  done
  [ -e "$RESULTS/strace-syscalls.txt" ] && sed -n '/^% time/,$p' "$RESULTS/strace-syscalls.txt" > "$raw/strace-syscalls-table.txt"
  log "wrote $OUT, ${OUT%.json}-cc1.csv and $raw/"
}
if [ $SUMMARIZE_ONLY = 1 ]; then summarize; exit 0; fi

[ "$(id -u)" = 0 ] || { echo "kernel-compile.sh: run as root (apt-get, and strace of the build)" >&2; exit 1; }

# 1. packages -------------------------------------------------------------------
if ! ls /usr/src/linux-source-*.tar.xz >/dev/null 2>&1 || ! command -v strace >/dev/null || ! [ -x /usr/bin/time ] \
   || ! command -v flex >/dev/null || ! command -v bison >/dev/null || ! [ -e /usr/include/libelf.h ] \
   || ! [ -e /usr/include/openssl/ssl.h ] || ! command -v bc >/dev/null || ! command -v gcc >/dev/null; then
  log "installing packages"
  apt-get update -qq
  # The newest linux-source-X.Y the archive has (bookworm: 6.1).
  KSRC_PKG=$(apt-cache search --names-only '^linux-source-[0-9]+\.[0-9]+$' | awk '{print $1}' | sort -V | tail -n1)
  [ -n "$KSRC_PKG" ] || { echo "kernel-compile.sh: the archive has no linux-source-X.Y package" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "$KSRC_PKG" build-essential bc flex bison libelf-dev libssl-dev strace time xz-utils >/dev/null
fi
TARBALL=$(ls /usr/src/linux-source-*.tar.xz | sort -V | tail -n1)
KSRC_PKG=$(basename "$TARBALL" .tar.xz)

# 2. source, config, prepare ------------------------------------------------------
# The build runs in a fixed, minimal environment so anyone's shell (PATH with
# extra directories, locale, MAKEFLAGS) does not change what is measured.
ENV=(env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C TERM=dumb)
MAKE=(make -C "$SRC" -j"$JOBS" "KCFLAGS=-time=$GCC_TIME")
if [ ! -e "$SRC/.unpacked" ]; then
  log "unpacking $TARBALL into $SRC"
  rm -rf "$SRC" && mkdir -p "$SRC"
  tar -xf "$TARBALL" -C "$SRC" --strip-components=1
  (cd "$SRC" && find lib -print | LC_ALL=C sort) > "$WORK/lib-pristine.list"
  dpkg-query -W -f='${Package} ${Version}\n' "$KSRC_PKG" > "$SRC/.unpacked"
fi
if [ ! -e "$SRC/.prepared" ]; then
  log "make defconfig && make prepare (niced)"
  "${ENV[@]}" nice -n 19 "${MAKE[@]}" defconfig > "$WORK/defconfig.out" 2>&1
  "${ENV[@]}" nice -n 19 "${MAKE[@]}" prepare > "$WORK/prepare.out" 2>&1
  touch "$SRC/.prepared"
fi
if [ $PREPARE_ONLY = 1 ]; then log "prepared $SRC"; exit 0; fi

# Removes every file the build added under lib/ (objects, .cmd, generated
# sources and headers, archives), keeping prepare's outputs outside lib/.
clean_lib() {
  (cd "$SRC" && find lib -print | LC_ALL=C sort | LC_ALL=C comm -13 "$WORK/lib-pristine.list" - | sort -r | while IFS= read -r f; do
    if [ -d "$f" ]; then rmdir "$f"; else rm -f "$f"; fi
  done)
  rm -f "$GCC_TIME"
}

# 3. the three measured builds ------------------------------------------------------
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "kernel_source_package: $(cat "$SRC/.unpacked")"
  echo "kernel_version: $(make -s -C "$SRC" kernelversion 2>/dev/null)"
  echo "gcc: $(gcc --version | head -n1)"
  echo "as: $(as --version | head -n1)"
  echo "make: $(make --version | head -n1)"
  echo "strace: $(strace -V | head -n1)"
  echo "time: $(/usr/bin/time --version 2>&1 | head -n1)"
  echo "uname: $(uname -srm)"
  echo "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
  echo "cpus: $(nproc)"
  echo "jobs: $JOBS"
  echo "mem_kb: $(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo)"
  echo "loadavg_before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "config: defconfig (x86_64)"
  echo "target: make -j$JOBS lib/"
} > "$RESULTS/env.txt"

run() { # name, command...
  local name=$1; shift
  clean_lib
  log "run $name: $*"
  local t0 t1 LOAD_BEFORE
  LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
  t0=$(date +%s.%N)
  "${ENV[@]}" nice -n 19 "$@" > "$RESULTS/build-$name.out" 2>&1 || { echo "run $name failed; see $RESULTS/build-$name.out" >&2; exit 1; }
  t1=$(date +%s.%N)
  {
    echo "run_${name}_date: $(date -u -d "@${t0%.*}" +%Y-%m-%dT%H:%M:%SZ)"
    echo "run_${name}_wall_s: $(echo "$t1 - $t0" | bc)"
    echo "run_${name}_objects: $(cd "$SRC" && find lib -name '*.o' | wc -l)"
    echo "run_${name}_loadavg_before: $LOAD_BEFORE"
    echo "run_${name}_loadavg_after: $(cut -d' ' -f1-3 /proc/loadavg)"
  } > "$RESULTS/run-$name.txt"
  [ -e "$GCC_TIME" ] && mv "$GCC_TIME" "$RESULTS/gcc-time-$name.txt"
  log "run $name done in $(echo "$t1 - $t0" | bc) s"
}

for m in "${ONLY[@]}"; do
  case $m in
    a) run a /usr/bin/time -v -o "$RESULTS/time-v.txt" "${MAKE[@]}" lib/ ;;
    b) run b strace -f -C -q -s 0 -o "$RESULTS/strace-syscalls.txt" "${MAKE[@]}" lib/ ;;
    c) run c strace -f -q -ttt -s 1024 -e trace=process -e abbrev=execve,execveat --seccomp-bpf \
         -o "$RESULTS/strace-process.txt" "${MAKE[@]}" lib/ ;;
    *) echo "kernel-compile.sh: --only takes a, b or c" >&2; exit 2 ;;
  esac
done

# 4. the data -----------------------------------------------------------------------
summarize
