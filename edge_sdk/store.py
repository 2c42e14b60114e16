"""The results store: every benchmark run and prediction, kept in one SQLite file.

One table, `runs`: the summary numbers in plain columns (so they can be filtered, sorted and read by
any SQLite client) and the rest of a `BenchmarkResult` as JSON text, so a stored run reads back equal
to the one written. The file is versioned with `PRAGMA user_version` and marked as ours with
`PRAGMA application_id`; a file that is not ours is never written to. WAL journal mode and a busy
timeout let several processes add runs at once; every write is one transaction.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from edge_sdk.artifact import replace_atomically
from edge_sdk.errors import StoreError, UsageError
from edge_sdk.measurement import BenchmarkResult, Conditions, LatencyStats, OpTime, Prediction, Source
from edge_sdk.serialize import to_jsonable

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_TIMEOUT_S = 30.0
ENV_VAR = "EDGE_SDK_DB"
# Marks the file as an edge-sdk store ("ESDB"), so a foreign SQLite file is refused, not altered.
_APPLICATION_ID = 0x45534442

# Plain columns hold what is filtered, sorted and exported; the JSON columns hold the rest, exactly.
# Conditions are stored whole in `conditions`; runtime, runtime_version and threads repeat them for queries.
_SCHEMA = (
    """CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at TEXT NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('host', 'device', 'predicted')),
        model_name TEXT NOT NULL, model_sha256 TEXT NOT NULL, target TEXT, device TEXT,
        runtime TEXT, runtime_version TEXT, threads INTEGER,
        count INTEGER, median_ms REAL, p90_ms REAL, p99_ms REAL, min_ms REAL, mean_ms REAL, std_ms REAL,
        init_ms REAL, first_run_ms REAL, peak_rss_mb REAL,
        predicted_ms REAL, predicted_low_ms REAL, predicted_high_ms REAL,
        predicted_method TEXT, predicted_fit_models INTEGER,
        sdk_version TEXT NOT NULL,
        samples_ms TEXT NOT NULL, conditions TEXT, per_op TEXT NOT NULL, extra TEXT NOT NULL
    )""",
    "CREATE INDEX runs_target ON runs (target)",
    "CREATE INDEX runs_model_sha256 ON runs (model_sha256)",
)
_STATS = ("count", "median_ms", "p90_ms", "p99_ms", "min_ms", "mean_ms", "std_ms")
# The CSV export: every plain column of `runs`, then the samples as a JSON list.
_SUMMARY_COLUMNS = (
    "id", "created_at", "source", "model_name", "model_sha256", "target", "device",
    "runtime", "runtime_version", "threads", *_STATS, "init_ms", "first_run_ms", "peak_rss_mb",
    "predicted_ms", "predicted_low_ms", "predicted_high_ms", "predicted_method", "predicted_fit_models",
    "sdk_version", "samples_ms",
)  # fmt: skip
_NEXT_STEP = "move it away or pass --db with another path"


@dataclasses.dataclass(frozen=True)
class StoredRun:
    run_id: int
    result: BenchmarkResult


def store_path(path: Path | str | None = None) -> Path:
    """Where the store lives: `path` if given, else $EDGE_SDK_DB, else the user's cache directory."""
    if path is not None:
        return Path(path).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(cache) if os.path.isabs(cache) else Path.home() / ".cache"  # XDG: relative values are ignored
    return base / "edge-sdk" / "results.sqlite"


def open_store(path: Path | str | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> ResultStore:
    """Open (creating if needed) the results store; use it as a context manager to close it."""
    where = store_path(path)
    _check_place(where)
    try:
        connection = sqlite3.connect(where, timeout=timeout_s, isolation_level=None)
    except sqlite3.Error as exc:
        raise _store_error(where, exc, timeout_s) from None
    try:
        _prepare_retrying(connection, where, timeout_s)
    except sqlite3.Error as exc:
        connection.close()
        raise _store_error(where, exc, timeout_s) from None
    except BaseException:
        connection.close()
        raise
    # WAL with synchronous=NORMAL: a commit no longer waits for an fsync (the WAL is synced at
    # checkpoints), which keeps concurrent writers from queueing behind each other's disk flushes; a
    # power cut can lose the last runs, never corrupt the store.
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.row_factory = sqlite3.Row
    return ResultStore(connection, where, timeout_s)


class ResultStore:
    """An open results store. Made by `open_store`; not shared between threads or processes."""

    def __init__(self, connection: sqlite3.Connection, path: Path, timeout_s: float) -> None:
        self._connection = connection
        self.path = path
        self.timeout_s = timeout_s

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._connection.close()

    def add(self, result: BenchmarkResult) -> int:
        """Store one run; returns its id."""
        return self.add_many([result])[0]

    def add_many(self, results: Iterable[BenchmarkResult]) -> list[int]:
        """Store several runs in one transaction: all of them or, on an error, none."""
        rows = [_to_row(result) for result in results]
        if not rows:
            return []
        columns = list(rows[0])
        sql = f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        ids: list[int] = []
        with self._transaction():
            for row in rows:
                cursor = self._connection.execute(sql, [row[c] for c in columns])
                assert cursor.lastrowid is not None
                ids.append(cursor.lastrowid)
        return ids

    def get(self, run_id: int) -> StoredRun:
        if isinstance(run_id, bool) or not isinstance(run_id, int):
            raise UsageError(f"a run id is a whole number, not {run_id!r}")
        rows = self._select("SELECT * FROM runs WHERE id = ?", [run_id])
        if not rows:
            raise UsageError(f"no run with id {run_id} in {self.path}; list the stored runs to see their ids")
        return rows[0]

    def list_runs(
        self,
        *,
        target: str | None = None,
        source: Source | str | None = None,
        model_sha256: str | None = None,
        limit: int | None = None,
    ) -> list[StoredRun]:
        """Stored runs matching every filter given, newest first (by created_at, then by id)."""
        clauses: list[str] = []
        params: list[object] = []
        for column, value in (("target", target), ("source", _source(source)), ("model_sha256", model_sha256)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT * FROM runs{where} ORDER BY created_at DESC, id DESC"
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise UsageError(f"limit must be a whole number >= 0, not {limit!r}")
            sql += " LIMIT ?"
            params.append(limit)
        return self._select(sql, params)

    def _select(self, sql: str, params: Sequence[object]) -> list[StoredRun]:
        try:
            rows = self._connection.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc, self.timeout_s) from None
        return [_from_row(row) for row in rows]

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front, so concurrent writers queue on the busy timeout
        # instead of failing when a read lock cannot be upgraded.
        try:
            with _in_transaction(self._connection, "BEGIN IMMEDIATE"):
                yield
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc, self.timeout_s) from None


def export_csv(path: Path | str, runs: Iterable[StoredRun]) -> Path:
    """One row per run: its id, the summary columns and the samples as a JSON list."""
    rows = [_summary(run) for run in runs]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return _write_atomically(Path(path), buffer.getvalue())


def export_json(path: Path | str, runs: Iterable[StoredRun]) -> Path:
    """A JSON list of runs, each the whole result plus its id (non-finite numbers become null)."""
    document = [{"id": run.run_id, **to_jsonable(run.result)} for run in runs]
    return _write_atomically(Path(path), json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n")


# --- opening ---------------------------------------------------------------------------------------


def _check_place(path: Path) -> None:
    """Create the parent directories; refuse a path where no store can be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create directory {path.parent} for the results store ({exc.strerror}); "
            f"pass --db or set {ENV_VAR} to a writable path"
        ) from None
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not an edge-sdk results store; pass --db with a file path")
    # SQLite also writes -wal and -shm files beside the store, so the directory itself must be writable.
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise StoreError(
            f"directory {path.parent} is not writable, so the results store {path.name} cannot be written there; "
            f"pass --db or set {ENV_VAR} to a writable path"
        )


def _prepare_retrying(connection: sqlite3.Connection, path: Path, timeout_s: float) -> None:
    """_prepare, retried while another process creates the store: switching a new file to WAL can
    fail with SQLITE_BUSY at once, without SQLite's busy handler (seen once in 700 test runs)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _prepare(connection, path)
            return
        except sqlite3.OperationalError as exc:
            busy = (getattr(exc, "sqlite_errorcode", -1) & 0xFF) in (_BUSY, _LOCKED) or "locked" in str(exc)
            if not busy or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def _prepare(connection: sqlite3.Connection, path: Path) -> None:
    """Refuse a file that is not ours before anything is written to it; then create the schema."""
    with _in_transaction(connection, "BEGIN"):  # one snapshot: another process may be creating the store
        ours = _is_ours_or_empty(connection, path)
        version = _user_version(connection)
    if not ours:
        raise StoreError(f"{path} is not an edge-sdk results store (it holds another database): {_NEXT_STEP}")
    if version == SCHEMA_VERSION:
        return  # an existing store: opening it takes no lock
    connection.execute("PRAGMA journal_mode = WAL")  # persistent; cannot be set inside a transaction
    with _in_transaction(connection, "BEGIN IMMEDIATE"):
        # Checked again under the write lock: another process may have created the schema meanwhile.
        if _is_ours_or_empty(connection, path) and _user_version(connection) == 0:
            for statement in _SCHEMA:
                connection.execute(statement)
            connection.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            log.info("created results store %s", path)


@contextlib.contextmanager
def _in_transaction(connection: sqlite3.Connection, begin: str) -> Iterator[None]:
    connection.execute(begin)
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")
        raise


def _is_ours_or_empty(connection: sqlite3.Connection, path: Path) -> bool:
    """True for our store or an empty database; raises for a newer schema of ours."""
    application_id = connection.execute("PRAGMA application_id").fetchone()[0]
    version = _user_version(connection)
    if application_id != _APPLICATION_ID:
        tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        return application_id == 0 and version == 0 and tables == 0
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} was written by a newer edge-sdk (store schema {version}, this version reads up to "
            f"{SCHEMA_VERSION}); upgrade edge-sdk or pass --db with another path"
        )
    return True


def _user_version(connection: sqlite3.Connection) -> int:
    return int(connection.execute("PRAGMA user_version").fetchone()[0])


_BUSY, _LOCKED, _READONLY, _CANTOPEN, _CORRUPT, _NOTADB = 5, 6, 8, 14, 11, 26


def _store_error(path: Path, exc: sqlite3.Error, timeout_s: float) -> StoreError:
    code = getattr(exc, "sqlite_errorcode", -1) & 0xFF
    text = str(exc)
    if code in (_BUSY, _LOCKED) or "locked" in text:
        return StoreError(
            f"{path} is locked by another process (waited {timeout_s:g} s); "
            "try again when it finishes, or pass --db with another path"
        )
    if code == _NOTADB or "not a database" in text:
        return StoreError(f"{path} is not an edge-sdk results store ({text}): {_NEXT_STEP}")
    if code == _CORRUPT:
        return StoreError(f"{path} is damaged ({text}): {_NEXT_STEP}")
    if code == _READONLY:
        return StoreError(f"{path} is read-only ({text}); make it writable or pass --db with another path")
    if code == _CANTOPEN:
        return StoreError(
            f"cannot open {path} ({text}); check that {path.parent} is writable, or pass --db with another path"
        )
    return StoreError(f"results store {path} failed ({text}); check the file and free disk space")


# --- rows <-> results ------------------------------------------------------------------------------


def _to_row(result: BenchmarkResult) -> dict[str, Any]:
    conditions, stats, prediction = result.conditions, result.stats, result.prediction
    return {
        "created_at": result.created_at,
        "source": Source(result.source).value,
        "model_name": result.model_name,
        "model_sha256": result.model_sha256,
        "target": result.target,
        "device": result.device,
        "runtime": conditions.runtime if conditions else None,
        "runtime_version": conditions.runtime_version if conditions else None,
        "threads": conditions.threads if conditions else None,
        **{name: getattr(stats, name) if stats else None for name in _STATS},
        "init_ms": result.init_ms,
        "first_run_ms": result.first_run_ms,
        "peak_rss_mb": result.peak_rss_mb,
        "predicted_ms": prediction.latency_ms if prediction else None,
        "predicted_low_ms": prediction.low_ms if prediction else None,
        "predicted_high_ms": prediction.high_ms if prediction else None,
        "predicted_method": prediction.method if prediction else None,
        "predicted_fit_models": prediction.fit_models if prediction else None,
        "sdk_version": result.sdk_version,
        # JSON here is private to the store, so NaN and infinities are kept (Python reads them back).
        "samples_ms": json.dumps(list(result.samples_ms)),
        "conditions": json.dumps(dataclasses.asdict(conditions)) if conditions else None,
        "per_op": json.dumps([dataclasses.asdict(op) for op in result.per_op]),
        "extra": _extra_json(result),
    }


def _extra_json(result: BenchmarkResult) -> str:
    try:
        return json.dumps(to_jsonable(result.extra), default=_plain)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"the extra data of the run of {result.model_name} cannot be stored as JSON ({exc})") from None


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _from_row(row: sqlite3.Row) -> StoredRun:
    conditions = json.loads(row["conditions"]) if row["conditions"] is not None else None
    if conditions is not None and conditions.get("load_avg") is not None:
        conditions["load_avg"] = tuple(conditions["load_avg"])
    result = BenchmarkResult(
        source=Source(row["source"]),
        model_name=row["model_name"],
        model_sha256=row["model_sha256"],
        target=row["target"],
        device=row["device"],
        init_ms=row["init_ms"],
        first_run_ms=row["first_run_ms"],
        stats=_stats(row),
        samples_ms=tuple(json.loads(row["samples_ms"])),
        peak_rss_mb=row["peak_rss_mb"],
        conditions=Conditions(**conditions) if conditions is not None else None,
        sdk_version=row["sdk_version"],
        created_at=row["created_at"],
        per_op=tuple(OpTime(**op) for op in json.loads(row["per_op"])),
        prediction=_prediction(row),
        extra=json.loads(row["extra"]),
    )
    return StoredRun(run_id=row["id"], result=result)


def _stats(row: sqlite3.Row) -> LatencyStats | None:
    if row["count"] is None:
        return None
    # SQLite stores a NaN REAL as NULL; read it back as NaN.
    values = {name: float("nan") if row[name] is None else row[name] for name in _STATS[1:]}
    return LatencyStats(count=row["count"], **values)


def _prediction(row: sqlite3.Row) -> Prediction | None:
    if row["predicted_method"] is None:
        return None
    return Prediction(
        latency_ms=row["predicted_ms"],
        low_ms=row["predicted_low_ms"],
        high_ms=row["predicted_high_ms"],
        method=row["predicted_method"],
        fit_models=row["predicted_fit_models"],
    )


def _source(source: Source | str | None) -> str | None:
    if source is None:
        return None
    try:
        return Source(source).value
    except ValueError:
        known = ", ".join(s.value for s in Source)
        raise UsageError(f"unknown source {source!r}; use one of {known}") from None


# --- exports ---------------------------------------------------------------------------------------


def _summary(run: StoredRun) -> dict[str, Any]:
    row = _to_row(run.result)
    row["id"] = run.run_id
    row["samples_ms"] = json.dumps(to_jsonable(list(run.result.samples_ms)))  # standard JSON: NaN -> null
    return {name: row[name] for name in _SUMMARY_COLUMNS}


def _write_atomically(path: Path, text: str) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write {path} ({exc.strerror}); check the directory and free space") from None
    replace_atomically([(path, text.encode("utf-8"))])
    return path
