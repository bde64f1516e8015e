"""Flash and RAM budgets of common microcontroller boards."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Board:
    """A board's memory: the whole flash and the whole RAM of its MCU.

    The model array lives in flash and the tensor arena in RAM, next to the
    firmware's own code and data, so a model that fits the budget with little
    headroom may still not fit a real application.

    Example:
    >>> BOARDS["raspberry_pi_pico"].ram_bytes
    270336
    """

    name: str
    flash_bytes: int
    ram_bytes: int
    source: str


BOARDS = {
    board.name: board
    for board in (
        Board(
            "arduino_nano_33_ble_sense",
            flash_bytes=1024 * 1024,
            ram_bytes=256 * 1024,
            source="nRF52840 (1 MB flash, 256 KB RAM): Arduino Nano 33 BLE Sense datasheet "
            "and Nordic nRF52840 Product Specification v1.7.",
        ),
        Board(
            "esp32",
            flash_bytes=4 * 1024 * 1024,
            ram_bytes=320 * 1024,
            source="ESP32-WROOM-32 module (4 MB flash); of the ESP32's 520 KB SRAM, 320 KB is "
            "data RAM (DRAM) for static data and heap: ESP32 Technical Reference Manual, "
            "System and Memory chapter.",
        ),
        Board(
            "stm32f746g_disco",
            flash_bytes=1024 * 1024,
            ram_bytes=320 * 1024,
            source="STM32F746NG (1 MB flash, 320 KB RAM incl. 64 KB DTCM): ST datasheet "
            "DS10916; the 32F746GDISCOVERY board's external SDRAM is not counted.",
        ),
        Board(
            "raspberry_pi_pico",
            flash_bytes=2 * 1024 * 1024,
            ram_bytes=264 * 1024,
            source="RP2040 (264 KB SRAM) with 2 MB QSPI flash (W25Q16JV): Raspberry Pi "
            "Pico datasheet.",
        ),
    )
}


def get_board(name: str) -> Board:
    """Returns the preset for a board name.

    Args:
        name: One of `BOARDS`' keys (case and `-`/space insensitive).

    Returns:
        The `Board`.

    Raises:
        ValueError: If the board is unknown; the message lists the presets.

    Example:
    >>> get_board("ESP32").flash_bytes
    4194304
    """
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key not in BOARDS:
        raise ValueError(
            f"Unknown board {name!r}; presets: {', '.join(sorted(BOARDS))}. "
            "For another board pass flash_bytes= and ram_bytes=."
        )
    return BOARDS[key]
