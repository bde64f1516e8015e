"""TFLite Micro export: int8 conversion, TFLM verification, arena, C++ sources."""

from keras_distill.micro.boards import BOARDS, Board, get_board
from keras_distill.micro.errors import MicroExportError
from keras_distill.micro.exporter import MicroExport, export

__all__ = ["BOARDS", "Board", "MicroExport", "MicroExportError", "export", "get_board"]
