"""`coe up`'s start-up checks: the mistakes a newcomer meets, found before anything is started, each as
one `StartupError` (or the registry's / artifact's own typed error) that the CLI prints as one line.

    check                 fails when
    data directory        it cannot be created or written, or has under COE_MIN_FREE_DISK_MB free
    HTTP port             COE_PORT (or --port) is taken on COE_HOST
    local expert port     COE_LOCAL_EXPERT_PORT is taken (when the local experts run and it is not 0)
    Ray address           COE_RAY_ADDRESS does not answer, or `auto` finds only a stale session
    registry database     COE_DATABASE_URL is unreachable (RegistryUnavailable)
    router artifact       the artifact the registry or COE_ROUTER_ARTIFACT names is missing or corrupt

Each check is a plain function of the settings, so tests call them one by one."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from deploy.settings import Settings
from router.errors import ArtifactError, StartupError

#: Ray's record of the last cluster started on this machine (what `address="auto"` attaches to)
RAY_CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")


def check_data_dir(data_dir: Path, min_free_mb: float) -> None:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".coe-write-probe-{uuid.uuid4().hex}"
        with open(probe, "wb") as f:
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as exc:
        why = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or type(exc).__name__)
        raise StartupError(
            f"data directory {data_dir} is not writable ({why}); set COE_DATA_DIR to a writable directory"
        ) from None
    free_mb = shutil.disk_usage(data_dir).free / 2**20
    if free_mb < min_free_mb:
        raise StartupError(
            f"data directory {data_dir} has {free_mb:.0f} MiB free, under the {min_free_mb:.0f} MiB "
            "needed (COE_MIN_FREE_DISK_MB); free some space or set COE_DATA_DIR"
        )


def check_port_free(host: str, port: int, what: str, variable: str) -> None:
    """Bind the port as a server would (SO_REUSEADDR, so a closing TIME_WAIT socket is no conflict)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"{what} port {port} on {host} is already in use (another `coe up`?); "
                    f"stop it or choose another with {variable}"
                ) from None
            raise StartupError(f"cannot bind the {what} port {host}:{port}: {exc.strerror}") from None


def _answers(host: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def check_ray_address(
    address: str | None, timeout_s: float = 3.0, current: Path = RAY_CURRENT_CLUSTER
) -> None:
    """None starts a fresh local Ray (never attaches to an old session), so there is nothing to check."""
    if not address:
        return
    if address == "auto":
        if not current.is_file():
            raise StartupError(
                "COE_RAY_ADDRESS=auto but no Ray cluster runs on this machine (start one with `ray start "
                "--head`, or unset COE_RAY_ADDRESS to start a local one)"
            )
        address = current.read_text().strip()
        stale = f"COE_RAY_ADDRESS=auto found a stale Ray session ({address} does not answer)"
        hint = "; run `ray stop`, or unset COE_RAY_ADDRESS to start a fresh local Ray"
    else:
        stale = f"the Ray cluster at COE_RAY_ADDRESS={address} does not answer"
        hint = "; check the address or unset COE_RAY_ADDRESS to start a local Ray"
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise StartupError(f"COE_RAY_ADDRESS={address!r} is not host:port (or ray://host:port, or auto)")
    if not _answers(host, port, timeout_s):
        raise StartupError(stale + hint)


def check_registry(database_url: str) -> Path | None:
    """Connect (creating or migrating the schema as `coe up` would) and return the artifact it names."""
    from registry import Registry

    with Registry(database_url) as registry:
        registry.revision()
        from deploy.pipeline.router_service import ARTIFACT_SETTING

        value = registry.get_setting(ARTIFACT_SETTING)
    return Path(value) if value else None


def check_artifact(path: Path) -> None:
    """The artifact's files without the embedder (loading that is the replicas' job)."""
    from router.classifier import load_artifact

    if not (path / "manifest.json").is_file():
        raise ArtifactError(f"router artifact not found at {path} (build one with `make router-artifact`)")
    try:
        load_artifact(path)
    except ArtifactError:
        raise
    except Exception as exc:  # a truncated npz, bad JSON: one line naming the file
        raise ArtifactError(f"router artifact {path} is corrupt: {type(exc).__name__}: {exc}") from None


def preflight(settings: Settings) -> None:
    """Every check, cheapest first; raises the first problem found."""
    check_data_dir(Path(settings.data_dir), settings.min_free_disk_mb)
    check_port_free(settings.host, settings.port, "HTTP", "COE_PORT or --port")
    if settings.local_experts:
        check_port_free(settings.host, settings.local_expert_port, "local expert", "COE_LOCAL_EXPERT_PORT")
    check_ray_address(settings.ray_address)
    named = check_registry(settings.database_url)
    check_artifact(named or Path(settings.router_artifact))
