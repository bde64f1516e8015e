"""The `keras-distill` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from keras_distill._src.micro import BOARDS, TARGETS, MicroExportError, export
from keras_distill.version import __version__


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
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
    _add_demo(commands)
    _add_export_micro(commands)
    _add_firmware(commands)
    _add_search(commands)
    return parser


def _add_demo(commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="train a teacher on MNIST-1D, search the student that fits a microcontroller's "
        "flash and RAM, distil it, compare it with a hand-built student and with training "
        "from scratch, and export it for TFLite Micro (offline; takes a few minutes)",
    )
    demo.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help="training epochs of each searched student's trial (default: 15; the best is then "
        "trained again for 300)",
    )
    demo.add_argument(
        "--trials", type=_positive_int, default=None, help="candidates to search (default: 12)"
    )
    demo.add_argument(
        "--teacher-epochs",
        type=_positive_int,
        default=None,
        help="teacher training epochs (default: 60)",
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help="2 epochs per model and 3 trials: checks the job end to end",
    )
    demo.add_argument(
        "--output-dir",
        default="keras_distill_demo",
        help="where the search, the figure and the C++ files go (default: %(default)s)",
    )
    demo.add_argument("--no-export", action="store_true", help="do not keep the TFLite Micro files")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--quiet", action="store_true", help="no progress output, only results")


def _add_export_micro(commands) -> None:
    micro = commands.add_parser(
        "export-micro",
        help="export a model to TFLite Micro: int8 .tflite, C++ array and header, verified "
        "in the TFLM interpreter",
    )
    micro.add_argument(
        "model", help="a .keras file or SavedModel folder (converted), or an int8 .tflite file"
    )
    micro.add_argument("--data", help="representative inputs (.npy), needed for .keras models")
    micro.add_argument("--out", required=True, help="output directory")
    micro.add_argument("--name", default="model", help="C identifier prefix (default: model)")
    micro.add_argument("--board", help="check against a board: " + ", ".join(sorted(BOARDS)))
    micro.add_argument("--flash-bytes", type=_positive_int, help="flash budget in bytes")
    micro.add_argument("--ram-bytes", type=_positive_int, help="RAM budget in bytes")
    micro.add_argument("--validation-data", help="inputs (.npy) to compare int8 with float")
    micro.add_argument("--validation-labels", help="labels (.npy) for --validation-data")
    micro.add_argument("--float-io", action="store_true", help="keep float32 input and output")
    micro.add_argument(
        "--verify-on",
        choices=sorted(TARGETS),
        help="build with the real TFLite Micro and check the outputs there "
        "(cortex-m4/m3: emulated by qemu-system-arm)",
    )
    micro.add_argument(
        "--tflm-dir", help="TFLite Micro tree for --verify-on (default: $KERAS_DISTILL_TFLM_DIR)"
    )
    micro.add_argument(
        "--overwrite", action="store_true", help="replace the files of an earlier export"
    )


def _add_firmware(commands) -> None:
    firmware = commands.add_parser(
        "firmware",
        help="build an export into a TFLite Micro application (TFLM's Makefile) and run it on "
        "the host or an emulated Cortex-M",
    )
    firmware.add_argument("export", help="a folder written by export-micro")
    firmware.add_argument(
        "--target",
        default="cortex-m4",
        choices=sorted(TARGETS),
        help="default: cortex-m4 (qemu-system-arm -M mps2-an386)",
    )
    firmware.add_argument("--tflm-dir", help="TFLite Micro tree (default: $KERAS_DISTILL_TFLM_DIR)")
    firmware.add_argument(
        "--arena-bytes",
        type=_positive_int,
        help="tensor arena (default: the export's recommended size)",
    )
    firmware.add_argument("--inputs", help="float inputs (.npy/.npz) to run on the target")


def _add_search(commands) -> None:
    search = commands.add_parser(
        "search",
        help="search the student that fits a board: distilled, int8, verified in TFLite Micro "
        "(see kd.find_student)",
    )
    search.add_argument(
        "--config",
        required=True,
        help='a JSON file: "teachers" {name: path.keras}, "data" (an .npz with x_train, '
        'y_train, x_val, y_val) and find_student\'s keywords ("board", "trials", ...)',
    )
    search.add_argument(
        "--quiet", action="store_true", help="no line per trial: print only the front"
    )


def _search(args) -> int:
    """Runs `keras-distill search`; prints the front."""
    from keras_distill._src.search.config import search_from_config

    try:
        result = search_from_config(args.config, verbose=0 if args.quiet else 1)
    except ValueError as error:
        print(f"keras-distill search: error: {error}", file=sys.stderr)
        return 1
    print(result.to_markdown())
    return 0


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
    if args.command == "search":
        return _search(args)
    if args.command == "demo":
        from keras_distill._src.demo import job

        try:
            job.require_extras()
        except ImportError as error:
            print(f"keras-distill demo: error: {error}", file=sys.stderr)
            return 1
        given = dict(epochs=args.epochs, trials=args.trials, teacher_epochs=args.teacher_epochs)
        result = job.run_demo(
            **job.settings(args.quick, **given),
            seed=args.seed,
            output_dir=args.output_dir,
            export=not args.no_export,
            progress=not args.quiet,
        )
        print(job.results_text(result))
        return 0
    try:
        result = _export_micro(args) if args.command == "export-micro" else _firmware(args)
    except MicroExportError as error:
        print(f"keras-distill {args.command}: error: {error}", file=sys.stderr)
        return 1
    if args.command == "firmware":
        print(result)
        return 0
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
        verify_on=args.verify_on,
        tflm_dir=args.tflm_dir,
        overwrite=args.overwrite,
    )


def _firmware(args) -> str:
    """Builds (and runs) the application; returns what to print."""
    from keras_distill._src.micro import build, run_on_target

    firmware = build(args.export, args.tflm_dir, args.target, arena_bytes=args.arena_bytes)
    lines = [f"Built {firmware.binary} for {firmware.target} (arena {firmware.arena_bytes:,} B)."]
    x = _load_array(args.inputs, "--inputs")
    if x is not None:
        run = run_on_target(firmware, x)
        lines.append(
            f"Ran {len(run.outputs):,} examples: arena_used_bytes "
            f"{run.arena_used_bytes:,} B on {run.target}"
        )
        if run.instructions is not None:
            lines.append(
                f"instructions per inference (QEMU -icount): median "
                f"{int(np.median(run.instructions)):,}"
            )
        lines.append(f"top-1 classes: {run.outputs.reshape(len(run.outputs), -1).argmax(-1)[:20]}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
