"""TUS-REC data layer: calibration, scan names, sweeps, dataset reader/writers, splits, checks.

See ``docs/data.md`` for the on-disk contract.
"""

from dualtrack.data.calibration import (
    TUSREC2024_CALIBRATION,
    Calibration,
    read_calibration,
    write_calibration,
)
from dualtrack.data.splits import (
    Splits,
    load_splits,
    make_splits,
    save_splits,
    tusrec_baseline_folds,
    tusrec_baseline_splits,
)
from dualtrack.data.sweep import LazyFrames, Sweep
from dualtrack.data.tusrec import (
    SCAN_NAMES_2024,
    SCAN_NAMES_2025,
    ScanInfo,
    TusRecDataset,
    detect_layout,
    format_dataset_key,
    normalise_subject,
    parse_dataset_key,
    parse_scan_name,
    write_dataset_keys,
    write_landmarks,
    write_scan,
)
from dualtrack.data.verify import Issue, VerifyReport, verify_dataset

__all__ = [
    "Calibration",
    "TUSREC2024_CALIBRATION",
    "read_calibration",
    "write_calibration",
    "LazyFrames",
    "Sweep",
    "ScanInfo",
    "SCAN_NAMES_2024",
    "SCAN_NAMES_2025",
    "parse_scan_name",
    "normalise_subject",
    "format_dataset_key",
    "parse_dataset_key",
    "detect_layout",
    "TusRecDataset",
    "write_scan",
    "write_landmarks",
    "write_dataset_keys",
    "Splits",
    "make_splits",
    "save_splits",
    "load_splits",
    "tusrec_baseline_folds",
    "tusrec_baseline_splits",
    "Issue",
    "VerifyReport",
    "verify_dataset",
]
