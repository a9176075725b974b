"""Public home of the penalties registry, at the path the README documents; the code is in lossbench.gan.penalties."""

from lossbench.gan.penalties import *  # noqa: F403
from lossbench.gan.penalties import __all__  # noqa: F401
