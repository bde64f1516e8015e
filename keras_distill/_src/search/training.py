"""Training inside a search: teacher outputs stored once, candidates distilled from them.

Every trial of a search (and every process sharing it) reads the same stored
teacher outputs (`label_with_teacher`, once per teacher); only function
matching, whose teacher must see each augmented view, runs the teacher live.
"""

from __future__ import annotations

import dataclasses
import os
import time

import keras
import numpy as np

from keras_distill._src.labelling import TeacherLabelsError, label_with_teacher, load_teacher_labels
from keras_distill._src.micro import export_validation
from keras_distill._src.micro.model_info import ModelInfo
from keras_distill._src.micro.result import ValidationResult
from keras_distill._src.micro.verify import with_margin
from keras_distill._src.search.preflight import int8_model
from keras_distill._src.studies.datasets import Split
from keras_distill._src.studies.training_recipes import (
    TrainingSettings,
    train_distilled,
    train_from_scratch,
)
from keras_distill._src.training.distiller import Distiller

CALIBRATION_EXAMPLES = 200  # representative inputs for a trained candidate's int8 ranges
# How every trial (distilled, and its scratch twin) trains: Adam at a high peak rate decayed
# to zero by a cosine over the trial's few epochs. Chosen on the demo's data (MNIST-1D, a
# small 1-D CNN and an MLP, from scratch): Keras' constant 1e-3 leaves such short runs far
# from what the same student reaches.
TRIAL_LEARNING_RATE = 1e-2
TRIAL_SCHEDULE = "cosine"
LOCK_WAIT_SECONDS = 600  # how long a process waits for another one labelling the same data
LATENCY_TARGET = "cortex-m4"
LATENCY_EXAMPLES = 20  # inferences counted on the emulated core (the median is taken)
VALIDATION_ARENA_MARGIN = 0.25  # room over the measured arena for the Python interpreter


@dataclasses.dataclass(frozen=True)
class TrainingPlan:
    """What every trial trains with: the data, the stored outputs and the settings.

    Attributes:
        split: Training and validation data (the validation part as `test`).
        teachers: Name -> live teacher (for function matching).
        labels: Name -> folder of the teacher's stored outputs.
        num_classes: Classes of the labels.
        epochs: Epochs per candidate.
        batch_size: Batch size.
        augment: The augmentation of function matching (and its scratch twins).
    """

    split: Split
    teachers: dict
    labels: dict
    num_classes: int
    epochs: int
    batch_size: int
    augment: object = None

    def settings(self, function_matching: bool, epochs: int | None = None) -> dict:
        """The `TrainingSettings` fields of a run with or without the augmentation.

        `epochs` replaces the plan's (the final training of a front candidate).
        """
        return {
            "epochs": epochs or self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": TRIAL_LEARNING_RATE,
            "schedule": TRIAL_SCHEDULE,
            "augment": self.augment if function_matching else None,
        }


def label_once(teachers: dict, x: np.ndarray, y: np.ndarray, directory: str) -> dict:
    """Stores each teacher's outputs on the training data, once; returns name -> folder.

    A folder that holds this teacher's complete outputs on this data is kept as
    it is; while another process labels it, this one waits.
    """
    folders = {}
    for name, teacher in teachers.items():
        folder = os.path.join(directory, "labels", name)
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                label_with_teacher(teacher, (x, y), folder, verbose=0)
                break
            except TeacherLabelsError as error:
                if "another process" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
        folders[name] = folder
    return folders


def distil(
    plan: TrainingPlan, student: keras.Model, teacher: str, recipe: dict, epochs: int | None = None
) -> float:
    """Distils `student` with `recipe`; returns its float accuracy on the validation data.

    From the stored outputs of `teacher`, or (function matching) from the live
    teacher on each augmented batch; for the plan's epochs unless `epochs` is given.
    """
    objective = {"temperature": recipe["temperature"], "alpha": recipe["alpha"]}
    settings = plan.settings(recipe["function_matching"], epochs)
    if recipe["function_matching"]:
        return train_distilled(plan.teachers[teacher], student, plan.split, **settings, **objective)
    training = TrainingSettings(**settings)
    stored = load_teacher_labels(
        plan.labels[teacher], plan.batch_size, shuffle=len(plan.split.x_train), seed=0
    )
    distiller = Distiller(None, student, **objective)
    distiller.compile(
        training.optimizer(len(plan.split.x_train)),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return training.fit(distiller, stored, None, plan.split)


def scratch(
    plan: TrainingPlan, model: keras.Model, function_matching: bool, epochs: int | None = None
) -> float:
    """Trains `model` on the labels alone, with the same epochs and augmentation."""
    return train_from_scratch(model, plan.split, **plan.settings(function_matching, epochs))


@dataclasses.dataclass(frozen=True)
class Int8Measurement:
    """A trained candidate's int8 model and what the TFLM interpreter measured of it.

    Attributes:
        model_bytes: The int8 flatbuffer.
        info: What it holds (`inspect_model`).
        validation: Float and int8 accuracy on the validation data.
    """

    model_bytes: bytes
    info: ModelInfo
    validation: ValidationResult

    @property
    def flash_bytes(self) -> int:
        """The flatbuffer's size: the flash the model takes."""
        return len(self.model_bytes)


def measured_int8(
    plan: TrainingPlan, model: keras.Model, arena: int, quantization_aware: bool
) -> Int8Measurement:
    """The trained model converted to int8 and run in TFLM on the validation data.

    A quantization-aware model converts with the ranges it learned; the others
    are calibrated on training inputs.
    """
    samples = None if quantization_aware else plan.split.x_train[:CALIBRATION_EXAMPLES]
    model_bytes, info = int8_model(model, samples)
    validation = (plan.split.x_test, plan.split.y_test)
    arena = with_margin(arena, VALIDATION_ARENA_MARGIN)
    result = export_validation.validate(model, model_bytes, info, validation, arena)
    return Int8Measurement(model_bytes, info, result)


def instructions_on_target(
    plan: TrainingPlan, measurement: Int8Measurement, arena: int, tflm_dir
) -> int:
    """Median instructions of one inference of the int8 model on the emulated Cortex-M4.

    Built once with TFLite Micro's Makefile from `tflm_dir` and run in QEMU on
    the first validation inputs, whose outputs must equal the Python
    interpreter's bit for bit.

    Raises:
        FirmwareError: If the build or the run fails, or the outputs differ.
    """
    return export_validation.instructions_on_target(
        "candidate",
        measurement.info,
        measurement.model_bytes,
        (arena, with_margin(arena, VALIDATION_ARENA_MARGIN)),
        plan.split.x_test[:LATENCY_EXAMPLES],
        LATENCY_TARGET,
        tflm_dir,
    )
