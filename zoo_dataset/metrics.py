"""Per-state metrics: accuracy, loss, generalization gap, sparsity, agreement."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

EVAL_BATCH = 2048


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = EVAL_BATCH):
    """Mean cross-entropy, accuracy and predicted classes of ``model`` in eval mode."""
    was_training = model.training
    model.eval()
    total_loss, preds = 0.0, []
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        total_loss += float(F.cross_entropy(logits, y[start : start + batch_size], reduction="sum"))
        preds.append(logits.argmax(dim=1))
    model.train(was_training)
    pred = torch.cat(preds)
    return total_loss / len(x), float((pred == y).float().mean()), pred.cpu().numpy()


def agreement(pred_a: np.ndarray, pred_b: np.ndarray) -> float:
    """Fraction of samples on which two models predict the same class (the paper's eq. 1)."""
    return float(np.mean(np.asarray(pred_a) == np.asarray(pred_b)))
