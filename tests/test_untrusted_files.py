"""Files and stores are data: a plugin loss they name is loaded only when the command line names it,
and a hostile config or suite file is refused in one line, within caps, before it can exhaust the
process (lossbench.plugins, lossbench.caps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from mlflow import MlflowClient

from lossbench import caps, cards
from lossbench.caps import toml_shape
from lossbench.errors import ConfigError
from lossbench.exec import suites

TESTS = Path(__file__).resolve().parent
PLUGIN = "marker_loss:Marker"  # tests/marker_loss.py: importing it writes $LOSSBENCH_TEST_MARKER


def lossbench(*args: str, marker: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
                        "LOSSBENCH_TEST_MARKER": str(marker)}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "lossbench", *args], capture_output=True, text=True, timeout=300,
                          env=env)  # fmt: skip


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("Error")]
    return line


# --- plugins -----------------------------------------------------------------------------------


def test_dry_run_checks_a_plugin_name_and_imports_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    proc = lossbench("run", "--loss", PLUGIN, "--dataset", "ring8", "--dry-run", marker=marker)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["loss"] == PLUGIN and out["plugin_loss"] == f"{PLUGIN}: name checked, module not imported (--dry-run)"
    assert not marker.exists()
    bad = lossbench("run", "--loss", "marker_loss:Mar-ker", "--dry-run", marker=marker)
    assert "plugin loss 'marker_loss:Mar-ker' must be package.module:Name" in one_error_line(bad)
    bad = lossbench("run", "--allow-plugin", "marker loss:Marker", "--dry-run", marker=marker)
    assert "plugin loss 'marker loss:Marker' must be package.module:Name" in one_error_line(bad)


def test_config_file_naming_a_plugin_needs_the_flag(tmp_path: Path) -> None:
    marker, cfg = tmp_path / "imported", tmp_path / "run.toml"
    cfg.write_text(f'loss = "{PLUGIN}"\ndataset = "ring8"\n')
    refused = lossbench("run", "--config", str(cfg), "--dry-run", marker=marker)
    assert f"add --allow-plugin {PLUGIN}" in one_error_line(refused) and str(cfg) in one_error_line(refused)
    assert not marker.exists()
    allowed = lossbench("run", "--config", str(cfg), "--allow-plugin", PLUGIN, "--dry-run", marker=marker)
    assert allowed.returncode == 0 and json.loads(allowed.stdout)["loss"] == PLUGIN, allowed.stderr
    assert not marker.exists()  # a dry run still imports nothing


def test_suite_naming_a_plugin_needs_the_flag(tmp_path: Path, new_store) -> None:
    marker, suite = tmp_path / "imported", tmp_path / "s.toml"
    store = new_store(tmp_path / "st" / "m.db")  # the template's copy: a dry run would migrate a new store
    suite.write_text(f'[base]\ndataset = "ring8"\nsteps = 2\n[grid]\nloss = ["hinge", "{PLUGIN}"]\n')
    refused = lossbench("sweep", str(suite), "--dry-run", "--tracking-uri", store, marker=marker)
    assert f"add --allow-plugin {PLUGIN}" in one_error_line(refused) and not marker.exists()
    allowed = lossbench("sweep", str(suite), "--dry-run", "--allow-plugin", PLUGIN, "--tracking-uri", store,
                        marker=marker)  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr
    assert f"plugin losses {PLUGIN}: name checked, module not imported (--dry-run)" in allowed.stdout
    assert "not timed (data not here, or a plugin loss)" in allowed.stdout
    assert not marker.exists()
    grouped = lossbench("sweep", str(suite), "--dry-run", "--parallel-seeds", "--allow-plugin", PLUGIN,
                        "--tracking-uri", store, marker=marker)  # fmt: skip
    assert grouped.returncode == 0, grouped.stderr
    assert "1 not timed (data not here, or a plugin loss)" in grouped.stdout.split("groups (--parallel-seeds)")[1]
    assert not marker.exists()  # timing the groups imports no plugin either
    by_loss = tmp_path / "b.toml"  # a plugin under [search.by-loss] is refused before the search is read
    by_loss.write_text(f'[base]\ndataset = "ring8"\n[grid]\nloss = ["{PLUGIN}"]\n[search]\ndraws = 2\n'
                       f'[search.keys]\nlr_g = {{log-uniform = [1e-4, 1e-3]}}\n'
                       f'[search.by-loss."{PLUGIN}"]\nlr_d = {{log-uniform = [1e-4, 1e-3]}}\n')  # fmt: skip
    line = one_error_line(lossbench("sweep", str(by_loss), "--dry-run", "--tracking-uri", store, marker=marker))
    assert "[search.by-loss]" in line and f"add --allow-plugin {PLUGIN}" in line and not marker.exists()


@pytest.mark.slow  # a real run end to end (20-50 s on 2 cores): keeps the default suite short
def test_sample_refuses_a_plugin_the_store_names(tmp_path: Path) -> None:
    """A store's config.json chooses no code: `sample` of a plugin run needs --allow-plugin; a config.json
    nested deep or grown large is one line."""
    marker, store = tmp_path / "imported", f"sqlite:///{tmp_path / 'st' / 'm.db'}"
    trained = lossbench("run", "--loss", PLUGIN, "--dataset", "ring8", "--steps", "4", "--log-every", "2",
                        "--metrics", "none", "--tracking-uri", store, "--no-progress", marker=marker)  # fmt: skip
    assert trained.returncode == 0 and marker.exists(), trained.stderr  # --loss on the command line: loaded
    marker.unlink()
    client = MlflowClient(tracking_uri=store)
    (run,) = [r for r in client.search_runs([client.get_experiment_by_name("lossbench").experiment_id])
              if r.data.tags["lossbench.role"] == "seed"]  # fmt: skip
    rid = run.info.run_id

    def sample(out: str, *extra: str) -> subprocess.CompletedProcess:
        return lossbench("sample", rid, "-n", "5", "--out", str(tmp_path / out), "--tracking-uri", store, *extra,
                         marker=marker)  # fmt: skip

    line = one_error_line(sample("refused"))
    assert f"run {rid}: loss '{PLUGIN}' is a plugin" in line and f"add --allow-plugin {PLUGIN}" in line
    assert not marker.exists() and not (tmp_path / "refused").exists()
    ok = sample("allowed", "--allow-plugin", PLUGIN)
    assert ok.returncode == 0 and marker.exists(), ok.stderr
    assert len((tmp_path / "allowed" / "points.csv").read_text().splitlines()) == 6
    config_json = Path(run.info.artifact_uri.removeprefix("file://")) / "config.json"
    for text, message in [("[" * 100_000 + "]" * 100_000, "config.json is not a readable configuration"),
                          (" " * (caps.MAX_FILE_BYTES + 1) + "{}", "config.json: larger than 262,144 bytes"),
                          ("[1, 2]", "must be an object of configuration keys, got list")]:  # fmt: skip
        config_json.write_text(text)
        assert message in one_error_line(sample("tampered", "--allow-plugin", PLUGIN))
        assert not (tmp_path / "tampered").exists()


# --- caps on files -----------------------------------------------------------------------------


def test_toml_shape_reads_nesting_and_key_parts_outside_strings() -> None:
    assert toml_shape('a.b.c = 1\nx = [1.5, {p.q = 2}]  # a.b.c.d.e.f [[[[\n') == (2, 3)
    assert toml_shape('x = "a.b.c.d [[[" \ny = \'e.f.g.h\'\nz = """\n.i.j.k\\""" [[[ """\n') == (0, 1)
    assert toml_shape('w = "q\\" [[[ "\nv = \'\'\'a\'\'\'\' # x\'y [[\n') == (0, 1)  # an escape; a 4th quote
    assert toml_shape('"a" . "b".c.d = 1\n[[t.u]]\n') == (2, 4)
    for path in [*cards.registry_dir().rglob("*.toml")]:  # every shipped file is well inside the caps
        nesting, parts = toml_shape(path.read_text())
        assert nesting <= 2 and parts <= 3, path


def test_deep_nesting_is_one_line_not_a_recursion_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 1000 + "]" * 1000 + "\n")  # 2 KB; tomllib recurses once per bracket
    with pytest.raises(ConfigError, match=f"{path}: brackets nested 1000 deep; lossbench reads at most 16"):
        cards.read_toml(path)


def test_long_dotted_key_is_refused_before_parsing(tmp_path: Path) -> None:
    """The parser's memory grows with the square of a dotted key's parts (8,000 parts: 73 MB; the issue's
    200 KB key: 23.6 GB); the refusal reads the text only (peak under 2 MB)."""
    path = tmp_path / "dotted.toml"
    path.write_text(".".join(["a"] * 8000) + " = 1\n")
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match=f"{path}: a dotted key of 8000 parts; lossbench reads at most 16"):
            cards.read_toml(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2e6, peak


def test_file_over_the_size_cap_is_refused_unparsed(tmp_path: Path) -> None:
    path = tmp_path / "big.toml"
    path.write_text("# padding\n" * (caps.MAX_FILE_BYTES // 10) + "steps = 1\n")
    with pytest.raises(ConfigError, match=f"{path}: larger than 262,144 bytes"):
        cards.read_toml(path)
    path.write_text("# padding\n" * (caps.MAX_FILE_BYTES // 10 - 1) + "steps = 1\n")  # at the cap: read
    assert cards.read_toml(path) == {"steps": 1}


@pytest.mark.parametrize(
    "text, message",
    [  # base steps = 0: a suite past a cap that is expanded anyway fails at its first configuration instead
        ('[base]\nsteps = 0\n[search]\ndraws = 10001\n[search.keys]\nlr_g = {log-uniform = [1e-4, 1e-3]}\n',
         "search.draws is 10,001; lossbench draws at most 10,000"),
        ('[base]\nsteps = 0\n[grid]\nlr_g = [' + ", ".join(["1e-4"] * 200) + "]\nlr_d = ["
         + ", ".join(["1e-4"] * 101) + "]\n", "20,200 grid points x 1 settings = 20,200 configurations; "
         "lossbench reads at most 20,000"),
        ('seeds = 1000\n[base]\nsteps = 0\n[grid]\nlr_g = [' + ", ".join(["1e-4"] * 101) + "]\n",
         "101 configurations x 1000 seeds = 101,000 runs; lossbench runs at most 100,000"),
        ("seeds = 1001\n", "'seeds' must be an integer in 1..1000, got 1001"),
        ("reseeds = 1001\n", "'reseeds' must be an integer in 1..1000 (or left out), got 1001"),
    ],
)  # fmt: skip
def test_suite_past_a_cap_is_refused_before_expansion(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "big.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        suites.load(str(path))
    assert str(info.value).startswith(str(path)) and message in str(info.value), info.value



def test_dry_run_imports_no_plugin_under_search_by_loss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lossbench.plugins import Plugins

    (tmp_path / "by_loss_marker.py").write_text(
        "from pathlib import Path\nPath(__file__).with_suffix('.imported').write_text('yes')\n"
        "from marker_loss import Marker\n")  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(TESTS))
    spec = "by_loss_marker:Marker"
    path = tmp_path / "s.toml"
    path.write_text(f'[base]\ndataset = "ring8"\n[grid]\nloss = ["{spec}"]\n[search]\ndraws = 2\n'
                    f'[search.keys]\nlr_g = {{log-uniform = [1e-4, 1e-3]}}\n'
                    f'[search.by-loss."{spec}"]\nlr_d = {{log-uniform = [1e-4, 1e-3]}}\n')  # fmt: skip
    assert len(suites.load(str(path), Plugins(frozenset({spec}), load=False)).configs) == 2
    assert not (tmp_path / "by_loss_marker.imported").exists()
