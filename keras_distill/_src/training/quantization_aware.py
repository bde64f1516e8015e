"""Quantization-aware Keras 3 students: fake quantization as TFLite Micro's int8 kernels compute.

`quantization_aware(student)` rebuilds a Keras 3 student with TensorFlow's
`FakeQuantWithMinMaxVars` ops (through `keras.quantizers`; dense kernels are
rounded to the int8 grid with plain ops instead), placed where the TFLite
converter puts int8 tensors: weights symmetric int8 (narrow range), per
output channel for convolutions and per output unit for dense layers (the
converter gives a FULLY_CONNECTED kernel one scale per output unit, in
post-training int8 too); activations asymmetric int8 per tensor, their ranges
learned as moving averages of the batches' minima and maxima and frozen after a
settable number of steps; a batch normalization after a convolution or dense
layer folded into its weights (the converter's folding, with the moving
statistics); ReLU and ReLU6 fused (the activation's range is taken after them).
The converter then reads every scale from the model (a dense kernel's from its
values, already on the grid), so the int8 export needs no representative data
and computes what the model computed in training.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_distill._src.training import tfmot
from keras_distill._src.utils.model_inspection import is_tf_keras

FAKE_QUANT = keras.quantizers.fake_quant_with_min_max_vars
FUSED_ACTIVATIONS = {"linear": None, "relu": ops.relu, "relu6": ops.relu6}
CONVOLUTIONS = {
    keras.layers.Conv1D: "conv",
    keras.layers.Conv2D: "conv",
    keras.layers.DepthwiseConv1D: "depthwise",
    keras.layers.DepthwiseConv2D: "depthwise",
    keras.layers.SeparableConv1D: "separable",
    keras.layers.SeparableConv2D: "separable",
}
# Layers whose int8 kernels keep the input's scale, or that convert to nothing.
SAME_SCALE = (
    keras.layers.InputLayer,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
)
# Layers that compute a new range: an activation quantizer follows them.
NEW_SCALE = (
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.Add,
    keras.layers.Concatenate,
    keras.layers.ReLU,
)
DEFAULT_MOMENTUM = 0.99


def _activation_name(layer) -> str | None:
    """The name of a layer's activation if it is one that fuses, else None."""
    activation = getattr(layer, "activation", None)
    if activation is None:
        return "linear"
    name = keras.activations.serialize(activation)
    name = name if isinstance(name, str) else name.get("config", name.get("class_name"))
    return name if name in FUSED_ACTIVATIONS else None


@keras.saving.register_keras_serializable(package="keras_distill")
class ActivationQuantizer(keras.layers.Layer):
    """Fake-quantizes a tensor to int8 with a range learned from the batches.

    In training, the range is the moving average of the batches' minima and
    maxima (the first batch sets it), always holding 0; after
    `freeze_after_steps` training steps it no longer moves. At inference the
    stored range is used. TFLite's converter turns the op into the int8 scale
    and zero point of the tensor.

    Args:
        momentum: The moving average's weight on the old range, in [0, 1).
        freeze_after_steps: Training steps after which the range is fixed;
            None: never.
        **kwargs: Keras layer arguments (`name`, ...).

    Example:
    >>> import numpy as np
    >>> quantizer = ActivationQuantizer()
    >>> x = np.linspace(-1.0, 3.0, 5, dtype="float32")[None]
    >>> y = quantizer(x, training=True)
    >>> [round(float(v), 3) for v in (quantizer.range_min, quantizer.range_max)]
    [-1.0, 3.0]
    >>> bool(np.abs(np.asarray(y) - x).max() <= 4.0 / 255)
    True
    """

    def __init__(
        self,
        momentum: float = DEFAULT_MOMENTUM,
        freeze_after_steps: int | None = None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")  # fake quantization computes in float32
        super().__init__(**kwargs)
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"`momentum` must be in [0, 1); received momentum={momentum!r}.")
        if freeze_after_steps is not None and (
            isinstance(freeze_after_steps, bool)
            or int(freeze_after_steps) != freeze_after_steps
            or freeze_after_steps < 1
        ):
            raise ValueError(
                "`freeze_after_steps` must be a positive whole number of training steps, or "
                f"None; received freeze_after_steps={freeze_after_steps!r}."
            )
        self.momentum = float(momentum)
        self.freeze_after_steps = freeze_after_steps

    def build(self, input_shape) -> None:
        def state(name, aggregation):
            return self.add_weight(
                shape=(),
                initializer="zeros",
                trainable=False,
                name=name,
                autocast=False,
                aggregation=aggregation,  # replicas of a tf.distribute strategy agree
            )

        self.range_min = state("range_min", "mean")
        self.range_max = state("range_max", "mean")
        self.observed_steps = state("observed_steps", "only_first_replica")

    def call(self, inputs, training=None):
        inputs = ops.cast(inputs, "float32")
        if training:
            self._observe(inputs)
        return FAKE_QUANT(inputs, self.range_min, self.range_max, num_bits=8)

    def _observe(self, values) -> None:
        first = ops.equal(self.observed_steps, 0.0)
        moving = self.freeze_after_steps is None or ops.less(
            self.observed_steps, float(self.freeze_after_steps)
        )
        weight = ops.where(first, 0.0, ops.where(moving, self.momentum, 1.0))
        batch_min = ops.minimum(ops.min(values), 0.0)
        batch_max = ops.maximum(ops.max(values), 0.0)
        self.range_min.assign(weight * self.range_min + (1.0 - weight) * batch_min)
        self.range_max.assign(weight * self.range_max + (1.0 - weight) * batch_max)
        self.observed_steps.assign(self.observed_steps + 1.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(momentum=self.momentum, freeze_after_steps=self.freeze_after_steps)
        return config


def _symmetric_weights(kernel):
    """Fake-quantizes weights to narrow-range symmetric int8, one scale per last-axis index."""
    axes = tuple(range(len(kernel.shape) - 1))
    bound = ops.maximum(ops.max(ops.abs(kernel), axis=axes), 1e-8)
    return FAKE_QUANT(kernel, -bound, bound, num_bits=8, narrow_range=True, axis=-1)


def _per_output_unit(kernel):
    """A dense kernel rounded to narrow-range symmetric int8, one scale per output unit.

    Rounded with ops (the gradient passes straight through), not with a
    per-channel `FakeQuant`: the converter cannot move that op's axis through
    the transpose it puts before FULLY_CONNECTED. The frozen kernel then lies on
    the int8 grid, and the converter quantizes it per output unit to the same
    values.
    """
    scale = ops.maximum(ops.max(ops.abs(kernel), axis=0), 1e-8) / 127.0
    rounded = ops.clip(ops.round(kernel / scale), -127.0, 127.0) * scale
    return kernel + ops.stop_gradient(rounded - kernel)  # exactly `rounded` in float32


def _float32(value):
    return ops.cast(value, "float32")


@keras.saving.register_keras_serializable(package="keras_distill")
class QuantizedWeights(keras.layers.Layer):
    """A dense or convolution layer whose weights are fake-quantized to int8, BN folded in.

    It holds the source layer (`layer`: `Dense`, `Conv1D`, `Conv2D`,
    `DepthwiseConv1D`, `DepthwiseConv2D`, `SeparableConv1D` or
    `SeparableConv2D`) and, optionally, the `BatchNormalization` that followed
    it. Each call folds the normalization into the weights as the TFLite
    converter does (`w * gamma / sqrt(var + eps)`, bias shifted), fake-quantizes
    the weights in float32 (per output unit for dense layers, per output channel
    for convolutions, as TFLite's converter scales them), and applies the
    layer's operation and its fused ReLU/ReLU6 in the layer's compute dtype
    (float16 under mixed precision). A separable convolution converts to a
    depthwise and a 1x1 convolution: `intermediate` (an `ActivationQuantizer`)
    fake-quantizes the tensor between them. In
    training, the normalization runs after the quantized layer on the batch's
    statistics and updates its moving ones, as in the float model; outside
    training it is folded with its moving statistics, which with weights scaled
    per output channel computes the same as normalizing after the quantized layer.

    Args:
        layer: The float layer (its config and weights are taken over).
        batch_norm: The `BatchNormalization` layer to fold, or None.
        intermediate: For a separable convolution (and only then), the
            `ActivationQuantizer` of the depthwise step's output, built with
            the ranges' settings of the other quantizers.
        **kwargs: Keras layer arguments (the dtype policy defaults to the
            layer's).

    Example:
    >>> import numpy as np
    >>> dense = keras.layers.Dense(3, activation="relu")
    >>> dense.build((None, 4))
    >>> quantized = QuantizedWeights(dense)
    >>> x = np.ones((2, 4), "float32")
    >>> bool(np.abs(np.asarray(quantized(x)) - np.asarray(dense(x))).max() < 0.05)
    True
    """

    def __init__(self, layer, batch_norm=None, intermediate=None, **kwargs):
        layer, batch_norm, intermediate = (
            keras.layers.deserialize(item) if isinstance(item, dict) else item
            for item in (layer, batch_norm, intermediate)
        )
        kwargs.setdefault("name", f"{layer.name}_quantized")
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(**kwargs)
        self.layer, self.batch_norm = layer, batch_norm
        self.kind = "dense" if isinstance(layer, keras.layers.Dense) else CONVOLUTIONS[type(layer)]
        self.fused = FUSED_ACTIVATIONS[_activation_name(layer)]
        if (self.kind == "separable") != (intermediate is not None):
            raise ValueError(
                "`intermediate` is the ActivationQuantizer between a separable convolution's "
                "depthwise and 1x1 steps: give one for a separable layer and None otherwise; "
                f"received intermediate={intermediate!r} for {layer.name!r} "
                f"({type(layer).__name__})."
            )
        self.intermediate = intermediate

    def build(self, input_shape) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
        if self.batch_norm is not None and not self.batch_norm.built:
            self.batch_norm.build(self.layer.compute_output_shape(input_shape))
        if self.intermediate is not None and not self.intermediate.built:
            self.intermediate.build(None)

    def _folded(self, fold: bool = True):
        """The kernel and bias in float32, the batch normalization folded in if `fold`."""
        layer = self.layer
        kernel = _float32(layer.pointwise_kernel if self.kind == "separable" else layer.kernel)
        bias = _float32(layer.bias) if layer.use_bias else ops.zeros(ops.shape(kernel)[-1:])
        norm = self.batch_norm
        if norm is None or not fold:
            return kernel, bias
        scale = ops.rsqrt(_float32(norm.moving_variance) + norm.epsilon)
        scale = scale * _float32(norm.gamma) if norm.scale else scale
        offset = _float32(norm.beta) if norm.center else 0.0
        mean = _float32(norm.moving_mean)
        if self.kind == "depthwise":
            shape = ops.shape(kernel)
            scale = ops.reshape(scale, (shape[-2], shape[-1]))
        return kernel * scale, (bias - mean) * ops.reshape(scale, (-1,)) + offset

    def call(self, inputs, training=None):
        batch_statistics = bool(training) and self.batch_norm is not None
        kernel, bias = self._folded(fold=not batch_statistics)
        compute = inputs.dtype
        if self.kind == "dense":
            outputs = ops.matmul(inputs, ops.cast(_per_output_unit(kernel), compute))
        else:
            outputs = self._convolution(inputs, kernel)
        outputs = outputs + ops.cast(bias, compute)
        if batch_statistics:  # normalizes with the batch's statistics, updates the moving ones
            outputs = self.batch_norm(outputs, training=True)
        return outputs if self.fused is None else self.fused(outputs)

    def _convolution(self, inputs, kernel):
        """The convolution; a 1D one computed as 2D, as TFLite runs it (per-channel axis 3)."""
        layer, compute = self.layer, inputs.dtype
        strides, dilation = tuple(layer.strides), tuple(layer.dilation_rate)
        padding = layer.padding
        if padding == "causal":
            inputs = ops.pad(
                inputs, ((0, 0), (dilation[0] * (layer.kernel_size[0] - 1), 0), (0, 0))
            )
            padding = "valid"
        one_d = len(layer.kernel_size) == 1
        depthwise = layer.depthwise_kernel if self.kind == "separable" else kernel
        if one_d:
            inputs, kernel, depthwise = (
                ops.expand_dims(v, i) for v, i in ((inputs, 1), (kernel, 0), (depthwise, 0))
            )
            # the height of 1 takes any stride; TensorFlow's depthwise kernel takes equal ones only
            strides, dilation = (strides[0], *strides), (1, *dilation)
        if self.kind != "depthwise":  # the convolution's or the 1x1 step's kernel, in 2D
            kernel = ops.cast(_symmetric_weights(kernel), compute)
        if self.kind == "conv":
            outputs = ops.conv(inputs, kernel, strides, padding, "channels_last", dilation)
        else:
            outputs = self._depthwise(inputs, depthwise, strides, padding, dilation)
        if self.kind == "separable":
            between = ops.cast(self.intermediate(outputs), compute)
            outputs = ops.conv(between, kernel, 1, "valid", "channels_last")
        return ops.squeeze(outputs, 1) if one_d else outputs

    def _depthwise(self, inputs, kernel, strides, padding, dilation):
        """A depthwise convolution with its kernel fake-quantized per output channel."""
        shape = ops.shape(kernel)
        flat = ops.reshape(_float32(kernel), (*shape[:-2], shape[-2] * shape[-1]))
        flat = _symmetric_weights(flat)
        kernel = ops.cast(ops.reshape(flat, shape), inputs.dtype)
        return ops.depthwise_conv(inputs, kernel, strides, padding, "channels_last", dilation)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config["layer"] = keras.layers.serialize(self.layer)
        for key in ("batch_norm", "intermediate"):
            if getattr(self, key) is not None:
                config[key] = keras.layers.serialize(getattr(self, key))
        return config


def _tensors(value) -> list:
    return [t for t in keras.tree.flatten(value) if hasattr(t, "shape")]


def _consumers(model) -> dict:
    """For each layer's name, the layers that take its output."""
    producer = {id(t): layer.name for layer in model.layers for t in _tensors(layer.output)}
    consumers = {layer.name: [] for layer in model.layers}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        for tensor in _tensors(layer.input):
            if id(tensor) in producer:
                consumers[producer[id(tensor)]].append(layer)
    return consumers


def _unsupported(layer) -> str | None:
    """Why a layer cannot be made quantization-aware, or None."""
    if getattr(layer, "data_format", None) == "channels_first":
        return "TFLite runs channels_last tensors only: build it with data_format='channels_last'"
    if isinstance(layer, (keras.layers.Dense, *CONVOLUTIONS)) and _activation_name(layer) is None:
        return (
            f"its activation {keras.activations.serialize(layer.activation)!r} does not fuse "
            "into an int8 kernel: use relu, relu6 or none"
        )
    supported = (keras.layers.Dense, keras.layers.BatchNormalization, *CONVOLUTIONS)
    if isinstance(layer, supported + SAME_SCALE + NEW_SCALE):
        return None
    if isinstance(layer, keras.layers.Activation) and _activation_name(layer) is not None:
        return None
    return "TFLite Micro has no int8 kernel that quantization-aware training can model for it"


def _check_student(student) -> None:
    if is_tf_keras(student):
        return
    if not isinstance(student, keras.Model) or not hasattr(student, "layers"):
        raise TypeError(
            "quantization_aware() takes a Keras model (Sequential or Functional); received "
            f"{type(student).__name__}."
        )
    if not student.built or not student.inputs:
        raise ValueError(
            "quantization_aware() needs a Sequential or Functional student with known inputs "
            f"(keras.Input(...)); {student.name!r} has none. Build it on an Input first."
        )
    problems = [
        f"{layer.name} ({type(layer).__name__}): {why}"
        for layer in student.layers
        if (why := _unsupported(layer))
    ]
    if problems:
        raise ValueError(
            "These layers of the student cannot be trained quantization-aware for TFLite "
            f"Micro: {'; '.join(problems)}. Replace them (Dense, Conv1D, Conv2D, "
            "DepthwiseConv1D/2D and SeparableConv1D/2D with BatchNormalization, pooling, "
            "Flatten, Reshape, Add, Concatenate and ReLU/ReLU6 are supported), or export the "
            "float student with post-training int8 (kd.micro.export with representative data)."
        )


def _folds(model, consumers: dict) -> dict:
    """The batch normalizations to fold: {dense or convolution name: its normalization}."""
    folds = {}
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Dense, *CONVOLUTIONS)):
            after = consumers[layer.name]
            linear = _activation_name(layer) == "linear"
            if linear and len(after) == 1 and isinstance(after[0], keras.layers.BatchNormalization):
                folds[layer.name] = after[0]
    return folds


def _quantized_outputs(model, consumers: dict, folds: dict) -> set:
    """The names of the layers whose output gets an activation quantizer."""
    folded = {norm.name for norm in folds.values()}
    names = set()
    for layer in model.layers:
        if isinstance(layer, SAME_SCALE) or layer.name in folds:
            continue
        after = consumers[layer.name]
        fused_next = len(after) == 1 and isinstance(
            after[0], (keras.layers.Activation, keras.layers.ReLU)
        )
        computes = isinstance(layer, (keras.layers.Dense, *CONVOLUTIONS)) or layer.name in folded
        if not (computes and fused_next):
            names.add(layer.name)
    return names


def _copy(layer):
    """A new layer with the configuration and the weights of `layer`."""
    twin = layer.__class__.from_config(layer.get_config())
    twin.build(layer.input.shape)
    twin.set_weights(layer.get_weights())
    return twin


class _Rewrite:
    """The clone and call functions that turn a float model into its quantization-aware twin."""

    def __init__(self, model, momentum: float, freeze_after_steps):
        consumers = _consumers(model)
        self.folds = _folds(model, consumers)
        self.folded = {norm.name for norm in self.folds.values()}
        self.quantized = _quantized_outputs(model, consumers, self.folds)
        self.settings = {"momentum": momentum, "freeze_after_steps": freeze_after_steps}
        self.source, self.produced, self.inputs = {}, set(), {}

    def clone(self, layer):
        if isinstance(layer, (keras.layers.Dense, *CONVOLUTIONS)):
            norm = self.folds.get(layer.name)
            intermediate = None
            if isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
                name = f"{layer.name}_depthwise_quant"
                intermediate = ActivationQuantizer(name=name, **self.settings)
            norm = None if norm is None else _copy(norm)
            twin = QuantizedWeights(_copy(layer), norm, intermediate)
        elif layer.name in self.folded:
            twin = keras.layers.Identity(name=f"{layer.name}_folded")
        else:
            twin = layer.__class__.from_config(layer.get_config())
        self.source[id(twin)] = layer
        return twin

    def call(self, layer, *args, **kwargs):
        args = keras.tree.map_structure(self._quantized_input, args)
        if kwargs.get("mask", 0) is None:
            kwargs.pop("mask")  # recorded on the float layers' nodes; nothing here masks
        outputs = layer(*args, **kwargs)
        self.produced.update(id(t) for t in _tensors(outputs))
        source = self.source.get(id(layer))
        if source is not None and len(layer.weights) == len(source.weights) > 0:
            layer.set_weights(source.get_weights())
        name = source.name if source is not None else layer.name
        if name in self.quantized:
            quantizer = ActivationQuantizer(name=f"{name}_quant", **self.settings)
            outputs = quantizer(outputs)
            self.produced.update(id(t) for t in _tensors(outputs))
        return outputs

    def _quantized_input(self, value):
        if not hasattr(value, "shape") or id(value) in self.produced:
            return value
        if id(value) not in self.inputs:
            quantizer = ActivationQuantizer(name=f"input_{len(self.inputs)}_quant", **self.settings)
            self.inputs[id(value)] = quantizer(value)
            self.produced.add(id(self.inputs[id(value)]))
        return self.inputs[id(value)]


def quantization_aware(
    student, *, momentum: float = DEFAULT_MOMENTUM, freeze_after_steps: int | None = None
):
    """Returns the student with fake quantization as TFLite Micro will run it in int8.

    For a Keras 3 student (Sequential or Functional), a new Keras 3 model with
    the same layers' weights, where dense and convolution layers (`Dense`,
    `Conv1D/2D`, `DepthwiseConv1D/2D`, `SeparableConv1D/2D`) quantize their
    weights to int8 (per output unit for dense layers, per output channel for
    convolutions: the scales TFLite's converter gives them in post-training
    int8 too), a `BatchNormalization` that follows one is folded into its
    weights, and every tensor the int8 model holds (the inputs,
    each layer's output after its fused ReLU/ReLU6, the tensor between a
    separable convolution's depthwise and 1x1 steps) is fake-quantized with a
    range learned during training (moving averages of the batches' minima and
    maxima, frozen after `freeze_after_steps` steps). Train it as any student
    (`kd.Distiller`, schedules, stored teacher outputs, `augment=`, mixed
    precision: the fake quantization stays in float32, `jit_compile=True`,
    `tf.distribute.MirroredStrategy`); save and load it as a `.keras` file
    (ranges and step counters included); `kd.micro.export` converts it to a
    fully int8 model without representative data. The float student is not
    changed.

    For a tf_keras (Keras 2) student it applies tensorflow-model-optimization's
    `quantize_model`, as before (with `TF_USE_LEGACY_KERAS=1`).

    Args:
        student: A Keras 3 Sequential or Functional model with logits out, or a
            tf_keras model.
        momentum: The moving average's weight on the old activation range.
        freeze_after_steps: Training steps after which activation ranges stop
            moving; None: they move throughout training.

    Returns:
        The quantization-aware model.

    Raises:
        ValueError: A layer has no int8 kernel quantization-aware training can
            model (each such layer named, with what to do), or the model has no
            known inputs.

    Example:
    >>> import numpy as np
    >>> import keras_distill as kd
    >>> student = keras.Sequential([
    ...     keras.Input((8, 1)),
    ...     keras.layers.Conv1D(4, 3),
    ...     keras.layers.BatchNormalization(),
    ...     keras.layers.ReLU(),
    ...     keras.layers.Flatten(),
    ...     keras.layers.Dense(3),
    ... ])
    >>> aware = kd.quantization_aware(student, freeze_after_steps=100)
    >>> aware.predict(np.zeros((2, 8, 1), "float32"), verbose=0).shape
    (2, 3)
    """
    _check_student(student)
    if is_tf_keras(student):
        return tfmot.quantization_aware(student)
    probe = ActivationQuantizer(momentum=momentum, freeze_after_steps=freeze_after_steps)
    rewrite = _Rewrite(student, probe.momentum, probe.freeze_after_steps)
    inputs, outputs = (
        tensors[0] if len(tensors) == 1 else tensors
        for tensors in (student.inputs, student.outputs)
    )
    functional = keras.Model(inputs, outputs, name=student.name)
    return keras.models.clone_model(
        functional, clone_function=rewrite.clone, call_function=rewrite.call
    )
