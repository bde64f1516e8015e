"""What a search prints: a line per trial (feasible or why not, its numbers, the best so far)."""

from __future__ import annotations

import keras

from keras_distill._src.utils.console import print_msg


def describe(trial) -> str:
    """A trial's candidate in one line: architecture, teacher and recipe."""
    architecture = " ".join(f"{key}={value}" for key, value in trial.architecture.items())
    recipe = trial.recipe
    matching = ", function matching" if recipe["function_matching"] else ""
    aware = ", quantization-aware" if recipe["quantization_aware"] else ""
    return (
        f"{architecture}; teacher {trial.teacher}, T={recipe['temperature']:g}, "
        f"alpha={recipe['alpha']:g}{matching}{aware}"
    )


def outcome(trial) -> str:
    """A trial's numbers, or why it was not trained."""
    if not trial.feasible:
        trained = trial.int8_accuracy is not None  # over the budget after training
        when = "training" if trained else f"a {trial.preflight_seconds:.1f} s pre-flight"
        return f"infeasible after {when} ({trial.reason})"
    latency = "" if trial.latency.seconds is None else f", ~{trial.latency.milliseconds:.2f} ms"
    return (
        f"int8 {trial.int8_accuracy:.1%} (float {trial.float_accuracy:.1%}), flash "
        f"{trial.flash_bytes:,} B, arena {trial.arena_bytes:,} B, {trial.params:,} params, "
        f"{trial.macs:,} MACs{latency}, {trial.seconds:.0f} s"
    )


class SearchProgress:
    """Prints each finished trial and advances one progress bar over the search.

    Args:
        trials: The search's total of trials.
        verbose: 0 prints nothing.
    """

    def __init__(self, trials: int, verbose: int):
        self.trials, self.verbose = trials, verbose
        self.best = None
        self.bar = None

    def _print(self, message: str) -> None:
        if self.verbose:
            print_msg(message)

    def _note_best(self, trial) -> None:
        if trial.feasible and (self.best is None or trial.int8_accuracy > self.best.int8_accuracy):
            self.best = trial

    def resumed(self, finished: list) -> None:
        """Notes the trials an earlier run (or another process) finished."""
        for trial in finished:
            self._note_best(trial)
        if finished:
            self._print(f"Resuming: {len(finished)} of {self.trials} trials finished already.")
        if self.verbose:
            self.bar = keras.utils.Progbar(self.trials, unit_name="trial")
            self.bar.update(min(len(finished), self.trials))

    def trial(self, trial, finished: int) -> None:
        """Prints a finished trial and the best so far; advances the bar."""
        self._note_best(trial)
        best = "none feasible yet"
        if self.best is not None:
            best = f"{self.best.int8_accuracy:.1%} int8 (trial {self.best.number})"
        self._print(f"\ntrial {trial.number}: {describe(trial)}\n  {outcome(trial)}; best {best}")
        if self.bar is not None:
            self.bar.update(min(finished, self.trials))

    def final(self, trial, trained, epochs: int) -> None:
        """Prints a front candidate trained again after the search."""
        self._print(
            f"front trial {trial.number} trained again for {epochs} epochs: int8 "
            f"{trained.int8_accuracy:.1%} (float {trained.float_accuracy:.1%}; "
            f"{trial.int8_accuracy:.1%} int8 after its trial), {trained.seconds:.0f} s"
        )

    def scratch(self, trial, accuracy: float, epochs: int) -> None:
        """Prints a front candidate's scratch twin."""
        self._print(
            f"front trial {trial.number} from scratch, {epochs} epochs: int8 {accuracy:.1%} "
            f"(distilled {trial.int8_accuracy:.1%})"
        )

    def done(self, result, report: str) -> None:
        """Says the search is done and where its report (the front's table) is."""
        feasible = sum(trial.feasible for trial in result.trials)
        self._print(
            f"\nSearch done: {len(result.trials)} trials, {feasible} feasible, "
            f"{len(result.front)} on the front. Report: {report}"
        )
