"""Every tutorial notebook runs top to bottom, offline, as a user would run it.

The committed notebooks carry the outputs of a full run (`make tutorials`); the
tests execute fresh copies with the short settings (`KERAS_DISTILL_QUICK=1`)
and never write the committed files.
"""

import os
import pathlib
import re

import nbclient
import nbformat
import pytest

TUTORIALS = sorted((pathlib.Path(__file__).parents[1] / "tutorials").glob("*.ipynb"))


def execute(path, tmp_path):
    """Executes a fresh copy (short settings); checks the committed file shows the same cells."""
    notebook = nbformat.read(path, as_version=4)
    # inherited by the kernel: the short settings, and temporary folders inside the test's own
    kernel_environment = {"KERAS_DISTILL_QUICK": "1", "TMPDIR": str(tmp_path)}
    saved_environment = {name: os.environ.get(name) for name in kernel_environment}
    os.environ.update(kernel_environment)
    try:
        nbclient.NotebookClient(
            notebook,
            timeout=900,
            kernel_name="python3",
            resources={"metadata": {"path": str(tmp_path)}},
        ).execute()
    finally:
        for name, value in saved_environment.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value
    committed = nbformat.read(path, as_version=4)
    for index, (fresh, saved) in enumerate(zip(notebook.cells, committed.cells, strict=True)):
        if shown(fresh) and not shown(saved):
            raise AssertionError(
                f"{path.name}: cell {index} prints or plots, but the committed notebook has no "
                "output for it; run `make tutorials` and commit the result."
            )
    return notebook


def shown(cell):
    """Whether a code cell has an output other than stderr (warnings, logs)."""
    return any(output.get("name") != "stderr" for output in cell.get("outputs", []))


def outputs(notebook):
    text = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            text.append(output.get("text", ""))
            text.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(text)


def test_every_tutorial_has_a_colab_only_install_cell_below_its_title():
    assert TUTORIALS, "no tutorials found"
    for path in TUTORIALS:
        notebook = nbformat.read(path, as_version=4)
        title, install = notebook.cells[:2]
        assert title.cell_type == "markdown" and title.source.startswith("# "), path.name
        assert install.cell_type == "code", path.name
        assert install.source.startswith("# In Colab, installs keras-distill"), path.name
        assert '"google.colab" in sys.modules' in install.source, path.name
        assert re.search(r'KERAS_DISTILL = \(?\s*"keras-distill\[', install.source), path.name


def test_committed_tutorials_were_executed_top_to_bottom_with_outputs():
    for path in TUTORIALS:
        notebook = nbformat.read(path, as_version=4)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        counts = [cell.execution_count for cell in code]
        assert counts == list(range(1, len(code) + 1)), (
            f"{path.name}: execution counts {counts}; a cell was not run, or not in order. "
            "Run `make tutorials` and commit the result."
        )
        assert sum(shown(cell) for cell in code) >= len(code) // 2, path.name


def test_every_tutorial_says_what_you_get_and_what_to_try_next():
    for index, path in enumerate(TUTORIALS):
        notebook = nbformat.read(path, as_version=4)
        markdown = [cell.source for cell in notebook.cells if cell.cell_type == "markdown"]
        assert "**At the end you will have" in markdown[0], path.name
        assert markdown[-1].startswith("## What to try next"), path.name
        assert "README" in markdown[-1] or "guide" in markdown[-1], path.name  # where to read on
        if index + 1 < len(TUTORIALS):
            assert f"`{TUTORIALS[index + 1].name}`" in markdown[-1], path.name


@pytest.mark.slow
def test_01_distill_your_first_student(tmp_path):
    notebook = execute(TUTORIALS[0], tmp_path)
    text = outputs(notebook)
    assert "image/png" in str(notebook.cells), "the tutorial's plots were not drawn"
    teacher = float(re.search(r"teacher: [\d,]+ parameters, test accuracy ([\d.]+)%", text)[1])
    distilled = float(re.search(r"student \(distilled\)\s*610 parameters\s+([\d.]+)%", text)[1])
    assert teacher >= 95.0
    assert distilled >= 90.0
    assert re.search(r"reloaded student: test accuracy [\d.]+%", text)


@pytest.mark.slow
def test_02_deploy_to_a_microcontroller(tmp_path):
    notebook = execute(TUTORIALS[1], tmp_path)
    text = outputs(notebook)
    student = float(re.search(r"student: [\d,]+ parameters, test accuracy ([\d.]+)%", text)[1])
    agreement = float(re.search(r"top-1 agreement, TFLM int8 vs Keras float \| ([\d.]+)%", text)[1])
    assert student >= 90.0
    assert agreement >= 97.0
    assert "budget (arduino_nano_33_ble_sense)" in text
    assert "MicroMutableOpResolver<" in text  # the header was shown
    assert "TFLite Micro has no kernel for: GELU (from layer gelu_dense;" in text


@pytest.mark.slow
def test_03_distil_a_black_box_teacher(tmp_path):
    notebook = execute(TUTORIALS[2], tmp_path)
    text = outputs(notebook)
    alone = float(re.search(r"on the 135 labels alone:\s+([\d.]+)%", text)[1])
    distilled = float(re.search(r"from the black box \(\+ pool\):\s+([\d.]+)%", text)[1])
    assert distilled >= alone + 2.0  # full run: 96.9% against 92.4%
    assert re.search(r"top-4 storage: [\d.]+ bytes per sequence", text)
    lm = re.search(r"teacher ([\d.]+)%, student alone ([\d.]+)%, distilled student ([\d.]+)%", text)
    assert float(lm[3]) >= 60.0


@pytest.mark.slow
def test_04_find_the_right_teacher(tmp_path):
    notebook = execute(TUTORIALS[3], tmp_path)
    text = outputs(notebook)
    assert "teacher large (64-512-512-10): 301,066 parameters" in text
    assert "[12/12] teacher large (64-512-512-10), student 64-64-10" in text
    assert len(re.findall(r"\| (small|large) \(64-[\d-]+\) \| 64-\d+-10 \|", text)) == 6
    assert re.search(r"\| student, distilled directly \| 310 \| [\d.]+% \|", text)
    assert re.search(r"chain minus direct: [+-][\d.]+ points", text)
    assert "Compression " in text and "| baseline | 1,210 |" in text
    assert str(notebook.cells).count("image/png") >= 2


@pytest.mark.slow
def test_05_quantization_aware_distillation(tmp_path):
    notebook = execute(TUTORIALS[4], tmp_path)
    text = outputs(notebook)
    assert "TF_USE_LEGACY_KERAS set: False" in text
    assert "Distiller temperatures: [2.0" in text
    assert float(re.search(r"largest difference after loading: (\S+)", text)[1]) < 1e-5
    qat = float(re.search(r"distilled quantization-aware:\s+([\d.]+)% in TFLM", text)[1])
    ptq = float(re.search(r"post-training int8:\s+([\d.]+)% in TFLM", text)[1])
    assert qat >= 50.0 and ptq >= 50.0  # 3 epochs in the short run
    agreement = float(re.search(r"TFLM vs Keras:\s+([\d.]+)% top-1 agreement", text)[1])
    assert agreement >= 95.0 and "| kind: int8" in text


@pytest.mark.slow
def test_06_when_distillation_pays(tmp_path):
    notebook = execute(TUTORIALS[5], tmp_path)
    text = outputs(notebook)
    assert "['RandomShift1D', 'GaussianNoise', 'InputMixup']" in text
    teacher = float(re.search(r"teacher \(CNN, [\d,]+ parameters\): ([\d.]+)%", text)[1])
    assert teacher >= 80.0
    rows = dict(re.findall(r"^\s*([\w +]+): ([\d.]+)%\s+\([+-][\d.]+ vs strongest", text, re.M))
    assert set(rows) == {
        "scratch",
        "scratch + augmentation",
        "function matching",
        "DKD + function matching",
    }
    assert all(20.0 <= float(value) <= 100.0 for value in rows.values())
    assert re.search(r"teacher's top class: input \d \(\d+%\), view \d \(\d+%\)", text)
    assert str(notebook.cells).count("image/png") >= 2


@pytest.mark.slow
def test_07_distilbert_style_compression(tmp_path):
    notebook = execute(TUTORIALS[6], tmp_path)
    text = outputs(notebook)
    assert "| block_1 | block_2 | copied |" in text
    assert "'distillation_loss/feature_block_1', 'distillation_loss/kl_divergence'" in text
    rows = dict(re.findall(r"^\s*([\w ]+): ([\d.]+)% \([+-][\d.]+ vs scratch\)", text, re.M))
    assert set(rows) == {"scratch", "logits KD", "init from teacher", "DistilBERT recipe"}
    assert float(rows["DistilBERT recipe"]) >= float(rows["scratch"]) + 2.0
    assert re.search(r"top-1 agreement, TFLM int8 vs Keras float \| [\d.]+%", text)
    assert "BATCH_MATMUL" in text and "image/png" in str(notebook.cells)


@pytest.mark.slow
def test_08_distil_a_generating_teacher(tmp_path):
    notebook = execute(TUTORIALS[7], tmp_path)
    text = outputs(notebook)
    assert re.search(r"teacher \([\d,]+ parameters\): exact match [\d.]+%", text)
    assert "'prompts': 2000, 'num_examples': 8000" in text
    assert re.search(r"prompts/s: [\d.]+ - tokens/s: [\d.]+", text)
    weights = [float(w) for w in re.findall(r"log-prob +-?[\d.]+ +weight ([\d.]+)", text)]
    assert len(weights) == 8 and sum(weights[:4]) == pytest.approx(4.0, abs=0.02)
    row = r"^\s*(\S[^:\n]*): ([\d.]+)% \([+-][\d.]+ vs labelled only\)"
    rows = dict(re.findall(row, text, re.M))
    assert set(rows) == {
        "labelled only",
        "+ teacher (greedy)",
        "+ 4 samples weighted by log-prob",
        "+ best of 4",
    }
    assert "image/png" in str(notebook.cells)


@pytest.mark.slow
def test_09_on_policy_distillation(tmp_path):
    notebook = execute(TUTORIALS[8], tmp_path)
    text = outputs(notebook)
    assert re.search(r"teacher \([\d,]+ parameters\): exact match [\d.]+%", text)
    assert re.search(r"offline: exact match [\d.]+% after \d+ steps", text)
    assert re.search(r"on-policy: exact match [\d.]+% after \d+ steps", text)
    assert "'on_policy_fraction': [1.0, 1.0]" in text
    assert "same tokens: True" in text and "image/png" in str(notebook.cells)


@pytest.mark.slow
def test_10_budget_in_firmware_out(tmp_path):
    notebook = execute(TUTORIALS[9], tmp_path)
    text = outputs(notebook)
    teacher = re.search(r"teacher: ([\d,]+) parameters, test accuracy", text)
    assert teacher and int(teacher[1].replace(",", "")) > 50_000, "teacher line"
    budget = r"Budget: flash 16,384 B, RAM 4,096 B \(1\.56% of arduino_nano_33_ble_sense\)\. "
    counts = re.search(budget + r"(\d+) trials, (\d+) feasible", text)
    assert counts and int(counts[1]) == 3, "budget line: " + str(counts)
    rows = re.findall(
        r"trial \d+: +([\d,]+) B flash, distilled ([\d.]+)%, scratch ([\d.]+)%, "
        r"gain ([+-][\d.]+) points",
        text,
    )
    assert rows, "no front candidate against its scratch twin"
    for flash, distilled, scratch, gain in rows:
        assert int(flash.replace(",", "")) <= 16_384
        assert float(gain) == pytest.approx(float(distilled) - float(scratch), abs=0.15)
    assert "mnist1d_student_model_data.h" in text
    exported = (
        r"\| budget \(arduino_nano_33_ble_sense\) \| flash [\d.]+% of 16,384 B, RAM [\d.]+% of"
    )
    assert re.search(exported, text)
    assert re.search(r"\| validation examples \| 1,?000 \|", text)  # the test signals
    tested = re.search(r"searched student ([\d.]+)% \([\d,]+ parameters, int8 in TFLM\)", text)
    summary = re.search(r"\| accuracy, TFLM int8 \| ([\d.]+)% \|", text)
    assert tested and summary and float(tested[1]) == pytest.approx(float(summary[1]), abs=0.06)
    assert "image/png" in str(notebook.cells)


def test_the_tutorials_index_describes_every_notebook_with_its_run_time():
    index = (TUTORIALS[0].parents[1] / "docs" / "tutorials" / "index.md").read_text()
    for path in TUTORIALS:
        row = re.search(rf"^\| \{{doc\}}`[^`]+<{path.stem}>` \|(.+)$", index, re.M)
        assert row, f"{path.name} is not in docs/tutorials/index.md"
        assert re.search(r"\| about \d+ min(utes?)? \|", row[1]), f"{path.name}: no run time"


def test_every_tutorial_states_its_run_time_in_its_title_cell():
    for path in TUTORIALS:
        title = nbformat.read(path, as_version=4).cells[0].source
        assert re.search(r"\*\*Run time:\*\* about \d+ minutes?", title), path.name
