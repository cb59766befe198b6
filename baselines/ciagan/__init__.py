"""CIAGAN (Maximov et al., CVPR 2020): networks, frame, training and the registered anonymiser."""

from baselines.ciagan.anonymiser import Ciagan
from baselines.ciagan.model import CiaganConfig, Discriminator, Generator, Siamese
from baselines.ciagan.training import CiaganTrainer, TrainingConfig

__all__ = ["Ciagan", "CiaganConfig", "CiaganTrainer", "Discriminator", "Generator", "Siamese", "TrainingConfig"]
