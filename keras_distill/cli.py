"""The `keras-distill` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from keras_distill import __version__
from keras_distill.micro import BOARDS, MicroExportError, export


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
    >>> args = build_parser().parse_args(["demo", "--epochs", "5", "--quick"])
    >>> args.command, args.epochs, args.quick
    ('demo', 5, True)
    """
    parser = argparse.ArgumentParser(
        prog="keras-distill",
        description="Knowledge distillation for Keras, from fit() to the microcontroller.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="distil a student on MNIST-1D, compare it with the same student trained alone, "
        "export it for TFLite Micro (offline, about three minutes)",
    )
    demo.add_argument("--epochs", type=_positive_int, default=None,
                      help="student training epochs (default: 300)")
    demo.add_argument("--teacher-epochs", type=_positive_int, default=None,
                      help="teacher training epochs (default: 60)")
    demo.add_argument("--quick", action="store_true",
                      help="2 epochs per model: checks the job end to end in seconds")
    demo.add_argument("--output-dir", default="keras_distill_demo",
                      help="where the figure and the C++ files go (default: %(default)s)")
    demo.add_argument("--no-export", action="store_true",
                      help="skip the TFLite Micro export")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--quiet", action="store_true", help="no progress output, only results")

    micro = commands.add_parser(
        "export-micro",
        help="export a model to TFLite Micro: int8 .tflite, C++ array and header, verified "
        "in the TFLM interpreter",
    )
    micro.add_argument("model", help="a .keras or .tflite file")
    micro.add_argument("--data", help="representative inputs (.npy), needed for .keras models")
    micro.add_argument("--out", required=True, help="output directory")
    micro.add_argument("--name", default="model", help="C identifier prefix (default: model)")
    micro.add_argument("--board", help="check against a board: " + ", ".join(sorted(BOARDS)))
    micro.add_argument("--flash-bytes", type=_positive_int, help="flash budget in bytes")
    micro.add_argument("--ram-bytes", type=_positive_int, help="RAM budget in bytes")
    micro.add_argument("--validation-data", help="inputs (.npy) to compare int8 with float")
    micro.add_argument("--validation-labels", help="labels (.npy) for --validation-data")
    micro.add_argument("--float-io", action="store_true", help="keep float32 input and output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the `keras-distill` command.

    Args:
        argv: Arguments without the program name; `sys.argv[1:]` by default.

    Returns:
        The process exit code.

    Example:
    >>> main(["demo", "--quick", "--quiet"])  # doctest: +SKIP
    0
    """
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from keras_distill import demo

        quick = demo.QUICK_EPOCHS if args.quick else None
        result = demo.run_demo(
            epochs=args.epochs or quick or demo.STUDENT_EPOCHS,
            teacher_epochs=args.teacher_epochs or quick or demo.TEACHER_EPOCHS,
            seed=args.seed, output_dir=args.output_dir, export=not args.no_export,
            progress=not args.quiet,
        )  # fmt: skip
        print(demo.report(result))
        return 0
    try:
        result = _export_micro(args)
    except MicroExportError as error:
        print(f"keras-distill export-micro: error: {error}", file=sys.stderr)
        return 1
    print(result.summary())
    print(
        "\nWrote "
        + ", ".join(str(p) for p in (result.tflite_path, result.source_path, result.header_path))
    )
    return 0


def _load_array(path: str | None, what: str):
    """A `.npy` array, or one array of a `.npz` file (`FILE.npz` with one, or `FILE.npz:NAME`)."""
    if path is None:
        return None
    file, _, name = path.partition(".npz:")
    file = file + ".npz" if name else path
    try:
        loaded = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise MicroExportError(
            f"Cannot read {what} {path!r} as a .npy or .npz array: {error}"
        ) from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        return loaded
    with loaded:
        names = list(loaded.files)
        if not name and len(names) == 1:
            name = names[0]
        if name not in names:
            raise MicroExportError(
                f"{what} {path!r}: the .npz file holds {names}; name one as FILE.npz:NAME."
            )
        return loaded[name]


def _export_micro(args):
    validation = _load_array(args.validation_data, "--validation-data")
    labels = _load_array(args.validation_labels, "--validation-labels")
    if labels is not None and validation is None:
        raise MicroExportError("--validation-labels needs --validation-data.")
    return export(
        args.model,
        _load_array(args.data, "--data"),
        args.out,
        name=args.name,
        board=args.board,
        flash_bytes=args.flash_bytes,
        ram_bytes=args.ram_bytes,
        validation_data=validation if labels is None else (validation, labels),
        float_io=args.float_io,
    )


if __name__ == "__main__":
    sys.exit(main())
