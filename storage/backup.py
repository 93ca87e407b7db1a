"""`peakdesk backup` / `peakdesk restore`: Redis state and ClickHouse events, consistent with
each other, to and from a directory or an S3-compatible store.

A backup is a directory (or an S3 prefix) holding
- `redis.msgpack`: every key under the cluster's prefix as msgpack records `[key, pttl, dump]`
  (DUMP payloads: any type, streams with their consumer groups and pending lists; pttl 0 = no
  expiry), heartbeats (`{p}hb:*`) and the writers' pause keys (`{p}writers:*`) left out;
- `events/events-NNNNN.parquet`: the `events` table, a file per run of days (at most
  CHUNK_ROWS rows each), read with FINAL so that no event id appears twice;
- `manifest.json`, written last: format, peakdesk version, time, prefix, database, counts (keys,
  events per type in ClickHouse and in the outbox), and the SHA-256 and size of every file.

Consistency (the argument, also in docs/operations.md):
1. The writers are paused first (storage.writer: a flag in Redis they check between batches;
   each confirms, so none has a batch in flight). Writers are the only path into the events
   table, so from here until they resume the table does not change: call it C.
2. Redis is then dumped at one instant: CLIENT PAUSE WRITE holds every client's writes (reads
   go on) while we SCAN and DUMP, so the dump R is a point-in-time copy of all keys.
3. An actor host commits a state change and appends its events to the outbox in one MULTI/EXEC.
   So for every state change in R, its events were either still in an outbox stream at that
   instant (they are in R) or had been acknowledged (XACK+XDEL) by a writer, which writers do
   only after ClickHouse accepted them and, being paused, did before step 1 (they are in C).
   Nothing is missing. An event in both C and R's outbox can only be in an entry a writer read
   and did not acknowledge (its pending list); a restored writer re-reads its pending entries
   first, as redeliveries, and drops ids ClickHouse has. Nothing is stored twice; entries never
   read were never inserted. C is exported with FINAL, so it holds each event id once.
4. C is exported (Parquet), then the writers resume and drain what queued meanwhile.
Restore = C's rows + R's keys (outbox included); when peakdesk starts, its writers drain R's
outbox into ClickHouse, and the result is every event of the backup exactly once.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import msgpack
import orjson
import redis

from storage import outbox
from storage.writer import pause_key, paused_key

FORMAT = "peakdesk-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REDIS_FILE = "redis.msgpack"
CHUNK_ROWS = 250_000          # events per Parquet file: each travels whole through Ray and memory
EVENT_COLUMNS = ("event_id", "merchant_id", "type", "actor_key", "seq", "session_id", "ts", "channel",
                 "agent_id", "customer_id", "group_id", "payload", "inserted_at")
_FILE_NAME = re.compile(r"^(redis\.msgpack|events/events-\d{5}\.parquet)$")
_DATABASE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_S3_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
PAUSE_FLAG_TTL_S = 60.0       # a crashed backup holds the writers this long at most
LIVENESS_WINDOW_S = 3.0       # > the 2 s heartbeat period of hosts, gateways and writers

QueryFn = Callable[[str, "dict | None"], list]
ExportFn = Callable[[str, "dict | None", str], bytes]


class BackupInputError(ValueError):
    """Refused before anything changed: a bad location, manifest, checksum or target. CLI exit 2."""


class BackupError(RuntimeError):
    """The backup or restore failed on the way; the message says what to do. CLI exit 1."""


def peakdesk_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("peakdesk")
    except PackageNotFoundError:
        return "unknown"


def skipped_prefixes(prefix: str) -> tuple[str, ...]:
    """Keys a backup leaves out: heartbeats say which processes live now, and the pause keys
    belong to the backup itself."""
    return (f"{prefix}hb:", f"{prefix}writers:")


# --- where a backup lives -------------------------------------------------------------------------

def location(text: str, *, s3_endpoint_url: str | None = None, s3_region: str | None = None,
             s3_client: Any = None) -> "DirLocation | S3Location":
    """A directory path, or s3://BUCKET/PREFIX (credentials from boto3's chain: AWS_* variables,
    ~/.aws, an instance or pod role)."""
    if not text:
        raise BackupInputError("the backup location is empty: give a directory or s3://BUCKET/PREFIX")
    if text.startswith("s3://"):
        bucket, _, key_prefix = text[5:].partition("/")
        key_prefix = key_prefix.strip("/")
        segments = key_prefix.split("/") if key_prefix else []
        if not _BUCKET.match(bucket) or not segments or any(
                not _S3_SEGMENT.match(s) or not s.strip(".") for s in segments):
            raise BackupInputError(f"{text!r} is not s3://BUCKET/PREFIX (bucket: 3-63 of a-z 0-9 . -; a prefix of "
                                   "segments of A-Z a-z 0-9 _ . - is required, one backup per prefix)")
        if s3_client is None:
            from storage.attachments_s3 import make_client

            s3_client = make_client(s3_endpoint_url, s3_region)
        return S3Location(bucket, key_prefix, s3_client, s3_endpoint_url)
    if "://" in text:
        raise BackupInputError(f"{text!r}: a backup location is a directory or s3://BUCKET/PREFIX")
    return DirLocation(Path(text))


class DirLocation:
    def __init__(self, path: Path):
        self.path = Path(path).absolute()

    def __str__(self) -> str:
        return str(self.path)

    def check_writable(self) -> None:
        if self.path.exists():
            if not self.path.is_dir():
                raise BackupInputError(f"{self.path} exists and is not a directory")
            if any(self.path.iterdir()):
                raise BackupInputError(f"{self.path} is not empty: back up into a new or empty directory")
        elif not self.path.parent.is_dir():
            raise BackupInputError(f"{self.path.parent} does not exist (the backup directory's parent must)")
        if not os.access(self.path if self.path.exists() else self.path.parent, os.W_OK):
            raise BackupInputError(f"{self.path}: not writable by this user")

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        created = not self.path.exists()
        self.path.mkdir(exist_ok=True)
        try:
            yield self.path
        except BaseException:  # an unfinished backup must not look like one: remove what we wrote
            if created:
                shutil.rmtree(self.path, ignore_errors=True)
            else:
                for child in self.path.iterdir():
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            raise

    def publish(self, staged: Path, names: list[str]) -> None:
        """The files are in place already; the manifest, written last, completes the backup."""

    @contextlib.contextmanager
    def reading(self) -> Iterator["_DirReader"]:
        if not self.path.is_dir():
            raise BackupInputError(f"no backup directory {self.path}")
        yield _DirReader(self.path)


class _DirReader:
    def __init__(self, root: Path):
        self.root = root

    def manifest(self) -> bytes:
        path = self.root / MANIFEST
        if not path.is_file():
            raise BackupInputError(f"{path} is missing: {self.root} is not a peakdesk backup (or an unfinished one)")
        return path.read_bytes()

    def files(self, names: list[str]) -> Path:
        for name in names:
            if not (self.root / name).is_file():
                raise BackupInputError(f"{self.root / name} is missing (listed in the manifest)")
        return self.root


class S3Location:
    def __init__(self, bucket: str, key_prefix: str, client: Any, endpoint_url: str | None = None):
        self.bucket, self.key_prefix, self.client, self.endpoint_url = bucket, key_prefix, client, endpoint_url

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key_prefix}"

    def key(self, name: str) -> str:
        return f"{self.key_prefix}/{name}"

    def _call(self, what: str, fn: Callable, *args, missing: str | None = None, **kwargs):
        """A boto3 call; a store that cannot be reached or refuses is a BackupInputError naming
        it (`missing`: the message when the object is not there)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            if missing and str(err.get("Code")) in ("NoSuchKey", "404", "NotFound"):
                raise BackupInputError(missing) from None
            raise BackupInputError(f"{self}: {what} refused by S3 ({err.get('Code', '?')}: "
                                   f"{err.get('Message', exc)})") from None
        except BotoCoreError as exc:
            where = self.endpoint_url or "AWS S3"
            raise BackupInputError(f"{self}: {what} failed, S3 at {where} is unreachable or unusable: {exc}") from None

    def check_writable(self) -> None:
        self._call("checking the bucket", self.client.head_bucket, Bucket=self.bucket)
        page = self._call("listing the prefix", self.client.list_objects_v2, Bucket=self.bucket,
                          Prefix=self.key_prefix + "/", MaxKeys=1)
        if page.get("KeyCount", 0) or page.get("Contents"):
            raise BackupInputError(f"{self} already holds objects: back up under a new prefix")

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="peakdesk-backup-") as tmp:
            yield Path(tmp)

    def publish(self, staged: Path, names: list[str]) -> None:
        """Upload every file, the manifest last: a prefix without manifest.json is no backup."""
        from botocore.exceptions import BotoCoreError, ClientError

        done: list[str] = []
        try:
            for name in [n for n in names if n != MANIFEST] + [MANIFEST]:
                self.client.upload_file(str(staged / name), self.bucket, self.key(name))
                done.append(name)
        except (BotoCoreError, ClientError) as exc:
            for name in done:  # best effort: leave no half backup behind
                with contextlib.suppress(Exception):
                    self.client.delete_object(Bucket=self.bucket, Key=self.key(name))
            raise BackupError(f"uploading the backup to {self} failed: {exc}") from None

    @contextlib.contextmanager
    def reading(self) -> Iterator["_S3Reader"]:
        with tempfile.TemporaryDirectory(prefix="peakdesk-restore-") as tmp:
            yield _S3Reader(self, Path(tmp))


class _S3Reader:
    def __init__(self, loc: S3Location, root: Path):
        self.loc, self.root = loc, root

    def manifest(self) -> bytes:
        def read() -> bytes:
            return self.loc.client.get_object(Bucket=self.loc.bucket, Key=self.loc.key(MANIFEST))["Body"].read()

        return self.loc._call("reading the manifest", read, missing=f"{self.loc}/{MANIFEST} is missing: "
                              "not a peakdesk backup (or an unfinished one)")

    def files(self, names: list[str]) -> Path:
        for name in names:
            (self.root / name).parent.mkdir(parents=True, exist_ok=True)
            self.loc._call(f"downloading {name}", self.loc.client.download_file, self.loc.bucket,
                           self.loc.key(name), str(self.root / name),
                           missing=f"{self.loc}/{name} is missing (listed in the manifest)")
        return self.root


# --- pausing the writers --------------------------------------------------------------------------

_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class WritersPause:
    """Holds the writers still (see storage.writer) from `__enter__` until `__exit__`: returns
    from `__enter__` only when every writer — those named and those with a live heartbeat —
    confirmed that it honours this pause. The flag expires PAUSE_FLAG_TTL_S after the last
    renewal, so a backup that dies does not stop the events pipeline for longer."""

    def __init__(self, redis_url: str, prefix: str, writers: Iterable[str] = (), timeout_s: float = 60.0,
                 ttl_s: float = PAUSE_FLAG_TTL_S):
        self.redis_url, self.prefix, self.timeout_s, self.ttl_ms = redis_url, prefix, timeout_s, int(ttl_s * 1000)
        self.writers = set(writers)
        self.token = f"backup-{uuid.uuid4().hex[:12]}@{socket.gethostname()}:{os.getpid()}"
        self.paused_s = 0.0
        self._r = redis.Redis.from_url(redis_url, socket_timeout=30)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def __enter__(self) -> "WritersPause":
        key = pause_key(self.prefix)
        if not self._r.set(key, self.token, nx=True, px=self.ttl_ms):
            holder = self._r.get(key)
            self._r.close()
            raise BackupInputError(f"the writers are already paused by {holder.decode(errors='replace') if holder else '?'}"
                                   f" (another backup running?); it lapses within {self.ttl_ms // 1000} s if that died")
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._renew_loop, name="backup-pause-renewal", daemon=True)
        self._thread.start()
        try:
            self._wait_confirmed()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _writer_names(self) -> set[str]:
        hb = f"{self.prefix}hb:writer:"
        live = {k.decode()[len(hb):] for k in self._r.scan_iter(match=outbox._glob_escape(hb) + "*", count=1000)}
        return self.writers | live

    def _wait_confirmed(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            names = sorted(self._writer_names())
            values = self._r.mget([paused_key(self.prefix, n) for n in names]) if names else []
            waiting = [n for n, v in zip(names, values) if v is None or v.decode() != self.token]
            if not waiting:
                return
            if time.monotonic() > deadline:
                states = []
                for name in waiting:
                    raw = self._r.get(f"{self.prefix}hb:writer:{name}")
                    stats = orjson.loads(raw) if raw else None
                    states.append(f"{name} ({'no heartbeat' if stats is None else stats.get('state')}"
                                  f"{'; last error: ' + stats['last_error'] if stats and stats.get('last_error') else ''})")
                raise BackupError(f"writer(s) did not pause within {self.timeout_s:g} s: {', '.join(states)};"
                                  " nothing was backed up")
            time.sleep(0.05)

    def _renew_loop(self) -> None:
        r = redis.Redis.from_url(self.redis_url, socket_timeout=None)  # may wait out a CLIENT PAUSE
        try:
            while not self._stop.wait(self.ttl_ms / 4000):
                with contextlib.suppress(redis.RedisError):  # check_held() is the word that counts
                    r.eval(_RENEW, 1, pause_key(self.prefix), self.token, self.ttl_ms)
        finally:
            r.close()

    def check_held(self) -> None:
        """Raise BackupError unless the flag has been ours all along (a token is never set
        twice, so if it is still there it never lapsed) and every writer still confirms it."""
        if not self._r.eval(_RENEW, 1, pause_key(self.prefix), self.token, self.ttl_ms):
            raise BackupError("the writers' pause lapsed during the backup (was it deleted by hand?); "
                              "the backup is not consistent and was discarded")

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self._r.eval(_RELEASE, 1, pause_key(self.prefix), self.token)
        finally:
            self.paused_s = round(time.monotonic() - self._t0, 3)
            self._r.close()


# --- backing up -----------------------------------------------------------------------------------

def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def _scan_prefix(r: redis.Redis, prefix: str) -> Iterator[bytes]:
    seen: set[bytes] = set()
    for key in r.scan_iter(match=outbox._glob_escape(prefix) + "*", count=1000):
        if key not in seen:  # SCAN may return a key twice
            seen.add(key)
            yield key


def dump_redis(r: redis.Redis, prefix: str, path: Path, max_pause_s: float = 30.0, batch: int = 500) -> dict:
    """Write every key under `prefix` (but the skipped ones) to `path`, at one instant: client
    writes wait (CLIENT PAUSE WRITE) while we read. Also reads the outbox streams, to count
    their events by type. Raises BackupError if that took `max_pause_s` or more (Redis then
    let writes through again before we were done)."""
    skip = tuple(p.encode() for p in skipped_prefixes(prefix))
    shard_key = re.compile(re.escape(prefix.encode()) + rb"outbox:\d+")
    stats: dict[str, Any] = {"keys": 0, "outbox_entries": 0, "outbox_pending_entries": 0, "outbox_dead_entries": 0}
    by_type: Counter = Counter()
    pending_ids: list[tuple[str, str]] = []  # (event id, type) in entries a writer read and did not acknowledge
    t0 = time.monotonic()
    try:
        r.execute_command("CLIENT", "PAUSE", int(max_pause_s * 1000), "WRITE")
    except redis.ResponseError as exc:
        raise BackupError(f"Redis refused CLIENT PAUSE WRITE (backup needs Redis >= 6.2 and the right to pause "
                          f"clients): {exc}") from None
    try:
        stats["time"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        packer = msgpack.Packer(use_bin_type=True)
        with open(path, "wb") as f:
            keys: list[bytes] = []

            def flush() -> None:
                pipe = r.pipeline(transaction=False)
                for k in keys:
                    pipe.pttl(k)
                    pipe.dump(k)
                replies = pipe.execute()
                for i, k in enumerate(keys):
                    pttl, payload = replies[2 * i], replies[2 * i + 1]
                    if payload is None or pttl == -2:  # expired or gone
                        continue
                    f.write(packer.pack([k, pttl if pttl > 0 else 0, payload]))
                    stats["keys"] += 1
                keys.clear()

            for key in _scan_prefix(r, prefix):
                if key.startswith(skip):
                    continue
                keys.append(key)
                if shard_key.fullmatch(key):
                    _count_outbox(r, key.decode(), by_type, pending_ids, stats)
                elif key == outbox.dead_key(prefix).encode():
                    stats["outbox_dead_entries"] = r.xlen(key)
                if len(keys) >= batch:
                    flush()
            flush()
            f.flush()
            os.fsync(f.fileno())
        stats["redis_version"] = r.info("server")["redis_version"]
        stats["backlog"] = int(r.get(outbox.backlog_key(prefix)) or 0)
    finally:
        r.execute_command("CLIENT", "UNPAUSE")
        stats["paused_s"] = round(time.monotonic() - t0, 3)
    if stats["paused_s"] >= max_pause_s:
        raise BackupError(f"dumping Redis took {stats['paused_s']} s, not under the {max_pause_s:g} s write pause: "
                          "the dump is not one instant; raise --max-redis-pause or back Redis up by RDB")
    stats["outbox_by_type"] = dict(by_type)
    stats["pending_ids"] = pending_ids
    return stats


def _count_outbox(r: redis.Redis, key: str, by_type: Counter, pending_ids: list, stats: dict) -> None:
    pending: set[str] = set()
    with contextlib.suppress(redis.ResponseError):  # NOGROUP: no writer read this shard yet
        start = "-"
        while True:
            rows = r.xpending_range(key, outbox.GROUP, min=start, max="+", count=1000)
            pending.update(row["message_id"].decode() for row in rows)
            if len(rows) < 1000:
                break
            start = "(" + rows[-1]["message_id"].decode()
    start = "-"
    while True:
        rows = r.xrange(key, min=start, max="+", count=500)
        for entry_id, fields in rows:
            entry = outbox.parse_entry(key, entry_id.decode(), fields)
            stats["outbox_entries"] += 1
            for ev in entry.events or []:
                by_type[ev.type] += 1
                if entry.id in pending:
                    pending_ids.append((ev.event_id, ev.type))
        if len(rows) < 500:
            break
        start = "(" + rows[-1][0].decode()
    stats["outbox_pending_entries"] += len(pending)


def export_events(query: QueryFn, export: ExportFn, out: Path, chunk_rows: int = CHUNK_ROWS) -> dict:
    """The events table (it must not change meanwhile) as Parquet files of whole days."""
    days = [(str(d), int(n)) for d, n in query("SELECT toString(toDate(ts)) AS d, count() FROM events FINAL "
                                               "GROUP BY d ORDER BY d", None)]
    by_type = {str(t): int(n) for t, n in query("SELECT type, count() FROM events FINAL GROUP BY type", None)}
    chunks: list[list] = []
    for day, n in days:
        if chunks and chunks[-1][2] + n <= chunk_rows:
            chunks[-1][1], chunks[-1][2] = day, chunks[-1][2] + n
        else:
            chunks.append([day, day, n])
    (out / "events").mkdir(exist_ok=True)
    files = []
    sql = (f"SELECT {', '.join(EVENT_COLUMNS)} FROM events FINAL WHERE toDate(ts) BETWEEN {{a:Date}} AND {{b:Date}}"
           " ORDER BY ts, event_id")
    for i, (first, last, rows) in enumerate(chunks, 1):
        name = f"events/events-{i:05d}.parquet"
        (out / name).write_bytes(export(sql, {"a": first, "b": last}, "Parquet"))
        files.append({"name": name, "rows": rows, "first_day": first, "last_day": last})
    if sum(n for _, n in days) != sum(by_type.values()):
        raise BackupError("the events table changed during the export (are the writers really paused?)")
    schema = [int(v) for v, in query("SELECT DISTINCT version FROM schema_migrations ORDER BY version", None)]
    return {"events": sum(by_type.values()), "by_type": by_type, "files": files, "schema_versions": schema}


def backup(dest: "DirLocation | S3Location", *, redis_url: str, prefix: str, database: str, query: QueryFn,
           export: ExportFn, writers: Iterable[str] = (), pause: WritersPause | None = None,
           pause_timeout_s: float = 60.0, max_redis_pause_s: float = 30.0, chunk_rows: int = CHUNK_ROWS) -> dict:
    """Back the cluster under `prefix` up to `dest`; returns the manifest. `query`/`export` reach
    its ClickHouse (through a writer actor: in embedded mode chDB lives in the writer). `pause`:
    an already entered WritersPause to use (else one is taken and released here)."""
    if not _DATABASE.match(database):
        raise BackupInputError(f"database {database!r} is not a plain identifier")
    dest.check_writable()
    r = redis.Redis.from_url(redis_url, socket_timeout=120)
    try:
        try:
            version = r.info("server")["redis_version"]
        except redis.RedisError as exc:
            raise BackupInputError(f"Redis at {redis_url} is unreachable: {exc}") from None
        if _version_tuple(version) < (6, 2):
            raise BackupInputError(f"Redis {version} at {redis_url}: backup needs Redis >= 6.2 (CLIENT PAUSE WRITE)")
        t0 = time.monotonic()
        try:
            return _backup(dest, r, t0, redis_url=redis_url, prefix=prefix, database=database, query=query,
                           export=export, writers=writers, pause=pause, pause_timeout_s=pause_timeout_s,
                           max_redis_pause_s=max_redis_pause_s, chunk_rows=chunk_rows)
        except (BackupError, BackupInputError):
            raise
        except Exception as exc:  # ClickHouse or Redis failed, a Ray call died...
            raise BackupError(f"the backup failed: {type(exc).__name__}: {str(exc)[:500]}; nothing was kept "
                              "and the writers were resumed") from exc
    finally:
        r.close()


def _backup(dest, r: redis.Redis, t0: float, *, redis_url: str, prefix: str, database: str, query: QueryFn,
            export: ExportFn, writers: Iterable[str], pause: WritersPause | None, pause_timeout_s: float,
            max_redis_pause_s: float, chunk_rows: int) -> dict:
    with dest.staging() as out:
        with (contextlib.nullcontext(pause) if pause is not None
              else WritersPause(redis_url, prefix, writers, pause_timeout_s)) as held:
            dumped = dump_redis(r, prefix, out / REDIS_FILE, max_redis_pause_s)
            t_export = time.monotonic()
            events = export_events(query, export, out, chunk_rows)
            overlap = _stored_already(query, dumped.pop("pending_ids"))
            held.check_held()
            export_s = round(time.monotonic() - t_export, 3)
        manifest = _manifest(prefix, database, dumped, events, overlap, out)
        manifest["timings"] = {"redis_pause_s": dumped["paused_s"], "export_s": export_s,
                               "writers_paused_s": held.paused_s if pause is None else None,
                               "total_s": round(time.monotonic() - t0, 3)}
        (out / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        dest.publish(out, [*manifest["files"], MANIFEST])
    return manifest


def _stored_already(query: QueryFn, pending: list[tuple[str, str]]) -> Counter:
    """Of the events in pending outbox entries, those ClickHouse holds already (by type)."""
    found: Counter = Counter()
    types = dict(pending)
    ids = list(types)
    for i in range(0, len(ids), 2000):
        rows = query("SELECT DISTINCT toString(event_id) FROM events WHERE toString(event_id) IN {ids:Array(String)}",
                     {"ids": ids[i:i + 2000]})
        found.update(types[row[0]] for row in rows)
    return found


def _manifest(prefix: str, database: str, dumped: dict, events: dict, overlap: Counter, out: Path) -> dict:
    total = Counter(events["by_type"]) + Counter(dumped["outbox_by_type"])
    total.subtract(overlap)
    names = [REDIS_FILE] + [f["name"] for f in events["files"]]
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "peakdesk_version": peakdesk_version(),
        "created_at": dumped["time"], "host": socket.gethostname(), "prefix": prefix, "database": database,
        "events": {"total": sum(total.values()), "by_type": {t: n for t, n in sorted(total.items()) if n}},
        "clickhouse": {"events": events["events"], "by_type": events["by_type"], "files": events["files"],
                       "schema_versions": events["schema_versions"]},
        "outbox": {"events": sum(dumped["outbox_by_type"].values()), "by_type": dumped["outbox_by_type"],
                   "entries": dumped["outbox_entries"], "pending_entries": dumped["outbox_pending_entries"],
                   "already_in_clickhouse": sum(overlap.values()), "backlog_counter": dumped["backlog"],
                   "dead_entries": dumped["outbox_dead_entries"]},
        "redis": {"file": REDIS_FILE, "keys": dumped["keys"], "version": dumped["redis_version"],
                  "left_out": list(skipped_prefixes(prefix))},
        "files": {name: {"sha256": _sha256(out / name), "bytes": (out / name).stat().st_size} for name in names},
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- reading a backup back ------------------------------------------------------------------------

@dataclass
class Backup:
    """A backup whose manifest is valid and whose files all match their checksums."""

    manifest: dict
    root: Path
    where: str

    @property
    def prefix(self) -> str:
        return self.manifest["prefix"]

    @property
    def database(self) -> str:
        return self.manifest["database"]

    def redis_records(self) -> Iterator[tuple[bytes, int, bytes]]:
        with open(self.root / REDIS_FILE, "rb") as f:
            for record in msgpack.Unpacker(f, raw=True, max_buffer_size=1 << 31):
                yield record[0], record[1], record[2]


@contextlib.contextmanager
def open_backup(loc: "DirLocation | S3Location") -> Iterator[Backup]:
    """Read and check a backup: its manifest (format, fields) and every file's SHA-256 (and, for
    redis.msgpack, its records). Raises BackupInputError naming what is wrong."""
    with loc.reading() as reader:
        manifest = parse_manifest(reader.manifest(), f"{loc}/{MANIFEST}")
        root = reader.files(list(manifest["files"]))
        for name, meta in manifest["files"].items():
            path = root / name
            if path.stat().st_size != meta["bytes"] or _sha256(path) != meta["sha256"]:
                raise BackupInputError(f"{loc}/{name} does not match its checksum in the manifest: the backup is "
                                       "damaged; nothing was restored")
        b = Backup(manifest, root, str(loc))
        _check_redis_file(b)
        yield b


def parse_manifest(raw: bytes, where: str) -> dict:
    try:
        m = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BackupInputError(f"{where} is not JSON: {exc}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        got = m.get("format") if isinstance(m, dict) else type(m).__name__
        raise BackupInputError(f"{where} is not a peakdesk backup manifest (format {got!r}, expected {FORMAT!r})")
    if m.get("format_version") != FORMAT_VERSION:
        raise BackupInputError(f"{where}: format_version {m.get('format_version')!r} is not one this peakdesk "
                               f"reads ({FORMAT_VERSION}); restore with the peakdesk version that made it "
                               f"({m.get('peakdesk_version')!r})")

    def need(cond: bool, field: str, value: Any) -> None:
        if not cond:
            raise BackupInputError(f"{where}: {field} is invalid: {value!r}")

    need(isinstance(m.get("prefix"), str) and 0 < len(m["prefix"]) <= 64, "prefix", m.get("prefix"))
    need(isinstance(m.get("database"), str) and bool(_DATABASE.match(m["database"])), "database", m.get("database"))
    files = m.get("files")
    need(isinstance(files, dict) and REDIS_FILE in files, "files", files)
    for name, meta in files.items():
        need(bool(_FILE_NAME.match(name)), "files (name)", name)
        need(isinstance(meta, dict) and isinstance(meta.get("sha256"), str) and len(meta["sha256"]) == 64
             and isinstance(meta.get("bytes"), int), f"files.{name}", meta)
    ch = m.get("clickhouse")
    need(isinstance(ch, dict) and isinstance(ch.get("files"), list) and isinstance(ch.get("by_type"), dict),
         "clickhouse", ch)
    for f in ch["files"]:
        need(isinstance(f, dict) and f.get("name") in files and isinstance(f.get("rows"), int), "clickhouse.files", f)
    for section in ("clickhouse", "outbox"):
        counts = m.get(section, {}).get("by_type") if isinstance(m.get(section), dict) else None
        need(isinstance(counts, dict) and all(isinstance(k, str) and isinstance(v, int) for k, v in counts.items()),
             f"{section}.by_type", counts)
    need(isinstance(m.get("redis"), dict) and isinstance(m["redis"].get("keys"), int), "redis", m.get("redis"))
    return m


def _check_redis_file(b: Backup) -> None:
    prefix, n = b.prefix.encode(), 0
    try:
        for key, pttl, payload in b.redis_records():
            if not (isinstance(key, bytes) and key.startswith(prefix) and isinstance(pttl, int) and pttl >= 0
                    and isinstance(payload, bytes)):
                raise BackupInputError(f"{b.where}/{REDIS_FILE}: record {n} is not a key under {b.prefix!r}")
            n += 1
    except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
        if isinstance(exc, BackupInputError):
            raise
        raise BackupInputError(f"{b.where}/{REDIS_FILE}: unreadable at record {n}: {exc}") from None
    if n != b.manifest["redis"]["keys"]:
        raise BackupInputError(f"{b.where}/{REDIS_FILE} holds {n} keys, the manifest says {b.manifest['redis']['keys']}")


# --- restoring ------------------------------------------------------------------------------------

def live_heartbeats(r: redis.Redis, prefix: str, window_s: float = LIVENESS_WINDOW_S) -> list[str]:
    """Heartbeat keys renewed within `window_s` (their processes are running). Stale ones, left
    by a peakdesk that just stopped, only count down: their TTL drops by the whole window."""
    pattern = outbox._glob_escape(f"{prefix}hb:") + "*"
    first = {k: r.pttl(k) for k in r.scan_iter(match=pattern, count=1000)}
    if not first:
        return []
    t0 = time.monotonic()
    time.sleep(window_s)
    second = {k: r.pttl(k) for k in r.scan_iter(match=pattern, count=1000)}
    elapsed_ms = (time.monotonic() - t0) * 1000
    return sorted(k.decode() for k, ttl in second.items()
                  if ttl > 0 and (k not in first or ttl > first[k] - elapsed_ms + 250))


def restore(b: Backup, *, redis_url: str, clickhouse_dsn: str, wipe: bool = False) -> dict:
    """Restore `b` onto a stopped peakdesk: the events into `clickhouse_dsn` (database from the
    manifest), the keys into `redis_url` (under the manifest's prefix). Refuses (BackupInputError,
    nothing changed) if peakdesk is running there, or if keys or events exist and not `wipe`.
    Verifies the counts afterwards (BackupError if they differ)."""
    import clickhouse_connect
    from clickhouse_connect.driver.binding import quote_identifier
    from clickhouse_connect.driver.exceptions import ClickHouseError

    from storage.migrations import migrate

    prefix, database = b.prefix, b.database
    t0 = time.monotonic()
    r = redis.Redis.from_url(redis_url, socket_timeout=120)
    client = None
    try:
        try:
            version = r.info("server")["redis_version"]
        except redis.RedisError as exc:
            raise BackupInputError(f"Redis at {redis_url} is unreachable: {exc}") from None
        if _version_tuple(version) < _version_tuple(b.manifest["redis"].get("version", "0"))[:2]:
            raise BackupInputError(f"the backup's keys come from Redis {b.manifest['redis']['version']}; Redis "
                                   f"{version} at {redis_url} cannot read them: restore into that version or newer")
        live = live_heartbeats(r, prefix)
        if live:
            raise BackupInputError(f"peakdesk is running against {redis_url} (live heartbeats: {', '.join(live[:5])}):"
                                   " stop it first, restore, then start it")
        skip = tuple(p.encode() for p in skipped_prefixes(prefix))
        shredded = _shredded(r, prefix)     # tombstones of erased merchants: never undone by a restore
        existing = [k for k in _scan_prefix(r, prefix) if not k.startswith(skip) and k not in shredded]
        try:
            options = {} if clickhouse_dsn.startswith("chdb:") else {"autogenerate_session_id": False}
            client = clickhouse_connect.get_client(dsn=clickhouse_dsn, **options)
            table = f"{quote_identifier(database)}.events"
            has_table = int(client.command(f"EXISTS TABLE {table}", use_database=False))
            stored = int(client.command(f"SELECT count() FROM {table}", use_database=False)) if has_table else 0
        except ClickHouseError as exc:
            raise BackupInputError(f"ClickHouse at {_redacted(clickhouse_dsn)} is unusable: {exc}") from None
        if (existing or stored) and not wipe:
            shown = ", ".join(k.decode(errors="replace") for k in existing[:3])
            raise BackupInputError(
                f"the target is not empty: {len(existing)} keys under {prefix!r} in Redis"
                f"{' (' + shown + ', ...)' if shown else ''}, {stored} events in {database}.events; restore onto an "
                "empty system, or pass --wipe to delete them first")

        # From here on, things change.
        summary: dict[str, Any] = {"from": b.where, "prefix": prefix, "database": database,
                                   "backup_created_at": b.manifest.get("created_at"), "wiped": None}
        try:
            if wipe:
                summary["wiped"] = {"keys": _unlink_prefix(r, prefix, keep=shredded), "events": stored}
                if has_table:
                    client.command(f"TRUNCATE TABLE {table}", use_database=False)
            migrate(client, database)
            client.database = database
            for f in b.manifest["clickhouse"]["files"]:
                # insert_deduplicate=0: the table is empty, and ClickHouse remembers the blocks of
                # an earlier restore of this backup even across TRUNCATE; it would drop them.
                client.raw_insert("events", list(EVENT_COLUMNS), (b.root / f["name"]).read_bytes(), fmt="Parquet",
                                  settings={"insert_deduplicate": 0})
            got = {str(t): int(n) for t, n in client.query("SELECT type, count() FROM events GROUP BY type").result_rows}
        except ClickHouseError as exc:
            raise BackupError(f"restoring the events failed: {exc}; run the restore again with --wipe") from None
        if got != b.manifest["clickhouse"]["by_type"]:
            raise BackupError(f"ClickHouse holds {_diff(got, b.manifest['clickhouse']['by_type'])} after the restore; "
                              "run it again with --wipe")
        summary["events"] = {"clickhouse": sum(got.values()), "by_type": got}
        summary["keys"] = _restore_keys(r, b, t0, keep=shredded)
        summary["shredded_kept"] = sorted(k.decode()[len(f"{prefix}keys:"):] for k in shredded)
        outbox_counts = _outbox_counts(r, prefix)
        if outbox_counts != b.manifest["outbox"]["by_type"]:
            raise BackupError(f"the outbox holds {_diff(outbox_counts, b.manifest['outbox']['by_type'])} after the "
                              "restore; run it again with --wipe")
        summary["events"]["outbox"] = sum(outbox_counts.values())
        summary["events"]["total_after_drain"] = b.manifest["events"]["total"]
        summary["seconds"] = round(time.monotonic() - t0, 3)
        return summary
    finally:
        r.close()
        if client is not None:
            client.close()


def _shredded(r: redis.Redis, prefix: str) -> set[bytes]:
    """The key hashes of merchants whose keys were shredded (storage/crypto.py): a restore keeps
    these tombstones and leaves out the backup's copy of those keys, so erased data stays erased."""
    found = r.scan_iter(match=outbox._glob_escape(f"{prefix}keys:") + "*", count=1000)
    return {k for k in found if r.hexists(k, "shredded")}


def _unlink_prefix(r: redis.Redis, prefix: str, keep: set[bytes] = frozenset()) -> int:
    n, batch = 0, []
    for key in _scan_prefix(r, prefix):
        if key in keep:
            continue
        batch.append(key)
        if len(batch) >= 1000:
            n += r.unlink(*batch)
            batch.clear()
    if batch:
        n += r.unlink(*batch)
    return n


def _restore_keys(r: redis.Redis, b: Backup, t0: float, batch: int = 500, keep: set[bytes] = frozenset()) -> dict:
    restored, with_ttl, pipe, names = 0, [], r.pipeline(transaction=False), []

    def flush() -> int:
        replies = pipe.execute(raise_on_error=False)
        for name, reply in zip(names, replies):
            if isinstance(reply, Exception):
                raise BackupError(f"Redis refused to restore {name.decode(errors='replace')}: {reply}; "
                                  "run the restore again with --wipe")
        names.clear()
        return len(replies)

    for key, pttl, payload in b.redis_records():
        if key in keep:
            continue
        pipe.restore(key, pttl, payload)
        names.append(key)
        if pttl:
            with_ttl.append(pttl)
        if len(names) >= batch:
            restored += flush()
    if names:
        restored += flush()
    skip = tuple(p.encode() for p in skipped_prefixes(b.prefix))
    present = sum(1 for k in _scan_prefix(r, b.prefix) if not k.startswith(skip))
    elapsed_ms = (time.monotonic() - t0) * 1000 + 1000
    may_have_expired = sum(1 for ttl in with_ttl if ttl <= elapsed_ms)
    if not restored - may_have_expired <= present:
        raise BackupError(f"restored {restored} keys but only {present} are in Redis; run it again with --wipe")
    return {"restored": restored, "present": present, "with_ttl": len(with_ttl)}


def _outbox_counts(r: redis.Redis, prefix: str) -> dict[str, int]:
    by_type: Counter = Counter()
    shard_key = re.compile(re.escape(prefix.encode()) + rb"outbox:\d+")
    for key in _scan_prefix(r, f"{prefix}outbox:"):
        if shard_key.fullmatch(key):
            _count_outbox(r, key.decode(), by_type, [], {"outbox_entries": 0, "outbox_pending_entries": 0})
    return dict(by_type)


def _diff(got: dict, want: dict) -> str:
    parts = [f"{t}: {got.get(t, 0)} (backup: {want.get(t, 0)})" for t in sorted(set(got) | set(want))
             if got.get(t, 0) != want.get(t, 0)]
    return "; ".join(parts[:8]) or "the same counts"


def _redacted(dsn: str) -> str:
    from storage.events_clickhouse import _redacted as redacted

    return redacted(dsn)
