// vmmu command line: `vmmu demo`, `vmmu translate …`, `vmmu mappings …`. Each
// subcommand lives in its own module and returns an exit code; errors are one
// clear line on stderr.

import { runTranslate } from "./translate.js";
import { runDemo } from "./demo.js";
import { runRun } from "./run.js";
import { runConformance } from "./conformance.js";
import { runMappings } from "./mappings.js";

const USAGE = `usage:
  vmmu demo                       build page tables, translate, invalidate, print throughput
  vmmu run kpti [--vcpus N] [--policy NAME[,NAME…]|all] [--jobs N] [--accesses N] [--seed N]
                [--trace LACKEY_FILE] [--cost name=value …] [--json]
                                  a KPTI kernel compile on the shadow MMU, per policy (vmmu run --help)
  vmmu translate --arch x86_64 --image FILE [--image-base HEX] --cr3 HEX
                 [--cr0 HEX] [--cr4 HEX] [--efer HEX] [--access read|write|fetch [--user]]
                 [VA ...]          (or one VA per line on stdin)
  vmmu translate --arch arm64 --image FILE --image-base HEX --ttbr0 HEX --ttbr1 HEX --tcr HEX
                 [--sctlr HEX] [--el 0|1] [--pan 0|1] [--access read|write|fetch]
                 [VA ...]          (or one VA per line on stdin)
                                  FILE: a raw image (pmemsave) or a QEMU ELF core (dump-guest-memory)
  vmmu mappings --arch x86_64|arm64 --image FILE [registers as for translate; an x86 core gives CR3]
                [--leaves] [--json]  every mapped range with its rights, as QEMU info mem (vmmu mappings --help)
  vmmu conformance --arch x86_64|arm64 [--out FILE]
                                  the MMU conformance suite as JSON lines (vmmu conformance --help)
`;

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case "demo": return runDemo(rest);
    case "translate": return runTranslate(rest);
    case "run": return runRun(rest);
    case "conformance": return runConformance(rest);
    case "mappings": return runMappings(rest);
    case undefined: case "-h": case "--help": case "help":
      process.stdout.write(USAGE);
      return cmd === undefined ? 2 : 0;
    default:
      process.stderr.write(`vmmu: unknown command '${cmd}'\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (err: unknown) => {
  const msg = err instanceof Error ? err.message : String(err);
  process.stderr.write(`${msg.startsWith("vmmu:") ? msg : `vmmu: ${msg}`}\n`);
  process.exitCode = 1;
});
