"""Shared data layer: datasets, downloads, face landmarks, canonical crops and the prepared-data reader.

Every stage in `pipelines/` and every library package (`anonygan/`, `baselines/`, `metrics/`)
reads faces through this package, so the conventions (landmark numbering, crop framing,
pixel-centre coordinates) live in one place.
"""
