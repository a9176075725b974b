"""What the store holds about a run, as lossbench's own records: `tracking.Tracker`'s queries return
these, never MLflow objects, so no reader depends on MLflow's entities. `RunRecord` is one run,
settled (outcomes.settle); `MetricPoint` is one value of a metric's history."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunRecord:
    """One run (a seed's, or a configuration's parent, seed -1) as the store has it, settled: its
    configuration, MLflow status and lossbench outcome, parameters and the latest value of each metric.
    The planner reads whether it can be continued, the search and the parent's aggregates whether it
    finished, the report everything."""

    run_id: str
    parent_id: str  # "" for a run without a parent
    config_hash: str
    status: str  # RUNNING | FINISHED | FAILED | KILLED (MLflow's run status, settled)
    outcome: str  # lossbench.outcome: running | finished | diverged | failed | interrupted
    params: dict[str, str]
    metrics: dict[str, float]  # the latest value of each metric
    start_time: int  # ms since the epoch
    end_time: int | None
    seed: int = -1

    @property
    def finished(self) -> bool:
        """Status FINISHED, settled (diverged, failed, interrupted and running runs are not)."""
        return self.status == "FINISHED"

    @property
    def resumable(self) -> bool:
        """Interrupted, left running by a process that died, or failed by an error (a full disk, an
        unreachable store): each continues from its last checkpoint, which a failed write leaves intact."""
        return self.outcome in ("interrupted", "running", "failed")


@dataclass(frozen=True)
class MetricPoint:
    """One logged value of a run's metric."""

    step: int
    value: float
