"""neurofound: train, fine-tune, evaluate and share foundation models of neural data."""

__version__ = "0.1.0"
