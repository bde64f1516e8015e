"""`MicroExport`: what `kd.micro.export` wrote and measured, and its summary.

The measurements that travel from the export steps into the result are typed
records: `ValidationResult` (TFLM int8 against the Keras float model) and
`TargetCheck` (the application built and run on a target). Both can also be
read by key (`result.validation["int8_accuracy"]`), as their earlier dict
form was.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping

from keras_distill._src.utils import markdown


class _ReadableByKey(Mapping):
    """A dataclass whose fields can also be read as `record["field"]` (and merged with `|`)."""

    def __getitem__(self, key: str):
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self.__dataclass_fields__)

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)

    def __or__(self, other: Mapping) -> dict:
        return {**self, **other}


@dataclasses.dataclass(frozen=True)
class ValidationResult(_ReadableByKey):
    """TFLM int8 against the Keras float model on the validation data.

    Attributes:
        examples: Validation examples run.
        agreement: Top-1 agreement of TFLM int8 with the float Keras model
            (None for a `.tflite` input, which has no float model).
        float_accuracy: Accuracy of the float model (None without labels).
        int8_accuracy: Accuracy of TFLM int8 (None without labels).

    Example:
    >>> result = ValidationResult(450, 0.99, 0.97, 0.96)
    >>> result.agreement, result["int8_accuracy"]
    (0.99, 0.96)
    """

    examples: int
    agreement: float | None
    float_accuracy: float | None
    int8_accuracy: float | None


@dataclasses.dataclass(frozen=True)
class TargetCheck(_ReadableByKey):
    """What `export(..., verify_on=target)` measured on the application built for a target.

    Attributes:
        target: The target (a key of `kd.micro.TARGETS`).
        examples: Examples whose outputs were bit-identical to the Python interpreter's.
        arena_minimum_bytes: Smallest arena that ran on the target.
        arena_used_bytes: Arena bytes TFLM reported as used there.
        recommended_arena_bytes: The minimum plus the margin (checked by a second run).
        instructions: Median instructions per inference (QEMU `-icount`; None on the host).

    Example:
    >>> TargetCheck("host", 200, 1440, 1300, 1584, None)["recommended_arena_bytes"]
    1584
    """

    target: str
    examples: int
    arena_minimum_bytes: int
    arena_used_bytes: int
    recommended_arena_bytes: int
    instructions: int | None


@dataclasses.dataclass(frozen=True)
class MicroExport:
    """What `export` wrote and measured.

    Attributes:
        name: The C symbol and file prefix.
        tflite_path, source_path, header_path: The written files.
        model_bytes: Size of the `.tflite` flatbuffer (what goes to flash).
        float_bytes: float32 size of the Keras model's weights, if one was given.
        arena_bytes: Smallest tensor arena that ran in the TFLM interpreter.
        recommended_arena_bytes: `arena_bytes` plus the stated margin.
        arena_margin: That margin, as a fraction.
        ops: Builtin ops the model uses (what the op resolver registers).
        inputs, outputs: `TensorInfo` (shape, dtype, scale, zero point) of each.
        validation: `None`, or a `ValidationResult`: the examples, top-1
            agreement between the float Keras model and TFLM, and the
            accuracies of both where labels exist.
        board: Board name, or `None`.
        flash_bytes, ram_bytes: The budget checked, or `None`.
        sparsity: Fraction of zero kernel weights of the Keras model (e.g. after
            pruning), or `None` for a `.tflite` input.
        on_target: `None`, or the `TargetCheck` of `export(..., verify_on=target)`
            (its `recommended_arena_bytes` is then also the one above and in
            the header).
        quantization_errors: `None`, or the int8 error of every quantized
            tensor (layer, op, RMSE in quantization steps, largest absolute
            error and scale; worst first), when the agreement fell below the
            threshold or it was asked for.
        kind: What the exported model computes in, read from its tensor types
            (`kd.micro.ModelInfo.kind`: `"int8"` for every export that
            succeeds), or `None` where unknown; the summary's labels say it.

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
    validation: ValidationResult | None
    board: str | None
    flash_bytes: int | None
    ram_bytes: int | None
    sparsity: float | None = None
    on_target: TargetCheck | None = None
    quantization_errors: tuple | None = None
    kind: str | None = None

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
        ...                      1648, 0.1, ("SOFTMAX",), (), (), None, None, None, None,
        ...                      kind="int8")
        >>> print(result.summary().splitlines()[2])
        | int8 model (flash) | 2,968 B |
        """
        rows = self._size_rows() + self._tensor_rows() + self._validation_rows()
        rows += self._target_rows() + self._budget_rows()
        return markdown.table(["", ""], rows, align="ll")

    def _size_rows(self) -> list[tuple]:
        rows = [(f"{self._kind}model (flash)", f"{self.model_bytes:,} B")]
        if self.float_bytes:
            rows.append(("float32 weights", f"{self.float_bytes:,} B"))
        rows.append(
            ("tensor arena, measured minimum (TFLM Python, x86-64)", f"{self.arena_bytes:,} B")
        )
        if self.on_target:
            rows.append(
                (
                    f"tensor arena, measured minimum on {self.on_target.target}",
                    f"{self.on_target.arena_minimum_bytes:,} B (arena_used_bytes "
                    f"{self.on_target.arena_used_bytes:,} B)",
                )
            )
        recommended = f"tensor arena, recommended (+{self.arena_margin:.0%})"
        rows += [(recommended, f"{self.recommended_arena_bytes:,} B"), ("ops", ", ".join(self.ops))]
        if self.sparsity is not None:
            rows.insert(2, ("kernel sparsity (zero weights)", f"{self.sparsity:.1%}"))
        return rows

    @property
    def _kind(self) -> str:
        """The kind as a label prefix (`"int8 "`), empty where unknown."""
        return f"{self.kind} " if self.kind else ""

    def _tensor_rows(self) -> list[tuple]:
        return [
            (
                f"{kind} {index}",
                f"{t.dtype} {list(t.shape)}, scale {t.scale:.6g}, zero point {t.zero_point}",
            )
            for kind, tensors in (("input", self.inputs), ("output", self.outputs))
            for index, t in enumerate(tensors)
        ]

    def _validation_rows(self) -> list[tuple]:
        rows = []
        if self.validation:
            rows.append(("validation examples", f"{self.validation.examples:,}"))
            for value, label in (
                (self.validation.agreement, f"top-1 agreement, TFLM {self._kind}vs Keras float"),
                (self.validation.float_accuracy, "accuracy, Keras float"),
                (self.validation.int8_accuracy, f"accuracy, TFLM {self._kind}".rstrip()),
            ):
                if value is not None:
                    rows.append((label, f"{value:.2%}"))
        if self.quantization_errors:
            worst = ", ".join(f"{e.layer} {e.steps:.2f}" for e in self.quantization_errors[:3])
            rows.append(("largest int8 errors (RMSE in quantization steps)", worst))
        return rows

    def _target_rows(self) -> list[tuple]:
        if not self.on_target:
            return []
        check = self.on_target
        rows = [
            (
                f"outputs on {check.target} (built with TFLM's Makefile)",
                f"bit-identical to TFLM Python, {check.examples:,} examples",
            )
        ]
        if check.instructions is not None:
            rows.append(("instructions per inference (QEMU -icount)", f"{check.instructions:,}"))
        return rows

    def _budget_rows(self) -> list[tuple]:
        if not self.flash_bytes:
            return []
        board = f" ({self.board})" if self.board else ""
        return [
            (
                f"budget{board}",
                f"flash {self.model_bytes / self.flash_bytes:.1%} of {self.flash_bytes:,} B, "
                f"RAM {self.recommended_arena_bytes / self.ram_bytes:.1%} of "
                f"{self.ram_bytes:,} B",
            )
        ]
