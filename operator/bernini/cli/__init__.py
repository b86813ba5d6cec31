"""The `bernini` command: the operator, the artifacts tools, compile, crds, and for people: status and generate."""

import argparse
import importlib
import sys

# One module per command: `add_to(commands)` declares its arguments and handler, and each imports its heavy
# dependencies inside the handler. A command line naming a command imports that command's module alone, so the
# init container's `artifacts pull` starts without the others' imports.
COMMANDS = ("operator", "artifacts", "compile", "train", "status", "generate", "crds")  # the order `bernini --help` lists them


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bernini", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS if only is None else (only,):
        importlib.import_module(f"bernini.cli.{name}").add_to(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    named = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(named).parse_args(argv)
    return args.handler(args)
