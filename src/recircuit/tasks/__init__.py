"""Trajectory generators and cell codes. Every generator is vectorised over trials and runs on the given device."""

from recircuit.tasks.base import Task, TrialBatch, make_task
from recircuit.tasks.head_direction import HeadDirection
from recircuit.tasks.path_integration import PathIntegration

__all__ = ["Task", "TrialBatch", "make_task", "PathIntegration", "HeadDirection"]
