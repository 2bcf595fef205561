"""Evaluation: tables and paired tests (:mod:`.evaluate`), the global-branch check, the benchmark and the
TUS-REC submission adapter (:mod:`.submission`); the metric functions (:mod:`dualtrack.metrics`) are
re-exported here."""

from dualtrack.evaluation.submission import ddfs_from_poses, make_predict_ddfs
from dualtrack.metrics import (
    TUSREC_METRICS,
    all_pixel_errors,
    drift_curve,
    identity_errors,
    landmark_errors,
    normalised_score,
    paper_metrics,
    point_errors,
    tusrec_metrics,
    wilcoxon_table,
)

__all__ = [
    "TUSREC_METRICS",
    "all_pixel_errors",
    "drift_curve",
    "identity_errors",
    "landmark_errors",
    "normalised_score",
    "paper_metrics",
    "point_errors",
    "tusrec_metrics",
    "wilcoxon_table",
    "ddfs_from_poses",
    "make_predict_ddfs",
]
