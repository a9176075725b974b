"""Public home of the losses registry, at the path the README documents; the code is in lossbench.gan.losses."""

from lossbench.gan.losses import *  # noqa: F403
from lossbench.gan.losses import __all__  # noqa: F401
