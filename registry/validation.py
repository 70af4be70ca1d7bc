"""Value checks of the repository functions: each returns the normalised value or raises BadRequest
naming the field (`param`), with the message the CLI and the admin API show as they are."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from router.errors import BadRequest
from router.types import parse_capabilities

NAME_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
#: category names come from router artifacts (MMLU-Pro has "computer science"): inner spaces allowed
CATEGORY_NAME_RE = re.compile(r"^[A-Za-z0-9._:-](?:[A-Za-z0-9._: -]{0,126}[A-Za-z0-9._:-])?$")


def _matching(value: Any, pattern: re.Pattern[str], what: str, rule: str) -> str:
    """`value` if it is a string matching `pattern`; else BadRequest "invalid WHAT VALUE: RULE"."""
    if not isinstance(value, str) or not pattern.match(value):
        raise BadRequest(f"invalid {what} {value!r}: {rule}", param=what)
    return value


def check_name(value: Any, what: str = "name") -> str:
    return _matching(value, NAME_RE, what, "use 1-128 characters from A-Z a-z 0-9 . _ : -")


def check_category_name(value: Any) -> str:
    rule = "use 1-128 characters from A-Z a-z 0-9 . _ : - and inner spaces"
    return _matching(value, CATEGORY_NAME_RE, "category name", rule)


def check_url(value: Any) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"invalid URL {value!r}", param="base_url")
    try:
        parts = urlsplit(value.strip())
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok = False
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise BadRequest(f"invalid URL {value!r}: need http(s)://host[:port][/path]", param="base_url")
    return value.strip().rstrip("/")


def check_pos_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise BadRequest(f"invalid {what} {value!r}: must be a positive integer", param=what)
    return value


def check_env(value: Any) -> str | None:
    if value is None or value == "":
        return None
    rule = "give the NAME of an environment variable (e.g. OPENAI_API_KEY), never the key itself"
    return _matching(value, ENV_RE, "api_key_env", rule)


def check_text(value: Any, what: str, *, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise BadRequest(f"invalid {what} {value!r}", param=what)
    return value


def check_capabilities(values: Any) -> tuple[str, ...]:
    if not isinstance(values, str | list | tuple):
        raise BadRequest("capabilities must be a list or a comma list", param="capabilities")
    try:
        return parse_capabilities(values)
    except ValueError as exc:
        raise BadRequest(str(exc), param="capabilities") from None


def check_tags(values: Iterable[Any]) -> tuple[str, ...]:
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for v in values:
        check_name(v, "tag")
        if v not in out:
            out.append(v)
    return tuple(out)


def check_json(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"{what} must be JSON-serialisable: {exc}", param=what) from None
