"""One typed configuration object, validated once; errors name the key and the bad value.

Built by the CLI from flags (and the environment for the few things that are secrets or
machine facts); passed to every Ray actor as a plain dict, so no actor reads the environment.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse


class ConfigError(ValueError):
    """A setting has a value peakdesk cannot use; the message names the key and the value."""


def default_data_dir() -> Path:
    return Path(os.environ.get("PEAKDESK_DATA_DIR", "peakdesk-data")).resolve()


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    redis_url: str | None = None          # None: start the bundled redis-server under data_dir
    clickhouse_url: str | None = None     # None: chDB in process, under data_dir/clickhouse
    ray_address: str | None = None        # None: a local Ray cluster started by `peakdesk up`
    host: str = "127.0.0.1"
    port: int = 8080
    hosts: int = field(default_factory=lambda: os.cpu_count() or 1)
    writers: int = 1
    outbox_shards: int = 4
    database: str = "peakdesk"
    prefix: str = "pd:"
    namespace: str = "peakdesk"
    idle_passivate_s: float = 600.0
    object_store_mb: int = 256
    # websocket limits: a client IP's connections (a NAT or a load generator may need more) and
    # each connection's frames per second (bursts of twice that)
    max_connections_per_ip: int = 200
    frames_per_s: int = 20
    # widget sessions a client IP may start a minute: new visitor tokens, and (counted apart) new
    # conversations; counted in Redis across gateways. A load generator or a proxy needs more.
    widget_sessions_per_ip_per_min: int = 30
    attachments_url: str | None = None    # None: <data_dir>/attachments; s3://BUCKET[/PREFIX]: S3-compatible
    s3_endpoint_url: str | None = None    # None: AWS itself; else MinIO, Ceph, OSS, SeaweedFS...
    s3_region: str | None = None          # None: the client library's default chain
    # Filled by the CLI from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN so they
    # reach the gateway on any Ray node; None: the client library's own chain (profile, IAM role).
    s3_access_key_id: str | None = field(default=None, repr=False)
    s3_secret_access_key: str | None = field(default=None, repr=False)
    s3_session_token: str | None = field(default=None, repr=False)
    bot_workers: int = 1                  # Ray actors answering for the bot (one per core they may use)
    llm_url: str | None = None            # an OpenAI-compatible API base, e.g. http://10.0.0.5:8000/v1
    llm_model: str = ""
    llm_api_key: str | None = field(default=None, repr=False)  # from PEAKDESK_LLM_API_KEY
    llm_timeout_s: float = 2.0
    tls_cert_file: str | None = None      # the gateway serves https:// and wss:// with this certificate (PEM chain)
    tls_key_file: str | None = None       # ... and its private key (PEM)
    # Master key(s) wrapping the merchants' data keys (storage/crypto.py). PEAKDESK_MASTER_KEY wins
    # when set; None: <data_dir>/master.key, which `peakdesk up` creates.
    master_key_file: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir).resolve())
        self._check_urls()
        self._check_numbers()
        self._check_attachments()
        self._check_llm()
        self._check_tls()
        self._check_master_key()

    def _check_master_key(self) -> None:
        if self.master_key_file is not None and not os.environ.get("PEAKDESK_MASTER_KEY"):
            from storage.crypto import CryptoError, master_keys_from

            try:
                master_keys_from(self.master_key_file)
            except CryptoError as exc:
                raise ConfigError(str(exc)) from None

    def _check_tls(self) -> None:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError("tls_cert_file and tls_key_file must be given together")
        if self.tls_cert_file is None:
            return
        import ssl

        for key in ("tls_cert_file", "tls_key_file"):
            if not os.path.isfile(getattr(self, key)):
                raise ConfigError(f"{key}: no such file {getattr(self, key)!r}")
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(self.tls_cert_file, self.tls_key_file)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"tls_cert_file, tls_key_file: not a usable PEM certificate and key: {exc}") from None

    def _check_llm(self) -> None:
        if self.llm_url is not None:
            url = urlparse(self.llm_url)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ConfigError(f"llm_url must be http(s)://HOST[:PORT]/PATH, got {self.llm_url!r}")
            if not self.llm_model:
                raise ConfigError("llm_model must be given with llm_url (the model name the endpoint serves)")
        if not isinstance(self.llm_timeout_s, (int, float)) or not 0.1 <= self.llm_timeout_s <= 30:
            raise ConfigError(f"llm_timeout_s must be from 0.1 to 30 seconds, got {self.llm_timeout_s!r}")

    def _check_urls(self) -> None:
        if self.redis_url is not None and urlparse(self.redis_url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(f"redis_url must be redis://, rediss:// or unix://, got {self.redis_url!r}")
        if self.clickhouse_url is not None and urlparse(self.clickhouse_url).scheme not in ("http", "https", "chdb"):
            raise ConfigError(f"clickhouse_url must be http(s):// or chdb://, got {self.clickhouse_url!r}")
        if self.embedded_clickhouse and self.writers != 1:
            raise ConfigError(f"writers must be 1 with embedded chDB (one process per data dir), got {self.writers}")

    def _check_numbers(self) -> None:
        for key, low, high in (("port", 0, 65535), ("hosts", 1, 1024), ("writers", 1, 64),
                               ("outbox_shards", 1, 1024), ("object_store_mb", 80, 1 << 20),
                               ("max_connections_per_ip", 1, 1_000_000), ("frames_per_s", 1, 10_000),
                               ("widget_sessions_per_ip_per_min", 1, 10_000_000),
                               ("bot_workers", 0, 256)):
            value = getattr(self, key)
            if not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"{key} must be an integer from {low} to {high}, got {value!r}")
        if self.idle_passivate_s <= 0:
            raise ConfigError(f"idle_passivate_s must be > 0, got {self.idle_passivate_s!r}")

    def _check_attachments(self) -> None:
        self.attachments_s3  # parses (and so checks) attachments_url
        endpoint = urlparse(self.s3_endpoint_url or "")
        if self.s3_endpoint_url is not None and (endpoint.scheme not in ("http", "https") or not endpoint.hostname):
            raise ConfigError(f"s3_endpoint_url must be http(s)://HOST[:PORT], got {self.s3_endpoint_url!r}")
        if self.s3_region is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.s3_region):
            raise ConfigError(f"s3_region must be a region name like us-east-1, got {self.s3_region!r}")
        for key in ("s3_endpoint_url", "s3_region", "s3_access_key_id", "s3_secret_access_key", "s3_session_token"):
            value = getattr(self, key)
            if value is not None and self.attachments_s3 is None:  # most likely a forgotten --attachments-url
                shown = repr(value) if key in ("s3_endpoint_url", "s3_region") else "given"  # never echo secrets
                raise ConfigError(f"{key} is {shown} but attachments_url is not s3://..., got {self.attachments_url!r}")
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):  # never echo secrets
            raise ConfigError("s3_access_key_id and s3_secret_access_key must be given together (AWS_* variables)")

    @property
    def attachments_s3(self) -> tuple[str, str] | None:
        """(bucket, key prefix) when attachments go to S3; None for the local directory."""
        if self.attachments_url is None:
            return None
        url = urlparse(self.attachments_url)
        prefix = url.path.strip("/")
        # Bucket names as S3 defines them; a prefix of plain segments, so no key can climb out of it.
        segments = prefix.split("/") if prefix else []
        ok = (url.scheme == "s3" and not any(c in self.attachments_url for c in "?#")
              and re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", url.netloc)
              and all(re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", s) and s.strip(".") for s in segments))
        if not ok:
            raise ConfigError(f"attachments_url must be s3://BUCKET[/PREFIX] (bucket: 3-63 of a-z 0-9 . -; "
                              f"prefix: segments of A-Z a-z 0-9 _ . -), got {self.attachments_url!r}")
        return url.netloc, prefix

    @property
    def embedded_clickhouse(self) -> bool:
        return self.clickhouse_url is None or self.clickhouse_url.startswith("chdb:")

    @property
    def secret_file(self) -> str:
        """Signs login tokens; created by `peakdesk up` (mode 0600) if missing."""
        return str(self.data_dir / "secret.key")

    @property
    def master_key_path(self) -> str:
        return self.master_key_file or str(self.data_dir / "master.key")

    @property
    def clickhouse_dsn(self) -> str:
        return self.clickhouse_url or f"chdb://{self.data_dir / 'clickhouse'}"

    def shards_of_writer(self, i: int) -> list[int]:
        return [s for s in range(self.outbox_shards) if s % self.writers == i]

    def shard_of_host(self, i: int) -> int:
        return i % self.outbox_shards

    def to_dict(self) -> dict:
        d = asdict(self)
        d["data_dir"] = str(self.data_dir)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Settings":
        return cls(**d)
