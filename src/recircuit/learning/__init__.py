"""Learning: the training loop and the held-out evaluation of trained circuits."""

from recircuit.learning.evaluate import evaluate
from recircuit.learning.train import TrainingDiverged, resolve_device, task_loss, train

__all__ = ["TrainingDiverged", "evaluate", "resolve_device", "task_loss", "train"]
