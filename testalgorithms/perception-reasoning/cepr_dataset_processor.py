"""Ianvs dataset processor: one question per frame, round-robin over the configured tasks.

Thin adapter: the logic is ``cepr.runner.dataset.TaskDatasetProcessor``.
"""

from cepr.compat import get_class_factory

ClassFactory, ClassType = get_class_factory()

from cepr.runner.dataset import TaskDatasetProcessor


@ClassFactory.register(ClassType.GENERAL, alias="CeprTaskDatasetProcessor")
class CeprTaskDatasetProcessor(TaskDatasetProcessor):
    """Hyperparameters: tasks ("all", a task name, or a list)."""
