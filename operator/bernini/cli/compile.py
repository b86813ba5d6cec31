"""`bernini compile`: trace every stage, write manifest.json, optionally publish the set to S3."""

import argparse
import os
from pathlib import Path

from bernini.domain.instances import TARGETS


def add_to(commands: argparse._SubParsersAction) -> None:
    compile_parser = commands.add_parser("compile", help="trace every stage, write manifest.json, publish to S3")
    compile_parser.add_argument("--version", required=True, help="model version recorded in the manifest")
    compile_parser.add_argument("--out", type=Path, required=True, help="local directory for the artifact set")
    compile_parser.add_argument("--target", choices=TARGETS,
                                help="default: inf2 when torch-neuronx imports, else cpu; cuda traces on this host's GPU")
    compile_parser.add_argument("--weights", choices=("trained", "random"), default="trained",
                                help="trained: the reference model trained here, cached (`bernini train` trains it "
                                     "when missing, in minutes); random: drawn from --seed, for plumbing tests")
    compile_parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    compile_parser.add_argument("--upload", metavar="S3_URI", help="publish the set to this prefix")
    compile_parser.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    compile_parser.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL_S3"))
    compile_parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from bernini.compile import compile_model, neuron_available

    if args.seed and args.weights != "random":
        raise SystemExit("--seed draws random weights: add --weights random")
    target = args.target or ("inf2" if neuron_available() else "cpu")
    state = None
    if args.weights == "trained":
        from bernini.model.weights import trained

        state = trained()
    manifest = compile_model(args.out, args.version, target, seed=args.seed, weights=state)
    print(f"compiled {len(manifest.stages)} graphs for {target} into {args.out} ({manifest.total_bytes / 2**20:.1f} MiB)")
    if args.upload:
        from bernini.artifacts.publish import publish
        from bernini.artifacts.store import s3_client

        publish(s3_client(args.region, args.endpoint_url), args.upload, args.out, manifest)
        print(f"published to {args.upload} (manifest.json last)")
    return 0
