"""Augmentation that the teacher and the student see the same way (`Distiller(augment=...)`).

Keras' own preprocessing layers work as they are; these add input mixup and
cutmix without label mixing, and shifts for 1-D signals.
"""

from keras_distill._src.training.augment import (
    InputCutMix,
    InputMixup,
    RandomShift1D,
    default_augmentation,
)

__all__ = ["InputCutMix", "InputMixup", "RandomShift1D", "default_augmentation"]
