"""Trajectory generators and cell codes. Every generator is vectorised over trials and runs on the given device."""

from __future__ import annotations

import torch

from recircuit.spec import HeadDirectionTask, PathIntegrationTask
from recircuit.tasks.base import Task, TrialBatch, TrialChunk
from recircuit.tasks.head_direction import HeadDirection
from recircuit.tasks.path_integration import PathIntegration

__all__ = ["Task", "TrialBatch", "TrialChunk", "make_task", "PathIntegration", "HeadDirection"]


def make_task(task_spec: PathIntegrationTask | HeadDirectionTask, device: str | torch.device = "cpu") -> Task:
    """The task object (generator, cell code, decoder) of a task spec, on ``device``."""
    if task_spec.kind == "path_integration":
        return PathIntegration(task_spec, device)
    return HeadDirection(task_spec, device)
