"""`find_student`: a budget in, the Pareto front of distilled, int8, TFLM-verified students out."""

from __future__ import annotations

import dataclasses
import os

import keras
import optuna

from keras_distill._src.micro import firmware, target_run
from keras_distill._src.search import training
from keras_distill._src.search.budget import Budget, estimate_latency
from keras_distill._src.search.inputs import checked_inputs, identity
from keras_distill._src.search.preflight import preflight_candidate
from keras_distill._src.search.records import SearchResult
from keras_distill._src.search.run import SearchRun
from keras_distill._src.search.space import Choices, SearchSpace, build_candidate, default_space
from keras_distill._src.search.storage import (
    STUDY_NAME,
    check_identity,
    check_storage,
    open_storage,
    quiet_optuna,
)
from keras_distill._src.studies import input_checks

MINIMIZE = ("flash", "arena", "latency")


def find_student(
    teachers,
    train_data,
    validation_data,
    *,
    board=None,
    flash_bytes: int | None = None,
    ram_bytes: int | None = None,
    model_share: float = 1.0,
    latency_ms: float | None = None,
    clock_hz: int | None = None,
    tflm_dir: str | os.PathLike | None = None,
    minimize: str = "flash",
    space=None,
    trials: int = 40,
    epochs: int = 30,
    final_epochs: int | None = None,
    final_candidates: int = 1,
    batch_size: int = 64,
    augment=None,
    directory: str | os.PathLike = "keras_distill_search",
    storage=None,
    seed: int = 0,
    verbose: int = 1,
) -> SearchResult:
    """Searches the student that fits a board: distilled, int8, verified in TFLite Micro.

    The teachers label the training data once (stored outputs, shared by every
    trial and process). For each candidate the Optuna sampler proposes
    (architecture, teacher, temperature, alpha, function matching,
    quantization-aware training: on for every candidate of the default space),
    the untrained model is converted to int8 and loaded in the TFLite Micro
    interpreter first: its flash, smallest arena and ops are measured there, and
    a candidate over the budget (or with an op TFLM lacks) is recorded as
    infeasible with the reason and never trained. Feasible candidates are
    distilled, converted to int8 (a quantization-aware one with the ranges it
    learned) and measured in TFLM on the validation data.
    The front maximises int8 accuracy and minimises `minimize`; each front
    candidate is also trained from scratch (same epochs and augmentation).

    The trials are a short proxy: with `final_epochs`, the front's best
    `final_candidates` are then trained again from the start for that many
    epochs with the recipe their trial chose, and their scratch twins too, so
    the chosen student gets the training a hand-built one would, and
    distilled against scratch stays the same training on both sides.

    The search is resumable: it keeps an Optuna journal in `directory` (or uses
    `storage`); a rerun continues, never trains a finished trial again and runs
    a trial whose process died once more. Several processes (or machines, with
    a database URL) may share one search; `trials` is the total.

    Args:
        teachers: A `keras.Model` with logits out, or a list or dict (name ->
            model) of them; which one each candidate learns from is searched.
        train_data: `(x, y)` arrays with integer labels, or a `tf.data.Dataset`
            of `(x, y)` batches (held in memory).
        validation_data: The same forms; required.
        board: A preset of `kd.micro.BOARDS` or a `kd.micro.Board`.
        flash_bytes: Flash for the model (overrides the board's).
        ram_bytes: RAM for the tensor arena (overrides the board's).
        model_share: The share of the board's flash and RAM the model may take.
        latency_ms: A latency limit (needs a clock). The pre-flight holds it
            against an estimate from MACs; with `tflm_dir`, also each trained
            candidate's count.
        clock_hz: The core clock (default: the board preset's).
        tflm_dir: A tflite-micro checkout (as `kd.micro.build` takes it): each
            trained candidate is then built for the Cortex-M4 and run in QEMU,
            and its latency is the instructions it ran per inference at the
            clock (`Latency.method` says "measured"; needs a clock). None
            estimates latency from MACs (calibrated on such counts; the method
            says so).
        minimize: The second objective: `"flash"`, `"arena"` or `"latency"`.
        space: None (`kd.search.default_space` of the input shape), a
            `kd.search.SearchSpace`, or a function `build(choices) -> keras.Model`.
        trials: Trials in total (infeasible ones count).
        epochs: Training epochs per candidate (and per scratch twin), with Adam at a
            peak learning rate of 1e-2 decayed to zero by a cosine.
        final_epochs: Epochs of the final training of the front's best
            candidates after the search (same optimizer and recipe), or None
            (the front keeps its trials' students). A rerun with another
            value reuses the trials.
        final_candidates: How many of the front's best (by int8 accuracy in
            the search) get the final training.
        batch_size: Batch size.
        augment: Augmentation for function matching (`Distiller(augment=)`);
            without it function matching is not tried.
        directory: The output folder: stored outputs, journal, students, report.
        storage: None (journal in `directory`), an Optuna storage URL or object.
        seed: Seed of the sampler and of each candidate's initialisation.
        verbose: 1: a line per trial and a progress bar; 2: also Optuna's own log
            lines; 0: silent.

    Returns:
        A `kd.search.SearchResult`.

    Raises:
        ValueError: Before anything is trained or written: an unknown board
            (the presets are listed), no budget, a budget even the smallest
            candidate exceeds (what it needs is said), teachers whose classes
            differ from the labels, no validation data, a storage whose driver
            is missing (the package is named), a space with no candidate, or a
            storage holding another search (what differs is named).
        FirmwareError: Before anything is trained: a `tflm_dir` that is not a
            TFLite Micro tree, no Arm compiler or no QEMU (the packages are
            named). A candidate whose build or run fails later is infeasible,
            with the error as its reason.

    Example:
    >>> import keras, numpy as np, tempfile
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(96, 8)).astype("float32"); y = (x[:, 0] > 0).astype("int32")
    >>> teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    >>> result = find_student(teacher, (x, y), (x, y), flash_bytes=64_000, trials=1, epochs=1,
    ...                       directory=tempfile.mkdtemp(), verbose=0)
    >>> len(result.trials), result.front[0].flash_bytes < 64_000
    (1, True)
    """
    inputs = checked_inputs(teachers, train_data, validation_data, trials, epochs, batch_size)
    _check_final(final_epochs, final_candidates)
    budget = Budget.from_arguments(board, flash_bytes, ram_bytes, model_share, latency_ms, clock_hz)
    _check_minimize(minimize, budget)
    space = _space(space, inputs.split.x_train.shape[1:], inputs.num_classes)
    directory = os.fspath(directory)
    check_storage(storage)
    tflm_dir = None if tflm_dir is None else _checked_tflm(tflm_dir, budget)
    _check_smallest(space, inputs, budget)
    store = open_storage(storage, directory)
    with quiet_optuna(verbose):
        study = _study(store, seed)
        plan = training.TrainingPlan(
            inputs.split, inputs.teachers, {}, inputs.num_classes, epochs, batch_size, augment
        )
        settings = {**plan.settings(function_matching=False), "minimize": minimize}
        if tflm_dir is not None:  # counted latencies make another search than estimated ones
            settings["latency"] = f"counted on the {training.LATENCY_TARGET}"
        check_identity(study, identity(inputs, budget, space, augment, settings))
        labels = training.label_once(inputs.teachers, *inputs.split[:2], directory)
        plan = dataclasses.replace(plan, labels=labels)
        search = SearchRun(study, store, space, plan, budget, minimize, seed, directory, tflm_dir)
        search.run(trials, verbose)
        return search.result(final_epochs, final_candidates)


def _study(store, seed: int) -> optuna.Study:
    """The search's Optuna study in `store`, created or continued (accuracy up, cost down)."""
    return optuna.create_study(
        study_name=STUDY_NAME,
        storage=store,
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.TPESampler(seed=seed),
        load_if_exists=True,
    )


def _check_final(final_epochs: int | None, final_candidates: int) -> None:
    if final_epochs is not None:
        input_checks.positive_int("final_epochs", final_epochs)
    input_checks.positive_int("final_candidates", final_candidates)


def _check_minimize(minimize: str, budget: Budget) -> None:
    if minimize not in MINIMIZE:
        raise ValueError(f"`minimize` must be one of {MINIMIZE}; received {minimize!r}.")
    if minimize == "latency" and not budget.clock_hz:
        raise ValueError("minimize='latency' needs a clock: give `clock_hz=` or a board preset.")


def _checked_tflm(tflm_dir, budget: Budget):
    """The TFLite Micro tree, once the clock, the Arm compiler and QEMU are there."""
    if not budget.clock_hz:
        raise ValueError(
            "tflm_dir= counts each candidate's instructions per inference; give `clock_hz=` "
            "or a board preset to turn them into a latency."
        )
    tree = firmware.find_tflm(tflm_dir)
    firmware.check_toolchain(firmware.TARGETS[training.LATENCY_TARGET])
    target_run.check_emulator(training.LATENCY_TARGET)
    return tree


def _space(space, input_shape: tuple, num_classes: int) -> SearchSpace:
    if space is None:
        return default_space(input_shape, num_classes)
    if isinstance(space, SearchSpace):
        return space
    if callable(space):
        return SearchSpace(space, name=getattr(space, "__qualname__", "custom"))
    raise ValueError(
        f"`space` must be None, a kd.search.SearchSpace or a function build(choices) -> "
        f"keras.Model; received {space!r}."
    )


def _check_smallest(space: SearchSpace, inputs, budget: Budget) -> None:
    """Pre-flights the smallest candidate as a trial would; refuses a budget it does not fit."""
    keras.utils.set_random_seed(0)
    model = build_candidate(space, Choices.first(), inputs.num_classes)
    latency = estimate_latency(model, budget.clock_hz)
    aware = space.quantization_aware[0]  # the first option, as for the architecture
    params = model.count_params()  # the float model's, as the trials report
    _, result = preflight_candidate(model, inputs.split.x_train, budget, latency, aware)
    if not result.feasible:
        arena = "not measured" if result.arena_bytes is None else f"{result.arena_bytes:,} B"
        raise ValueError(
            f"Even the smallest candidate of the space ({params:,} parameters, "
            f"flash {result.flash_bytes or 0:,} B, arena {arena}) cannot be searched under the "
            f"budget ({budget.describe()}): {result.reason}. Give a larger budget, or a space "
            "whose smallest candidate fits and converts."
        )
