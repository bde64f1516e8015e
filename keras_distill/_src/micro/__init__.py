"""TFLite Micro export: int8 conversion, TFLM verification, arena, C++ sources, firmware."""

from keras_distill._src.micro.boards import BOARDS, Board, get_board
from keras_distill._src.micro.errors import MicroExportError
from keras_distill._src.micro.exporter import export
from keras_distill._src.micro.firmware import TARGETS, Firmware, FirmwareError, build
from keras_distill._src.micro.result import MicroExport
from keras_distill._src.micro.target_run import TargetRun, run_on_target

__all__ = [
    "BOARDS",
    "Board",
    "Firmware",
    "FirmwareError",
    "MicroExport",
    "MicroExportError",
    "TARGETS",
    "TargetRun",
    "build",
    "export",
    "get_board",
    "run_on_target",
]
