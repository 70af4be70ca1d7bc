"""The admin CLI: Typer's CliRunner on the root app, the real `coe` entry point in-process (for the
one-line error mapping) and the installed `.venv/bin/coe` script in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deploy.ops import cli as root
from registry import Registry
from registry import repository as repo

REPO_ROOT = Path(__file__).resolve().parents[2]
COE = REPO_ROOT / ".venv" / "bin" / "coe"


@pytest.fixture(scope="module")
def app():
    root._register()
    return root.app


@pytest.fixture
def invoke(app, db_url: str):
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, list(args), env={"COE_DATABASE_URL": db_url, "COE_CONFIG": None})

    return run


@pytest.fixture
def coe(app, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """`coe ARGS` through deploy.ops.cli.main in-process: returns (exit code, stdout, stderr)."""
    # main() registers the sub-apps on every call; they are registered once already (the `app` fixture)
    monkeypatch.setattr(root, "_register", lambda: None)
    monkeypatch.setenv("COE_DATABASE_URL", db_url)
    monkeypatch.delenv("COE_CONFIG", raising=False)

    def run(*args: str, url: str | None = None) -> tuple[int, str, str]:
        if url is not None:
            monkeypatch.setenv("COE_DATABASE_URL", url)
        monkeypatch.setattr(sys, "argv", ["coe", *args])
        capsys.readouterr()
        try:
            root.main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _state(url: str):
    with Registry(url) as reg, reg.session(write=False) as s:
        return reg.revision(), repo.export_registry(s), [k.id for k in repo.list_api_keys(s)]


def test_expert_and_category_commands(invoke, db_url: str) -> None:
    r = invoke(
        "experts",
        "add",
        "gen",
        "--url",
        "http://127.0.0.1:8101/v1",
        "--model",
        "smol",
        "--tag",
        "generalist",
        "--tag",
        "local",
        "--cost-in",
        "0.5",
        "--cost-out",
        "1.5",
        "--max-context",
        "2048",
        "--max-concurrency",
        "2",
        "--timeout",
        "9",
        "--notes",
        "cpu",
    )
    assert r.exit_code == 0, r.output
    assert (
        invoke(
            "experts",
            "add",
            "math",
            "--url",
            "http://127.0.0.1:8102/v1",
            "--model",
            "m",
            "--api-key-env",
            "MATH_KEY",
            "--disabled",
        ).exit_code
        == 0
    )
    listed = json.loads(invoke("experts", "list", "--json").stdout)
    assert [e["name"] for e in listed] == ["gen", "math"]
    assert listed[0]["tags"] == ["generalist", "local"] and listed[0]["cost_output_per_m"] == 1.5
    assert listed[1]["enabled"] is False and listed[1]["api_key_env"] == "MATH_KEY"
    table = invoke("experts", "list")
    assert table.exit_code == 0 and "gen" in table.stdout and "math" in table.stdout

    assert invoke("experts", "enable", "math").exit_code == 0
    assert invoke("experts", "update", "math", "--cost-in", "2", "--tag", "stem").exit_code == 0
    assert invoke("categories", "add", "math", "--description", "numbers").exit_code == 0
    assert invoke("categories", "add", "computer science").exit_code == 0
    assert invoke("categories", "map", "math", "math", "--rank", "1").exit_code == 0
    assert invoke("categories", "map", "math", "gen", "--rank", "2").exit_code == 0
    cats = json.loads(invoke("categories", "list", "--json").stdout)
    assert cats == [
        {"name": "computer science", "description": "", "experts": []},
        {
            "name": "math",
            "description": "numbers",
            "experts": [{"expert": "math", "rank": 1}, {"expert": "gen", "rank": 2}],
        },
    ]
    shown = json.loads(invoke("experts", "show", "math", "--json").stdout)
    assert shown["cost_input_per_m"] == 2.0 and shown["tags"] == ["stem"] and shown["enabled"] is True
    assert shown["categories"] == [{"category": "math", "rank": 1}]
    assert invoke("categories", "unmap", "math", "gen").exit_code == 0
    assert invoke("experts", "disable", "gen").exit_code == 0
    assert invoke("experts", "remove", "gen").exit_code == 0
    with Registry(db_url) as reg:
        snap = reg.snapshot()
    assert set(snap.experts) == {"math"} and snap.category_experts["math"] == ("math",)
    assert snap.revision == 11


def test_keys_commands(invoke, db_url: str) -> None:
    created = invoke("keys", "create", "--scope", "query", "--scope", "admin", "--name", "ops")
    assert created.exit_code == 0, created.output
    plaintext = created.stdout.strip()
    keys = json.loads(invoke("keys", "list", "--json").stdout)
    assert [(k["name"], k["scopes"], k["revoked_at"]) for k in keys] == [("ops", ["query", "admin"], None)]
    assert plaintext not in invoke("keys", "list").stdout
    with Registry(db_url) as reg:
        assert reg.verify_key(plaintext).scopes == ("query", "admin")
        assert invoke("keys", "revoke", keys[0]["id"]).exit_code == 0
        assert reg.verify_key(plaintext) is None
    assert json.loads(invoke("keys", "list", "--json").stdout)[0]["revoked_at"] is not None


def test_export_import_round_trip_through_yaml(invoke, db_url: str, tmp_path: Path) -> None:
    with Registry(db_url) as reg:
        with reg.session() as s:
            repo.add_expert(
                s,
                name="a",
                base_url="http://a:1/v1",
                model="m",
                tags=["generalist"],
                cost_input_per_m=0.15,
                notes="multi\nline: yes",
            )
            repo.add_expert(
                s, name="b", base_url="https://b/v1", model="n", api_key_env="B_KEY", enabled=False
            )
            repo.add_category(s, name="computer science", description="code")
            repo.map_expert(s, category="computer science", expert="b", rank=1)
            repo.map_expert(s, category="computer science", expert="a", rank=3)
            repo.set_skill_scores(
                s, expert="a", category="computer science", score=0.123456789, n=7, source="x"
            )
        reg.set_setting("router.artifact", {"path": "/r/v1", "k": [1, 2]})
    first, second = tmp_path / "one.yaml", tmp_path / "two.yaml"
    assert invoke("registry", "export", str(first)).exit_code == 0
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    runner = CliRunner()
    env = {"COE_DATABASE_URL": empty, "COE_CONFIG": None}
    dry = runner.invoke(root.app, ["registry", "import", str(first), "--dry-run"], env=env)
    assert dry.exit_code == 0 and "dry run" in dry.stderr
    assert _state(empty)[0] == 0
    assert runner.invoke(root.app, ["registry", "import", str(first)], env=env).exit_code == 0
    assert runner.invoke(root.app, ["registry", "export", str(second)], env=env).exit_code == 0
    assert second.read_text() == first.read_text()
    assert "B_KEY" in first.read_text() and "coe_" not in first.read_text()


def test_bad_input_is_one_line_on_stderr_and_changes_nothing(coe, db_url: str, tmp_path: Path) -> None:
    assert coe("experts", "add", "a", "--url", "http://a:1/v1", "--model", "m")[0] == 0
    assert coe("categories", "add", "math")[0] == 0
    before = _state(db_url)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("experts:\n  - name: x\n    base_url: [unclosed\n")
    bad_schema = tmp_path / "schema.yaml"
    bad_schema.write_text(
        "experts:\n  - name: x\n    base_url: http://x\n    model: m\n    cost_input_per_m: -2\n"
    )
    cases = [
        (("experts", "show", "ghost"), "unknown expert 'ghost'"),
        (("experts", "remove", "ghost"), "unknown expert 'ghost'"),
        (("categories", "map", "nope", "a"), "unknown category 'nope'"),
        (("categories", "map", "math", "ghost"), "unknown expert 'ghost'"),
        (("experts", "add", "a", "--url", "http://b/v1", "--model", "m"), "already exists"),
        (("categories", "add", "math"), "already exists"),
        (("experts", "add", "b", "--url", "localhost:8000", "--model", "m"), "invalid URL"),
        (("experts", "add", "b", "--url", "http://b/v1", "--model", "m", "--cost-out", "-1"), "≥ 0"),
        (("experts", "update", "a", "--max-context", "0"), "positive integer"),
        (("keys", "create", "--scope", "root"), "unknown scope 'root'"),
        (("keys", "create"), "at least one scope"),
        (("keys", "revoke", "123"), "unknown API key"),
        (("registry", "import", str(bad_yaml)), "is not valid YAML at line 4"),
        (("registry", "import", str(bad_schema)), "expert 'x': invalid cost_input_per_m"),
        (("registry", "import", str(tmp_path / "missing.yaml")), "cannot read"),
        (("db", "downgrade", "nosuchrev"), "unknown schema revision"),
    ]
    for args, fragment in cases:
        code, out, err = coe(*args)
        assert code != 0, args
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], (args, err)
        assert "Traceback" not in out + err
    assert _state(db_url) == before


def test_unreachable_database_is_one_clear_line(coe) -> None:
    code, out, err = coe("experts", "list", url="postgresql+psycopg://x@127.0.0.1:1/db")
    assert code == 1 and out == ""
    assert (
        err.count("\n") == 1
        and "error: registry database postgresql+psycopg://x@127.0.0.1:1/db is unreachable" in err
    )


def test_db_commands(coe, db_url: str) -> None:
    code, out, _ = coe("db", "current", "--json")
    assert code == 0 and json.loads(out)["revision"] is None
    assert coe("db", "upgrade")[0] == 0
    assert json.loads(coe("db", "current", "--json")[1])["up_to_date"] is True
    assert coe("db", "downgrade", "base")[0] == 0
    assert coe("db", "current")[1].startswith("base")
    assert coe("db", "upgrade", "0001")[0] == 0
    assert coe("db", "current")[1].strip() == "0001 (head is 0004)"
    assert coe("db", "upgrade", "0002")[0] == 0  # 0002: expert capabilities
    assert coe("db", "current")[1].strip() == "0002 (head is 0004)"
    assert coe("db", "upgrade", "0003")[0] == 0  # 0003: key limits and usage, decision log, feedback
    assert coe("db", "current")[1].strip() == "0003 (head is 0004)"
    assert coe("db", "upgrade")[0] == 0  # 0004: stored responses, session affinity
    assert coe("db", "current")[1].strip() == "0004 (head)"
    assert coe("db", "downgrade", "0002")[0] == 0
    assert coe("db", "current")[1].strip() == "0002 (head is 0004)"


class _FakeExpert(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible server on loopback (what `probe` talks to)."""

    seen_auth: list[str | None] = []

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _json(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.seen_auth.append(self.headers.get("Authorization"))
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": "smol", "object": "model"}]})
        else:
            self._json(404, {"error": {"message": "no"}})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/v1/chat/completions" and body.get("max_tokens") == 1 and body["model"] == "smol":
            self._json(
                200,
                {
                    "id": "x",
                    "object": "chat.completion",
                    "model": "smol",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "p"},
                            "finish_reason": "length",
                        }
                    ],
                },
            )
        else:
            self._json(400, {"error": {"message": "bad request"}})


@pytest.fixture
def fake_expert():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeExpert)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakeExpert.seen_auth = []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_probe(coe, fake_expert: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMOL_KEY", "secret-123")
    assert (
        coe("experts", "add", "ok", "--url", fake_expert, "--model", "smol", "--api-key-env", "SMOL_KEY")[0]
        == 0
    )
    assert coe("experts", "add", "wrong-model", "--url", fake_expert, "--model", "other")[0] == 0
    assert coe("experts", "add", "down", "--url", "http://127.0.0.1:9/v1", "--model", "smol")[0] == 0
    code, out, err = coe("experts", "probe", "ok", "--json")
    report = json.loads(out)
    assert (
        code == 0 and report["ok"] and [c["check"] for c in report["checks"]] == ["models", "chat_completion"]
    )
    assert _FakeExpert.seen_auth == ["Bearer secret-123"]
    code, out, err = coe("experts", "probe", "wrong-model")
    assert code == 1 and "model 'other' is not served" in err
    code, out, err = coe("experts", "probe", "down", "--timeout", "2")
    assert code == 1 and err.strip().splitlines()[-1].startswith("error: expert down failed models")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_installed_coe_script(db_url: str) -> None:
    assert COE.exists(), f"{COE} is missing: install the project (make venv) first"
    env = {**os.environ, "COE_DATABASE_URL": db_url}
    env.pop("COE_CONFIG", None)

    def coe(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(COE), *args], env=env, capture_output=True, text=True, timeout=60)

    ok = coe("experts", "add", "x", "--url", "http://h:1/v1", "--model", "m")
    assert ok.returncode == 0, ok.stderr
    assert [e["name"] for e in json.loads(coe("experts", "list", "--json").stdout)] == ["x"]
    bad = coe("experts", "add", "y", "--url", "nope", "--model", "m")
    assert bad.returncode == 2 and bad.stderr.startswith("error: invalid URL") and bad.stderr.count("\n") == 1


def test_experts_help_imports_neither_torch_nor_ray() -> None:
    code = (
        "import sys\n"
        "sys.argv = ['coe', 'experts', '--help']\n"
        "from deploy.ops.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
        "heavy = {'torch', 'ray', 'sqlalchemy', 'alembic', 'transformers', 'sentence_transformers'}\n"
        "loaded = sorted(heavy & set(sys.modules))\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "add" in done.stdout and "probe" in done.stdout
