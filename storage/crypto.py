"""Encryption at rest: per-merchant data keys, wrapped by a master key, sealing what is personal.

Keys
- The **master key** (32 random bytes) never reaches Redis or ClickHouse. It comes from
  `PEAKDESK_MASTER_KEY` (base64; several separated by commas, the first one current) or from
  a file (`master_key_file`, default `<data_dir>/master.key`, one base64 key per line, first
  current; `peakdesk up` creates it, mode 0600). Older keys stay listed while data keys are
  re-wrapped under the new one (`peakdesk keys rewrap`).
- Each merchant has **data keys** (AES-256-GCM), numbered from 1, and an **index key**
  (HMAC-SHA256, for pseudonymous ids such as a WhatsApp number). They live in Redis wrapped
  by the master key, in the hash `{p}keys:{merchant}`: `current`, `v1`, `v2`..., `idx`.
  Rotating (`peakdesk keys rotate`) adds a version that new data is sealed with; every older
  version still opens what it sealed, so nothing stops. Shredding deletes every key of the
  merchant and leaves a tombstone (`shredded`): what was sealed under them — in Redis, in
  ClickHouse, in backups made after the shred — can never be opened again, and nothing new can
  be sealed for that merchant.

What is sealed
- Redis values (snapshots, logs, customer records, tickets, jobs, orders...) are sealed whole
  (`seal`/`open`): `0xC1 'P' 'D' 1`, the key version (4 bytes), a 12-byte nonce, ciphertext and
  tag; the merchant id is the associated data, so a value moved to another merchant's key
  does not open. 0xC1 starts no msgpack or JSON value, so a value sealed before this existed
  reads as it is.
- Event payloads (the outbox, ClickHouse) are sealed field by field (`seal_payload`): values
  under keys that reports and materialized columns read (statuses, timings, scores, ids, kinds —
  `CLEAR_KEYS`, at the top level only) stay readable; every other value becomes
  `"pdenc:<version>:<base64>"`. Maps are walked, keeping their key names, and inside them only
  `NESTED_CLEAR_KEYS` stay clear: `from.kind` does, `from.name` and a customer attribute called
  `status` inside an audit's `changes` do not. Empty strings and nulls stay.

Each process caches the keys it unwrapped; a thread re-reads them every `REFRESH_S` seconds,
which is how every process learns of a rotation (new data then uses the new version) and of a
shred (the keys are forgotten). A merchant's key missing from the cache is fetched at once
(one blocking Redis round trip, once per merchant per process), so sealing stays synchronous
and can sit inside a MULTI/EXEC.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

REFRESH_S = float(os.environ.get("PEAKDESK_KEY_REFRESH_S", "10"))   # tests shorten it
MAGIC = b"\xc1PD\x01"
FIELD_PREFIX = "pdenc:"
ERASED = "[erased]"
SYSTEM = "*"        # the cluster's own key (envelopes between hosts): no merchant id can be "*"
MASTER_ENV = "PEAKDESK_MASTER_KEY"

# Payload keys whose values stay readable in ClickHouse: what reports, materialized columns and
# operators filter on. Nothing here ever holds what a customer or an agent typed, nor contact data.
CLEAR_KEYS = frozenset({
    "kind", "status", "from_status", "to_group", "from_agent", "previous_agent", "by", "reason",
    "priority", "score", "wait_ms", "response_ms", "first_response", "handle_s", "bot", "outside_hours",
    "seq", "ids", "entry_id", "issue_type", "rule", "flag", "waiting", "capacity", "actor", "role",
    "after", "done", "age_ms", "ticket_id", "number", "department", "type", "room", "platform_id",
    "cid", "id", "agent_id", "session_id", "customer_id", "group", "group_id", "target", "channel",
    "channel_id", "connector", "escalated", "breached", "due_ms", "attempt", "webhook_id", "key_id",
    "version", "entries", "replace", "count", "via", "rows", "format", "lang", "intent", "confidence",
    "sentiment", "overflowed", "level", "metric", "value", "threshold", "merchant_id", "to_agent",
})


# Inside a map (`from`, `changes`, `entry`...): what reports read there. Attribute names chosen by
# merchants land at this depth too, so this list is as short as it can be.
NESTED_CLEAR_KEYS = frozenset({"kind", "via"})


class CryptoError(Exception):
    """The master key is missing or unusable, or a sealed value is corrupt; the message says which."""


class Shredded(CryptoError):
    """The merchant's keys were shredded: what they sealed is gone for good."""


# -- master keys -----------------------------------------------------------------------------------

def _parse_master(text: str, source: str) -> list[bytes]:
    keys = []
    for n, part in enumerate(p.strip() for p in text.replace(",", "\n").splitlines()):
        if not part or part.startswith("#"):
            continue
        try:
            key = base64.b64decode(part, validate=True)
        except (binascii.Error, ValueError):
            raise CryptoError(f"{source}: entry {n + 1} is not base64") from None
        if len(key) != 32:
            raise CryptoError(f"{source}: entry {n + 1} is {len(key)} bytes, a master key is 32 (base64 of 32 random bytes)")
        keys.append(key)
    if not keys:
        raise CryptoError(f"{source}: holds no master key")
    return keys


def master_keys_from(path: str | os.PathLike | None) -> list[bytes]:
    """The master keys, current first: PEAKDESK_MASTER_KEY if set, else the file at `path`."""
    env = os.environ.get(MASTER_ENV)
    if env:
        return _parse_master(env, MASTER_ENV)
    if path is None:
        raise CryptoError(f"no master key: set {MASTER_ENV} or master_key_file")
    try:
        text = open(path, encoding="ascii").read()
    except FileNotFoundError:
        raise CryptoError(f"master_key_file: no such file {str(path)!r}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CryptoError(f"master_key_file: cannot read {str(path)!r}: {exc}") from None
    return _parse_master(text, f"master_key_file {str(path)!r}")


def ensure_master_key_file(path: str | os.PathLike) -> bool:
    """Create `path` with a new random master key (mode 0600) unless it exists; True if created."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(os.urandom(32)).decode() + "\n")
    return True


def ensure_own_master_key(given_file: str | None, path: str | os.PathLike) -> bool:
    """Create the data dir's master key at `path` unless one is given (PEAKDESK_MASTER_KEY or
    `given_file`) or it exists; True if created."""
    if given_file is not None or os.environ.get(MASTER_ENV):
        return False
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return ensure_master_key_file(path)


_masters: list[bytes] | None = None
_masters_path: str | None = None


def configure(path: str | os.PathLike | None) -> None:
    """Load this process's master keys (see master_keys_from); raises CryptoError naming the problem."""
    global _masters, _masters_path
    _masters = master_keys_from(path)
    _masters_path = None if path is None else str(path)
    for ring in list(_rings.values()):
        ring.masters = _masters


def configure_lazily(path: str | os.PathLike | None) -> None:
    """Where to find the master keys when first needed (a CLI command that may not need them)."""
    global _masters_path
    if _masters is None:
        _masters_path = None if path is None else str(path)


def _master_keys() -> list[bytes]:
    global _masters
    if _masters is None:
        _masters = master_keys_from(_masters_path)
    return _masters


def _mkid(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:8]


# -- a merchant's keys -------------------------------------------------------------------------------

@dataclass
class MerchantKeys:
    current: int
    versions: dict[int, AESGCM]
    index: bytes
    raw: dict            # the hash they were unwrapped from: a refresh that finds it unchanged keeps them


def _wrap(master: bytes, key: bytes, aad: str) -> bytes:
    nonce = os.urandom(12)
    return _mkid(master) + nonce + AESGCM(master).encrypt(nonce, key, aad.encode())


def _unwrap(masters: list[bytes], blob: bytes, aad: str) -> bytes:
    ids = {_mkid(m): m for m in masters}
    master = ids.get(blob[:8])
    if master is None:
        raise CryptoError(f"key {aad} is wrapped by a master key this process does not have"
                          f" (id {blob[:8].hex()}): list it in {MASTER_ENV} or master_key_file")
    try:
        return AESGCM(master).decrypt(blob[8:20], blob[20:], aad.encode())
    except InvalidTag:
        raise CryptoError(f"key {aad} does not unwrap: corrupt, or wrapped for another merchant") from None


# Create a merchant's first keys unless it has some (or was shredded). KEYS[1] the hash;
# ARGV: wrapped v1, wrapped index key. Returns the hash, or an error if shredded.
_CREATE = """
if redis.call('HEXISTS', KEYS[1], 'shredded') == 1 then return redis.error_reply('shredded') end
redis.call('HSETNX', KEYS[1], 'v1', ARGV[1])
redis.call('HSETNX', KEYS[1], 'idx', ARGV[2])
redis.call('HSETNX', KEYS[1], 'current', '1')
return redis.call('HGETALL', KEYS[1])
"""


class Keyring:
    """The data keys of every merchant of one cluster (one Redis and key prefix), cached."""

    def __init__(self, client: redis.Redis, prefix: str):
        self.r, self.p = client, prefix
        self.masters = _master_keys()
        self._keys: dict[str, MerchantKeys] = {}
        self._shredded: set[str] = set()     # known shredded (or keyless): not asked again until a refresh
        self._lock = threading.Lock()
        self._refresher: threading.Thread | None = None

    def hash_key(self, merchant: str) -> str:
        return f"{self.p}keys:{merchant}"

    # -- loading ------------------------------------------------------------------------------
    def _parse(self, merchant: str, raw: dict) -> MerchantKeys:
        raw = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
        if "shredded" in raw:
            raise Shredded(f"merchant {merchant}: its keys were shredded")
        if "current" not in raw:
            raise Shredded(f"merchant {merchant}: has no data key")
        cached = self._keys.get(merchant)
        if cached is not None and cached.raw == raw:
            return cached
        versions = {}
        for name, blob in raw.items():
            if name.startswith("v") and name[1:].isdigit():
                versions[int(name[1:])] = AESGCM(_unwrap(self.masters, blob, f"{merchant}|{name}"))
        index = _unwrap(self.masters, raw["idx"], f"{merchant}|idx")
        return MerchantKeys(int(raw["current"]), versions, index, raw)

    def _fetch(self, merchant: str, create: bool) -> MerchantKeys:
        key = self.hash_key(merchant)
        raw = self.r.hgetall(key)
        if not raw or (b"current" not in raw and b"shredded" not in raw):
            if not create:
                raise Shredded(f"merchant {merchant}: has no data key")
            master = self.masters[0]
            try:
                flat = self.r.eval(_CREATE, 1, key, _wrap(master, os.urandom(32), f"{merchant}|v1"),
                                   _wrap(master, os.urandom(32), f"{merchant}|idx"))
            except redis.ResponseError as exc:
                if "shredded" in str(exc):
                    raise Shredded(f"merchant {merchant}: its keys were shredded") from None
                raise
            raw = dict(zip(flat[::2], flat[1::2]))
        return self._parse(merchant, raw)

    def keys(self, merchant: str, create: bool = True) -> MerchantKeys:
        found = self._keys.get(merchant)
        if found is None:
            if merchant in self._shredded:
                raise Shredded(f"merchant {merchant}: its keys were shredded")
            with self._lock:
                found = self._keys.get(merchant)
                if found is None:
                    try:
                        found = self._keys[merchant] = self._fetch(merchant, create)
                    except Shredded:
                        if create:   # a keyless merchant only read so far may get keys later
                            self._shredded.add(merchant)
                        raise
            self._start_refresher()
        return found

    def refresh(self) -> None:
        """Re-read every cached merchant's keys, in one round trip: picks up rotations, forgets
        shredded keys."""
        self._shredded.clear()
        merchants = list(self._keys)
        pipe = self.r.pipeline(transaction=False)
        for merchant in merchants:
            pipe.hgetall(self.hash_key(merchant))
        for merchant, raw in zip(merchants, pipe.execute()):
            try:
                self._keys[merchant] = self._parse(merchant, raw)
            except Shredded:
                self._keys.pop(merchant, None)
                self._shredded.add(merchant)

    def _start_refresher(self) -> None:
        if self._refresher is None:
            self._refresher = threading.Thread(target=self._refresh_loop, name="pd-keyring", daemon=True)
            self._refresher.start()

    def _refresh_loop(self) -> None:
        failing = False
        while True:
            time.sleep(REFRESH_S)
            try:
                self.refresh()
                if failing:
                    log.info("keyring refresh works again")
                failing = False
            except Exception as exc:   # Redis away for a while: keep the cached keys, try again later
                if not failing:        # once per outage, not once a second
                    log.warning("keyring refresh failed (cached keys kept, retrying): %s", exc)
                failing = True

    # -- whole values ------------------------------------------------------------------------------
    def seal(self, merchant: str, data: bytes) -> bytes:
        k = self.keys(merchant)
        nonce = os.urandom(12)
        return MAGIC + struct.pack(">I", k.current) + nonce + k.versions[k.current].encrypt(nonce, data, merchant.encode())

    def open(self, merchant: str, blob: bytes) -> bytes:
        """The plain bytes of a sealed value; a value that was never sealed is returned as it is.
        Raises Shredded when its key is gone, CryptoError when it is corrupt or not this merchant's."""
        if not blob.startswith(MAGIC):
            return blob
        if len(blob) < len(MAGIC) + 4 + 12 + 16:
            raise CryptoError(f"merchant {merchant}: sealed value too short")
        version, = struct.unpack(">I", blob[4:8])
        return self._decrypt(merchant, version, blob[8:20], blob[20:])

    def _decrypt(self, merchant: str, version: int, nonce: bytes, ct: bytes) -> bytes:
        k = self.keys(merchant, create=False)
        aead = k.versions.get(version)
        if aead is None:
            k = self._keys[merchant] = self._fetch(merchant, create=False)   # rotated elsewhere just now
            aead = k.versions.get(version)
            if aead is None:
                raise Shredded(f"merchant {merchant}: key version {version} is gone")
        try:
            return aead.decrypt(nonce, ct, merchant.encode())
        except InvalidTag:
            raise CryptoError(f"merchant {merchant}: sealed value does not open (corrupt, or another merchant's)") from None

    # -- single values and event payloads ----------------------------------------------------------------
    def seal_value(self, merchant: str, value: Any) -> str:
        k = self.keys(merchant)
        nonce = os.urandom(12)
        ct = k.versions[k.current].encrypt(nonce, orjson.dumps(value), merchant.encode())
        return f"{FIELD_PREFIX}{k.current}:{base64.b64encode(nonce + ct).decode()}"

    def open_value(self, merchant: str, value: Any) -> Any:
        """A sealed value's plain value ("[erased]" once shredded); anything else as it is."""
        if not (isinstance(value, str) and value.startswith(FIELD_PREFIX)):
            return value
        version, _, body = value[len(FIELD_PREFIX):].partition(":")
        try:
            raw = base64.b64decode(body, validate=True)
            if not version.isdigit() or len(raw) < 28:
                return value
            return orjson.loads(self._decrypt(merchant, int(version), raw[:12], raw[12:]))
        except Shredded:
            return ERASED
        except (binascii.Error, ValueError):
            return value

    def seal_payload(self, merchant: str, payload: dict) -> dict:
        """`payload` with every value outside CLEAR_KEYS sealed. For a shredded merchant those
        values are dropped for "[erased]" instead: its events still count in reports, and
        nothing personal is stored that no key could ever open."""
        try:
            return self._seal_payload(merchant, payload)
        except Shredded:
            return _erased(payload)

    def _seal_payload(self, merchant: str, payload: dict, clear: frozenset = CLEAR_KEYS) -> dict:
        out = {}
        for key, value in payload.items():
            if key in clear or value is None or value == "":
                out[key] = value
            elif isinstance(value, dict):
                out[key] = self._seal_payload(merchant, value, NESTED_CLEAR_KEYS)
            else:
                out[key] = self.seal_value(merchant, value)
        return out

    def open_payload(self, merchant: str, payload: dict) -> dict:
        out = {}
        for key, value in payload.items():
            if isinstance(value, dict):
                out[key] = self.open_payload(merchant, value)
            elif isinstance(value, str) and value.startswith(FIELD_PREFIX):
                out[key] = self.open_value(merchant, value)
            else:
                out[key] = value
        return out

    def blind(self, merchant: str, text: str) -> str:
        """A stable pseudonym for `text` (a phone number, an address) within this merchant."""
        return hmac.new(self.keys(merchant).index, text.encode(), hashlib.sha256).hexdigest()[:32]

    # -- administration (peakdesk keys) ------------------------------------------------------------------
    def merchants(self) -> list[str]:
        start = len(self.hash_key(""))
        return sorted(k.decode()[start:] for k in self.r.scan_iter(match=_glob(self.hash_key("")) + "*", count=1000))

    def status(self, merchant: str) -> dict:
        raw = {k.decode(): v for k, v in self.r.hgetall(self.hash_key(merchant)).items()}
        if "shredded" in raw:
            return {"merchant": merchant, "shredded_at": int(raw["shredded"])}
        if not raw:
            return {"merchant": merchant, "versions": [], "current": None}
        ids = {_mkid(m): n for n, m in enumerate(self.masters)}
        versions = sorted(int(k[1:]) for k in raw if k.startswith("v") and k[1:].isdigit())
        wrapped = {k: ids.get(v[:8]) for k, v in raw.items() if k == "idx" or k in {f"v{n}" for n in versions}}
        return {"merchant": merchant, "current": int(raw["current"]), "versions": versions,
                "on_current_master": all(n == 0 for n in wrapped.values()),
                "unknown_master": sorted(k for k, n in wrapped.items() if n is None)}

    def rotate(self, merchant: str) -> int:
        """Add a data key version and make it current; returns it. Older versions keep opening."""
        self.keys(merchant)      # creates the first keys if the merchant has none yet
        key = self.hash_key(merchant)
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    if pipe.hexists(key, "shredded"):
                        raise Shredded(f"merchant {merchant}: its keys were shredded")
                    new = int(pipe.hget(key, "current")) + 1
                    pipe.multi()
                    pipe.hset(key, mapping={f"v{new}": _wrap(self.masters[0], os.urandom(32), f"{merchant}|v{new}"),
                                            "current": new})
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        self._keys[merchant] = self._fetch(merchant, create=False)
        return new

    def rewrap(self, merchant: str) -> int:
        """Wrap every key of `merchant` under the current master key; returns how many changed."""
        key = self.hash_key(merchant)
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = {k.decode(): v for k, v in pipe.hgetall(key).items()}
                    if "shredded" in raw or not raw:
                        return 0
                    new = {}
                    for name, blob in raw.items():
                        if (name == "idx" or (name.startswith("v") and name[1:].isdigit())) \
                                and blob[:8] != _mkid(self.masters[0]):
                            aad = f"{merchant}|{name}"
                            new[name] = _wrap(self.masters[0], _unwrap(self.masters, blob, aad), aad)
                    pipe.multi()
                    if new:
                        pipe.hset(key, mapping=new)
                    pipe.execute()
                    return len(new)
                except redis.WatchError:
                    continue

    def shred(self, merchant: str) -> None:
        """Delete every key of `merchant` for good, leaving a tombstone; processes forget theirs
        within REFRESH_S seconds."""
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(self.hash_key(merchant))
        pipe.hset(self.hash_key(merchant), "shredded", int(time.time()))
        pipe.execute()
        self._keys.pop(merchant, None)
        self._shredded.add(merchant)


def _erased(payload: dict, clear: frozenset = CLEAR_KEYS) -> dict:
    return {k: v if k in clear or v is None or v == "" else _erased(v, NESTED_CLEAR_KEYS) if isinstance(v, dict)
            else ERASED for k, v in payload.items()}


def _glob(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


# -- one keyring per cluster per process ----------------------------------------------------------------

_rings: dict[tuple, Keyring] = {}
_rings_lock = threading.Lock()


def _identity(kwargs: dict) -> tuple:
    return (kwargs.get("path") or kwargs.get("host"), kwargs.get("port"), kwargs.get("db", 0),
            kwargs.get("username"))


_SYNC_KWARGS = ("host", "port", "path", "db", "username", "password", "socket_timeout", "socket_connect_timeout",
                "ssl_keyfile", "ssl_certfile", "ssl_cert_reqs", "ssl_ca_certs", "ssl_check_hostname")


def keyring(client: Any, prefix: str) -> Keyring:
    """The keyring of the cluster `client` (a redis client or pipeline, sync or asyncio) reaches
    under `prefix`: one per process, with its own blocking connection (see the module doc)."""
    pool = client.connection_pool
    ident = (_identity(pool.connection_kwargs), prefix)
    ring = _rings.get(ident)
    if ring is None:
        with _rings_lock:
            ring = _rings.get(ident)
            if ring is None:
                ring = _rings[ident] = Keyring(_sync_client(pool), prefix)
    return ring


def _sync_client(pool: Any) -> redis.Redis:
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k in _SYNC_KWARGS}
    # Short: a key missing from the cache is fetched on the caller's thread, an event loop's too,
    # so an unreachable Redis must fail it fast (as StoreUnavailable, further up) rather than hang.
    kwargs["socket_timeout"] = min(kwargs.get("socket_timeout") or 2.0, 2.0)
    kwargs["socket_connect_timeout"] = min(kwargs.get("socket_connect_timeout") or 1.0, 1.0)
    if "path" in kwargs:
        return redis.Redis(unix_socket_path=kwargs.pop("path"), **{k: v for k, v in kwargs.items() if k != "host"})
    cls_name = getattr(pool, "connection_class", type(None)).__name__
    return redis.Redis(ssl=cls_name.startswith("SSL"), **kwargs)
