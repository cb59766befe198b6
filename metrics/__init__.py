"""Metrics of the paper's Tables 1-2 plus a verification re-identification protocol.

    from metrics import registry
    inputs = registry.MetricInputs(registry.PairSet(manifest, PreparedDataset(root)), images=Path(folder))
    registry.available()                  # ['detection_dlib', 'detection_mtcnn', 'fid', ...]
    registry.calc("fid", inputs, registry.options("fid", resize="legacy_pytorch"))  # {'metric': 'fid', 'value': ...}

`metrics.options` names every metric with its options class; importing this package or that
module loads no network.
"""
