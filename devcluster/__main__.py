"""``python -m devcluster up|down|status [--agents N] [--slots N] …``: the same as ``invoke cluster``."""

from __future__ import annotations

import argparse
import sys

from devcluster.cli import ACTIONS, run
from errors import ProjectError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster", description=__doc__)
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("--agents", type=int, default=1)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--master-port", type=int, default=8080)
    parser.add_argument("--db-port", type=int, default=5433)
    parser.add_argument("--state-dir")
    args = parser.parse_args(argv)
    try:
        return run(args.action, agents=args.agents, slots=args.slots, master_port=args.master_port,
                   db_port=args.db_port, state_dir=args.state_dir)  # fmt: skip
    except ProjectError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
