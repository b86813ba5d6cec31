"""`bernini train`: train the reference model here (cached by the code that makes it) and check what it draws."""

import argparse


def add_to(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="train the reference model (cached) and print how well each class is drawn")
    train.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from bernini.model import quality, weights

    print(f"reference weights: {weights.weights_file()}")
    state = weights.trained()
    print("training took " + ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in state["timings"].items())
          + f" (this run: {'trained' if state['timings'] else 'cached'})")
    rows = quality.check(state)
    print(quality.table(rows))
    failed = [row for row in rows if row.problem]
    if failed:
        print(f"{len(failed)} of {len(rows)} generations are not their class (threshold {quality.THRESHOLD})")
        return 1
    return 0
