"""The bottom layer: datasets, the protocol, downloads, landmarks, canonical crops, the prepared-data
reader, and what every package shares (typed settings, the suite's errors, the torch runtime).

Every stage in `pipelines/` and every library package (`anonygan/`, `baselines/`, `metrics/`)
reads faces through this package, so the conventions (landmark numbering, crop framing,
pixel-centre coordinates) live in one place. It imports no other package of the project.
"""
