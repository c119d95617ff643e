// vmmu command line: `vmmu demo`, `vmmu run kpti …`, `vmmu run cr0wp …`, `vmmu report …`,
// `vmmu translate …`, `vmmu mappings …`, `vmmu conformance …`. Each subcommand
// lives in its own module and returns an exit code: 0; 2 for a usage or input
// error (one `vmmu` line on stderr); 1 when a run fails (an exception reaching
// main, reported as one line). `--help` prints to stdout and exits 0; usage
// printed because of a mistake goes to stderr.

import { runTranslate } from "./translate.js";
import { runDemo } from "./demo.js";
import { runRun } from "./run.js";
import { runConformance } from "./conformance.js";
import { runMappings } from "./mappings.js";
import { runReport } from "./report.js";
import { versionLine } from "./version.js";

const USAGE = `usage:
  vmmu demo                       build page tables, translate, invalidate, print throughput
  vmmu run kpti [--vcpus N] [--policy NAME[,NAME…]|all] [--jobs N] [--accesses N] [--seed N]
                [--trace LACKEY_FILE] [--cost name=value …] [--json]
                                  a KPTI kernel compile on the shadow MMU, per policy (vmmu run --help)
  vmmu run cr0wp [--mmu legacy|tdp|shadow[,…]|all] [--policy NAME[,NAME…]|all] [--pairs N] [--iterations N]
                 [--vcpus N] [--kernexec …] [--host-level N] [--cost name=value …] [--sensitivity] [--json]
                                  ssdd in a CR0.WP-toggling guest on each MMU, per policy (vmmu run cr0wp --help)
  vmmu report [--out DIR] [--quick]
                                  every seed reproduction, as one HTML page with plots (vmmu report --help)
  vmmu translate --arch x86_64 --image FILE [--image-base HEX] --cr3 HEX
                 [--cr0 HEX] [--cr4 HEX] [--efer HEX] [--max-phys-bits N] [--access read|write|fetch [--user]]
                 [VA ...]          (or one VA per line on stdin)
  vmmu translate --arch arm64 --image FILE --image-base HEX --ttbr0 HEX --ttbr1 HEX --tcr HEX
                 [--sctlr HEX] [--el 0|1] [--pan 0|1] [--access read|write|fetch]
                 [VA ...]          (or one VA per line on stdin)
                                  FILE: a raw image (pmemsave) or a QEMU ELF core (dump-guest-memory)
  vmmu mappings --arch x86_64|arm64 --image FILE [registers as for translate; an x86 core gives CR3]
                [--leaves] [--json]  every mapped range with its rights, as QEMU info mem (vmmu mappings --help)
  vmmu conformance --arch x86_64|arm64 [--out FILE]
                                  the MMU conformance suite as JSON lines (vmmu conformance --help)
  vmmu --version                  the package version, the wasm core's hash and the git commit

  --max-phys-bits N (x86_64 translate and mappings): the guest's MAXPHYADDR, 36..52
  (default 52). An entry's address is its bits N-1:12; with --access a set bit in
  51:N is a reserved-bit #PF (error code RSVD).
  Every subcommand takes --help. Exit status: 0; 1 if a run failed; 2 on a usage or input error.
`;

const COMMANDS = ["demo", "run", "report", "translate", "mappings", "conformance"];

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case "demo": return runDemo(rest);
    case "translate": return runTranslate(rest);
    case "run": return runRun(rest);
    case "conformance": return runConformance(rest);
    case "mappings": return runMappings(rest);
    case "report": return runReport(rest);
    case "-h": case "--help": case "help":
      process.stdout.write(USAGE);
      return 0;
    case "-V": case "--version":
      process.stdout.write(versionLine() + "\n");
      return 0;
    case undefined:
      process.stderr.write(USAGE);
      return 2;
    default:
      process.stderr.write(`vmmu: unknown command '${cmd}' (one of: ${COMMANDS.join(", ")}; vmmu --help)\n`);
      return 2;
  }
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (err: unknown) => {
  const msg = err instanceof Error ? err.message : String(err);
  process.stderr.write(`${msg.startsWith("vmmu:") ? msg : `vmmu: ${msg}`}\n`);
  process.exitCode = 1;
});
