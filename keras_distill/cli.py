"""The `keras-distill` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from keras_distill import __version__


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Returns the argument parser of the `keras-distill` command.

    Returns:
        An `argparse.ArgumentParser` with one sub-command per job.

    Example:
    >>> args = build_parser().parse_args(["demo", "--epochs", "5"])
    >>> args.command, args.epochs
    ('demo', 5)
    """
    parser = argparse.ArgumentParser(
        prog="keras-distill",
        description="Knowledge distillation for Keras, from fit() to the microcontroller.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="distil a small student on scikit-learn's digits and compare it "
        "with the same student trained alone (offline, about a minute)",
    )
    demo.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help="student training epochs (default: the demo's recipe)",
    )
    demo.add_argument(
        "--teacher-epochs",
        type=_positive_int,
        default=None,
        help="teacher training epochs (default: the demo's recipe)",
    )
    demo.add_argument(
        "--student-units",
        type=_positive_int,
        default=None,
        help="hidden units of the student MLP (default: the demo's recipe)",
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--quiet", action="store_true", help="no Keras progress output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the `keras-distill` command.

    Args:
        argv: Arguments without the program name; `sys.argv[1:]` by default.

    Returns:
        The process exit code.

    Example:
    >>> main(["demo", "--epochs", "2", "--teacher-epochs", "2", "--quiet"])  # doctest: +SKIP
    0
    """
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from keras_distill import demo

        overrides = {
            key: value
            for key, value in (
                ("epochs", args.epochs),
                ("teacher_epochs", args.teacher_epochs),
                ("student_units", args.student_units),
            )
            if value is not None
        }
        result = demo.run_demo(seed=args.seed, verbose=0 if args.quiet else 2, **overrides)
        print(result.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
