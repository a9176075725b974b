"""lossbench: a benchmark of GAN cost functions."""

__version__ = "0.1.0"
