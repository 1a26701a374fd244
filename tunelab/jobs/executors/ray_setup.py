"""Starting and joining a Ray cluster for tunelab, secure by default.

- Token authentication on (RAY_AUTH_MODE=token, Ray 2.52+): every node and every client must hold
  the cluster's token; a generated one is kept 0600 in TUNELAB_HOME/ray/auth_token and handed to
  Ray by path (RAY_AUTH_TOKEN_PATH), never on a command line nor in a log.
- Each node announces a private address (--node-ip-address): given, or the one Ray detects; an
  unspecified address (0.0.0.0, ::) is refused, and a public one unless the operator says so.
  Ray's gRPC servers still listen on every interface of the machine: the README asks for a
  firewall letting only the cluster's nodes reach the Ray ports.
- No dashboard (--include-dashboard=false) and no use of the Jobs API: tunelab runs jobs as actors
  through its own worker (ray_cluster.py).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path


class RaySetupError(ValueError):
    """A set-up that would not be secure, or cannot work; the message says what to do."""


def token_path(home: Path) -> Path:
    return Path(home) / "ray" / "auth_token"


def ensure_token(home: Path) -> Path:
    """The cluster token's file, created (256 random bits, 0600) when missing; refused when others
    can read it."""
    path = token_path(home)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        check_token_file(path)
        return path
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def check_token_file(path: Path) -> None:
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise RaySetupError(f"{path} must be a plain file holding the Ray cluster's token")
    if st.st_mode & 0o077:
        raise RaySetupError(f"{path} can be read by other users: run `chmod 600 {path}` (it holds the Ray "
                            "cluster's token: whoever has it can run code on every node)")
    if not Path(path).read_text().strip():
        raise RaySetupError(f"{path} is empty: copy the cluster's token from the head node's TUNELAB_HOME/ray/auth_token")


def auth_env(home: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with token authentication switched on. A token
    given as RAY_AUTH_TOKEN (a secret store) is kept; else the token file under `home`."""
    env = dict(os.environ if base is None else base)
    mode = env.get("RAY_AUTH_MODE", "token").lower()
    if mode != "token":
        raise RaySetupError(f"RAY_AUTH_MODE={mode}: tunelab runs Ray only with token authentication "
                            "(unset RAY_AUTH_MODE, or set it to `token`)")
    env["RAY_AUTH_MODE"] = "token"
    if not env.get("RAY_AUTH_TOKEN"):
        path = Path(env.get("RAY_AUTH_TOKEN_PATH") or token_path(home))
        if not path.exists():
            raise RaySetupError(f"no Ray cluster token at {path}: on the head, `tunelab ray start-head` creates it; "
                                "on another machine, copy the head's TUNELAB_HOME/ray/auth_token there (mode 600)")
        check_token_file(path)
        env["RAY_AUTH_TOKEN_PATH"] = str(path)
    return env


def node_address(given: str | None = None, *, allow_public: bool = False) -> str:
    """The address this node announces: `given`, else the one Ray detects; never an unspecified
    one, and a public one only when allowed."""
    if not given:
        from ray._private.services import get_node_ip_address

        given = get_node_ip_address()
    try:
        ip = ipaddress.ip_address(given)
    except ValueError:
        raise RaySetupError(f"{given!r} is not an IP address: give this node's private address (--address)") from None
    if ip.is_unspecified:
        raise RaySetupError(f"{given} would listen on every network: give this node's private address (--address)")
    if not (ip.is_private or ip.is_loopback) and not allow_public:
        raise RaySetupError(f"{given} is a public address: a Ray cluster belongs on a private network; pass "
                            "--allow-public-address only behind a firewall that admits the cluster's nodes alone")
    return str(ip)


@dataclass
class NodeOptions:
    address: str                            # this node's private IP
    num_cpus: int | None = None
    num_gpus: int | None = None
    object_store_mb: int | None = None
    resources: dict[str, float] = field(default_factory=dict)
    block: bool = False
    extra: list[str] = field(default_factory=list)      # more `ray start` options (fixed ports...)


# `ray start` options tunelab sets itself, or that would undo a secure default.
_OWN_OPTIONS = ("--include-dashboard", "--dashboard-host", "--dashboard-port", "--node-ip-address", "--head",
                "--address", "--block", "--ray-client-server-port")


def check_extra(extra: list[str]) -> list[str]:
    for option in extra:
        if option.split("=", 1)[0] in _OWN_OPTIONS:
            raise RaySetupError(f"{option}: tunelab sets this `ray start` option itself (no dashboard, the node's "
                                "private address from --address); leave it out")
    return list(extra)


def _ray_cli() -> str:
    found = Path(sys.executable).with_name("ray")
    return str(found) if found.exists() else (shutil.which("ray") or "ray")


def _common(opts: NodeOptions) -> list[str]:
    argv = [f"--node-ip-address={opts.address}", "--include-dashboard=false", "--disable-usage-stats"]
    if opts.num_cpus is not None:
        argv.append(f"--num-cpus={opts.num_cpus}")
    if opts.num_gpus is not None:
        argv.append(f"--num-gpus={opts.num_gpus}")
    if opts.object_store_mb:
        argv.append(f"--object-store-memory={opts.object_store_mb * 1024 * 1024}")
    if opts.resources:
        import json

        argv.append(f"--resources={json.dumps(opts.resources)}")
    argv += check_extra(opts.extra)
    if opts.block:
        argv.append("--block")
    return argv


def head_argv(opts: NodeOptions, port: int = 6379) -> list[str]:
    """`ray start --head` with tunelab's defaults (no dashboard, private address)."""
    return [_ray_cli(), "start", "--head", f"--port={port}", *_common(opts)]


def join_argv(head: str, opts: NodeOptions) -> list[str]:
    """`ray start --address=HEAD:PORT` for a node joining the cluster."""
    if ":" not in head:
        raise RaySetupError(f"{head!r}: give the head's address as IP:PORT (the port `tunelab ray start-head` printed)")
    node_address(head.rsplit(":", 1)[0], allow_public=True)      # an address, not 0.0.0.0
    return [_ray_cli(), "start", f"--address={head}", *_common(opts)]


def use_token(env: dict[str, str]) -> None:
    """Token mode (and where the token is) for this process, from `auth_env`'s result. Ray reads
    its configuration once per process: it is read again here (as ray.init does for a new local
    cluster), so a process that imported ray earlier is not left without authentication."""
    from ray._raylet import AuthenticationTokenLoader, Config

    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):
        if key in env:
            os.environ[key] = env[key]
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def connect(address: str, home: Path) -> None:
    """Connect this process (the tunelab worker) to the cluster as a Ray driver, with the token."""
    import ray

    use_token(auth_env(home))
    if ray.is_initialized():
        return
    ray.init(address=address, namespace="tunelab", log_to_driver=False, logging_level="WARNING",
             configure_logging=True)
