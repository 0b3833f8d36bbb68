"""fairseq optimizers. fairseq imports a --user-dir's tasks/ and models/ by itself but not
this folder, so the package __init__ imports it.

The tuning-free baselines wrap optional packages: each is registered only when its
package imports, so the plugin loads without them."""
import importlib
import logging

from . import guided_adafactor, guided_adam, guided_lamb  # noqa: F401 (registration)

logger = logging.getLogger(__name__)

# --optimizer name -> (the module here that registers it, the package it wraps)
OPTIONAL = {"prodigy": ("prodigy", "prodigyopt"), "schedulefree_adamw": ("schedulefree_adamw", "schedulefree")}


def _register_optional() -> list:
    """Import the wrapper of each optional optimizer whose package imports; the names
    left out, with their packages."""
    missing = []
    for name, (module, package) in OPTIONAL.items():
        try:
            importlib.import_module(package)
        except ImportError:
            missing.append(f"{name} (pip install {package})")
            continue
        importlib.import_module(f".{module}", __name__)
    return missing


_missing = _register_optional()
if _missing:
    logger.info(f"optimizers not registered, their packages are not installed: {', '.join(_missing)}")
