"""A JSON array read element by element with the line each element starts on, so a loader can name the
line of a malformed record (json.loads only says where the first syntax error is)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


def iter_json_array(text: str) -> Iterator[tuple[int, Any]]:
    """(line number, element) for each element of a top-level JSON array, without losing line numbers."""
    dec = json.JSONDecoder()
    i = 0
    n = len(text)
    ws = " \t\r\n"
    while i < n and text[i] in ws:
        i += 1
    if i >= n or text[i] != "[":
        raise ValueError("not a JSON array")
    i += 1
    line, counted = 1, 0
    while True:
        while i < n and text[i] in ws:
            i += 1
        if i < n and text[i] == "]":
            return
        line += text.count("\n", counted, i)
        counted = i
        obj, i = dec.raw_decode(text, i)
        yield line, obj
        while i < n and text[i] in ws:
            i += 1
        if i < n and text[i] == ",":
            i += 1
        elif i < n and text[i] == "]":
            return
        else:
            raise ValueError(f"expected ',' or ']' at line {line + text.count(chr(10), counted, i)}")
