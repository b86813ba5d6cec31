"""`bernini crds FILE...`: write the BerniniDeployment CRD generated from the pydantic models."""

import argparse
from pathlib import Path


def add_to(commands: argparse._SubParsersAction) -> None:
    crds = commands.add_parser("crds", help="write the BerniniDeployment CRD generated from the pydantic models")
    crds.add_argument("output", type=Path, nargs="+")
    crds.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from bernini.api.crd import render_yaml

    text = render_yaml()
    for path in args.output:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    return 0
