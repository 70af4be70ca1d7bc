"""Worker for test_concurrency: N changes against one registry, each its own transaction.
Odd steps add an expert; even steps do a read-modify-write increment of a shared counter."""

from __future__ import annotations

import sys

from registry import Registry
from registry import repository as repo


def main(url: str, tag: str, n: int) -> None:
    with Registry(url) as reg:
        for i in range(n):
            with reg.session() as s:
                if i % 2:
                    repo.add_expert(s, name=f"{tag}-{i}", base_url="http://127.0.0.1:9/v1", model="m")
                else:
                    current = repo.get_expert(s, name="shared").max_concurrency
                    repo.update_expert(s, name="shared", max_concurrency=current + 1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
