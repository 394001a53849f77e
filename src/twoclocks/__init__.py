"""twoclocks: measure the classifier and representation clocks of grokking (arXiv 2606.05863)."""

__version__ = "0.1.0"
