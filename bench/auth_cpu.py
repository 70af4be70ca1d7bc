"""CPU per request of API-key verification: PBKDF2-SHA256 on every request (no cache) against the ingress's
KeyChecker cache (deploy/api/auth.py, keyed by a SHA-256 of the key) and the registry's verified-key cache.
Process CPU time (time.process_time), a temp SQLite registry, one key.
`.venv/bin/python bench/auth_cpu.py --requests 200`."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploy.api.auth import KeyChecker  # noqa: E402
from registry import Registry  # noqa: E402
from registry import repository as repo  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    n = ap.parse_args().requests
    with tempfile.TemporaryDirectory() as tmp, Registry(f"sqlite:///{Path(tmp) / 'k.db'}") as reg:
        with reg.session() as s:
            _, key = repo.create_api_key(s, scopes=["query"])
        print(f"PBKDF2 iterations: {repo.PBKDF2_ITERATIONS}")

        t = time.process_time()
        for _ in range(n):
            with reg.session(write=False) as s:
                assert repo.verify_api_key(s, plaintext=key) is not None
        raw = (time.process_time() - t) / n * 1000

        checker = KeyChecker(reg, ttl_s=3600.0)

        async def cached() -> float:
            await checker.check(f"Bearer {key}")  # the first one pays
            t = time.process_time()
            for _ in range(n):
                await checker.check(f"Bearer {key}")
            return (time.process_time() - t) / n * 1000

        with_cache = asyncio.run(cached())
    print(f"no cache (PBKDF2 + DB read every request): {raw:.3f} ms CPU per request")
    ratio = raw / with_cache
    print(f"KeyChecker cache hit: {with_cache:.4f} ms CPU per request ({ratio:.0f}x less)")


if __name__ == "__main__":
    main()
