"""Re-executes the tutorial notebooks with their full settings and saves their outputs.

`make tutorials` runs this. Each notebook runs top to bottom in a fresh kernel,
in a scratch folder (the files it writes stay out of the repository), and is
saved back in place with its outputs, so a reader sees the tables and plots
without running anything. The test suite executes fresh copies with small
settings (`KERAS_DISTILL_QUICK=1`) and never rewrites these files. TensorFlow's
C++ start-up log lines on stderr are left out of the saved outputs, and a progress
bar is saved as its last state (no colour codes).

Usage: python tutorials/execute_in_place.py [NOTEBOOK ...]
"""

import os
import pathlib
import re
import sys
import tempfile
import time

import nbclient
import nbformat

HERE = pathlib.Path(__file__).parent
# TensorFlow's C++ log lines on stderr (start-up: oneDNN, CUDA probing; the TFLite converter's
# and interpreter's notes): machine noise, not results.
TF_LOG_LINE = re.compile(
    r"^([IWEF]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before absl"
    r"|fully_quantize: \d|INFO: Created TensorFlow Lite XNNPACK delegate)"
)


ANSI_STYLE = re.compile(r"\x1b\[[0-9;]*m")


def as_a_terminal_shows(text: str) -> str:
    """What a terminal leaves of `text`: a progress bar's last state, not every one, no colours."""
    lines = []
    for line in ANSI_STYLE.sub("", text).replace("\b", "").split("\n"):
        states = [state for state in line.split("\r") if state.strip()]
        lines.append(states[-1] if states else "")
    return "\n".join(lines)


def merged_streams(outputs: list) -> list:
    """Consecutive outputs of one stream joined into one, as Jupyter shows them."""
    merged = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if (
            output.get("output_type") == "stream"
            and previous is not None
            and previous.get("output_type") == "stream"
            and previous.get("name") == output.get("name")
        ):
            previous.text += output.text
        else:
            merged.append(output)
    return merged


def without_machine_noise(notebook) -> None:
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            if output.get("name") == "stderr":
                lines = output.text.splitlines(keepends=True)
                output.text = "".join(line for line in lines if not TF_LOG_LINE.match(line))
                if not output.text.strip():
                    continue
            kept.append(output)
        cell.outputs = merged_streams(kept)
        for output in cell.outputs:
            if output.get("output_type") == "stream":
                output.text = as_a_terminal_shows(output.text)


def execute_in_place(path: pathlib.Path) -> float:
    notebook = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        nbclient.NotebookClient(
            notebook, timeout=3600, kernel_name="python3", resources={"metadata": {"path": scratch}}
        ).execute()
    without_machine_noise(notebook)
    nbformat.write(notebook, path)
    return time.perf_counter() - started


def main(argv):
    os.environ.pop("KERAS_DISTILL_QUICK", None)  # the full settings
    paths = [pathlib.Path(p) for p in argv] or sorted(HERE.glob("*.ipynb"))
    for path in paths:
        print(f"{path.name}: executing ...", flush=True)
        print(f"{path.name}: saved with outputs ({execute_in_place(path):.0f} s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
