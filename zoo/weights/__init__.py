"""Pretrained weights: manifest, sources, cache and the key-renaming step. Never imports the builder.

Public API: ``load_pretrained`` / ``resolve_weights`` / ``apply_weights`` (``zoo.weights.load``),
``load_manifest`` (``zoo.weights.manifest``), ``save_model_dir`` / ``load_state_dict_file``
(``zoo.weights.io``), ``to_zoo_keys`` (``zoo.weights.keymaps``) and the errors (``zoo.weights.errors``);
``zoo.weights.doctor`` (``zoo doctor``). Building a model with weights is ``zoo.builder.create_pretrained``;
converting and publishing (which build models) are ``zoo.convert`` and ``zoo.release``, above the builder.
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
