// What a passing test may say: the coverage and progress lines of the
// randomized and real-Linux suites (seeds, case tallies, rows that agree) go
// through verbose(), which prints only when asked — VMMU_VERBOSE=1, or under
// `npm run fuzz` (VMMU_FUZZ_COUNTS set; scripts/fuzz.mjs keeps each round's
// output in its log) — so that `npm test` prints nothing from passing tests.
// A failure still says everything in its assertion messages.

/** True when verbose() prints. */
export function verboseOn(): boolean {
  const env = typeof process !== "undefined" ? process.env : {};
  return Boolean(env.VMMU_VERBOSE || env.VMMU_FUZZ_COUNTS);
}

/** Prints `line` on stdout when verboseOn(); a no-op otherwise. */
export function verbose(line: string): void {
  if (verboseOn()) console.log(line);
}

/** Says on stderr why a suite is skipped: a skip is not a pass, so it is not silent. */
export function skipped(suite: string, reason: string): void {
  console.warn(`${suite} — ${reason}`);
}
