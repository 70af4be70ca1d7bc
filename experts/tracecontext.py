"""Headers the current request wants on its outgoing expert calls (W3C `traceparent`, `tracestate`).

The ingress sets them for the duration of an expert call (deploy/pipeline/tracing.py);
`OpenAIExpertClient` adds them to every request it sends. A context variable, so concurrent requests never
see each other's and tasks started for aggregation inherit them; unset, it costs one lookup per call."""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar

OUTGOING_HEADERS: ContextVar[Mapping[str, str] | None] = ContextVar("coe_outgoing_headers", default=None)
