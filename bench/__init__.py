"""Benchmarks: each prints figures and asserts nothing about time."""
from __future__ import annotations


def throwaway_master_key() -> None:
    """A master key for a benchmark's own temporary Redis (storage/crypto.py): its data is
    deleted at the end, so the key need not outlive the process. An operator's key is kept."""
    import base64
    import os

    from storage import crypto

    os.environ.setdefault(crypto.MASTER_ENV, base64.b64encode(os.urandom(32)).decode())
