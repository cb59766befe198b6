"""Anonymisers behind one interface: the paper's baselines, AnonyGAN checkpoints, third-party folders.

    from baselines.interface import RunContext, create, load_batch
    from baselines.settings import BlurConfig
    anonymiser = create("blur", BlurConfig(kernel_size=51), RunContext(method="blur", dataset="celeba"))
    crops = anonymiser.anonymise(load_batch(rows, prepared, prepared))

`baselines.catalogue` names every anonymiser and its settings class; importing this package or
the catalogue loads no model (see the catalogue's docstring).
"""
