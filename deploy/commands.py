"""`coe up`, `coe router deploy`, `coe deploy render`: filled in by the service work."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
