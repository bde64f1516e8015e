"""Building an exported model into a TFLite Micro application, with TFLM's own Makefile.

`build` writes a small application around an export's C++ sources (a
`main.cc` that runs the model on a file of inputs, see
`codegen.application_source`) and builds TFLite Micro and the application
with TFLM's Makefile for a target: the host (x86-64 Linux) or an Arm
Cortex-M core emulated by QEMU (`keras_distill._src.micro.target_run`). The TFLM
tree is only read: build products go to a cache folder outside it and are
reused across calls (the library takes minutes to build the first time, an
application seconds).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys

from keras_distill._src.micro import codegen, model_info
from keras_distill._src.micro.errors import MicroExportError

RELATIVE_MAKEFILE = "tensorflow/lite/micro/tools/make/Makefile"
ARM_PACKAGES = "gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib"
QEMU_PACKAGE = "qemu-system-arm"
TFLM_DIR_VARIABLE = "KERAS_DISTILL_TFLM_DIR"
CACHE_DIR_VARIABLE = "KERAS_DISTILL_CACHE_DIR"
BUILD_TIMEOUT = 3600


@dataclasses.dataclass(frozen=True)
class Target:
    """A build target: TFLM Makefile variables and how to run the binary.

    Example:
    >>> TARGETS["cortex-m4"].machine
    'mps2-an386'
    """

    make_variables: tuple  # ("TARGET=...", ...) for TFLM's Makefile
    machine: str | None = None  # qemu-system-arm -M, or None to run on the host
    compiler: str = "g++"

    @property
    def emulated(self) -> bool:
        """Whether its binaries run in QEMU (a Cortex-M target) rather than on the host."""
        return self.machine is not None


TARGETS = {
    "host": Target(()),
    "cortex-m3": Target(
        ("TARGET=cortex_m_qemu", "TARGET_ARCH=cortex-m3"), "mps2-an385", "arm-none-eabi-g++"
    ),
    "cortex-m4": Target(
        ("TARGET=cortex_m_qemu", "TARGET_ARCH=cortex-m4"), "mps2-an386", "arm-none-eabi-g++"
    ),
}


class FirmwareError(MicroExportError):
    """Building or running the TFLite Micro application failed; the message says what to do.

    Example:
    >>> import tempfile
    >>> import keras_distill as kd
    >>> not_an_export = tempfile.mkdtemp()
    >>> try:
    ...     kd.micro.build(not_an_export, target="host")
    ... except kd.micro.MicroExportError as error:  # the family of every export failure
    ...     print(type(error).__name__)
    FirmwareError
    """


@dataclasses.dataclass(frozen=True)
class Firmware:
    """A TFLite Micro application built for a target by `build`.

    Attributes:
        name: The export's name.
        target: A key of `TARGETS`.
        binary: The built executable (an ELF for Cortex-M).
        arena_bytes: Size of its static tensor arena.
        inputs, outputs: `TensorInfo` of the model's tensors.
        build_dir: The folder of the application's sources and build log.

    Example:
    >>> import pathlib
    >>> Firmware("m", "host", pathlib.Path("m"), 4096, (), (), pathlib.Path(".")).target
    'host'
    """

    name: str
    target: str
    binary: pathlib.Path
    arena_bytes: int
    inputs: tuple
    outputs: tuple
    build_dir: pathlib.Path


def _export_files(export) -> tuple[str, pathlib.Path, pathlib.Path, int]:
    """(name, folder, .tflite path, recommended arena) of an export or its folder."""
    if hasattr(export, "header_path"):
        return (
            export.name,
            export.header_path.parent,
            export.tflite_path,
            export.recommended_arena_bytes,
        )
    folder = pathlib.Path(export)
    headers = sorted(folder.glob("*_model_data.h")) if folder.is_dir() else []
    if len(headers) != 1:
        raise FirmwareError(
            f"{str(folder)!r} must be a folder written by kd.micro.export with exactly "
            f"one <name>_model_data.h; found {[h.name for h in headers]}."
        )
    name = headers[0].name[: -len("_model_data.h")]
    text = headers[0].read_text()
    marker = f"constexpr size_t {name}_arena_size = "
    if marker not in text or not (folder / f"{name}.tflite").is_file():
        raise FirmwareError(
            f"{headers[0]} is not a keras-distill export header (or "
            f"{name}.tflite is missing beside it)."
        )
    arena = int(text.split(marker, 1)[1].split(";", 1)[0])
    return name, folder, folder / f"{name}.tflite", arena


def find_tflm(tflm_dir=None) -> pathlib.Path:
    """The TFLite Micro source tree: `tflm_dir`, else `$KERAS_DISTILL_TFLM_DIR`.

    Args:
        tflm_dir: A tflite-micro checkout (with its third-party downloads for an
            offline build), or None.

    Returns:
        Its absolute path.

    Raises:
        FirmwareError: If none is given or it holds no TFLM Makefile.

    Example:
    >>> find_tflm("/nonexistent")
    Traceback (most recent call last):
    ...
    keras_distill._src.micro.firmware.FirmwareError: '/nonexistent' is not a TensorFlow Lite ...
    """
    tflm_dir = tflm_dir or os.environ.get(TFLM_DIR_VARIABLE)
    if not tflm_dir:
        raise FirmwareError(
            f"Pass tflm_dir= (or set ${TFLM_DIR_VARIABLE}) to a checkout of "
            "https://github.com/tensorflow/tflite-micro; its Makefile builds the library."
        )
    path = pathlib.Path(tflm_dir).expanduser().resolve()
    if not (path / RELATIVE_MAKEFILE).is_file():
        raise FirmwareError(
            f"{str(tflm_dir)!r} is not a TensorFlow Lite Micro tree: {RELATIVE_MAKEFILE} is "
            "missing. Pass the root of a tflite-micro checkout."
        )
    return path


def check_toolchain(target: Target) -> None:
    """Refuses a target whose compiler (or `make`) is missing, naming what to install.

    Args:
        target: A `Target` of `TARGETS`.

    Raises:
        FirmwareError: Naming the missing tools and the Debian packages.
    """
    missing = [tool for tool in ("make", target.compiler) if shutil.which(tool) is None]
    if missing:
        install = ARM_PACKAGES if target.emulated else "make g++"
        raise FirmwareError(
            f"{', '.join(missing)} not found on PATH; install it, e.g. `apt-get install {install}`."
        )


def _cache_dir(cache_dir, tflm: pathlib.Path, target: str) -> pathlib.Path:
    root = cache_dir or os.environ.get(CACHE_DIR_VARIABLE)
    root = pathlib.Path(root) if root else pathlib.Path.home() / ".cache" / "keras-distill"
    tree = hashlib.sha256(str(tflm).encode()).hexdigest()[:12]
    path = (root / "tflm" / f"{tree}-{target}").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _tree_link(cache: pathlib.Path, tflm: pathlib.Path) -> str:
    """A relative path to the TFLM tree from the cache, so that nothing is written into it.

    The Makefile generates C arrays for its examples at `genfiles/<source path>`;
    with an absolute source path that would be beside the source, in the tree.
    """
    link = cache / "tflm"
    if link.is_symlink() and link.resolve() != tflm:
        link.unlink()
    if not link.exists():
        link.symlink_to(tflm, target_is_directory=True)
    return "tflm"


def _link_downloads(cache: pathlib.Path, tflm: pathlib.Path, target: Target) -> pathlib.Path:
    """A downloads folder in the cache: the tree's third-party code, and the Arm toolchain."""
    downloads = cache / "downloads"
    downloads.mkdir(exist_ok=True)
    source = tflm / "tensorflow/lite/micro/tools/make/downloads"
    for entry in sorted(source.iterdir()) if source.is_dir() else []:
        link = downloads / entry.name
        if not link.exists() and entry.name != "gcc_embedded":
            link.symlink_to(entry)
    if target.emulated:  # TFLM's Makefile uses downloads/gcc_embedded/bin, else downloads one
        bin_dir = downloads / "gcc_embedded" / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        compiler = pathlib.Path(shutil.which(target.compiler)).resolve()
        for tool in compiler.parent.glob("arm-none-eabi-*"):
            if not (bin_dir / tool.name).exists():
                (bin_dir / tool.name).symlink_to(tool)
    return downloads


def _write_application(
    cache: pathlib.Path, name: str, folder: pathlib.Path, arena: int, target: str
) -> tuple[str, pathlib.Path]:
    """Writes main.cc, the model sources and app.mk into an application folder of the cache."""
    from keras_distill.version import __version__

    sources = {
        "main.cc": codegen.application_source(name, arena, __version__),
        f"{name}_model_data.cc": (folder / f"{name}_model_data.cc").read_text(),
        f"{name}_model_data.h": (folder / f"{name}_model_data.h").read_text(),
    }
    digest = hashlib.sha256(repr((sorted(sources.items()), target)).encode()).hexdigest()[:12]
    app = f"kd_app_{digest}"
    app_dir = cache / "apps" / app
    app_dir.mkdir(parents=True, exist_ok=True)
    for file_name, text in sources.items():
        (app_dir / file_name).write_text(text)
    cc = " ".join(str(app_dir / f) for f in sources if f.endswith(".cc"))
    (app_dir / "app.mk").write_text(
        "# Generated by keras-distill: TFLM's Makefile plus one application target.\n"
        f"include $(TENSORFLOW_ROOT){RELATIVE_MAKEFILE}\n"
        f"$(eval $(call microlite_test,{app},{cc},{app_dir / f'{name}_model_data.h'},))\n"
    )
    return app, app_dir


def _make(cache: pathlib.Path, app_dir: pathlib.Path, arguments: list) -> None:
    env = dict(os.environ)
    # The Makefile runs generate_cc_arrays.py (numpy, Pillow) with `python3` while it parses.
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    log_path = app_dir / "build.log"
    with open(log_path, "w") as log:
        try:
            result = subprocess.run(
                ["make", *arguments],
                cwd=cache,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=BUILD_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            raise FirmwareError(
                f"The TFLM build took over {BUILD_TIMEOUT} s; see {log_path}."
            ) from None
    if result.returncode != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-25:])
        raise FirmwareError(
            f"TFLM's Makefile failed (exit {result.returncode}); the end of {log_path}:\n{tail}"
        )


@contextlib.contextmanager
def _one_build_at_a_time(cache: pathlib.Path):
    """Holds the cache's build lock: processes sharing a cache (a search's workers) build in turn.

    Two `make` runs in one cache would write the same library objects at once.
    The lock is the operating system's (`flock`): a process that dies releases it.
    """
    with open(cache / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _announce_first_build(cache: pathlib.Path, target: str) -> None:
    if not any(cache.glob("gen/*/lib/libtensorflow-microlite.a")):
        print(
            f"Building TensorFlow Lite Micro for {target} in {cache} (first time: a few "
            "minutes; later builds reuse it) ...",
            flush=True,
        )


def build(
    export,
    tflm_dir: str | os.PathLike | None = None,
    target: str = "host",
    *,
    arena_bytes: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    jobs: int | None = None,
    verbose: int = 1,
) -> Firmware:
    """Builds an exported model into a TFLite Micro application for a target.

    Writes a `main.cc` (which runs the model on a file of inputs) beside
    copies of the export's `<name>_model_data.cc/.h`, and builds TFLite Micro
    and the application with TFLM's own Makefile, for the host or an Arm
    Cortex-M core (`TARGET=cortex_m_qemu`, Debian's `arm-none-eabi`
    toolchain). The TFLM tree is only read; the library and applications are
    built in a cache folder (`cache_dir`, `$KERAS_DISTILL_CACHE_DIR` or
    `~/.cache/keras-distill`) and reused: the library, the slow part, is
    built once per target.

    Args:
        export: A `MicroExport` or the folder an export wrote.
        tflm_dir: A tflite-micro checkout (default `$KERAS_DISTILL_TFLM_DIR`).
        target: `"host"`, `"cortex-m4"` or `"cortex-m3"` (see `TARGETS`).
        arena_bytes: The application's tensor arena (default: the export's
            recommended size).
        cache_dir: Where builds are kept.
        jobs: Parallel compile jobs (default: the number of CPUs).
        verbose: 1 says when the library is built for the first time.

    Returns:
        A `Firmware` for `kd.micro.run_on_target`.

    Raises:
        FirmwareError: For an unknown target, a missing toolchain or TFLM
            tree, an export folder without sources, or a failed build (with
            the end of the build log).

    Example:
    >>> import keras_distill as kd
    >>> try:
    ...     kd.micro.build("model_export", target="esp8266")
    ... except kd.micro.FirmwareError as error:
    ...     print(error)
    Unknown target 'esp8266'; choose one of ['cortex-m3', 'cortex-m4', 'host'].
    """
    if target not in TARGETS:
        raise FirmwareError(f"Unknown target {target!r}; choose one of {sorted(TARGETS)}.")
    spec = TARGETS[target]
    name, folder, tflite_path, recommended = _export_files(export)
    arena = int(arena_bytes or recommended)
    if arena <= 0:
        raise FirmwareError(f"`arena_bytes` must be positive; received {arena_bytes!r}.")
    tflm = find_tflm(tflm_dir)
    check_toolchain(spec)
    cache = _cache_dir(cache_dir, tflm, target)
    with _one_build_at_a_time(cache):
        downloads = _link_downloads(cache, tflm, spec)
        app, app_dir = _write_application(cache, name, folder, arena, target)
        if verbose:
            _announce_first_build(cache, target)
        _make(
            cache,
            app_dir,
            [
                "-f",
                str(app_dir / "app.mk"),
                f"-j{jobs or os.cpu_count() or 1}",
                f"TENSORFLOW_ROOT={_tree_link(cache, tflm)}/",
                f"DOWNLOADS_DIR={downloads}",
                *spec.make_variables,
                app,
            ],
        )
        binary = next(cache.glob(f"gen/*/bin/{app}"), None)
        if binary is None:
            raise FirmwareError(
                f"The build finished but {app} is not in {cache}/gen/*/bin/; see "
                f"{app_dir / 'build.log'}."
            )
    info = model_info.inspect_model(tflite_path.read_bytes())
    return Firmware(name, target, binary, arena, info.inputs, info.outputs, app_dir)
