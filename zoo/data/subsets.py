"""Seeded, class-stratified subsets: the train/validation/test splits and the ``limit`` samples."""

from __future__ import annotations

import numpy as np

__all__ = ["DatasetError", "stratified_sample", "stratified_split"]


class DatasetError(ValueError):
    """The dataset cannot be used (missing path, empty class folder, inconsistent splits...)."""


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(kept, held_out)`` positions: a seeded split holding out ``fraction`` of the items, stratified
    by class when every class has two items and each side can hold one of each (else a plain seeded split)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    counts = np.bincount(labels)
    present = int((counts > 0).sum())
    n_held = int(np.ceil(fraction * len(labels)))
    stratify = labels if counts[counts > 0].min() >= 2 and present <= n_held <= len(labels) - present else None
    train, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(held)


def _quotas(counts: np.ndarray, limit: int) -> np.ndarray:
    """Per-class sample sizes summing to ``limit``: proportional (largest remainder), at least 1 each."""
    ideal = counts * limit / counts.sum()
    quota = np.minimum(counts, np.maximum(1, np.floor(ideal))).astype(np.int64)
    while quota.sum() > limit:  # the minimum of one image per class overshot: take from the most over-served
        over = np.where(quota > 1, quota - ideal, -np.inf)
        quota[int(np.argmax(over))] -= 1
    while quota.sum() < limit:
        under = np.where(quota < counts, ideal - quota, -np.inf)
        quota[int(np.argmax(under))] += 1
    return quota


def stratified_sample(labels: np.ndarray, limit: int | None, seed: int, key: str = "limit") -> np.ndarray:
    """Sorted positions of a seeded sample of ``limit`` items of ``labels``, stratified by class.

    Each class gets its proportional share (largest remainder) and at least one item; ``None`` or a
    limit at least ``len(labels)`` keeps everything. ``DatasetError`` when ``limit`` is smaller than the
    number of classes (``key`` names the setting in the message).
    """
    labels = np.asarray(labels)
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if limit < len(classes):
        raise DatasetError(
            f"{key}={limit} is smaller than the {len(classes)} classes: a stratified sample needs at least "
            f"one image of each (use {key} >= {len(classes)})"
        )
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(inverse == c))[:q] for c, q in enumerate(_quotas(counts, limit))]
    return np.sort(np.concatenate(picked))
