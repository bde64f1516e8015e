"""The demo: its settings, the extras it needs, what it prints, and the quick run end to end."""

import re
import subprocess
import sys

import pytest

from keras_distill._src.demo import job
from keras_distill._src.search.budget import Budget, Latency
from keras_distill._src.search.records import Candidate, SearchResult, Trial

RECIPE = {"temperature": 2.0, "alpha": 0.5, "function_matching": True, "quantization_aware": False}


def front_candidate(number, int8, scratch, flash):
    return Candidate(
        number,
        {"family": "conv1d", "filters": 8},
        "cnn",
        RECIPE,
        1_000,
        9_000,
        flash,
        2_000,
        int8,
        int8 + 0.005,
        scratch,
        Latency(1e-3, "estimated"),
        "trial.keras",
    )


def infeasible_trial(number):
    return Trial(
        number,
        {"family": "dense", "width": 128},
        "cnn",
        RECIPE,
        "over budget: flash 40,000 B > 13,536 B",
        40_000,
        None,
        20_000,
        20_000,
        Latency(1e-3, "estimated"),
        None,
        None,
        0.8,
        0.8,
        None,
    )


def demo_result(searched_int8):
    front = [front_candidate(3, 0.86, 0.83, 9_000), front_candidate(1, 0.80, 0.80, 5_000)]
    budget = Budget(13_536, 3_680, board=job.BOARD)
    search = SearchResult(front, [infeasible_trial(0)], budget, "flash", "search")

    def row(name, int8):
        return job.StudentOnBoard(name, "30 epochs", 1_000, 9_000, 9_000, 3_000, int8, int8)

    return job.DemoResult(
        (13_706, 163_200, 0.926),
        row("hand-built student: MLP 64-64", 0.78),
        row("searched student: family=conv1d filters=8", searched_int8),
        search,
        search_seconds=120.0,
        seconds=250.0,
    )


def test_settings_are_the_full_run_or_quick_with_the_given_values_in_place():
    assert job.settings() == job.FULL
    assert job.settings(True) == job.QUICK
    chosen = job.settings(False, epochs=7, trials=None)
    assert chosen["epochs"] == 7 and chosen["trials"] == job.FULL["trials"]


def test_a_missing_extra_is_named_before_anything_is_written(tmp_path, monkeypatch):
    missing = {"no_such_module_for_the_demo": ("no-such-package", "examples")}
    monkeypatch.setattr(job, "EXTRAS_MODULES", {**job.EXTRAS_MODULES, **missing})
    with pytest.raises(ImportError, match=r"no-such-package.*pip install 'keras-distill\[examples"):
        job.run_demo(output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_text_shows_the_front_beside_scratch_and_the_measured_verdict():
    text = job.results_text(demo_result(searched_int8=0.86))
    assert "== The search: 1 candidates, 0 within the hand-built student's flash" in text
    assert "| 3 | family=conv1d filters=8 | cnn | T=2 a=0.5 FM |" in text
    assert (
        "Distilled minus scratch over the 2 students of the front: +1.5 points on average " in text
    )
    assert "(1 of 2 gained)" in text
    assert "| teacher (CNN) | 13,706 | 163,200 |" in text
    assert "Searched minus hand-built: +8.0 points: the searched student beats" in text
    assert text.endswith("Done in 250 s.")
    worse = job.results_text(demo_result(searched_int8=0.75))
    assert "Searched minus hand-built: -3.0 points: in this run the search did not beat" in worse


@pytest.mark.slow
def test_demo_quick_searches_compares_exports_and_plots(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "keras_distill", "demo", "--quick", "--output-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout
    assert "hand-built student: MLP 64-64, function matching" in text  # a progress bar
    trials = re.findall(r"^trial \d+: .*$", text, re.MULTILINE)  # a line per trial
    assert len(trials) == 3 and all(line.endswith(", quantization-aware") for line in trials)
    rows = dict(
        (name, [int(number.replace(",", "")) for number in numbers])
        for name, *numbers in re.findall(
            r"^\| ((?:hand-built|searched) student[^|]*) \| ([\d,]+) \| ([\d,]+) \| "
            r"([\d,]+) B \| ([\d,]+) B \|",
            text,
            re.MULTILINE,
        )
    )
    assert rows["hand-built student: MLP 64-64"][:2] == [7_434, 7_296]  # params, MACs
    (searched,) = [value for name, value in rows.items() if name.startswith("searched")]
    hand_built = rows["hand-built student: MLP 64-64"]
    assert searched[1] > 0  # the float model's MACs, also for a quantization-aware student
    for measured, limit in zip(searched[2:], hand_built[2:]):  # within the same flash and RAM
        assert measured <= limit
    assert re.search(r"^Searched minus hand-built: [+-][\d.]+ points: ", text, re.MULTILINE)
    assert "| top-1 agreement, TFLM int8 vs Keras float |" in text
    for name in ("student.tflite", "student_model_data.cc", "student_model_data.h"):
        assert (out / "micro" / name).stat().st_size > 0, name
    report = (out / "search" / "report.md").read_text()
    assert report.startswith("Budget: flash 13,408 B")
    # the front's best trained again after the search: 3 epochs (its trial: 2), exported as measured
    best = re.search(
        r"^\| \d+ \| [^|]+ \| cnn \| [^|]+ \| 3 \| [\d,]+ \| ([\d,]+) \|", report, re.M
    )
    assert best and int(best[1].replace(",", "")) == searched[2]
    assert (out / "front.png").read_bytes()[:4] == b"\x89PNG"
    assert f"Figure: {out / 'front.png'}" in text
