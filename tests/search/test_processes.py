"""Several processes share one search: on a journal file, and on a real PostgreSQL server."""

import glob
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import optuna
import pytest

from keras_distill._src.search.storage import JOURNAL_NAME, STUDY_NAME, finished, open_storage

TRIALS = 4
# Post-training int8: these tests are about sharing a search, and a quantization-aware
# candidate's conversions double the cost of a one-epoch trial.
CHILD = """
import dataclasses, sys, keras
import keras_distill as kd
from keras_distill._src.studies import datasets
d = datasets.load_digits()
keras.utils.set_random_seed(0)
teacher = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)], name="teacher")
space = dataclasses.replace(kd.search.default_space((64,), 10), quantization_aware=(False,))
kd.find_student(teacher, (d.x_train, d.y_train), (d.x_test, d.y_test), flash_bytes=20_000,
                ram_bytes=8_000, trials=int(sys.argv[4]), epochs=1, directory=sys.argv[1],
                storage=sys.argv[2] or None, seed=int(sys.argv[3]), space=space, verbose=0)
"""


def run_two(directory, storage: str = "") -> None:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(directory), storage, str(seed), str(TRIALS)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (0, 1)
    ]
    for child in children:
        _, errors = child.communicate(timeout=600)
        assert child.returncode == 0, errors[-3000:]


def check_shared(study) -> None:
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == TRIALS  # the requested number finished, no more
    assert len({t.number for t in complete}) == TRIALS
    # no trial was run twice: each finished trial holds one record, written by one process
    assert all("record" in t.user_attrs and "pid" in t.user_attrs for t in complete)


@pytest.mark.slow
def test_two_processes_on_one_journal(tmp_path):
    run_two(tmp_path)
    storage = open_storage(None, str(tmp_path))
    check_shared(optuna.load_study(study_name=STUDY_NAME, storage=storage))
    assert len(glob.glob(str(tmp_path / "labels" / "*" / "manifest.json"))) == 1


def finished_in(directory) -> list:
    storage = open_storage(None, str(directory))
    return finished(optuna.load_study(study_name=STUDY_NAME, storage=storage))


def start_search(directory, trials: int) -> subprocess.Popen:
    errors = open(directory.parent / f"{directory.name}_stderr.txt", "a")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(directory), "", "0", str(trials)],
        stdout=subprocess.DEVNULL,
        stderr=errors,
    )


@pytest.mark.slow
def test_a_killed_search_resumes_from_its_journal(tmp_path):
    directory, trials, killed_after = tmp_path / "search", 6, 2
    child, deadline = start_search(directory, trials), time.monotonic() + 600
    while not (directory / JOURNAL_NAME).exists() or len(finished_in(directory)) < killed_after:
        assert child.poll() is None and time.monotonic() < deadline, "the search ended early"
        time.sleep(0.2)
    child.kill()  # SIGKILL: no cleanup, a trial may be left running in the journal
    child.wait()
    before = {t.number: t.user_attrs["record"] for t in finished_in(directory)}
    students = {p.name: p.stat().st_mtime_ns for p in (directory / "students").iterdir()}
    assert len(before) >= killed_after
    resumed = start_search(directory, trials)
    assert resumed.wait(timeout=600) == 0, (tmp_path / "search_stderr.txt").read_text()[-3000:]
    after = finished_in(directory)
    assert len(after) == trials and len({t.number for t in after}) == trials
    # the trials finished before the kill are kept as they were, never trained again
    assert {t.number: t.user_attrs["record"] for t in after if t.number in before} == before
    for name, mtime in students.items():
        assert (directory / "students" / name).stat().st_mtime_ns == mtime, name
    # a trial the kill interrupted failed and ran again once, from the same choices
    storage = open_storage(None, str(directory))
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    for failed in study.get_trials(states=(optuna.trial.TrialState.FAIL,)):
        retries = [t for t in after if t.user_attrs.get("retry_of") == failed.number]
        assert len(retries) == 1 and retries[0].params == failed.params
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "postgresql"], capture_output=True)
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


@pytest.fixture
def postgres_url():
    """A PostgreSQL cluster of its own in a temporary folder on 127.0.0.1, stopped at the end."""
    pytest.importorskip("psycopg2", reason="the psycopg2-binary driver is not installed")
    binaries = postgres_bin()
    if binaries is None:
        pytest.skip("PostgreSQL is not installed and cannot be (not root: no apt-get install)")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    # a folder of its own under /tmp: the postgres user cannot enter pytest's root-only folders
    folder = pathlib.Path(tempfile.mkdtemp(prefix="keras_distill_postgres_"))
    if as_user:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()

    def run(*command):
        subprocess.run([*as_user, *command], check=True, capture_output=True, timeout=120)

    run(f"{binaries}/initdb", "-D", str(data), "-U", "postgres", "--auth=trust")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    log = str(folder / "server.log")  # not our pipes: `run` would wait for the server to exit
    run(f"{binaries}/pg_ctl", "-D", str(data), "-l", log, "-o", options, "-w", "start")
    try:
        run(f"{binaries}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "search")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/search"
    finally:
        run(f"{binaries}/pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_two_processes_on_a_postgresql_server(tmp_path, postgres_url):
    run_two(tmp_path / "search", postgres_url)
    storage = optuna.storages.RDBStorage(postgres_url)
    check_shared(optuna.load_study(study_name=STUDY_NAME, storage=storage))
    assert not (tmp_path / "search" / JOURNAL_NAME).exists()
    del storage
    time.sleep(0.5)  # let the engine's connections close before the server stops
