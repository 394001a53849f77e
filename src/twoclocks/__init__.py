"""twoclocks: measure the classifier and representation clocks of grokking (arXiv 2606.05863)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """Lazy exports, so that ``import twoclocks`` stays light (no torch, no xarray)."""
    if name == "load_study":
        from twoclocks.study import load_study

        return load_study
    raise AttributeError(f"module 'twoclocks' has no attribute {name!r}")
