"""Training: the one loop, its state and checkpoints, the players (one seed or several stacked), fast paths.

    state = setup(cfg, seeds, sample_shape, device, speed)   # names -> G, D, optimisers, loss, penalty
    outcomes = train(cfg, state, data, Hooks(log=...))         # the loop; reports through hooks
"""

from lossbench.train.loop import Hooks, Outcome, train
from lossbench.train.state import TrainState, setup

__all__ = ["Hooks", "Outcome", "TrainState", "setup", "train"]
