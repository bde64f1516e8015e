"""Shared builders: digits, a teacher trained once per test run, small models and logits."""

import gc
import os
import pathlib
import shutil
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from keras_distill._src.micro import firmware  # noqa: E402
from keras_distill._src.studies import datasets  # noqa: E402

# Property tests: `make test` sees the same examples on every run (derandomized, no example
# database); `make fuzz` explores with many random examples. A failure found by fuzzing becomes
# an `@example(...)` on the test, so the suite keeps checking it.
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    max_examples=40,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz",
    max_examples=2000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("KERAS_DISTILL_HYPOTHESIS_PROFILE", "ci"))

# Python's cyclic garbage collector runs every 30 s, started between tests in a thread of its own,
# instead of every few seconds inside them: each full collection walked every object (0.3-0.8 s
# in a test worker), and one that freed an earlier test's tf.data iterator waited for the
# iterator's threads (5-35 s, seen with py-spy). TensorFlow releases the GIL while it waits, so
# the tests go on meanwhile (in the main thread, two such waits took 35 s of a 150 s run). The
# objects the imports made are frozen, so collections do not walk them again.
FULL_COLLECTION_PERIOD = 30.0  # seconds between the starts of two collections


class GarbageCollector:
    """Starts a full collection in a thread after a test once `period` seconds have passed."""

    def __init__(self, period: float):
        self.period = period
        self.last = time.monotonic()
        self.collection = None  # the thread of the last collection started

    def after_test(self) -> None:
        """Starts a collection if `period` has passed and none is running."""
        if time.monotonic() - self.last < self.period or self.collecting():
            return
        self.collection = threading.Thread(target=gc.collect, name="gc", daemon=True)
        self.collection.start()
        self.last = time.monotonic()

    def collecting(self) -> bool:
        """Whether the last collection started is still running."""
        return self.collection is not None and self.collection.is_alive()

    def finish(self) -> None:
        """Waits for a running collection, so that none runs while the interpreter exits."""
        if self.collection is not None:
            self.collection.join()


COLLECTOR = pytest.StashKey[GarbageCollector]()


def pytest_configure(config):
    """In a process that runs tests (not pytest-xdist's controller): collect between tests only."""
    if config.getoption("numprocesses", None) and not hasattr(config, "workerinput"):
        return  # the controller only schedules
    gc.disable()
    gc.freeze()
    config.stash[COLLECTOR] = GarbageCollector(FULL_COLLECTION_PERIOD)


def pytest_unconfigure(config):
    """Lets a collection still running finish before the process exits."""
    collector = config.stash.get(COLLECTOR, None)
    if collector is not None:
        collector.finish()


@pytest.fixture(autouse=True)
def garbage_collected_between_tests(request):
    """After a test, starts a collection in a thread once `FULL_COLLECTION_PERIOD` has passed."""
    yield
    request.config.stash[COLLECTOR].after_test()


# The firmware tests (TFLite Micro built and run on the host and an emulated Cortex-M4) need a
# tflite-micro checkout in $KERAS_DISTILL_TFLM_DIR, g++, and for the Cortex-M4 Debian's Arm
# toolchain and qemu-system-arm (`make test` installs those when it runs as root).
TFLM = pathlib.Path(os.environ.get(firmware.TFLM_DIR_VARIABLE, "") or "/nonexistent")
ARM_TOOLS = ("arm-none-eabi-g++", "qemu-system-arm")


def tflm_missing() -> str:
    """Why the TFLM tests cannot run here ("" when they can)."""
    variable = firmware.TFLM_DIR_VARIABLE
    if not os.environ.get(variable):
        return f"${variable} is not set: point it at a tflite-micro checkout (see the README)"
    if not (TFLM / firmware.RELATIVE_MAKEFILE).is_file():
        return f"${variable}={TFLM} holds no {firmware.RELATIVE_MAKEFILE}"
    return "" if shutil.which("g++") else "no g++ (apt-get install g++)"


needs_tflm = pytest.mark.skipif(bool(tflm_missing()), reason=tflm_missing() or "-")
needs_arm = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ARM_TOOLS),
    reason=f"needs {' and '.join(ARM_TOOLS)}: apt-get install {firmware.ARM_PACKAGES} "
    f"{firmware.QEMU_PACKAGE} (make test does it when run as root)",
)


SCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

# Teacher and student logits of 6 examples over 5 classes, spread enough for the losses to differ.
LOGITS_RNG = np.random.default_rng(0)
TEACHER = LOGITS_RNG.normal(scale=3.0, size=(6, 5)).astype("float32")
STUDENT = LOGITS_RNG.normal(scale=3.0, size=(6, 5)).astype("float32")


def mlp(hidden, seed=0, outputs=10, activation=None, name=None):
    """A small MLP on the 64 digits features."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((64,))]
    layers += [keras.layers.Dense(units, activation="relu") for units in hidden]
    layers.append(keras.layers.Dense(outputs, activation=activation))
    return keras.Sequential(layers, name=name)


class Counting(keras.layers.Layer):
    """Identity that counts the batches it sees (in the compiled graph too)."""

    def build(self, input_shape):
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False)

    def call(self, inputs):
        self.calls.assign_add(1.0)
        return inputs


# Modules of long tests, longest first (measured with --durations on 2 cores): the tutorials
# (35-90 s each), the search's processes, the demo, multi-worker training; then modules whose
# tests are not marked slow but take 5-30 s each.
LONG_MODULES = (
    "test_tutorials.py",
    "search/test_processes.py",
    "demo/test_job.py",
    "training/test_multi_worker.py",
    "search/test_find_student.py",
    "search/test_resume.py",
    "training/test_quantization_aware.py",
    "search/test_config_file.py",
    "training/test_on_policy.py",
    "micro/test_export.py",
)


def pytest_collection_modifyitems(config, items):
    """Starts long tests first: slow ones before the others, each kind in `LONG_MODULES`' order.

    pytest-xdist hands tests out in collection order: a long test (a tutorial, the demo, a
    subprocess) that starts last leaves one worker running it while the others wait. Started
    first, it runs while the others work through the many short tests. The order changes
    when a test starts, never what it tests.
    """

    def rank(item):
        module = item.nodeid.split("::")[0].removeprefix("tests/")
        slow = item.get_closest_marker("slow") is not None
        listed = LONG_MODULES.index(module) if module in LONG_MODULES else len(LONG_MODULES)
        return (not slow, listed)

    items.sort(key=rank)


@pytest.fixture(scope="session")
def digits():
    return datasets.load_digits()


@pytest.fixture(scope="session")
def teacher(digits):
    """An MLP 64-128-10 with logits, trained on digits (about 97% test accuracy)."""
    model = mlp([128], seed=0, name="teacher")
    model.compile(keras.optimizers.Adam(2e-3), SCE, metrics=["accuracy"])
    model.fit(digits.x_train, digits.y_train, epochs=30, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="session")
def teacher_accuracy(teacher, digits):
    return teacher.evaluate(digits.x_test, digits.y_test, verbose=0)[1]


@pytest.fixture
def teacher_weights(teacher):
    """The teacher's weights before a test; compare after it."""
    return [np.array(w) for w in teacher.get_weights()]
