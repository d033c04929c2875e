"""Shift-invariance and robustness evaluation: the literature's metrics over a model and a stream of batches.

Every metric takes ``(model, batches, ...)`` where ``batches`` yields ``(images, labels_or_None)`` or
``(images, labels, global_indices)`` of normalized float images, seeds its random choices per image,
and under ``torch.distributed`` merges the per-image records of all processes. Each returns a typed record
(a :class:`zoo.eval.results.Result` dataclass; ``to_dict()`` is its JSON form, and it reads as a mapping too).

>>> from zoo.eval import shift_consistency
>>> res = shift_consistency(model, loader, protocol="crop", max_shift=32, seed=0)  # doctest: +SKIP
>>> res.consistency, res.ci95, res.n  # doctest: +SKIP
(88.4, [87.9, 88.8], 50000)
"""

from zoo.eval.clean import clean_accuracy
from zoo.eval.compare import compare_models, compare_pair
from zoo.eval.consistency import diagonal_shift_curve, shift_consistency
from zoo.eval.corruptions import corruption_errors, imagenet_c_errors
from zoo.eval.data import eval_transform, open_source, stream_batches
from zoo.eval.deformation import deformation_sensitivity, filter_smoothness
from zoo.eval.features import feature_distance
from zoo.eval.flip import flip_rates
from zoo.eval.generation import generation_stability
from zoo.eval.runner import EvalModel, load_eval_config, load_models, run_eval
from zoo.eval.sensitivity import shift_sensitivity

__all__ = [
    "EvalModel",
    "clean_accuracy",
    "compare_models",
    "compare_pair",
    "corruption_errors",
    "deformation_sensitivity",
    "diagonal_shift_curve",
    "eval_transform",
    "feature_distance",
    "filter_smoothness",
    "flip_rates",
    "generation_stability",
    "imagenet_c_errors",
    "load_eval_config",
    "load_models",
    "open_source",
    "run_eval",
    "shift_consistency",
    "shift_sensitivity",
    "stream_batches",
]
