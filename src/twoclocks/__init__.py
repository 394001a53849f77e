"""twoclocks: measure the classifier and representation clocks of grokking (arXiv 2606.05863).

The public names below are imported on first use (module ``__getattr__``), so that
``import twoclocks`` stays light (no torch, no xarray) while ``dir(twoclocks)``, tab completion
and ``from twoclocks import *`` still offer them.
"""

from importlib import import_module as _import_module

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "load_study": "twoclocks.study",
    "load_config": "twoclocks.config",
    "ConfigError": "twoclocks.config",
    "Study": "twoclocks.config",
    "Cell": "twoclocks.config",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    """Import a public name from its module on first access (and cache it here)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'twoclocks' has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
