"""The teachers of the Beam pipeline (`kd.labelling.beam`) as `RunInference` handlers.

Elements arrive pre-batched: an example handler's element is a whole
`keras_distill._src.labelling.beam_steps.ShardChunk` (a shard's contiguous
examples as arrays), so `RunInference` is told to form batches of one element
(`batch_elements_kwargs`), and `run_inference` calls the teacher on the
chunk's arrays in slices of `batch_size` rows, as `label_with_teacher` does:
no example is pickled, grouped or stacked on its own.
"""

from __future__ import annotations

import os

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from keras_distill._src.labelling import calls, responses


class ChunkHandler(ModelHandler):
    """Runs the teacher on whole shard chunks through `call_teacher` (the local path's checks).

    Example:
    >>> ChunkHandler().batch_elements_kwargs()
    {'min_batch_size': 1, 'max_batch_size': 1}
    """

    output = "logits"
    batch_size = 256  # rows per teacher call, as `label_with_teacher`'s default

    def batch_elements_kwargs(self):
        """One chunk per `run_inference` call: the elements are batches already."""
        return {"min_batch_size": 1, "max_batch_size": 1}

    def run_inference(self, batch, model, inference_args=None):
        """Each chunk's checked `(outputs, confidence or None)`: one `PredictionResult` each."""
        return [PredictionResult(chunk, self.chunk_outputs(chunk, model)) for chunk in batch]

    def chunk_outputs(self, chunk, model):
        """The teacher on a chunk in slices of `batch_size` rows (a Keras teacher on that many)."""
        parts = [
            calls.call_teacher(
                model,
                chunk.x[i : i + self.batch_size],
                self.output,
                chunk.first + i,
                self.batch_size,
            )
            for i in range(0, len(chunk.x), self.batch_size)
        ]
        outputs = np.concatenate([p[0] for p in parts])
        if parts[0][1] is None:
            return outputs, None
        return outputs, np.concatenate([p[1] for p in parts])


class KerasModelHandler(ChunkHandler):
    """A Keras teacher loaded once per worker from a `.keras` file.

    Args:
        path: The saved model (`model.save("teacher.keras")`), a local path
            or a URL that every worker can read (`gs://...`).

    Example:
    >>> KerasModelHandler("teacher.keras").path
    'teacher.keras'
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)

    def load_model(self):
        """The Keras model, loaded without its training configuration."""
        import keras

        return keras.saving.load_model(self.path, compile=False)


class CallableModelHandler(ChunkHandler):
    """Any Python callable from a NumPy batch to outputs (a black box), as a Beam model handler.

    Args:
        teacher: The callable (pickled to the workers).

    Example:
    >>> CallableModelHandler(len).load_model() is len
    True
    """

    def __init__(self, teacher):
        self.teacher = teacher

    def load_model(self):
        """The callable itself."""
        return self.teacher


class GenerateModelHandler(ModelHandler):
    """A generating teacher (`generate(prompts) -> responses`) as a Beam model handler.

    Its examples are `(index, prompt tokens, prompt as given)`; each result is
    the prompt's checked samples (`keras_distill._src.labelling.responses.sample_batch`).

    Args:
        generate: The callable (pickled to the workers).
        options: A `keras_distill._src.labelling.responses.SequenceOptions`.

    Example:
    >>> handler = GenerateModelHandler(lambda b: [[3]] * len(b), responses.SequenceOptions(8, 4))
    >>> handler.options.max_length
    4
    """

    batch_size = 64  # prompts per `generate` call

    def __init__(self, generate, options):
        self.generate, self.options = generate, options

    def batch_elements_kwargs(self):
        """Batches of `batch_size` prompts."""
        return {"min_batch_size": self.batch_size, "max_batch_size": self.batch_size}

    def load_model(self):
        """The callable itself."""
        return self.generate

    def run_inference(self, batch, model, inference_args=None):
        """The checked samples of each prompt, and whether they are scored."""
        samples, scored = responses.sample_batch(
            model, [b[1] for b in batch], [b[2] for b in batch], [b[0] for b in batch], self.options
        )
        return [PredictionResult(b, (s, scored)) for b, s in zip(batch, samples, strict=True)]
