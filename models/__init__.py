"""Aether's domain models (SPEC section 3). Importing this package registers every type.

Every module in this package is imported, found on disk: a new model module needs no
line here (`registry.load_models` finds the modules of any package in `AE_MODEL_MODULES`
the same way).
"""

import importlib
import pkgutil

from models.base import Base

for _module in pkgutil.iter_modules(__path__, f"{__name__}."):
    importlib.import_module(_module.name)

__all__ = ["Base"]
