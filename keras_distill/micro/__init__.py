"""TFLite Micro: int8 export, TFLM verification, boards, C++ sources and firmware."""

from keras_distill._src.micro.boards import BOARDS, Board, get_board
from keras_distill._src.micro.errors import MicroExportError
from keras_distill._src.micro.exporter import export
from keras_distill._src.micro.firmware import TARGETS, Firmware, FirmwareError, build
from keras_distill._src.micro.model_info import ModelInfo, inspect_model
from keras_distill._src.micro.result import MicroExport
from keras_distill._src.micro.target_run import TargetRun, run_on_target

__all__ = [
    "BOARDS",
    "Board",
    "Firmware",
    "FirmwareError",
    "MicroExport",
    "MicroExportError",
    "ModelInfo",
    "TARGETS",
    "TargetRun",
    "build",
    "export",
    "get_board",
    "inspect_model",
    "run_on_target",
]
