"""Metrics of the paper's Tables 1-2 plus a verification re-identification protocol.

    import metrics
    inputs = metrics.MetricInputs(metrics.PairSet(manifest, PreparedDataset(root)), images=Path(folder))
    metrics.available()                  # ['detection_dlib', 'detection_mtcnn', 'fid', ...]
    metrics.calc("fid", inputs, resize="legacy_pytorch")   # {'metric': 'fid', 'value': ..., 'n': ...}
"""

from metrics import fid, pose, reid  # noqa: F401  (registers the metrics)
from metrics.registry import MetricInputs, PairSet, available, calc, load_options, options, options_type

__all__ = ["MetricInputs", "PairSet", "available", "calc", "load_options", "options", "options_type"]
