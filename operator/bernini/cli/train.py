"""`bernini train`: train the reference model here (cached by the code that makes it) and check what it draws."""

import argparse


def add_to(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="train the reference model (cached) and print how well each class is drawn")
    train.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from bernini.model import quality, weights

    path = weights.weights_file()
    cached = path.exists()
    state = weights.trained()
    timings = ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in state["timings"].items())
    print(f"reference weights: {path} ({'cached; ' if cached else ''}training took {timings})")
    templates = quality.templates()
    rows = quality.check(state, templates)
    print(quality.table(rows, quality.class_shapes(templates)))
    print(f"IoU own: the generated mesh against its class's template; class shapes: the median of the data set's "
          f"own unseen shapes of that class. A mesh is its class when its own template is the nearest by "
          f"{quality.MARGIN} and at least {quality.FLOOR} close.")
    failed = [row for row in rows if row.problem]
    if failed:
        print(f"{len(failed)} of {len(rows)} generations are not their class")
        return 1
    return 0
