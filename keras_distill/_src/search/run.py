"""One process's share of a search: the Optuna objective, the front, the scratch twins."""

from __future__ import annotations

import dataclasses
import os
import time

import keras
import optuna

from keras_distill._src.micro.firmware import FirmwareError
from keras_distill._src.search import storage, training
from keras_distill._src.search.budget import Latency, estimate_latency, measured_latency
from keras_distill._src.search.preflight import over_budget, preflight_candidate
from keras_distill._src.search.progress import SearchProgress
from keras_distill._src.search.records import Candidate, SearchResult, Trial
from keras_distill._src.search.space import Choices, build_candidate
from keras_distill._src.training.quantization_aware import quantization_aware
from keras_distill._src.utils.model_inspection import multiply_accumulates

NOT_MEASURED = float(2**31)  # the second objective of a candidate that could not be measured
REPORT_NAME = "report.md"


def _set_constraints(trial: optuna.Trial, constraints: dict) -> None:
    """Gives Optuna the trial's constraint values (<= 0 fits), once: it ignores a second value."""
    for name, value in constraints.items():
        trial.set_constraint(name, value)


class SearchRun:
    """Runs a search's trials in this process and gathers its result.

    Args:
        study: The Optuna study (two objectives: int8 accuracy, `minimize`).
        store: Its storage.
        space: The `SearchSpace`.
        plan: The `training.TrainingPlan`.
        budget: The `Budget`.
        minimize: `"flash"`, `"arena"` or `"latency"`.
        seed: Seeds each candidate's initialisation (plus its trial number).
        directory: The search's folder.
        tflm_dir: A TFLite Micro tree: each trained candidate's latency is then
            counted on the emulated Cortex-M4; None estimates it from MACs.
    """

    def __init__(self, study, store, space, plan, budget, minimize, seed, directory, tflm_dir=None):
        self.study, self.store, self.space, self.plan = study, store, space, plan
        self.budget, self.minimize, self.seed, self.directory = budget, minimize, seed, directory
        self.tflm_dir = tflm_dir
        self.trials = 0
        self.progress = SearchProgress(0, 0)

    def run(self, trials: int, verbose: int) -> None:
        """Runs trials until the study holds `trials` finished ones (all processes)."""
        self.trials = trials
        self.progress = SearchProgress(trials, verbose)
        storage.recover_stale(self.study, self.store)
        self.progress.resumed([self.record(t) for t in storage.finished(self.study)])
        if len(storage.finished(self.study)) >= trials:
            return
        for index, choices in enumerate(self.space.suggested):  # once per search (see objective)
            self.study.enqueue_trial(choices, {"suggested": index}, skip_if_exists=True)
        self.study.optimize(
            self.objective,
            callbacks=[optuna.study.MaxTrialsCallback(trials), self._after_trial],
            gc_after_trial=True,
        )

    def _after_trial(self, study, frozen) -> None:
        storage.recover_stale(study, self.store)
        if frozen.state == optuna.trial.TrialState.COMPLETE:
            self.progress.trial(self.record(frozen), len(storage.finished(study)))

    def objective(self, trial: optuna.Trial) -> tuple:
        """Pre-flight, and if the candidate fits, distil and measure it."""
        if storage.is_surplus(self.study, trial.number, self.trials):
            self.study.stop()
            raise optuna.TrialPruned("the search already has its trials")
        twin = storage.queued_twin(self.study, trial)
        if twin is not None:  # two processes queued a suggestion at once: the first one runs it
            raise optuna.TrialPruned(f"the suggested candidate of trial {twin} again")
        with storage.heartbeat(trial):
            record = self._measured(trial)
        trial.set_user_attr("record", record.to_json())
        second = {"flash": record.flash_bytes, "arena": record.arena_bytes}
        second = second.get(self.minimize, record.latency.seconds)
        return (record.int8_accuracy or 0.0, NOT_MEASURED if second is None else float(second))

    def _seed(self, trial) -> int:
        """A retried trial starts from the weights of the trial it repeats."""
        return self.seed + int(trial.user_attrs.get("retry_of", trial.number))

    def _measured(self, trial: optuna.Trial) -> Trial:
        start = time.perf_counter()
        keras.utils.set_random_seed(self._seed(trial))
        choices = Choices(trial.suggest_categorical)
        model = build_candidate(self.space, choices, self.plan.num_classes)
        architecture = dict(choices.values)  # before the recipe's choices join them
        recipe = self._recipe(choices)
        shape = dict(architecture=architecture, teacher=recipe.pop("teacher"), recipe=recipe)
        latency = estimate_latency(model, self.budget.clock_hz)
        sizes = dict(params=model.count_params(), macs=multiply_accumulates(model), latency=latency)
        x_train, aware = self.plan.split.x_train, recipe["quantization_aware"]
        model, checked = preflight_candidate(model, x_train, self.budget, latency, aware)
        if checked.feasible:
            return self._trained(trial, model, checked, shape, sizes, start)
        _set_constraints(trial, checked.constraints)
        return Trial(
            trial.number,
            **shape,
            reason=checked.reason,
            flash_bytes=checked.flash_bytes,
            arena_bytes=checked.arena_bytes,
            **sizes,
            int8_accuracy=None,
            float_accuracy=None,
            preflight_seconds=checked.seconds,
            seconds=time.perf_counter() - start,
            model_path=None,
        )

    def _trained(self, trial, model, checked, shape: dict, sizes: dict, start: float) -> Trial:
        """A feasible candidate distilled and measured; its constraints as measured then."""
        recipe = shape["recipe"]
        training.distil(self.plan, model, shape["teacher"], recipe)
        int8 = training.measured_int8(
            self.plan, model, checked.arena_bytes, recipe["quantization_aware"]
        )
        latency, constraints, reason = self._held_after_training(int8, checked, sizes["latency"])
        sizes = {**sizes, "latency": latency}
        _set_constraints(trial, {**checked.constraints, **constraints})
        path = None if reason else self._saved_student(model, f"trial_{trial.number}")
        return Trial(
            trial.number,
            **shape,
            reason=reason,  # an infeasible one leaves no student
            flash_bytes=int8.flash_bytes,
            arena_bytes=checked.arena_bytes,
            **sizes,
            int8_accuracy=int8.validation.int8_accuracy,
            float_accuracy=int8.validation.float_accuracy,
            preflight_seconds=checked.seconds,
            seconds=time.perf_counter() - start,
            model_path=path,
        )

    def _held_after_training(self, int8, checked, estimate: Latency) -> tuple:
        """The trained candidate against the budget: `(latency, constraints, reason or None)`.

        With a TFLM tree its latency is counted, replacing the `estimate`; a
        build or run that fails makes the candidate infeasible, with the error.
        The pre-flight's flash holds after training (it converts weights as
        distinct as trained ones); this keeps a candidate that grew anyway, or
        whose counted latency exceeds the limit its estimate kept, off the front.
        """
        latency, not_counted = estimate, None
        if self.tflm_dir is not None:
            try:
                latency = self._latency_on_target(int8, checked.arena_bytes)
            except FirmwareError as error:
                not_counted = f"not counted on the {training.LATENCY_TARGET}: {error}"
        flash, arena = int8.flash_bytes, checked.arena_bytes
        constraints, problems = over_budget(flash, arena, latency, self.budget)
        if not_counted is not None:
            return latency, {**constraints, "latency": 1.0}, not_counted
        reason = None if problems is None else f"over budget after training: {problems}"
        return latency, constraints, reason

    def _saved_student(self, model: keras.Model, name: str) -> str:
        """Saves a trained student in the search's folder; returns its path."""
        path = os.path.join(self.directory, "students", f"{name}.keras")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        model.save(path)
        return path

    def _latency_on_target(self, int8: training.Int8Measurement, arena: int) -> Latency:
        """The latency of the trained candidate's instructions counted on the emulated core."""
        instructions = training.instructions_on_target(self.plan, int8, arena, self.tflm_dir)
        return measured_latency(instructions, self.budget.clock_hz)

    def _recipe(self, choices: Choices) -> dict:
        trying_fm = self.space.function_matching if self.plan.augment is not None else (False,)
        return {
            "teacher": choices.choose("teacher", tuple(self.plan.teachers)),
            "temperature": choices.choose("temperature", self.space.temperatures),
            "alpha": choices.choose("alpha", self.space.alphas),
            "function_matching": choices.choose("function_matching", trying_fm),
            "quantization_aware": choices.choose(
                "quantization_aware", self.space.quantization_aware
            ),
        }

    @staticmethod
    def record(frozen) -> Trial:
        """The `Trial` a finished Optuna trial stored."""
        return Trial.from_json(frozen.user_attrs["record"])

    def result(self, final_epochs: int | None = None, final_candidates: int = 1) -> SearchResult:
        """The `SearchResult`: the front beside its scratch twins, and every trial.

        With `final_epochs`, the front's best `final_candidates` (by the
        search's int8 accuracy) are trained again from the start for that many
        epochs with their recipe, and so are their scratch twins. Whatever no
        process did yet is done here.
        """
        records = [self.record(t) for t in storage.finished(self.study)]
        front = sorted(self._front(records), key=lambda r: (-r.int8_accuracy, self._cost(r)))
        candidates = []
        for rank, record in enumerate(front):
            is_final = final_epochs is not None and rank < final_candidates
            # a final candidate needs training again unless its trial already trained that long
            needs_training = is_final and final_epochs != self.plan.epochs
            epochs = final_epochs if is_final else self.plan.epochs
            trained = self._final(record, epochs) if needs_training else record
            scratch = self._scratch(trained, epochs)
            candidates.append(Candidate.from_trial(trained, scratch, epochs, record.int8_accuracy))
        candidates.sort(key=lambda c: (-c.int8_accuracy, c.flash_bytes))
        split = self.plan.split
        result = SearchResult(
            candidates,
            records,
            self.budget,
            self.minimize,
            self.directory,
            split.x_train[: training.CALIBRATION_EXAMPLES],
            (split.x_test, split.y_test),
        )
        report = os.path.join(self.directory, REPORT_NAME)
        with open(report, "w") as file:
            file.write(result.to_markdown() + "\n")
        self.progress.done(result, report)
        return result

    def _cost(self, record: Trial) -> float:
        value = {"flash": record.flash_bytes, "arena": record.arena_bytes}
        value = value.get(self.minimize, record.latency.seconds)
        return NOT_MEASURED if value is None else value

    def _front(self, records: list) -> list:
        """The feasible trials no other feasible trial beats on both objectives."""
        feasible = [r for r in records if r.feasible]

        def beaten(a: Trial) -> bool:
            return any(
                b.int8_accuracy >= a.int8_accuracy
                and self._cost(b) <= self._cost(a)
                and (b.int8_accuracy > a.int8_accuracy or self._cost(b) < self._cost(a))
                for b in feasible
            )

        return [r for r in feasible if not beaten(r)]

    def _rebuilt(self, record: Trial) -> keras.Model:
        """The trial's student, untrained, from the initialisation its trial had.

        Quantization-aware if its trial was (the scratch twin then trains so too).
        """
        keras.utils.set_random_seed(self.seed + record.number)
        model = build_candidate(
            self.space, Choices.stored(record.architecture), self.plan.num_classes
        )
        return quantization_aware(model) if record.recipe["quantization_aware"] else model

    def _final(self, record: Trial, epochs: int) -> Trial:
        """The trial's candidate distilled again from the start for `epochs`, measured.

        Its flash is its trial's when the space names its layers (the default
        space does; the int8 model stores the names), so it stays within the budget.
        """
        key = f"final_{record.number}_{epochs}"
        if key in self.study.user_attrs:
            return Trial.from_json(self.study.user_attrs[key])
        start = time.perf_counter()
        model = self._rebuilt(record)
        training.distil(self.plan, model, record.teacher, record.recipe, epochs)
        int8 = training.measured_int8(
            self.plan, model, record.arena_bytes, record.recipe["quantization_aware"]
        )
        path = self._saved_student(model, f"trial_{record.number}_final")
        trained = dataclasses.replace(
            record,
            flash_bytes=int8.flash_bytes,
            int8_accuracy=int8.validation.int8_accuracy,
            float_accuracy=int8.validation.float_accuracy,
            seconds=time.perf_counter() - start,
            model_path=path,
        )
        self.study.set_user_attr(key, trained.to_json())
        self.progress.final(record, trained, epochs)
        return trained

    def _scratch(self, record: Trial, epochs: int) -> float:
        """The int8 accuracy of the candidate's architecture trained on the labels alone."""
        key = f"scratch_{record.number}_{epochs}"
        if key in self.study.user_attrs:
            return self.study.user_attrs[key]
        model = self._rebuilt(record)
        training.scratch(self.plan, model, record.recipe["function_matching"], epochs)
        int8 = training.measured_int8(
            self.plan, model, record.arena_bytes, record.recipe["quantization_aware"]
        )
        accuracy = int8.validation.int8_accuracy
        self.study.set_user_attr(key, accuracy)
        self.progress.scratch(record, accuracy, epochs)
        return accuracy
