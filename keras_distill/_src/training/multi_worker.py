"""Workarounds for Keras bugs, each in one place and limited to the versions it was written for.

keras-team/keras#20585 (open as of Keras 3.15.1): `fit()` fails under
`tf.distribute.MultiWorkerMirroredStrategy`, first when it reduces the first
batch of a distributed dataset to build the model symbolically (a `PerReplica`
conversion error), then when it reduces each step's scalar logs with
`strategy.reduce("MEAN", value, axis=0)`. Because the `Distiller` owns its
training step, it can avoid both: it builds from one worker-local batch, and it
gives its logs a length-one axis so that the reduction averages them over all
replicas of all workers. `tests/test_multi_worker.py` checks both that plain
Keras still fails and that the `Distiller` works, so an upgrade that fixes or
changes the behaviour is noticed at once.
"""

from __future__ import annotations

import keras
import tensorflow as tf

# Keras versions with keras-team/keras#20585, checked up to this one.
KERAS_20585_LAST_CHECKED = (3, 15, 1)


def _version(text: str) -> tuple:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def keras_20585_applies(strategy) -> bool:
    """Whether the multi-worker workaround is needed for this strategy and Keras.

    Example:
    >>> import tensorflow as tf
    >>> keras_20585_applies(tf.distribute.get_strategy())
    False
    """
    return (
        _version(keras.__version__) <= KERAS_20585_LAST_CHECKED
        and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and _workers(strategy) > 1
    )


def _workers(strategy) -> int:
    """The number of worker tasks (the chief counts) in the strategy's cluster."""
    resolver = strategy.cluster_resolver
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    return sum(len(cluster.get(job, ())) for job in ("chief", "worker"))


def local_batch(strategy, batch):
    """The first worker-local value of each distributed tensor in a batch."""
    return keras.tree.map_structure(
        lambda value: (
            strategy.experimental_local_results(value)[0]
            if isinstance(value, tf.distribute.DistributedValues)
            else value
        ),
        batch,
    )


def replica_logs(logs: dict) -> dict:
    """Scalar logs with a length-one axis, which Keras' multi-worker reduction averages.

    Example:
    >>> import tensorflow as tf
    >>> tuple(replica_logs({"loss": tf.constant(1.0)})["loss"].shape)
    (1,)
    """
    return {key: tf.reshape(value, (1,)) for key, value in logs.items()}
