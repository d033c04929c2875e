"""Pretrained weights: manifest, sources, cache and state-dict conversion.

Public API: ``load_pretrained`` / ``create_pretrained`` (``zoo.weights.load``), ``load_manifest``
(``zoo.weights.manifest``), ``save_model_dir`` / ``load_state_dict_file`` (``zoo.weights.io``) and
the errors (``zoo.weights.errors``); ``zoo.weights.release`` (``zoo release``: verified publishing) and
``zoo.weights.doctor`` (``zoo doctor``). ``load`` and ``manifest`` are imported lazily by their callers
(``zoo.builder`` imports ``zoo.weights.load`` only when ``pretrained`` is set).
"""

from zoo.weights.errors import (
    CorruptWeightsError,
    HashMismatchError,
    IncompatibleWeightsError,
    WeightsUnavailableError,
)
from zoo.weights.io import load_state_dict_file, save_model_dir

__all__ = [
    "CorruptWeightsError",
    "HashMismatchError",
    "IncompatibleWeightsError",
    "WeightsUnavailableError",
    "load_state_dict_file",
    "save_model_dir",
]
