"""`keras-distill search --config search.json`: a search described in a JSON file."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os

import numpy as np

from keras_distill._src.search.find import find_student
from keras_distill._src.search.records import SearchResult
from keras_distill._src.search.space import default_space

DATA_ARRAYS = ("x_train", "y_train", "x_val", "y_val")
NOT_IN_JSON = ("teachers", "train_data", "validation_data", "space", "augment")
SPACE_KEYS = ("quantization_aware",)  # recipe options of the default space a config may set


def config_keys() -> tuple:
    """The keys a search config accepts: `teachers`, `data`, `find_student`'s keywords, options.

    Example:
    >>> "flash_bytes" in config_keys(), "space" in config_keys()
    (True, False)
    """
    keywords = inspect.signature(find_student).parameters
    keywords = (name for name in keywords if name not in NOT_IN_JSON)
    return ("teachers", "data", *keywords, *SPACE_KEYS)


def read_config(path: str | os.PathLike) -> dict:
    """The checked contents of a config file; relative paths are taken from its folder.

    Raises:
        ValueError: For a file that is not a JSON object, unknown keys (the
            accepted ones are listed), or missing `teachers`/`data`.
    """
    try:
        with open(path) as file:
            config = json.load(file)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"Cannot read the search config {os.fspath(path)!r}: {error}") from None
    if not isinstance(config, dict):
        raise ValueError(f"The search config {os.fspath(path)!r} must hold a JSON object.")
    unknown = sorted(set(config) - set(config_keys()))
    missing = [key for key in ("teachers", "data") if key not in config]
    if unknown or missing:
        problem = f"unknown keys {unknown}" if unknown else f"missing keys {missing}"
        raise ValueError(f"The search config has {problem}; it takes {', '.join(config_keys())}.")
    if not isinstance(config["teachers"], dict) or not config["teachers"]:
        raise ValueError('"teachers" must be an object {"name": "path/to/teacher.keras", ...}.')
    folder = os.path.dirname(os.path.abspath(path))

    def located(value: str) -> str:
        return os.path.join(folder, os.path.expanduser(value))

    config["teachers"] = {name: located(file) for name, file in config["teachers"].items()}
    config["data"] = located(config["data"])
    for key in ("directory", "tflm_dir"):
        if key in config:
            config[key] = located(config[key])
    return config


def search_from_config(path: str | os.PathLike, verbose: int = 1) -> SearchResult:
    """Runs the search a config file describes (`keras-distill search --config FILE`).

    The file holds `"teachers": {"name": "teacher.keras"}`, `"data": "data.npz"`
    (arrays `x_train`, `y_train`, `x_val`, `y_val`), any keyword of
    `find_student` that JSON can hold (`board`, `flash_bytes`, `trials`, ...)
    and `"quantization_aware"`: the options of the default space's
    `SearchSpace.quantization_aware` (`[true]` unless given; `[false]`:
    post-training int8; `[false, true]`: chosen per candidate).

    Returns:
        The `SearchResult`.
    """
    import keras

    config = read_config(path)
    teachers = {
        name: keras.saving.load_model(file) for name, file in config.pop("teachers").items()
    }
    data_path = config.pop("data")
    with np.load(data_path, allow_pickle=False) as data:
        missing = [name for name in DATA_ARRAYS if name not in data.files]
        if missing:
            raise ValueError(f"{data_path!r} lacks the arrays {missing}; it holds {data.files}.")
        arrays = {name: data[name] for name in DATA_ARRAYS}
    train = (arrays["x_train"], arrays["y_train"])
    validation = (arrays["x_val"], arrays["y_val"])
    options = {key: config.pop(key) for key in SPACE_KEYS if key in config}
    if options:
        num_classes = int(max(arrays["y_train"].max(), arrays["y_val"].max())) + 1
        space = default_space(arrays["x_train"].shape[1:], num_classes)
        config["space"] = dataclasses.replace(space, **options)
    return find_student(teachers, train, validation, **{"verbose": verbose, **config})
