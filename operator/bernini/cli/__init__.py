"""The `bernini` command: the operator, the artifacts tools, compile, crds, and for people: status and generate."""

import argparse

# One module per command: `add_to(commands)` declares its arguments and handler. Each imports its heavy
# dependencies inside the handler, so `--help` and the init container's `artifacts pull` start fast.
from bernini.cli import artifacts, compile, crds, generate, operator, status

COMMANDS = (operator, artifacts, compile, status, generate, crds)  # the order `bernini --help` lists them


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bernini", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_to(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)
