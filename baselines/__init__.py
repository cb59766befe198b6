"""Anonymisers behind one interface: the paper's baselines, the AnonyGAN variants, third-party folders.

    from baselines import RunContext, create, load_batch
    anonymiser = create("pixelate", RunContext(method="pixelate", dataset="celeba", params=params))
    crops = anonymiser.anonymise(load_batch(rows, prepared, prepared))

Importing the package registers every built-in method (see `available()`).
"""

from baselines import anonygan, ciagan, classic, folder, reference  # noqa: F401  (registration)
from baselines.interface import (
    Anonymiser,
    FaceBatch,
    RunContext,
    available,
    check_output,
    create,
    identity_order,
    load_batch,
    register,
)

__all__ = ["Anonymiser", "FaceBatch", "RunContext", "available", "check_output", "create", "identity_order",
           "load_batch", "register"]
