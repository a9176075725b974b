"""What each update rule (`--updates`) admits, apart from how it steps: read by the configuration's
validation and by the trainer's registry of step functions (lossbench.train.updates), which holds
one step function for every name here.

alternating: n_critic D steps, then one G step; takes no consensus term.
simultaneous: one step of each player at the same parameters on the same fakes, so n_critic is 1;
    takes the consensus term (Mescheder et al. 2017), which needs both gradients at one point.
"""

from __future__ import annotations

from dataclasses import dataclass

from lossbench.errors import ConfigError
from lossbench.registry import Registry


@dataclass(frozen=True)
class Admits:
    critic_steps: bool  # takes n_critic D steps per G step (else exactly one of each)
    consensus: bool  # takes the consensus term (gradients of both players at one point)


RULES: Registry[Admits] = Registry("update rule", key="updates")
RULES.add("alternating", Admits(critic_steps=True, consensus=False))
RULES.add("simultaneous", Admits(critic_steps=False, consensus=True))


def check(updates: str, n_critic: int, consensus: float) -> None:
    """Refuse combinations a rule does not define, in one line naming the key at fault."""
    rule = RULES.get(updates)
    if not rule.critic_steps and n_critic != 1:
        raise ConfigError(f"updates '{updates}' takes one step of each player on the same fakes: n_critic must "
                          f"be 1, got {n_critic}", key="n_critic")  # fmt: skip
    if consensus > 0 and not rule.consensus:
        raise ConfigError(f"consensus {consensus} needs updates 'simultaneous' (both players' gradients at one "
                          f"point), not '{updates}'", key="consensus")  # fmt: skip
