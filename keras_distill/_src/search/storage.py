"""Where a search lives: an Optuna journal in its folder or any Optuna storage URL.

A search is identified by its data, teachers, budget and settings (study user
attributes); a rerun with others is refused. Each running trial records its
host and process and beats a heartbeat; a trial whose process is gone (or
silent for `GRACE_SECONDS`) is marked failed and queued to run again, once.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

import optuna

STUDY_NAME = "keras_distill_search"
JOURNAL_NAME = "journal.log"
HEARTBEAT_SECONDS = 10.0
GRACE_SECONDS = 60.0
# The import name of a database driver -> the package that provides it.
DRIVER_PACKAGES = {
    "psycopg2": "psycopg2-binary",
    "psycopg": "psycopg",
    "MySQLdb": "mysqlclient",
    "pymysql": "PyMySQL",
    "sqlalchemy": "sqlalchemy",
}


def check_driver(url: str) -> None:
    """Refuses a database URL whose driver is not installed, naming the package.

    Raises:
        ValueError: If the URL is malformed, its dialect unknown, or its driver missing.

    Example:
    >>> check_driver("sqlite:///search.db")
    """
    from sqlalchemy import exc
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        parsed.get_dialect().import_dbapi()
    except ImportError as error:
        module = (error.name or "").split(".")[0]
        package = DRIVER_PACKAGES.get(module, module)
        raise ValueError(
            f"The storage {parsed.drivername}:// needs the database driver {module!r}, which is "
            f"not installed: pip install {package}"
        ) from None
    except (exc.ArgumentError, exc.NoSuchModuleError) as error:
        raise ValueError(f"The storage URL is not one Optuna can open: {error}") from None


def open_storage(storage, directory: str):
    """An Optuna storage: the journal in `directory` (default), a URL, a path or a storage.

    Args:
        storage: None (`directory/journal.log`), a database URL
            (`"postgresql+psycopg2://..."`, `"sqlite:///..."`), a journal file
            path, or an `optuna.storages.BaseStorage`.
        directory: The search's folder.

    Returns:
        An `optuna.storages.BaseStorage`.
    """
    if isinstance(storage, optuna.storages.BaseStorage):
        return storage
    if storage is None or "://" not in str(storage):
        path = os.path.join(directory, JOURNAL_NAME) if storage is None else os.fspath(storage)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(path)
        return optuna.storages.JournalStorage(backend)
    check_driver(str(storage))
    return _database(str(storage))


def _database(url: str, attempts: int = 4):
    """Opens a database storage; processes that race to create its tables open it once made."""
    from sqlalchemy import exc  # Optuna's own dependency, imported where a database is used

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url)
        except exc.SQLAlchemyError:  # another process created the same table or type first
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def check_identity(study: optuna.Study, identity: dict) -> None:
    """Records what the search is of, or refuses a study recorded with something else.

    Raises:
        ValueError: Naming each part that differs (data, teachers, budget, settings).
    """
    stored = study.user_attrs.get("identity")
    if stored is None:
        study.set_user_attr("identity", identity)
        return
    differs = [key for key in identity if stored.get(key) != identity[key]]
    if differs:
        details = "; ".join(
            f"{key}: stored {stored.get(key)!r}, now {identity[key]!r}" for key in differs
        )
        raise ValueError(
            f"The storage holds a search with other {', '.join(differs)} ({details}). Use "
            "another `directory=`/`storage=` for a new search, or the same arguments to resume."
        )


@contextlib.contextmanager
def heartbeat(trial: optuna.Trial):
    """Records this process on the trial and beats until the block ends."""
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    trial.set_user_attr("heartbeat", time.time())
    done = threading.Event()

    def beat():
        while not done.wait(HEARTBEAT_SECONDS):
            trial.set_user_attr("heartbeat", time.time())

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(trial: optuna.trial.FrozenTrial, now: float) -> bool:
    """A running trial whose process is gone (this host) or silent for `GRACE_SECONDS`."""
    attrs = trial.user_attrs
    if "pid" not in attrs:
        return False  # not started by a search (yet)
    if attrs.get("host") == socket.gethostname() and not _alive(int(attrs["pid"])):
        return True
    return now - float(attrs.get("heartbeat", now)) > GRACE_SECONDS


def recover_stale(study: optuna.Study, storage) -> list:
    """Marks stale running trials failed, queues each to run again once; returns their numbers."""
    now = time.time()
    study_id = storage.get_study_id_from_name(study.study_name)
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if not is_stale(trial, now):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            if not storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process recovered it first
        recovered.append(trial.number)
        if "retry_of" not in trial.user_attrs:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    return recovered


def is_surplus(study: optuna.Study, number: int, trials: int) -> bool:
    """Whether the trials finished or running before `number` already make the total."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING)
    before = [t for t in study.get_trials(deepcopy=False, states=states) if t.number < number]
    return len(before) >= trials


def queued_twin(study: optuna.Study, trial: optuna.Trial) -> int | None:
    """An earlier trial queued with the same suggested candidate, or None.

    `enqueue_trial(..., skip_if_exists=True)` checks, then queues: two
    processes starting at once may both queue a suggestion.
    """
    index = trial.user_attrs.get("suggested")
    if index is None:
        return None
    states = (
        optuna.trial.TrialState.WAITING,
        optuna.trial.TrialState.RUNNING,
        optuna.trial.TrialState.COMPLETE,
    )
    for earlier in study.get_trials(deepcopy=False, states=states):
        if earlier.number < trial.number and earlier.user_attrs.get("suggested") == index:
            return earlier.number
    return None


def finished(study: optuna.Study) -> list:
    """The completed trials, in order."""
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def check_storage(storage) -> None:
    """Checks a storage argument without opening it (a URL's driver must be installed).

    Raises:
        ValueError: For a type that is no storage, or a URL whose driver is missing.
    """
    if storage is None or isinstance(storage, (optuna.storages.BaseStorage, os.PathLike)):
        return
    if not isinstance(storage, str):
        raise ValueError(
            "`storage` must be None, an Optuna storage URL, a journal file path or an "
            f"optuna storage; received {storage!r}."
        )
    if "://" in storage:
        check_driver(storage)


@contextlib.contextmanager
def quiet_optuna(verbose: int = 1):
    """Optuna's own log lines off below `verbose=2` (the search prints its own), then restored."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose >= 2 else optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)
