"""Property tests of the admin CLI (`coe experts|categories|keys|registry`) on a temp SQLite registry,
through the real entry point (deploy.ops.cli.main): random names, URLs, numbers and YAML never produce a
traceback; bad input is a non-zero exit with exactly one stderr line, and a rejected command leaves the
database as it was. Plus: `coe experts probe` follows no redirect to another host."""

from __future__ import annotations

import contextlib
import io
import os
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploy.ops import cli as root

EXAMPLES = int(os.environ.get("COE_FUZZ_EXAMPLES", "150"))

names = st.one_of(
    st.sampled_from(["math", "general", "Bad Name", "", "-x", "a" * 200, "ünï", "x;drop", "--url"]),
    st.text(min_size=0, max_size=24),
)
urls = st.one_of(
    st.sampled_from(
        [
            "http://127.0.0.1:9/v1",
            "https://example.test/v1",
            "ftp://host/x",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "http://",
            "http:///v1",
            "http://host:99999/v1",
            "//host/v1",
            "gopher://h",
            "http://[::1/v1",
            "",
        ]
    ),
    st.text(max_size=40),
)
numbers = st.one_of(
    st.sampled_from(["0", "-1", "1e309", "nan", "inf", "-0", "1.5", "10", "abc", "", "1e3"]),
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
)
yaml_texts = st.one_of(
    st.sampled_from(
        [
            "experts: 5",
            "experts: [{name: x}]",
            "experts: [{name: x, base_url: 'ftp://h', model: m}]",
            "categories: [{name: c, experts: [nobody]}]",
            "[1, 2, 3]",
            "!!python/object/apply:os.system ['true']",
            ": : :",
            "experts:\n  - name: ok\n    base_url: http://127.0.0.1:9/v1\n    model: m\n    timeout_s: -4",
            "\t\x00",
            "a: &a [*a]",
        ]
    ),
    st.text(max_size=80),
)


@st.composite
def commands(draw: st.DrawFn) -> list[str]:
    kind = draw(
        st.sampled_from(["add", "update", "remove", "enable", "cat", "map", "keys", "revoke", "import"])
    )
    n = draw(names)
    if kind == "add":
        args = ["experts", "add", n, "--url", draw(urls), "--model", draw(names)]
        for opt in draw(
            st.lists(
                st.sampled_from(["--timeout", "--cost-in", "--max-context", "--max-concurrency"]), max_size=2
            )
        ):
            args += [opt, draw(numbers)]
        return args
    if kind == "update":
        return [
            "experts",
            "update",
            n,
            draw(st.sampled_from(["--url", "--timeout", "--cost-out"])),
            draw(st.one_of(urls, numbers)),
        ]
    if kind in ("remove", "enable"):
        return ["experts", kind, n]
    if kind == "cat":
        return ["categories", "add", n]
    if kind == "map":
        return ["categories", "map", n, draw(names), "--rank", draw(numbers)]
    if kind == "keys":
        return [
            "keys",
            "create",
            "--scope",
            draw(st.sampled_from(["query", "admin", "root", "", "QUERY"])),
            "--name",
            n,
        ]
    if kind == "revoke":
        return ["keys", "revoke", n]
    return ["registry", "import", "@YAML@", *draw(st.sampled_from([[], ["--dry-run"], ["--replace"]]))]


def dump(db: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return list(con.iterdump())


@contextlib.contextmanager
def environment(**env: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def coe(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["coe", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            root.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def registry_db() -> Iterator[Path]:
    root._register()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "coe.db"
        with environment(COE_DATABASE_URL=f"sqlite:///{db}"):
            code, _, err = coe(["experts", "add", "math", "--url", "http://127.0.0.1:9/v1", "--model", "m"])
            assert code == 0, err
            code, _, err = coe(["categories", "add", "math"])
            assert code == 0, err
            yield db


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(cmd=commands(), yaml_text=yaml_texts)
def test_cli_never_tracebacks_and_rejects_cleanly(registry_db: Path, cmd: list[str], yaml_text: str) -> None:
    yaml_file = registry_db.parent / "import.yaml"
    yaml_file.write_bytes(yaml_text.encode("utf-8", "surrogatepass"))
    cmd = [str(yaml_file) if a == "@YAML@" else a for a in cmd]
    before = dump(registry_db)
    with environment(COE_DATABASE_URL=f"sqlite:///{registry_db}"):
        code, out, err = coe(cmd)
    assert "Traceback" not in out + err, (cmd, err)
    assert "unexpected" not in err, (cmd, err)  # the last line of defence caught a bug
    if code != 0:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, (cmd, code, err)
        assert dump(registry_db) == before, cmd


class Redirect(BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(302)
        self.send_header("location", self.target + self.path)
        self.send_header("content-length", "0")
        self.end_headers()

    do_POST = do_GET  # noqa: N815

    def log_message(self, *_a: object) -> None:
        pass


class Target(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:  # noqa: N802
        type(self).hits += 1
        body = b'{"data": [{"id": "m"}], "choices": [{}]}'
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET  # noqa: N815

    def log_message(self, *_a: object) -> None:
        pass


def test_probe_follows_no_redirect_to_another_host(tmp_path: Path) -> None:
    root._register()
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), h) for h in (Target, Redirect)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    target, redirect = servers
    Redirect.target = f"http://localhost:{target.server_address[1]}"
    try:
        with environment(COE_DATABASE_URL=f"sqlite:///{tmp_path / 'p.db'}", COE_PROBE_KEY="sk-probe-secret"):
            url = f"http://127.0.0.1:{redirect.server_address[1]}/v1"
            code, _, err = coe(
                ["experts", "add", "r", "--url", url, "--model", "m", "--api-key-env", "COE_PROBE_KEY"]
            )
            assert code == 0, err
            code, out, err = coe(["experts", "probe", "r"])
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
    assert code == 1
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        err.splitlines()[-1]
    ] and "redirect" in err
    assert Target.hits == 0  # the key never went to the other host
