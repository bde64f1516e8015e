"""What a `.tflite` flatbuffer holds: its ops and its input and output tensors."""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_distill._src.micro.errors import MicroExportError

QUANTIZED_TYPES = ("int8", "int16", "uint8")  # activation and weight types of quantized models
CONVERSION_OPS = ("QUANTIZE", "DEQUANTIZE")  # ops that convert types rather than compute


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Shape, type and int8 quantization of a model input or output.

    Example:
    >>> TensorInfo((1, 64), "int8", 0.0039, -128).quantize(np.array([1.0]))
    array([127], dtype=int8)
    """

    shape: tuple
    dtype: str
    scale: float
    zero_point: int

    def quantize(self, values: np.ndarray) -> np.ndarray:
        """Real values to the tensor's type: `q = round(x / scale) + zero_point`."""
        if self.dtype == "float32" or not self.scale:
            return np.asarray(values, self.dtype)
        info = np.iinfo(self.dtype)
        q = np.round(np.asarray(values) / self.scale) + self.zero_point
        return np.clip(q, info.min, info.max).astype(self.dtype)

    def dequantize(self, values: np.ndarray) -> np.ndarray:
        """The tensor's values as reals: `x = scale * (q - zero_point)`."""
        if self.dtype == "float32" or not self.scale:
            return np.asarray(values, "float32")
        return (self.scale * (np.asarray(values, "float32") - self.zero_point)).astype("float32")


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What a `.tflite` flatbuffer contains: its ops, its I/O tensors, the types it computes in.

    Example:
    >>> info = ModelInfo(("FULLY_CONNECTED",), {}, (), (), compute_types=("int32", "int8"))
    >>> info.ops, info.kind
    (('FULLY_CONNECTED',), 'int8')
    """

    ops: tuple  # builtin op names, in order of first use
    op_tensors: dict  # op name -> names of the tensors it produces
    inputs: tuple  # TensorInfo per input
    outputs: tuple  # TensorInfo per output
    float_tensors: tuple = ()  # names of float tensors inside the graph (not its inputs/outputs)
    compute_types: tuple = ()  # types the ops other than CONVERSION_OPS read and write, sorted

    @property
    def kind(self) -> str:
        """What the model computes in, read from its tensor types (not from how it was made).

        The types that its ops read and write, QUANTIZE and DEQUANTIZE aside:
        `"int8"` (or `"int16/int8"` for 16-bit activations) when they are all
        integers, `"float32"` when none is quantized, `"mixed int8 and
        float32"` when some ops compute in float (a conversion that fell back
        to float for part of the graph, or int8 weights with float
        activations). An int8 model that quantizes a float32 input and
        dequantizes its output (`float_io=True`) is `"int8"`; a graph without
        other ops is described by its input and output types.
        """
        inside = set(self.compute_types) or {t.dtype for t in self.inputs + self.outputs}
        floats = "/".join(sorted(t for t in inside if t.startswith("float")))
        quantized = "/".join(sorted(t for t in inside if t in QUANTIZED_TYPES))
        if floats and quantized:
            return f"mixed {quantized} and {floats}"
        return floats or quantized or "/".join(sorted(inside)) or "unknown"

    @property
    def fully_integer(self) -> bool:
        """Whether every op but QUANTIZE and DEQUANTIZE reads and writes integers only."""
        return not any(t.startswith("float") for t in self.compute_types) and not (
            self.float_tensors
        )


def inspect_model(model_bytes: bytes) -> ModelInfo:
    """Reads the ops and the input/output tensors of a `.tflite` model.

    Args:
        model_bytes: The flatbuffer.

    Returns:
        A `ModelInfo`.

    Raises:
        MicroExportError: If the bytes are not a TFLite flatbuffer.

    Example:
    >>> import keras, tempfile
    >>> import keras_distill as kd
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> x = np.random.rand(8, 4).astype("float32")
    >>> exported = kd.micro.export(model, x, tempfile.mkdtemp())
    >>> kd.micro.inspect_model(exported.tflite_path.read_bytes()).ops
    ('FULLY_CONNECTED',)
    """
    from tflite_micro.python.tflite_micro import runtime
    from tflite_micro.tensorflow.lite.micro.python.schema_py_generated import TensorType

    if len(model_bytes) < 8 or model_bytes[4:8] != b"TFL3":
        raise MicroExportError(
            "This is not a TFLite model (no 'TFL3' flatbuffer identifier); give a Keras "
            "model, a .keras file or a .tflite file."
        )
    model = runtime.convert_bytearray_to_object(bytearray(model_bytes))
    op_tensors = _op_tensors(model)
    main = model.subgraphs[0]
    types = {value: name.lower() for name, value in vars(TensorType).items()}

    def tensor_info(index):
        tensor = main.tensors[index]
        quantization = tensor.quantization
        scale = quantization.scale if quantization is not None else None
        zero = quantization.zeroPoint if quantization is not None else None
        return TensorInfo(
            shape=tuple(int(d) for d in tensor.shape),
            dtype=types[tensor.type],
            scale=float(scale[0]) if scale is not None and len(scale) else 0.0,
            zero_point=int(zero[0]) if zero is not None and len(zero) else 0,
        )

    boundary = set(main.inputs) | set(main.outputs)
    floats = tuple(
        _tensor_name(tensor)
        for index, tensor in enumerate(main.tensors)
        if index not in boundary and types[tensor.type] in ("float32", "float16")
    )
    computed = {
        types[subgraph.tensors[index].type]
        for name, subgraph, operator in _operators(model)
        if name not in CONVERSION_OPS
        for index in [*operator.inputs, *operator.outputs]
        if index >= 0  # -1: an optional input left out
    }
    return ModelInfo(
        ops=tuple(op_tensors),
        op_tensors=op_tensors,
        inputs=tuple(tensor_info(i) for i in main.inputs),
        outputs=tuple(tensor_info(i) for i in main.outputs),
        float_tensors=floats,
        compute_types=tuple(sorted(computed)),
    )


def _op_tensors(model) -> dict:
    """Builtin op name -> names of the tensors it produces, ops in order of first use."""
    op_tensors = {}
    for name, subgraph, operator in _operators(model):
        outputs = [_tensor_name(subgraph.tensors[i]) for i in operator.outputs]
        op_tensors.setdefault(name, []).extend(outputs)
    return op_tensors


def _operators(model):
    """`(op name, subgraph, operator)` of every operator, in order (custom ops as `CUSTOM:x`)."""
    from tflite_micro.python.tflite_micro import runtime
    from tflite_micro.tensorflow.lite.micro.python.schema_py_generated import BuiltinOperator

    names = {value: name for name, value in vars(BuiltinOperator).items() if name.isupper()}
    for subgraph in model.subgraphs:
        for operator in subgraph.operators if subgraph.operators is not None else []:
            code = model.operatorCodes[operator.opcodeIndex]
            name = names.get(runtime.get_builtin_code_from_operator_code(code), "UNKNOWN")
            if name == "CUSTOM":
                name = f"CUSTOM:{code.customCode.decode()}"
            yield name, subgraph, operator


def _tensor_name(tensor) -> str:
    name = tensor.name
    return name.decode() if isinstance(name, bytes) else str(name)
