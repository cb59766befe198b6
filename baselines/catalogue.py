"""Every anonymiser the suite knows, by name: where its code is and which settings it takes, without importing it.

Checking params.yaml needs each anonymiser's settings class but none of its models, so the
catalogue names the implementation as "module:Class" and `baselines.interface.create` imports it
only when a stage builds that anonymiser. `code` is the file or package holding the implementation:
the `methods.<name>.code` a DVC anonymise stage depends on.

Adding a method is one entry here (and its class, a subclass of `baselines.interface.Anonymiser`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from anonygan.config import InferenceConfig
from baselines.ciagan.config import CiaganInferenceConfig
from baselines.settings import BlurConfig, FolderConfig, PixelateConfig


@dataclass(frozen=True)
class Entry:
    implementation: str  # "module:Class", imported when the anonymiser is first built
    code: str  # the file or package holding it, as dvc.yaml names it
    settings: type | None = None  # the settings class of its params section; None: it takes none
    released_model: str | None = None  # the authors' release it loads (`released.<method>.model`); None: none

    def load(self) -> type:
        module, name = self.implementation.split(":")
        return getattr(importlib.import_module(module), name)


ANONYMISERS: dict[str, Entry] = {
    "original": Entry("baselines.original:Original", "baselines/original.py"),
    "blur": Entry("baselines.classic:Blur", "baselines/classic.py", BlurConfig),
    "pixelate": Entry("baselines.classic:Pixelate", "baselines/classic.py", PixelateConfig),
    "folder": Entry("baselines.folder:FolderAnonymiser", "baselines/folder.py", FolderConfig),
    "ciagan": Entry("baselines.ciagan.anonymiser:Ciagan", "baselines/ciagan", CiaganInferenceConfig),
    "ciagan-released": Entry("baselines.ciagan.anonymiser:ReleasedCiagan", "baselines/ciagan",
                             CiaganInferenceConfig, released_model="ciagan"),
    "anonygan": Entry("anonygan.anonymiser:AnonyGAN", "anonygan", InferenceConfig),
    "anonygan-released": Entry("anonygan.anonymiser:ReleasedAnonyGAN", "anonygan", InferenceConfig,
                               released_model="anonygan"),
}


def available() -> list[str]:
    """The anonymisers' names, sorted."""
    return sorted(ANONYMISERS)


def entry(name: str) -> Entry:
    """The catalogue entry of `name`; a KeyError listing the known names otherwise."""
    if name not in ANONYMISERS:
        raise KeyError(f"unknown anonymiser {name!r}; known: {', '.join(available())}")
    return ANONYMISERS[name]
