"""Anonymisers behind one interface: the paper's baselines, AnonyGAN checkpoints, third-party folders.

    from baselines import RunContext, create, load_batch
    from baselines.classic import BlurConfig
    anonymiser = create("blur", BlurConfig(kernel_size=51), RunContext(method="blur", dataset="celeba"))
    crops = anonymiser.anonymise(load_batch(rows, prepared, prepared))

Importing the package registers every built-in anonymiser (see `available()`).
"""

from baselines import anonygan, ciagan, classic, folder, reference  # noqa: F401  (registration)
from baselines.interface import (
    Anonymiser,
    FaceBatch,
    RunContext,
    anonymiser_class,
    available,
    check_output,
    create,
    identity_order,
    load_batch,
    register,
)

__all__ = ["Anonymiser", "FaceBatch", "RunContext", "anonymiser_class", "available", "check_output", "create",
           "identity_order", "load_batch", "register"]
