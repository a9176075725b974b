"""The only module that imports mlflow: the store, runs, params, metrics, artifacts, run state.

Default store: sqlite:///runs/mlflow.db with artifacts under runs/artifacts, unless
MLFLOW_TRACKING_URI or --tracking-uri names another (a server, PostgreSQL behind one, ...).
Runs are addressed by id through MlflowClient, never through mlflow's global active run, so several
runs can be open at once. Queries return lossbench's own records (lossbench.tracking_records:
`RunRecord`, `MetricPoint`), never MLflow objects, and every tag name lives here.

Off the training loop's path: metrics (buffered, in batches) and artifacts are sent by one
background thread, in the order they were logged. `flush()` waits for it and turns any failure into
one TrackingError; it runs before a run is ended, before history is read back, and at the end of each
group of seeds, so nothing is lost or reported out of order. (Not MLflow's asynchronous logging: its
queue's thread polls once a second, and every run's end, `set_terminated`, waits for that thread to
stop, up to a second per run; with the queue unused the wait is none.)

A run's close is two writes, its outcome tag then its status (`end_run`; MLflow's `log_batch` cannot
set a status nor `set_terminated` a tag, and one transaction for both would need its private store
API): the tag is the commit point. Every query returns runs settled (lossbench.outcomes: RUNNING
with a final outcome is that outcome's status), seed runs one per (configuration, seed), and
`end_stale` writes a status a killed process did not, when a configuration is resumed.

Store setup is inside the one-line error path: a local sqlite store's first use (MLflow creates its
schema then) is serialised across processes by a file lock beside the database (`mlflow.db.lock`),
a corrupt store is one TrackingError naming its file, and a tracking server's requests are bounded
(HTTP_TIMEOUT_S, HTTP_RETRIES, through MLflow's own variables, unless the user sets them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lossbench import paths
from lossbench.errors import TrackingError
from lossbench.outcomes import STATUS_OF, fault, one_per_seed, settle
from lossbench.tracking_records import MetricPoint, RunRecord

log = logging.getLogger(__name__)

TAG_CONFIG_HASH = "lossbench.config_hash"
TAG_SEED = "lossbench.seed"
TAG_OUTCOME = "lossbench.outcome"  # finished | diverged | failed | interrupted
TAG_ROLE = "lossbench.role"  # parent | seed
TAG_LOSS = "lossbench.loss"
TAG_DATASET = "lossbench.dataset"
TAG_ERROR = "lossbench.error"
# the logged model with a seed run's best evaluation's weights: generator_best, or generator itself where
# the last evaluation is the best (then no generator_best is logged)
TAG_BEST_MODEL = "lossbench.best_model"
PARENT_TAG = "mlflow.parentRunId"
# a tracking server's bound (MLflow's own defaults, 120 s and 7 retries, are 4 minutes of silence for a
# server that fails requests, and none at all for one that stalls); the user's own values win
HTTP_TIMEOUT_S, HTTP_RETRIES = 20, 2
# MLflow 3 shows an experiment as "model training" (runs table), not GenAI (traces), by this tag...
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# ...and, in the versions that ignore it, by this query parameter of the experiment page
RUNS_VIEW = "workflowType=machine_learning"


def _artifact_root(uri: str) -> str | None:
    """For a local sqlite store, artifacts sit beside the database; servers decide their own."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return None


# tracking stores MLflow opens (a database scheme may name its driver: postgresql+psycopg2://)
SCHEMES = ("", "file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "databricks-uc")


def check_scheme(uri: str) -> None:
    """A store URI whose scheme MLflow has no store for is one line, before MLflow sees it."""
    from urllib.parse import urlparse

    scheme = urlparse(uri).scheme.lower() if "://" in uri or uri.startswith("file:") else ""
    if scheme.split("+")[0] not in SCHEMES:
        raise TrackingError(f"tracking URI {redact(uri)}: unknown scheme '{scheme}'; use sqlite:///PATH, "
                            "postgresql://..., mysql://..., http(s)://HOST:PORT or a folder")  # fmt: skip


def redact(uri: str) -> str:
    """The URI without any user:password@ part, for messages: credentials never reach a log line."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    netloc, slash, path = rest.partition("/")
    return f"{scheme}://{netloc.rpartition('@')[2]}{slash}{path}"


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception in one line for a message: its text's first line (its type's name when it has no
    text), at most `limit` characters."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


def _wrap(action: str, uri: str, exc: Exception) -> TrackingError:
    text = str(exc).strip()
    if "Max retries exceeded" in text:  # a tracking server that failed or stalled every try, in its bound
        return TrackingError(f"tracking server {redact(uri)}: cannot {action}: {_gave_up(text)}")
    return TrackingError(f"tracking store {redact(uri)}: cannot {action} ({first_line(exc)})")


def _gave_up(text: str) -> str:
    """What MLflow's retrying HTTP client last saw ('too many 500 error responses', 'Read timed out'),
    and the bound it gave up at."""
    cause = re.sub(r"^\w+\(['\"]", "", text.rpartition("Caused by ")[2]).rpartition("): ")[2].split(". (")[0]
    cause = cause.strip("')\"")[:120]
    tries = int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", HTTP_RETRIES)) + 1
    timeout = os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", HTTP_TIMEOUT_S)
    return (
        f"{cause} after {tries} tries of at most {timeout} s each "
        "(MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT set the bound)"
    )


class Tracker:
    """A connection to one tracking store and one experiment in it."""

    def __init__(self, uri: str | None, experiment: str | None, create: bool = True) -> None:
        """`uri` None: paths.tracking_uri(); `experiment` None: run-id operations only (any experiment)."""
        from mlflow import MlflowClient  # deferred: importing mlflow costs seconds

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stderr is for our own progress
        self.uri = paths.tracking_uri(uri)
        check_scheme(self.uri)
        if self.uri.startswith("sqlite:///"):
            db = Path(self.uri.removeprefix("sqlite:///"))
            if not create and not db.is_file():  # before any folder is made: a reader writes nothing
                raise TrackingError(f"no tracking store at {db} (nothing has been run there yet)")
            try:
                db.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _wrap("create its folder", self.uri, exc) from None
            if db.exists() and not os.access(db, os.W_OK) and create:
                raise TrackingError(f"tracking store {self.uri}: the database file is read-only")
        if self.uri.startswith(("http://", "https://")):
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(HTTP_TIMEOUT_S))
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(HTTP_RETRIES))
            _check_reachable(self.uri)
        self.experiment, self.experiment_id = experiment, ""
        with _setup_lock(self.uri if create else ""):
            try:
                self.client = MlflowClient(tracking_uri=self.uri)  # a new sqlite store gets its schema here
            except Exception as exc:  # a corrupt database, a server's refusal: one line
                raise _wrap("open it", self.uri, exc) from None
            if experiment is not None:
                self.experiment_id = self._open_experiment(experiment, create)
        self._buffer: dict[str, list[Any]] = {}  # run id -> metrics not yet handed to MLflow
        self._buffer_since = time.monotonic()
        self._uploads: list[Future] = []
        self._uploader: ThreadPoolExecutor | None = None

    def _open_experiment(self, experiment: str, create: bool) -> str:
        try:
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                if not create:
                    raise TrackingError(f"no experiment '{experiment}' in {redact(self.uri)}")
                try:
                    return self.client.create_experiment(experiment, artifact_location=_artifact_root(self.uri),
                                                         tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})  # fmt: skip
                except Exception:  # another process (on a server, unlocked) created it just now
                    if (exp := self.client.get_experiment_by_name(experiment)) is None:
                        raise
            return exp.experiment_id
        except TrackingError:
            raise
        except Exception as exc:
            raise _wrap("open it", self.uri, exc) from None

    # --- runs ---------------------------------------------------------------------------------

    def start_run(self, name: str, params: dict[str, Any], tags: dict[str, str], parent_id: str | None = None) -> str:
        from mlflow.entities import Param

        all_tags = dict(tags) | ({PARENT_TAG: parent_id} if parent_id else {})
        try:
            run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
            run_id = run.info.run_id
            items = [Param(k, _param_str(v)) for k, v in params.items()]
            for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
                self.client.log_batch(run_id, params=items[i : i + 100])
        except Exception as exc:
            raise _wrap("create a run", self.uri, exc) from None
        return run_id

    def reopen(self, run_id: str) -> None:
        """Mark an interrupted run RUNNING again, to continue it under the same id: the status, then the
        outcome (a kill between the two leaves it as it was, by `settle`)."""
        self.client.update_run(run_id, status="RUNNING")
        self.set_tags(run_id, {TAG_OUTCOME: "running"})

    def end_run(self, run_id: str, status: str, tags: dict[str, str] | None = None) -> None:
        """End a run: everything sent before, then its tags (the outcome: the commit point), then its status."""
        self.flush(raise_errors=False)  # an ending run keeps everything sent before it ended
        if tags:
            self.set_tags(run_id, tags)
            fault("after-outcome-tag")
        self.client.set_terminated(run_id, status=status)
        fault("after-close")

    def end_stale(self, config_hash: str, live: Callable[[str], bool]) -> list[str]:
        """The repair on resume: write the status a killed process did not, for the configuration's runs
        (seeds and parent) left RUNNING with a final outcome, unless `live` says a process holds one (it
        is writing that very status). Returns their ids."""
        running = self._search(f"tags.`{TAG_CONFIG_HASH}` = '{config_hash}' and attributes.status = 'RUNNING'")
        stale = {r.info.run_id: outcome for r in running
                 if (outcome := r.data.tags.get(TAG_OUTCOME, "")) in STATUS_OF and not live(r.info.run_id)}  # fmt: skip
        for run_id, outcome in stale.items():
            self.client.set_terminated(run_id, status=STATUS_OF[outcome])
            log.info("run %s: ended %s (its outcome, %s, was stored before its process was killed)", run_id,
                     STATUS_OF[outcome], outcome)  # fmt: skip
        return list(stale)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    # --- metrics and artifacts ----------------------------------------------------------------

    BUFFER_SECONDS = 5.0  # metrics are handed to MLflow in batches at most this old (and at every flush)

    def log_metrics(self, run_id: str, step: int, values: dict[str, float]) -> None:
        """Buffered, then sent in one batch per run from the background thread (`in_background`); see flush()."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._buffer.setdefault(run_id, []).extend(Metric(k, float(v), now, step) for k, v in values.items())
        if time.monotonic() - self._buffer_since > self.BUFFER_SECONDS:
            self._send_buffered()

    def _send_buffered(self) -> None:
        buffered, self._buffer = self._buffer, {}
        self._buffer_since = time.monotonic()
        for run_id, metrics in buffered.items():
            for i in range(0, len(metrics), 1000):
                self.in_background(self.client.log_batch, run_id, metrics[i : i + 1000], (), (), True)  # synchronous

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        """Uploaded in the background; the file must stay in place until flush()."""
        self.in_background(self.client.log_artifact, run_id, str(path), artifact_path)

    def in_background(self, fn: Callable[..., Any], *args: Any) -> None:
        """fn(*args) on the background thread, after what was sent before it; flush() waits for it and reports
        its failure."""
        if self._uploader is None:
            self._uploader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lossbench-tracking")
        self._uploads.append(self._uploader.submit(fn, *args))

    def flush(self, raise_errors: bool = True) -> None:
        """Wait until every buffered or queued metric and artifact is stored."""
        try:
            self._send_buffered()
        except Exception as exc:  # noqa: BLE001
            if raise_errors:
                raise _wrap("store metrics", self.uri, exc) from None
        uploads, self._uploads = self._uploads, []
        first: Exception | None = None
        for fut in uploads:
            try:
                fut.result()
            except Exception as exc:  # noqa: BLE001
                first = first or exc
        if first is not None and raise_errors:
            raise _wrap("store metrics or artifacts", self.uri, first) from None

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def download(self, run_id: str, artifact_path: str, dst: Path) -> Path:
        """An artifact of any run of the store (any experiment) into dst."""
        try:
            return Path(self.client.download_artifacts(run_id, artifact_path, str(dst)))
        except Exception as exc:
            raise _wrap(f"download {artifact_path} of run {run_id}", self.uri, exc) from None

    def run_tags(self, run_id: str) -> dict[str, str]:
        """A run's tags (any run of the store)."""
        try:
            return dict(self.client.get_run(run_id).data.tags)
        except Exception as exc:
            raise _wrap(f"read run {run_id}", self.uri, exc) from None

    def artifacts(self, run_id: str, folder: str) -> list[str]:
        """Paths of a run's artifacts under `folder`, sorted."""
        return sorted(a.path for a in self.client.list_artifacts(run_id, folder))

    # --- queries ------------------------------------------------------------------------------

    def seed_runs(self, config_hash: str, role: str = "seed") -> list[RunRecord]:
        """Every seed run (or, with role parent, every parent run) of a configuration (one query),
        newest first, settled."""
        found = self._search(f"tags.`{TAG_CONFIG_HASH}` = '{config_hash}' and tags.`{TAG_ROLE}` = '{role}'")
        return sorted(map(_record, found), key=lambda r: -r.start_time)

    def runs(self, role: str = "seed") -> list[RunRecord]:
        """Every run of the experiment with this role (seed or parent), settled; seed runs one per
        (configuration, seed) (`one_per_seed`)."""
        out = [_record(r) for r in self._search(f"tags.`{TAG_ROLE}` = '{role}'")]
        return one_per_seed(out) if role == "seed" else out

    def seed_results(self, config_hashes: set[str]) -> list[RunRecord]:
        """The seed runs of these configurations with their final metrics (one query of the experiment),
        one per (configuration, seed) (`one_per_seed`)."""
        where = f" and tags.`{TAG_CONFIG_HASH}` = '{next(iter(config_hashes))}'" if len(config_hashes) == 1 else ""
        found = self._search(f"tags.`{TAG_ROLE}` = 'seed'{where}")
        return one_per_seed(_record(r) for r in found if r.data.tags.get(TAG_CONFIG_HASH) in config_hashes)

    def _search(self, filter_string: str = "") -> Iterable[Any]:
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string, max_results=1000, page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def experiment_url(self, base: str) -> str:
        """The experiment's runs table ("Model training" view) in an MLflow UI served at `base`; the
        experiment is tagged as model training on the way, for MLflow versions that read the tag."""
        if self.experiment_id:
            self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return f"{base.rstrip('/')}/#/experiments/{self.experiment_id}?{RUNS_VIEW}"

    def metric_history(self, run_id: str, key: str) -> list[MetricPoint]:
        self.flush()
        return [MetricPoint(m.step, m.value) for m in self.client.get_metric_history(run_id, key)]


def _record(r: Any) -> RunRecord:
    """An MLflow run as lossbench's record, settled."""
    tags = r.data.tags
    status, outcome = settle(r.info.status, tags.get(TAG_OUTCOME, ""))
    return RunRecord(r.info.run_id, tags.get(PARENT_TAG, ""), tags.get(TAG_CONFIG_HASH, ""), status, outcome,
                     dict(r.data.params), dict(r.data.metrics), r.info.start_time, r.info.end_time,
                     int(tags.get(TAG_SEED, -1)))  # fmt: skip


@contextlib.contextmanager
def _setup_lock(uri: str) -> Iterator[None]:
    """For a local sqlite store, an exclusive lock on `<db>.lock` beside it while MLflow opens it (and
    creates its schema and the experiment, on first use): concurrent first runs would otherwise race
    to create the same tables. Nothing for other stores, or where the lock file cannot be made."""
    import fcntl

    if not uri.startswith("sqlite:///"):
        yield
        return
    lock = Path(uri.removeprefix("sqlite:///") + ".lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a read-only folder: nothing will be created there either
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _check_reachable(uri: str, timeout: float = 5.0) -> None:
    """A tracking server answers /health at once, or the run stops here with one line (MLflow's own
    client would retry for minutes before giving up)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return  # it answered: a server is there, whatever it thinks of /health
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(f"tracking server {redact(uri)} is unreachable ({reason})") from None


def _param_str(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)
