"""`python -m chaos`: run chaos scenarios against local clusters and write a report.

    python -m chaos --scenario kill-leader --rounds 5 --out /tmp/chaos
    python -m chaos --scenario all --rounds 1 --out /tmp/chaos --seed 42

Exit status 0 when every scenario passed its checks, 1 when one did not, 2 on bad
arguments. The seed (random unless given) is printed and recorded in the report.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys

from chaos import runner
from chaos.scenarios import SCENARIOS


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.split("\n")[0])
    p.add_argument("--scenario", required=True, metavar="NAME|all",
                   help="all, or one or more (comma-separated) of: " + ", ".join(SCENARIOS))
    p.add_argument("--rounds", type=int, default=1, help="faults per scenario (default 1)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="where report.json, summary.txt and availability.png go")
    p.add_argument("--seed", type=int, help="random seed (default: a random one, recorded)")
    p.add_argument("--topology", choices=["loopback", "netns"], default="loopback",
                   help="masters on loopback ports, or each in its own network namespace")
    p.add_argument("--masters", type=int, choices=[3, 5], default=3)
    p.add_argument("--serializable-reads", action="store_true",
                   help="serve the workload's reads from each master's own copy (stale on "
                        "a cut-off member): to see the checker catch what that breaks")
    p.add_argument("--keep", action="store_true",
                   help="leave the clusters running (to look at them); `rk down` them later")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds: must be 1 or more")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        p.error(f"--out: {args.out} exists and is not a directory")
    try:
        runner.names(args.scenario)
    except ValueError as e:
        p.error(str(e))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    # SIGTERM as Ctrl-C: the scenario is cancelled and its cluster stopped and removed
    # (processes, namespaces, containers) before the runner exits.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    print(f"chaos: seed {seed}", flush=True)
    options = runner.Options(rounds=args.rounds, seed=seed, topology=args.topology,
                             masters=args.masters, out=args.out, keep=args.keep,
                             serializable_reads=args.serializable_reads)
    try:
        result = asyncio.run(runner.run(args.scenario, options))
    except KeyboardInterrupt:
        print("chaos: interrupted; the cluster of the scenario under way was stopped",
              file=sys.stderr)
        return 130
    print(f"chaos: {'PASSED' if result['passed'] else 'FAILED'}; report in {options.out}",
          flush=True)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
