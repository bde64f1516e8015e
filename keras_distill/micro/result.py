"""`MicroExport`: what `keras_distill.micro.export` wrote and measured, and its summary."""

from __future__ import annotations

import dataclasses
import pathlib

from keras_distill.utils import markdown


@dataclasses.dataclass(frozen=True)
class MicroExport:
    """What `export` wrote and measured.

    Attributes:
        name: The C symbol and file prefix.
        tflite_path, source_path, header_path: The written files.
        model_bytes: Size of the int8 `.tflite` flatbuffer (what goes to flash).
        float_bytes: float32 size of the Keras model's weights, if one was given.
        arena_bytes: Smallest tensor arena that ran in the TFLM interpreter.
        recommended_arena_bytes: `arena_bytes` plus the stated margin.
        arena_margin: That margin, as a fraction.
        ops: Builtin ops the model uses (what the op resolver registers).
        inputs, outputs: `TensorInfo` (shape, dtype, scale, zero point) of each.
        validation: `None`, or the examples, top-1 agreement between the float
            Keras model and TFLM, and the accuracies of both where labels exist.
        board: Board name, or `None`.
        flash_bytes, ram_bytes: The budget checked, or `None`.
        sparsity: Fraction of zero kernel weights of the Keras model (e.g. after
            pruning), or `None` for a `.tflite` input.
        on_target: `None`, or what `export(..., verify_on=target)` measured on
            the built application: target, examples (bit-identical to the
            Python interpreter), arena_used_bytes, recommended_arena_bytes
            (then also `recommended_arena_bytes` above and in the header) and
            instructions per inference (QEMU `-icount`; None on the host).
        quantization_errors: `None`, or the int8 error of every quantized
            tensor (`keras_distill.micro.drift.LayerError`, worst first), when
            the agreement fell below the threshold or it was asked for.

    Example:
    >>> result = MicroExport("m", *(pathlib.Path(p) for p in "abc"), 2968, 4360, 1488,
    ...                      1648, 0.1, ("FULLY_CONNECTED",), (), (), None, None, None, None)
    >>> result
    MicroExport('m': 2,968 B model, arena 1,488 B (recommended 1,648 B), 1 ops)
    """

    name: str
    tflite_path: pathlib.Path
    source_path: pathlib.Path
    header_path: pathlib.Path
    model_bytes: int
    float_bytes: int | None
    arena_bytes: int
    recommended_arena_bytes: int
    arena_margin: float
    ops: tuple
    inputs: tuple
    outputs: tuple
    validation: dict | None
    board: str | None
    flash_bytes: int | None
    ram_bytes: int | None
    sparsity: float | None = None
    on_target: dict | None = None
    quantization_errors: tuple | None = None

    def __repr__(self) -> str:
        return (
            f"MicroExport({self.name!r}: {self.model_bytes:,} B model, arena "
            f"{self.arena_bytes:,} B (recommended {self.recommended_arena_bytes:,} B), "
            f"{len(self.ops)} ops)"
        )

    def summary(self) -> str:
        """A Markdown table of sizes, arena, ops, quantization and agreement.

        Example:
        >>> result = MicroExport("m", *(pathlib.Path(p) for p in "abc"), 2968, None, 1488,
        ...                      1648, 0.1, ("SOFTMAX",), (), (), None, None, None, None)
        >>> print(result.summary().splitlines()[2])
        | int8 model (flash) | 2,968 B |
        """
        rows = [("int8 model (flash)", f"{self.model_bytes:,} B")]
        if self.float_bytes:
            rows.append(("float32 weights", f"{self.float_bytes:,} B"))
        rows.append(
            ("tensor arena, measured minimum (TFLM Python, x86-64)", f"{self.arena_bytes:,} B")
        )
        if self.on_target:
            t = self.on_target
            rows.append(
                (
                    f"tensor arena, measured minimum on {t['target']}",
                    f"{t['arena_minimum_bytes']:,} B (arena_used_bytes "
                    f"{t['arena_used_bytes']:,} B)",
                )
            )
        rows += [
            (
                f"tensor arena, recommended (+{self.arena_margin:.0%})",
                f"{self.recommended_arena_bytes:,} B",
            ),
            ("ops", ", ".join(self.ops)),
        ]
        if self.sparsity is not None:
            rows.insert(2, ("kernel sparsity (zero weights)", f"{self.sparsity:.1%}"))
        for kind, tensors in (("input", self.inputs), ("output", self.outputs)):
            for index, t in enumerate(tensors):
                rows.append(
                    (
                        f"{kind} {index}",
                        f"{t.dtype} {list(t.shape)}, scale {t.scale:.6g}, zero point "
                        f"{t.zero_point}",
                    )
                )
        if self.validation:
            v = self.validation
            rows.append(("validation examples", f"{v['examples']:,}"))
            for key, label in (
                ("agreement", "top-1 agreement, TFLM int8 vs Keras float"),
                ("float_accuracy", "accuracy, Keras float"),
                ("int8_accuracy", "accuracy, TFLM int8"),
            ):
                if v.get(key) is not None:
                    rows.append((label, f"{v[key]:.2%}"))
        if self.quantization_errors:
            worst = ", ".join(f"{e.layer} {e.steps:.2f}" for e in self.quantization_errors[:3])
            rows.append(("largest int8 errors (RMSE in quantization steps)", worst))
        if self.on_target:
            t = self.on_target
            rows.append(
                (
                    f"outputs on {t['target']} (built with TFLM's Makefile)",
                    f"bit-identical to TFLM Python, {t['examples']:,} examples",
                )
            )
            if t["instructions"] is not None:
                rows.append(("instructions per inference (QEMU -icount)", f"{t['instructions']:,}"))
        if self.flash_bytes:
            rows.append(
                (
                    f"budget{' (' + self.board + ')' if self.board else ''}",
                    f"flash {self.model_bytes / self.flash_bytes:.1%} of {self.flash_bytes:,} B, "
                    f"RAM {self.recommended_arena_bytes / self.ram_bytes:.1%} of "
                    f"{self.ram_bytes:,} B",
                )
            )
        return markdown.table(["", ""], rows, align="ll")
