"""How a model's logits for videos are scored: the same for validation during training,
evaluation and the probabilities a server answers. NumPy only."""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """The log of the softmax over the last axis, computed stably."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def loss_and_accuracy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The mean cross-entropy and the accuracy of logits."""
    return (float(-log_softmax(logits)[np.arange(len(labels)), labels].mean()),
            float((logits.argmax(axis=1) == labels).mean()))
