"""find_student end to end on digits: pre-flight, outputs stored once, front, progress, export."""

import contextlib
import dataclasses
import io
import json
import logging
import pathlib
import shutil

import keras
import numpy as np
import optuna
import pytest
import tensorflow as tf
from conftest import SCE, TFLM, Counting, needs_arm, needs_tflm

import keras_distill as kd
from keras_distill._src.micro import export_validation, firmware, target_run
from keras_distill._src.search.budget import Budget, estimate_latency
from keras_distill._src.search.preflight import preflight
from keras_distill._src.search.storage import STUDY_NAME, open_storage

# The module's fixtures run once: its tests share one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("find_student")

BUDGET = dict(flash_bytes=12_000, ram_bytes=6_000)
# For the tests of what is not the default space's (progress, latency counting): post-training
# candidates, whose conversions take half the time of quantization-aware ones.
POST_TRAINING = dataclasses.replace(kd.search.default_space((64,), 10), quantization_aware=(False,))


@pytest.fixture(scope="module")
def counted_teacher(digits):
    """A digits MLP whose Counting layer counts the batches the teacher is run on."""
    keras.utils.set_random_seed(0)
    counting = Counting()
    teacher = keras.Sequential(
        [
            keras.Input((64,)),
            counting,
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="mlp",
    )
    teacher.compile(keras.optimizers.Adam(2e-3), SCE)
    teacher.fit(digits.x_train, digits.y_train, epochs=10, batch_size=64, verbose=0)
    counting.calls.assign(0.0)
    return teacher, counting


def search_digits(teacher, digits, directory, **settings):
    """The module's search: 4 trials of 2 epochs in BUDGET."""
    data = ((digits.x_train, digits.y_train), (digits.x_test, digits.y_test))
    arguments = dict(trials=4, epochs=2, directory=directory, seed=0, verbose=0)
    return kd.find_student(teacher, *data, **BUDGET, **arguments, **settings)


class Records(logging.Handler):
    """Keeps the messages of the logger it is added to."""

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def optuna_messages():
    """Yields the list of the messages Optuna logs inside the block."""
    records = Records()
    logging.getLogger("optuna").addHandler(records)
    try:
        yield records.messages
    finally:
        logging.getLogger("optuna").removeHandler(records)


@pytest.fixture(scope="module")
def searched(counted_teacher, digits, tmp_path_factory):
    """The module's search (verbose=0): result, folder, teacher batches and what it printed."""
    teacher, counting = counted_teacher
    directory = tmp_path_factory.mktemp("search")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), optuna_messages() as logged:
        result = search_digits(teacher, digits, directory)
    silent = dict(printed=printed.getvalue(), optuna=list(logged))
    return result, directory, float(counting.calls.numpy()), silent


def test_the_front_fits_the_budget_and_is_measured_in_tflm(searched):
    result, *_ = searched
    assert len(result.trials) == 4 and result.front
    accuracies = [c.int8_accuracy for c in result.front]
    assert accuracies == sorted(accuracies, reverse=True)
    for candidate in result.front:
        assert candidate.flash_bytes <= BUDGET["flash_bytes"]
        assert int(candidate.arena_bytes * 1.1) <= BUDGET["ram_bytes"]
        assert 0.0 <= candidate.int8_accuracy <= 1.0 and 0.0 <= candidate.float_accuracy <= 1.0
        assert candidate.scratch_accuracy is not None  # the scratch twin ran
        assert candidate.params > 0 and candidate.macs > 0
        assert pathlib.Path(candidate.model_path).exists()
        # one front point does not beat another on both objectives
        for other in result.front:
            assert not (
                other.int8_accuracy > candidate.int8_accuracy
                and other.flash_bytes < candidate.flash_bytes
            )


def test_infeasible_trials_have_a_reason_and_were_never_trained(searched):
    result, directory, *_ = searched
    infeasible = [t for t in result.trials if not t.feasible]
    assert infeasible, "the budget should exclude some default candidates"
    for trial in infeasible:
        assert trial.reason.startswith(("over budget", "not for TFLite Micro"))
        assert trial.int8_accuracy is None and trial.model_path is None
        assert not (directory / "students" / f"trial_{trial.number}.keras").exists()
    study = optuna.load_study(study_name=STUDY_NAME, storage=open_storage(None, str(directory)))
    for frozen in study.trials:
        record = frozen.user_attrs["record"]
        feasible = all(value <= 0 for value in frozen.constraints.values())
        assert feasible == (record["reason"] is None)


def test_teacher_outputs_are_computed_once_for_every_trial(searched, digits):
    _, directory, teacher_batches, _ = searched
    # one labelling pass (batches of 256), none in the trials or the scratch twins
    assert teacher_batches == np.ceil(len(digits.x_train) / 256)
    manifest = json.loads((directory / "labels" / "mlp" / "manifest.json").read_text())
    assert manifest["num_examples"] == len(digits.x_train)


def test_report_plot_and_verified_export(searched, digits, tmp_path):
    result, directory, *_ = searched
    text = (directory / "report.md").read_text()
    assert "Budget: flash 12,000 B, RAM 6,000 B. 4 trials" in text
    assert f"{result.front[0].int8_accuracy:.1%}" in text
    assert result.plot(tmp_path / "front.png").stat().st_size > 1000
    exported = result.export(result.front[0], tmp_path / "export")
    # the same model; its tensor names (Keras' layer-name counters) may differ by a few bytes
    assert abs(exported.model_bytes - result.front[0].flash_bytes) <= 64
    assert exported.recommended_arena_bytes <= BUDGET["ram_bytes"]
    assert exported.validation.examples == len(digits.x_test)  # the search's validation data
    assert exported.validation.int8_accuracy == pytest.approx(
        result.front[0].int8_accuracy, abs=0.02
    )
    held_out = tf.data.Dataset.from_tensor_slices((digits.x_test[:60], digits.y_test[:60]))
    tested = result.export(result.front[0], tmp_path / "tested", validation_data=held_out.batch(16))
    assert tested.validation.examples == 60
    assert 0.0 <= tested.validation.int8_accuracy <= 1.0


def test_a_rerun_with_final_epochs_trains_the_best_again_and_reuses_the_trials(
    searched, counted_teacher, digits, tmp_path
):
    result, directory, *_ = searched
    copied = tmp_path / "search"
    shutil.copytree(directory, copied)  # the module's search stays as it is for the other tests
    teacher, counting = counted_teacher
    counting.calls.assign(0.0)  # its weights as the search saw them
    final = search_digits(teacher, digits, copied, final_epochs=6)
    assert final.trials == result.trials  # no trial trained again
    best = max(result.front, key=lambda c: c.int8_accuracy)
    (trained,) = [c for c in final.front if c.epochs == 6]
    assert trained.number == best.number and trained.architecture == best.architecture
    assert trained.trial_int8_accuracy == best.int8_accuracy
    assert trained.model_path.endswith(f"trial_{best.number}_final.keras")
    assert pathlib.Path(trained.model_path).exists()
    assert trained.flash_bytes <= BUDGET["flash_bytes"]
    assert trained.scratch_accuracy is not None
    kept = {c.number: c for c in result.front if c.number != best.number}
    for candidate in final.front:
        if candidate.number in kept:  # the rest of the front keeps its trials' students
            assert candidate == kept[candidate.number]
            assert (
                candidate.epochs == 2 and candidate.trial_int8_accuracy == candidate.int8_accuracy
            )
    study = optuna.load_study(study_name=STUDY_NAME, storage=open_storage(None, str(copied)))
    assert f"scratch_{best.number}_6" in study.user_attrs  # its twin trained as long
    assert f"| {best.number} |" in (copied / "report.md").read_text()


def test_a_suggestion_queued_twice_at_once_runs_once(
    counted_teacher, digits, tmp_path, monkeypatch
):
    enqueue = optuna.Study.enqueue_trial

    def two_processes_at_once(study, params, user_attrs=None, skip_if_exists=False):
        for _ in range(2):  # both checked before either queued
            enqueue(study, params, user_attrs)

    monkeypatch.setattr(optuna.Study, "enqueue_trial", two_processes_at_once)

    def build(choices):
        width = choices.choose("width", (4, 8))
        return keras.Sequential(
            [keras.Input((64,)), keras.layers.Dense(width), keras.layers.Dense(10)]
        )

    result = kd.find_student(
        counted_teacher[0],
        (digits.x_train, digits.y_train),
        (digits.x_test, digits.y_test),
        space=kd.search.SearchSpace(build, suggested=({"width": 8},)),
        flash_bytes=20_000,
        trials=2,
        epochs=1,
        directory=tmp_path,
        verbose=0,
    )
    study = optuna.load_study(study_name=STUDY_NAME, storage=open_storage(None, str(tmp_path)))
    states = {t.number: (t.state.name, t.user_attrs.get("suggested")) for t in study.trials}
    assert states[0] == ("COMPLETE", 0) and states[1] == ("PRUNED", 0)
    assert sorted(t.number for t in result.trials) == [0, 2]  # the pruned twin is not a trial


def test_suggested_candidates_are_tried_first(counted_teacher, digits, tmp_path):
    def build(choices):
        width = choices.choose("width", (4, 8, 16, 32))
        return keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Dense(width, activation="relu"),
                keras.layers.Dense(10),
            ]
        )

    space = kd.search.SearchSpace(build, suggested=({"width": 32}, {"width": 16, "alpha": 0.2}))
    # width 4 fits 2,700 B of flash (about 2,500 B), 16 and 32 do not (about 3,700 and 5,400 B;
    # 3,000 and 4,300 B if pre-flighted with untrained weights): the suggestions are tried
    # (pre-flighted, recorded), never trained
    result = kd.find_student(
        counted_teacher[0],
        (digits.x_train, digits.y_train),
        (digits.x_test, digits.y_test),
        space=space,
        flash_bytes=2_700,
        trials=2,
        epochs=1,
        directory=tmp_path,
        verbose=0,
    )
    trials = sorted(result.trials, key=lambda t: t.number)
    assert [t.architecture for t in trials] == [{"width": 32}, {"width": 16}]
    assert trials[1].recipe["alpha"] == 0.2  # a suggestion may set the recipe too
    assert [t.reason.startswith("over budget: flash") for t in trials] == [True, True]
    for suggested in kd.search.default_space((40,), 10).suggested:  # a whole architecture
        model = kd.search.default_space((40,), 10).build(kd.search.Choices.stored(suggested))
        assert model.output.shape == (None, 10)


def test_preflight_of_an_infeasible_candidate(digits):
    budget = Budget(flash_bytes=4_000, ram_bytes=None)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256), keras.layers.Dense(10)])
    checked = preflight(model, digits.x_train, budget, estimate_latency(model, None))
    assert not checked.feasible
    assert checked.reason == f"over budget: flash {checked.flash_bytes:,} B > 4,000 B"
    assert checked.constraints["flash"] == pytest.approx(checked.flash_bytes - 4_000, abs=0.5)
    assert checked.arena_bytes is None  # not measured: the flash alone is over
    print(f"pre-flight of an infeasible candidate: {checked.seconds:.2f} s")


def test_a_candidate_with_an_op_tflm_lacks_is_infeasible(digits):
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(16, activation="gelu", name="fancy"),
            keras.layers.Dense(10),
        ]
    )
    checked = preflight(model, digits.x_train, Budget(None, 100_000), estimate_latency(model, None))
    assert not checked.feasible
    assert checked.reason.startswith("not for TFLite Micro: TFLite Micro has no kernel for: GELU")
    assert all(value > 0 for value in checked.constraints.values())


def test_progress_lines_and_bar(counted_teacher, searched, digits, tmp_path, capsys):
    teacher, _ = counted_teacher
    *_, silent = searched  # the module's search, with verbose=0
    assert silent == dict(printed="", optuna=[])
    arguments = dict(trials=2, epochs=1, seed=3, space=POST_TRAINING, **BUDGET)
    data = ((digits.x_train, digits.y_train), (digits.x_test, digits.y_test))
    verbosity = optuna.logging.get_verbosity()
    with optuna_messages() as logged:
        kd.find_student(teacher, *data, directory=tmp_path / "loud", verbose=1, **arguments)
        out = capsys.readouterr().out
        assert logged == []  # Optuna's own lines do not interleave
        # one trial, the suggested CNN (about 8,600 B of flash): over 7,000 B, so not trained
        arguments.update(trials=1, flash_bytes=7_000)
        kd.find_student(teacher, *data, directory=tmp_path / "optuna", verbose=2, **arguments)
        assert any(" finished with values" in m for m in logged)
    assert optuna.logging.get_verbosity() == verbosity  # restored after the search
    assert out.count("\ntrial ") == 2 and "2/2" in out
    assert "best " in out and ("int8 " in out or "infeasible after a" in out)
    # the front's table is the report's, printed by whoever shows the result: not here
    assert f"Report: {tmp_path / 'loud' / 'report.md'}" in out
    assert "| trial |" not in out


def fake_tflm_tree(tmp_path, monkeypatch, count):
    """A TFLM tree (its Makefile only), the Arm tools and QEMU taken as present, and `count`
    standing for each build and QEMU run: `count(runs)` gives the instructions, or raises."""
    tree = tmp_path / "tflm"
    (tree / firmware.RELATIVE_MAKEFILE).parent.mkdir(parents=True)
    (tree / firmware.RELATIVE_MAKEFILE).write_text("# a TFLM tree's Makefile\n")
    runs = []

    def on_target(name, info, model_bytes, arenas, x, target, tflm_dir):
        runs.append((target, len(x), pathlib.Path(tflm_dir)))
        return count(runs)

    monkeypatch.setattr(firmware, "check_toolchain", lambda target: None)
    monkeypatch.setattr(target_run, "check_emulator", lambda target: "qemu-system-arm")
    monkeypatch.setattr(export_validation, "instructions_on_target", on_target)
    return tree, runs


def test_with_a_tflm_tree_latency_is_counted_on_the_emulated_cortex_m4(
    counted_teacher, digits, tmp_path, monkeypatch
):
    def count(runs):  # 0.25 ms at 64 MHz for the first candidate, 40 ms for the others
        return 16_000 if len(runs) == 1 else 2_560_000

    tree, runs = fake_tflm_tree(tmp_path, monkeypatch, count)
    result = search_digits(
        counted_teacher[0],
        digits,
        tmp_path / "search",
        tflm_dir=tree,
        clock_hz=64_000_000,
        latency_ms=30.0,  # the estimates: two candidates within it (both also within the flash)
        space=POST_TRAINING,
    )
    assert runs and all(run == ("cortex-m4", 20, tree.resolve()) for run in runs)
    trained = [t for t in result.trials if t.latency.instructions is not None]
    assert len(trained) == len(runs) == 2  # every trained candidate, and only those
    first, *later = trained
    assert first.feasible and first.latency.seconds == pytest.approx(0.25e-3, abs=1e-12)
    assert first.latency.method.startswith("measured: 16,000 instructions per inference")
    for trial in later:  # within the estimate's limit before training, over it when counted
        assert trial.reason == "over budget after training: latency 40.00 ms (counted) > 30 ms"
    assert [c.number for c in result.front] == [first.number]
    assert "latency (ms, Cortex-M4)" in result.to_markdown()
    study = optuna.load_study(study_name=STUDY_NAME, storage=open_storage(None, result.directory))
    for frozen in study.trials:  # Optuna's constraints say what the records say
        feasible = all(value <= 0 for value in frozen.constraints.values())
        assert feasible == (frozen.user_attrs["record"]["reason"] is None)


def test_a_candidate_whose_build_or_run_fails_is_infeasible_with_the_error(
    counted_teacher, digits, tmp_path, monkeypatch
):
    def count(runs):
        if len(runs) == 1:
            raise kd.micro.FirmwareError("The build of candidate failed: ld: out of memory")
        return 16_000

    tree, runs = fake_tflm_tree(tmp_path, monkeypatch, count)
    result = search_digits(
        counted_teacher[0],
        digits,
        tmp_path / "search",
        tflm_dir=tree,
        clock_hz=64_000_000,
        space=POST_TRAINING,
    )
    failed, *counted = [t for t in result.trials if t.int8_accuracy is not None]
    assert failed.reason == (
        "not counted on the cortex-m4: The build of candidate failed: ld: out of memory"
    )
    assert counted and all(t.feasible and t.latency.instructions == 16_000 for t in counted)
    assert failed.number not in [c.number for c in result.front]


@pytest.mark.slow
@needs_tflm
@needs_arm
def test_latency_counted_in_qemu_is_each_trained_candidates_instructions_at_the_clock(
    counted_teacher, digits, tmp_path
):
    clock = 64_000_000
    result = search_digits(
        counted_teacher[0], digits, tmp_path / "search", tflm_dir=TFLM, clock_hz=clock
    )
    trained = [t for t in result.trials if t.int8_accuracy is not None]
    assert trained
    for trial in trained:
        latency = trial.latency
        assert latency.method.startswith(f"measured: {latency.instructions:,} instructions")
        assert latency.seconds == pytest.approx(latency.instructions / clock, abs=1e-12)
        assert latency.instructions > trial.macs  # TFLM's reference kernels: several per MAC
    for candidate in result.front:  # the MAC estimate is calibrated on such counts
        model = keras.saving.load_model(candidate.model_path)
        estimate = estimate_latency(model, clock).seconds
        assert 0.2 < candidate.latency.seconds / estimate < 5.0
