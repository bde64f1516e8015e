"""A search resumes from its journal: finished trials are kept, a killed one runs again once."""

import os
import shutil
import socket
import subprocess
import time

import optuna
import pytest
from conftest import mlp

import keras_distill as kd
from keras_distill._src.search import training
from keras_distill._src.search.storage import (
    GRACE_SECONDS,
    STUDY_NAME,
    is_stale,
    open_storage,
    recover_stale,
)

BUDGET = dict(flash_bytes=20_000, ram_bytes=8_000)

# The module's fixtures run once: its tests share one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("resume")


@pytest.fixture(scope="module")
def teacher():
    return mlp([16], seed=0, name="teacher")


def search(teacher, digits, directory, trials, **settings):
    data = ((digits.x_train, digits.y_train), (digits.x_test, digits.y_test))
    arguments = dict(trials=trials, epochs=1, directory=directory, seed=0, verbose=0, **BUDGET)
    return kd.find_student(teacher, *data, **{**arguments, **settings})


@pytest.fixture(scope="module")
def one_trial(teacher, digits, tmp_path_factory):
    """A finished search of one trial, run once: `(result, folder)`."""
    directory = tmp_path_factory.mktemp("one_trial")
    return search(teacher, digits, directory, trials=1), directory


@pytest.fixture
def searched_once(one_trial, tmp_path):
    """This test's copy of the one-trial search (file times kept): `(result, folder)`."""
    result, directory = one_trial
    copied = tmp_path / "search"
    shutil.copytree(directory, copied)
    return result, copied


def study_of(directory):
    storage = open_storage(None, str(directory))
    return optuna.load_study(study_name=STUDY_NAME, storage=storage)


def trained_files(directory) -> dict:
    folder = directory / "students"
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} if folder.exists() else {}


def test_a_rerun_continues_and_never_trains_a_finished_trial_again(teacher, digits, searched_once):
    first, directory = searched_once
    before = trained_files(directory)
    assert list(before) == ["trial_0.keras"]
    second = search(teacher, digits, directory, trials=2)
    assert [t.number for t in second.trials] == [0, 1]
    assert second.trials[:1] == first.trials
    after = trained_files(directory)
    assert {name: after[name] for name in before} == before  # not trained again
    third = search(teacher, digits, directory, trials=2)
    assert third.trials == second.trials and trained_files(directory) == after


@pytest.mark.parametrize(
    "change, named",
    [
        (dict(flash_bytes=30_000), "budget"),
        (dict(epochs=2), "settings"),
    ],
)
def test_a_rerun_with_other_settings_is_refused(teacher, digits, searched_once, change, named):
    _, directory = searched_once
    with pytest.raises(ValueError, match=f"The storage holds a search with other {named}"):
        search(teacher, digits, directory, trials=2, **change)
    assert len(study_of(directory).trials) == 1


def test_a_search_trained_with_another_learning_rate_is_not_resumed(
    teacher, digits, searched_once, monkeypatch
):
    _, directory = searched_once
    monkeypatch.setattr(training, "TRIAL_LEARNING_RATE", 3e-3)
    with pytest.raises(ValueError, match="other settings.*'learning_rate': 0.01.*0.003"):
        search(teacher, digits, directory, trials=2)
    assert len(study_of(directory).trials) == 1


def test_a_rerun_with_other_data_or_teacher_is_refused(teacher, digits, searched_once):
    _, directory = searched_once
    data = ((digits.x_train[:-1], digits.y_train[:-1]), (digits.x_test, digits.y_test))
    with pytest.raises(ValueError, match="other data"):
        kd.find_student(
            teacher, *data, trials=2, epochs=1, directory=directory, verbose=0, **BUDGET
        )
    with pytest.raises(ValueError, match="other teachers"):
        search(mlp([16], seed=1, name="teacher"), digits, directory, trials=2)
    assert len(study_of(directory).trials) == 1


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_trial_killed_half_way_runs_again_once(teacher, digits, searched_once):
    _, directory = searched_once
    study = study_of(directory)
    # a trial whose process died while training it: RUNNING, with a dead pid on this host
    params = dict(family="dense", width=16, depth=1, teacher="teacher", temperature=2.0)
    params.update(alpha=0.5, function_matching=False, quantization_aware=True)
    study.enqueue_trial(params)
    killed = study.ask()
    options = dict(family=("dense", "ds_conv1d", "conv1d"), width=(8, 16, 32, 64, 128))
    options.update(depth=(1, 2, 3), teacher=("teacher",), temperature=(1.0, 2.0, 4.0))
    options.update(alpha=(0.5, 0.2, 0.8), function_matching=(False,), quantization_aware=(True,))
    for name in params:
        killed.suggest_categorical(name, options[name])
    killed.set_user_attr("host", socket.gethostname())
    killed.set_user_attr("pid", dead_pid())
    killed.set_user_attr("heartbeat", time.time())
    result = search(teacher, digits, directory, trials=2)
    states = {t.number: t.state for t in study_of(directory).trials}
    assert states[killed.number] == optuna.trial.TrialState.FAIL
    retried = [
        t for t in study_of(directory).trials if t.user_attrs.get("retry_of") == killed.number
    ]
    assert len(retried) == 1 and retried[0].state == optuna.trial.TrialState.COMPLETE
    assert retried[0].params == params
    assert len(result.trials) == 2
    # the retry is not retried again, and a live process's trial is not touched
    assert recover_stale(study_of(directory), open_storage(None, str(directory))) == []


def test_a_live_trial_is_stale_only_after_the_grace_period():
    now = time.time()
    alive = optuna.trial.create_trial(
        state=optuna.trial.TrialState.RUNNING,
        user_attrs={"host": socket.gethostname(), "pid": os.getpid(), "heartbeat": now - 5},
    )
    assert not is_stale(alive, now)
    assert is_stale(alive, now + GRACE_SECONDS + 10)
