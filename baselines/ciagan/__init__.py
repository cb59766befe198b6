"""CIAGAN (Maximov et al., CVPR 2020): settings (`config`), networks (`model`), frame, training and the anonymiser."""
