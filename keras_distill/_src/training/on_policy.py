"""`OnPolicyDistiller`: GKD, a causal LM student learns from its own samples, scored by a teacher.

GKD (Agarwal et al., ICLR 2024): for each batch of prompts, with probability
`lmbda` the student samples its responses (on-policy); otherwise the
reference responses (or, without them, the teacher's greedy answers) are
used. The teacher scores every response position with its next-token
distribution, and the student minimises the generalized Jensen-Shannon
divergence `JSD(beta)` to it per token (`beta = 0`: forward KL, `beta = 1`:
reverse KL; see `keras_distill._src.losses.token_divergences`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_distill._src.losses import token_divergences
from keras_distill._src.objective.objective import checked_temperature
from keras_distill._src.teachers import cached_decoding
from keras_distill._src.teachers.outputs import (
    check_vocabularies,
    finite_in_graph,
    teacher_name,
)
from keras_distill._src.training import on_policy_inputs
from keras_distill._src.utils.model_inspection import as_logits, probability_outputs

SCHEDULED = ("lmbda", "beta", "temperature")


class _Untracked:
    """Holds the teacher out of Keras' tracking: not among the weights, never saved."""

    def __init__(self, value):
        self.value = value


CHECKS = {
    "lmbda": lambda v: on_policy_inputs.check_fraction("lmbda", v),
    "beta": token_divergences.check_beta,
    "temperature": checked_temperature,
}


@keras.saving.register_keras_serializable(package="keras_distill")
class OnPolicyDistiller(keras.Model):
    """Distils a causal language model on its own samples (GKD), through `fit`.

    `fit(prompts, responses=None)`: `x` holds prompts, `(n, width)` token ids
    right-padded with `pad_id` (an array or a `tf.data` dataset of batches);
    `y`, optional, the reference responses `(n, <= max_new_tokens)` used by the
    off-policy batches. Each batch is on-policy with probability `lmbda`: the
    student samples responses at `temperature` (inference mode, no gradient,
    keras-hub's sampler with a key/value cache when the student is a keras-hub
    `CausalLM`); otherwise it takes the reference responses, or the teacher's
    greedy ones. The teacher scores every position; the loss is `JSD(beta)`
    per response token at `temperature`, averaged over each response's tokens,
    then over the batch (as in the GKD paper).

    How it runs: the choice and the sampling happen per batch outside the
    compiled graph (`compile` sets `run_eagerly=True` for the outer step, so
    `lmbda` decides in Python and the sampler, itself a compiled
    `tf.function`, runs between steps); the teacher's scoring and the
    gradient step are each a compiled `tf.function` over fixed shapes
    (sequences padded to `prompt width + max_new_tokens`).

    `lmbda`, `beta` and `temperature` are non-trainable variables: assign them
    with `distiller.lmbda = value` (checked) from a callback to schedule them.
    The logs hold them, the mean `response_length` (tokens) and the
    `on_policy_fraction` of the epoch's batches. `teacher_forward_passes`
    counts the teacher's batched forward passes (scoring one per batch,
    greedy answering one per token). The teacher is never trained nor saved:
    a loaded distiller has `teacher=None` until one is given.

    Args:
        teacher: A Keras causal LM (functional, subclassed or keras-hub
            `CausalLM`), or a callable taking `(batch, length)` int32 sequences
            and returning next-token log-probabilities `(batch, length,
            vocabulary)` or a top-k pair `(log_probs, token_ids)`, each
            `(batch, length, k)`. A callable may carry `vocabulary_size`.
        student: The Keras causal LM to train (same vocabulary as the teacher).
        lmbda: Probability of an on-policy batch, in [0, 1].
        beta: The JSD's interpolation, in [0, 1].
        temperature: Sampling and loss temperature, > 0.
        max_new_tokens: Response tokens at most.
        end_id: The token that ends a response (kept in it), or None.
        pad_id: The padding token.
        seed: Seed of the on-policy choice and of the sampling.
        use_cache: The student's decoding: "auto", True or False (see
            `kd.generation.TokenDecoder`).
        **kwargs: `keras.Model` arguments (`name`).

    Example:
    >>> import numpy as np
    >>> from keras_distill.generation import small_gpt2_lm
    >>> teacher = small_gpt2_lm(10, 8, blocks=1, width=8, heads=2, seed=1)
    >>> student = small_gpt2_lm(10, 8, blocks=1, width=8, heads=2, seed=2)
    >>> distiller = OnPolicyDistiller(teacher, student, lmbda=1.0, max_new_tokens=3)
    >>> distiller.compile(keras.optimizers.Adam(1e-3))
    >>> history = distiller.fit(np.array([[1, 2], [3, 4]]), epochs=1, verbose=0)
    >>> history.history["on_policy_fraction"]
    [1.0]
    """

    def __init__(
        self,
        teacher,
        student: keras.Model,
        lmbda: float = 0.5,
        beta: float = 0.5,
        temperature: float = 1.0,
        max_new_tokens: int = 16,
        end_id: int | None = None,
        pad_id: int = 0,
        seed: int | None = None,
        use_cache: str | bool = "auto",
        **kwargs,
    ):
        values = {"lmbda": lmbda, "beta": beta, "temperature": temperature}
        values = {key: CHECKS[key](value) for key, value in values.items()}
        if int(max_new_tokens) < 1:
            raise ValueError(f"`max_new_tokens` must be >= 1; received {max_new_tokens!r}.")
        super().__init__(**kwargs)
        self.student, self.max_new_tokens = student, int(max_new_tokens)
        self.end_id, self.pad_id, self.seed, self.use_cache = end_id, pad_id, seed, use_cache
        self.vocabulary_size = cached_decoding.vocabulary_size(student)
        self._variables = {
            key: keras.Variable(value, dtype="float32", trainable=False, name=key)
            for key, value in values.items()
        }
        self._student_decoder = cached_decoding.TokenDecoder(
            student, max_new_tokens, self._variables["temperature"], end_id, pad_id, seed, use_cache
        )
        self.teacher = teacher
        self._rng = np.random.default_rng(seed)
        self._trackers = [
            keras.metrics.Mean(name=n) for n in ("loss", "on_policy_fraction", "response_length")
        ]
        self._gradient_step = tf.function(self._train_on, reduce_retracing=True)
        self._compiled_loss = tf.function(self._loss, reduce_retracing=True)
        self.teacher_forward_passes = 0

    # -- the teacher ----------------------------------------------------------

    @property
    def teacher(self):
        """The teacher (a Keras LM or a callable), or None when loaded without one."""
        return self._held_teacher.value

    def __setattr__(self, name: str, value) -> None:
        # `distiller.teacher = t` must not reach Keras' tracking (it would own t's weights).
        if name == "teacher":
            self._attach_teacher(value)
        else:
            super().__setattr__(name, value)

    def _attach_teacher(self, teacher) -> None:
        """Keeps the teacher untracked; checks its vocabulary; prepares its passes."""
        self._held_teacher, self._teacher_decoder = _Untracked(teacher), None
        if teacher is None:
            return
        if isinstance(teacher, keras.Model):
            check_vocabularies(cached_decoding.vocabulary_size(teacher), self.vocabulary_size)
            self._teacher_probabilities = probability_outputs(teacher, "auto", "teacher")
            self._teacher_decoder = cached_decoding.TokenDecoder(
                teacher, self.max_new_tokens, 0.0, self.end_id, self.pad_id
            )
            self._teacher_log_probs = tf.function(self._keras_teacher_scores, reduce_retracing=True)
        elif callable(teacher):
            check_vocabularies(getattr(teacher, "vocabulary_size", None), self.vocabulary_size)
        else:
            raise TypeError(
                "`teacher` must be a Keras causal LM or a callable returning next-token "
                f"log-probabilities; received {teacher!r}."
            )

    def _keras_teacher_scores(self, tokens):
        """A Keras teacher's next-token log-probabilities, its outputs checked finite in the graph.

        A teacher whose graph ends in a softmax gives probabilities: their log is taken.
        """
        outputs = cached_decoding.lm_logits(self.teacher, tokens, pad_id=self.pad_id)
        outputs = finite_in_graph(outputs, teacher_name(self.teacher))
        return ops.log_softmax(as_logits(outputs, self._teacher_probabilities), axis=-1)

    def _teacher_scores(self, tokens: np.ndarray):
        """The teacher's next-token log-probabilities (full or top-k) for the sequences."""
        self.teacher_forward_passes += 1
        if isinstance(self.teacher, keras.Model):
            return self._teacher_log_probs(tokens)
        name = teacher_name(self.teacher)
        return on_policy_inputs.checked_scores(
            self.teacher(tokens), tokens.shape, self.vocabulary_size, name
        )

    # -- the scheduled values ---------------------------------------------------

    def _set(self, key: str, value) -> None:
        self._variables[key].assign(CHECKS[key](value))

    lmbda = property(
        lambda self: self._variables["lmbda"],
        lambda self, v: self._set("lmbda", v),
        doc="Probability of an on-policy batch (a variable; set it with `=`, checked).",
    )
    beta = property(
        lambda self: self._variables["beta"],
        lambda self, v: self._set("beta", v),
        doc="Interpolation of the JSD between forward KL (0) and reverse KL (1); a variable.",
    )
    temperature = property(
        lambda self: self._variables["temperature"],
        lambda self, v: self._set("temperature", v),
        doc="The sampling and loss temperature (a variable).",
    )

    def _values(self) -> dict:
        return {key: float(ops.convert_to_numpy(v)) for key, v in self._variables.items()}

    # -- fit --------------------------------------------------------------------

    def compile(self, optimizer="adam", **kwargs) -> None:
        """`Model.compile` with the optimizer; the outer step runs eagerly (see the class)."""
        kwargs.update(run_eagerly=True, jit_compile=False)
        super().compile(optimizer=optimizer, **kwargs)

    def fit(self, x=None, y=None, **kwargs):
        """`Model.fit` on prompts `x` and optional reference responses `y`; checked first."""
        if self.teacher is None:
            raise ValueError(
                "This distiller has no teacher (it was loaded, and teachers are never saved); "
                "set `distiller.teacher = ...` before `fit`."
            )
        for key, value in self._values().items():
            CHECKS[key](value)  # a variable assigned around the setter
        if y is None and not isinstance(x, tf.data.Dataset):
            self._check_off_policy_source(has_references=False)
        if x is not None and not isinstance(x, tf.data.Dataset):
            self._check_arrays(np.asarray(x), None if y is None else np.asarray(y))
        return super().fit(x, y, **kwargs)

    def _check_off_policy_source(self, has_references: bool) -> None:
        if not has_references and self._teacher_decoder is None and self._values()["lmbda"] < 1:
            raise ValueError(
                f"lmbda={self._values()['lmbda']} makes some batches off-policy, which need "
                "reference responses (`y`) or a teacher that can answer (a Keras LM); the "
                "teacher is a callable. Pass `y`, or set lmbda=1."
            )

    def _check_arrays(self, prompts: np.ndarray, responses) -> None:
        contexts = {
            "student": cached_decoding.context_length(self.student),
            "teacher": cached_decoding.context_length(self.teacher)
            if isinstance(self.teacher, keras.Model)
            else None,
        }
        on_policy_inputs.check_width(prompts.shape[1], self.max_new_tokens, contexts)
        if responses is not None and responses.shape[1] > self.max_new_tokens:
            raise ValueError(
                f"The reference responses have {responses.shape[1]} tokens, more than "
                f"max_new_tokens={self.max_new_tokens}; raise max_new_tokens or cut them."
            )

    # -- the steps ----------------------------------------------------------------

    def _sequences(self, prompts: np.ndarray, responses, on_policy: bool):
        """The batch's prompt-and-response sequences, padded to one width."""
        self._check_arrays(prompts, responses)
        width = prompts.shape[1] + self.max_new_tokens
        if on_policy:
            decoded = self._student_decoder(prompts)
        elif responses is not None:
            decoded = on_policy_inputs.joined(prompts, responses, width, self.end_id, self.pad_id)
        else:
            self._check_off_policy_source(has_references=False)
            self.teacher_forward_passes += self.max_new_tokens
            decoded = self._teacher_decoder(prompts)
        return on_policy_inputs.padded_to(decoded, width, self.pad_id)

    def _loss(self, tokens, mask, teacher_scores, training):
        """`JSD(beta)` at each response token, averaged per response, then over the batch."""
        logits = cached_decoding.lm_logits(
            self.student, tokens, training=training, pad_id=self.pad_id
        )
        teacher = keras.tree.map_structure(lambda t: t[:, :-1], teacher_scores)
        per_token = token_divergences.token_divergence(
            teacher, logits[:, :-1], self._variables["beta"], self._variables["temperature"]
        )
        loss = token_divergences.masked_sequence_mean(per_token, mask[:, 1:])
        return loss + ops.sum([ops.cast(v, "float32") for v in self.student.losses] or [0.0])

    def build(self, input_shape=None) -> None:
        """Nothing to build: the student is built (a loaded one is built by Keras)."""
        self.built = True

    def _train_on(self, tokens, mask, teacher_scores):
        """One compiled gradient step on the student; the loss."""
        with tf.GradientTape() as tape:
            loss = self._loss(tokens, mask, teacher_scores, training=True)
        variables = self.student.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    def _step(self, data, training: bool) -> dict:
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        prompts = np.asarray(ops.convert_to_numpy(x))
        responses = None if y is None else np.asarray(ops.convert_to_numpy(y))
        if training and not self.optimizer.built:
            self.optimizer.build(self.student.trainable_variables)
        on_policy = training and bool(self._rng.random() < self._values()["lmbda"])
        decoded = self._sequences(prompts, responses, on_policy)
        scores = self._teacher_scores(decoded.tokens)
        step = self._gradient_step if training else self._compiled_loss
        args = (decoded.tokens, decoded.response_mask, scores)
        loss = step(*args) if training else step(*args, training=False)
        for tracker, value in zip(
            self._trackers,
            (loss, float(on_policy), decoded.response_mask.sum(-1).mean()),
            strict=True,
        ):
            tracker.update_state(value)
        return {**{t.name: t.result() for t in self._trackers}, **self._values()}

    def train_step(self, data) -> dict:
        """One batch: choose on/off-policy, build the responses, score them, one gradient step."""
        return self._step(data, training=True)

    def test_step(self, data) -> dict:
        """The loss on the reference (or the teacher's greedy) responses, without sampling."""
        return self._step(data, training=False)

    @property
    def metrics(self) -> list:
        """The loss, the on-policy fraction and the mean response length (reset per epoch)."""
        return list(self._trackers)

    def call(self, inputs, training=None):
        """The student's next-token logits."""
        return cached_decoding.lm_logits(
            self.student, inputs, training=bool(training), pad_id=self.pad_id
        )

    # -- serialization -----------------------------------------------------------

    def compile_from_config(self, config: dict) -> None:
        """Compiles a loaded distiller as it was saved (Keras skips custom `compile`s)."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(optimizer=config.get("optimizer", "adam"))

    def get_config(self) -> dict:
        """The student and the settings (current scheduled values); never the teacher."""
        return {
            "name": self.name,
            "student": keras.saving.serialize_keras_object(self.student),
            **self._values(),
            "max_new_tokens": self.max_new_tokens,
            "end_id": self.end_id,
            "pad_id": self.pad_id,
            "seed": self.seed,
            "use_cache": self.use_cache,
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> OnPolicyDistiller:
        """A distiller without a teacher from `get_config()` output."""
        config = dict(config)
        config["student"] = keras.saving.deserialize_keras_object(
            config["student"], custom_objects=custom_objects
        )
        return cls(teacher=None, **config)
