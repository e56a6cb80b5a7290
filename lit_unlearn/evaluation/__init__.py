"""Metrics for unlearning evaluation (torchmetrics, synced across ranks)."""

from lit_unlearn.evaluation.teacher_forced import TeacherForcedMetrics, teacher_forced_stats

__all__ = ["TeacherForcedMetrics", "teacher_forced_stats"]
