"""The project's infrastructure, about no face: settings loading, errors, atomic writes, journals,
process pools, fetching, reading untrusted weight files. Nothing here imports torch except
`weight_files`."""
