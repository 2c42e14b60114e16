"""The results store: exact round trips, filters, exports, concurrent writers and every refusal."""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import re
import sqlite3
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from edge_sdk.errors import StoreError, UsageError
from edge_sdk.measurement import BenchmarkResult, Conditions, LatencyStats, OpTime, Prediction, Source
from edge_sdk.store import (
    SCHEMA_VERSION,
    StoredRun,
    export_csv,
    export_json,
    open_store,
    store_path,
)

SAMPLES = (2.5, 2.25, 3.125, 2.0, 9.75, 2.4000000000000004)
CONDITIONS = Conditions(
    hostname="pi5",
    cpu_model="Cortex-A76",
    machine="aarch64",
    os="Linux-6.6",
    python="3.11.2",
    runtime="litert",
    runtime_version="1.2.0",
    threads=4,
    governor="performance",
    load_avg=(0.5, 0.25, 0.125),
    temperature_c=51.3,
    throttled="0x0",
)


def measured(**changes: object) -> BenchmarkResult:
    result = BenchmarkResult(
        source=Source.DEVICE,
        model_name="tiny",
        model_sha256="a" * 64,
        target="rpi5",
        device="pi@pi5.local:22",
        init_ms=12.5,
        first_run_ms=7.0,
        stats=LatencyStats.from_samples(SAMPLES),
        samples_ms=SAMPLES,
        peak_rss_mb=88.5,
        conditions=CONDITIONS,
        sdk_version="0.1.0",
        created_at="2025-01-02T03:04:05Z",
        per_op=(OpTime("conv", "CONV_2D", 1.5), OpTime("relu", "RELU", 0.1)),
        extra={"runner": {"argv": ["--threads", "4"]}, "note": "first"},
    )
    return replace(result, **changes)  # type: ignore[arg-type]


def predicted(**changes: object) -> BenchmarkResult:
    result = BenchmarkResult(
        source=Source.PREDICTED,
        model_name="tiny",
        model_sha256="b" * 64,
        target="ethos-u55",
        device=None,
        init_ms=None,
        first_run_ms=None,
        stats=None,
        samples_ms=(),
        peak_rss_mb=None,
        conditions=None,
        sdk_version="0.1.0",
        created_at="2025-01-03T00:00:00Z",
        prediction=Prediction(latency_ms=4.5, low_ms=3.75, high_ms=5.5, method="roofline-fit", fit_models=6),
    )
    return replace(result, **changes)  # type: ignore[arg-type]


def count_rows(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        return int(connection.execute("SELECT count(*) FROM runs").fetchone()[0])


# --- where the store lives -------------------------------------------------------------------------


def test_path_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EDGE_SDK_DB", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert store_path() == tmp_path / "home" / ".cache" / "edge-sdk" / "results.sqlite"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # not absolute: ignored, as XDG says
    assert store_path() == tmp_path / "home" / ".cache" / "edge-sdk" / "results.sqlite"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert store_path() == tmp_path / "xdg" / "edge-sdk" / "results.sqlite"
    monkeypatch.setenv("EDGE_SDK_DB", str(tmp_path / "env.sqlite"))
    assert store_path() == tmp_path / "env.sqlite"
    assert store_path(tmp_path / "explicit.sqlite") == tmp_path / "explicit.sqlite"


def test_open_uses_env_var_and_creates_parent_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "a" / "b" / "results.sqlite"
    monkeypatch.setenv("EDGE_SDK_DB", str(target))
    with open_store() as store:
        assert store.path == target
        store.add(measured())
    assert count_rows(target) == 1


def test_schema(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    open_store(path).close()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        indexes = {
            row[0]: row[1] for row in connection.execute("SELECT name, sql FROM sqlite_master WHERE type='index'")
        }
        columns = [row[1] for row in connection.execute("PRAGMA table_info(runs)")]
    assert "ON runs (target)" in indexes["runs_target"]
    assert "ON runs (model_sha256)" in indexes["runs_model_sha256"]
    for name in ("id", "created_at", "source", "runtime", "threads", "median_ms", "p99_ms", "predicted_low_ms"):
        assert name in columns
    for name in ("predicted_method", "predicted_fit_models", "sdk_version", "samples_ms", "conditions", "extra"):
        assert name in columns


# --- round trips, filters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "result",
    [
        measured(),
        measured(source=Source.HOST, device=None, conditions=replace(CONDITIONS, load_avg=None, governor=None)),
        measured(conditions=None, per_op=(), target=None, peak_rss_mb=None, extra={}),
        predicted(),
    ],
    ids=["device", "host", "bare", "predicted"],
)
def test_round_trip_is_exact(tmp_path: Path, result: BenchmarkResult) -> None:
    with open_store(tmp_path / "r.sqlite") as store:
        run_id = store.add(result)
    with open_store(tmp_path / "r.sqlite") as store:  # read back through a fresh connection
        stored = store.get(run_id)
    assert stored == StoredRun(run_id=run_id, result=result)
    assert stored.result.extra == result.extra  # extra is left out of ==, so compare it on its own
    assert all(isinstance(op, OpTime) for op in stored.result.per_op)


def test_nan_statistics_read_back_as_nan(tmp_path: Path) -> None:
    stats = replace(LatencyStats.from_samples([1.0]), std_ms=math.nan)
    with open_store(tmp_path / "r.sqlite") as store:
        stored = store.get(store.add(measured(stats=stats, samples_ms=(1.0, math.inf))))
    assert stored.result.stats is not None and math.isnan(stored.result.stats.std_ms)
    assert stored.result.samples_ms == (1.0, math.inf)


def test_add_many_and_list_filters(tmp_path: Path) -> None:
    results = [
        measured(created_at="2025-01-01T00:00:00Z"),
        measured(created_at="2025-01-05T00:00:00Z", target="jetson", model_sha256="c" * 64),
        measured(created_at="2025-01-03T00:00:00Z", source=Source.HOST, device=None),
        predicted(created_at="2025-01-04T00:00:00Z"),
    ]
    with open_store(tmp_path / "r.sqlite") as store:
        assert store.add_many([]) == []
        ids = store.add_many(results)
        assert len(set(ids)) == 4 and ids == sorted(ids)
        newest_first = [run.result.created_at for run in store.list_runs()]
        assert newest_first == sorted(newest_first, reverse=True)
        assert [run.run_id for run in store.list_runs(target="jetson")] == [ids[1]]
        assert [run.run_id for run in store.list_runs(source=Source.HOST)] == [ids[2]]
        assert [run.run_id for run in store.list_runs(source="predicted")] == [ids[3]]
        assert [run.run_id for run in store.list_runs(model_sha256="a" * 64)] == [ids[2], ids[0]]
        assert [run.run_id for run in store.list_runs(target="rpi5", source="device")] == [ids[0]]
        assert [run.run_id for run in store.list_runs(limit=2)] == [ids[1], ids[3]]
        assert store.list_runs(limit=0) == []
        assert store.list_runs(target="nowhere") == []


def test_same_created_at_lists_latest_added_first(tmp_path: Path) -> None:
    with open_store(tmp_path / "r.sqlite") as store:
        ids = [store.add(measured()) for _ in range(3)]
        assert [run.run_id for run in store.list_runs()] == ids[::-1]


@pytest.mark.parametrize("bad", [99, 0, -1])
def test_unknown_run_id_is_a_usage_error(tmp_path: Path, bad: int) -> None:
    with open_store(tmp_path / "r.sqlite") as store:
        store.add(measured())
        with pytest.raises(UsageError, match=rf"no run with id {bad} in .*r\.sqlite"):
            store.get(bad)


def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    with open_store(tmp_path / "r.sqlite") as store:
        with pytest.raises(UsageError, match="whole number"):
            store.get("1")  # type: ignore[arg-type]
        with pytest.raises(UsageError, match="unknown source 'phone'"):
            store.list_runs(source="phone")
        with pytest.raises(UsageError, match="limit"):
            store.list_runs(limit=-1)
        with pytest.raises(UsageError, match="extra data"):
            store.add(measured(extra={"handle": object()}))
        assert store.list_runs() == []


# --- exports -------------------------------------------------------------------------------------------


def test_export_csv(tmp_path: Path) -> None:
    with open_store(tmp_path / "r.sqlite") as store:
        store.add_many([measured(), predicted()])
        runs = store.list_runs()
    out = tmp_path / "out" / "runs.csv"
    out.parent.mkdir()
    out.write_text("old contents\n")
    assert export_csv(out, runs) == out
    rows = list(csv.DictReader(out.open(newline="")))
    assert [int(row["id"]) for row in rows] == [run.run_id for run in runs]
    assert list(rows[0])[:3] == ["id", "created_at", "source"]
    device_row = next(row for row in rows if row["source"] == "device")
    assert json.loads(device_row["samples_ms"]) == list(SAMPLES)
    assert float(device_row["median_ms"]) == LatencyStats.from_samples(SAMPLES).median_ms
    assert device_row["threads"] == "4" and device_row["runtime"] == "litert"
    predicted_row = next(row for row in rows if row["source"] == "predicted")
    assert predicted_row["median_ms"] == "" and float(predicted_row["predicted_ms"]) == 4.5
    assert predicted_row["predicted_method"] == "roofline-fit"
    assert sorted(os.listdir(out.parent)) == ["runs.csv"]  # no temporary file left behind


def test_export_json(tmp_path: Path) -> None:
    with open_store(tmp_path / "r.sqlite") as store:
        store.add_many([measured(samples_ms=(1.0, math.nan)), predicted()])
        runs = store.list_runs()
    out = tmp_path / "runs.json"
    export_json(out, runs)
    document = json.loads(out.read_text())
    assert [entry["id"] for entry in document] == [run.run_id for run in runs]
    device = next(entry for entry in document if entry["source"] == "device")
    assert device["samples_ms"] == [1.0, None]  # NaN is not JSON
    assert device["conditions"]["load_avg"] == [0.5, 0.25, 0.125]
    assert device["per_op"][0] == {"name": "conv", "op_type": "CONV_2D", "mean_ms": 1.5}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".runs.json")) == []


def test_export_to_unwritable_place_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="cannot write"):
        export_json(blocker / "runs.json", [])


# --- concurrency ---------------------------------------------------------------------------------------


def _add_25(path: str, worker: int) -> list[int]:
    with open_store(Path(path)) as store:
        return [store.add(measured(model_name=f"w{worker}-{i}")) for i in range(25)]


def test_concurrent_writers_in_several_processes(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"  # not created beforehand: the writers also race to create it
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(max_workers=4, mp_context=multiprocessing.get_context(method)) as pool:
        added = list(pool.map(_add_25, [str(path)] * 4, range(4)))  # re-raises a worker's error here
    assert [len(ids) for ids in added] == [25, 25, 25, 25]
    with open_store(path) as store:
        runs = store.list_runs()
    assert len(runs) == 100
    assert len({run.run_id for run in runs}) == 100
    assert len({run.result.model_name for run in runs}) == 100
    assert sorted(run.run_id for run in runs) == sorted(i for ids in added for i in ids)


# --- refusals: nothing already stored is lost ---------------------------------------------------------


@pytest.mark.parametrize(
    "content", [os.urandom(4096), b"just some notes\n" * 20, b"tiny"], ids=["random", "text", "short"]
)
def test_not_a_database_is_refused_and_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "results.sqlite"
    path.write_bytes(content)
    with pytest.raises(StoreError, match="is not an edge-sdk results store") as caught:
        open_store(path)
    message = str(caught.value)
    assert str(path) in message and "move it away or pass --db with another path" in message
    assert path.read_bytes() == content
    assert sorted(os.listdir(tmp_path)) == ["results.sqlite"]  # no -wal or -shm beside it


def test_foreign_sqlite_database_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (text TEXT)")
        connection.execute("INSERT INTO notes VALUES ('keep me')")
    connection.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=r"not an edge-sdk results store.*--db"):
        open_store(path)
    assert path.read_bytes() == before


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with open_store(path) as store:
        store.add(measured())
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(StoreError, match=r"newer edge-sdk \(store schema 2"):
        open_store(path)
    assert count_rows(path) == 1


def test_locked_store_is_a_store_error_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with open_store(path) as store:
        first = store.add(measured())
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with open_store(path, timeout_s=0.1) as store:
            with pytest.raises(StoreError, match="locked by another process") as caught:
                store.add(measured())
            assert str(path) in str(caught.value)
            assert [run.run_id for run in store.list_runs()] == [first]  # WAL: reading still works
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with open_store(path, timeout_s=0.1) as store:
        second = store.add(measured())
        assert [run.run_id for run in store.list_runs()] == [second, first]


def test_new_store_locked_while_created_elsewhere(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="locked by another process"):
            open_store(path, timeout_s=0.1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_failed_add_is_rolled_back(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with open_store(path) as store:
        kept = store.add_many([measured(), predicted()])
        broken = measured(model_name=None)  # violates NOT NULL inside the transaction
        with pytest.raises(StoreError, match=re.escape(str(path))):
            store.add_many([measured(model_name="lost"), broken])
        with pytest.raises(StoreError):
            store.add(broken)
        assert sorted(run.run_id for run in store.list_runs()) == kept
        assert all(run.result.model_name != "lost" for run in store.list_runs())
        assert store.add(measured()) > max(kept)  # the store is still usable
    assert count_rows(path) == 3


def test_unwritable_parent_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create directory"):
        open_store(blocker / "results.sqlite")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write to any directory")
def test_read_only_directory_is_a_store_error(tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="not writable"):
            open_store(locked / "results.sqlite")
    finally:
        locked.chmod(0o700)


def test_directory_path_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        open_store(tmp_path)


def test_closed_store_raises_store_error(tmp_path: Path) -> None:
    with open_store(tmp_path / "r.sqlite") as store:
        store.add(measured())
    with pytest.raises(StoreError):
        store.list_runs()
