"""``shoal install`` and ``shoal uninstall``: ``shoal server`` as a systemd service.

``install`` writes the node's settings to a config file (``/etc/shoal/config.yaml``),
a unit that runs ``shoal server --config`` on it (``/etc/systemd/system/shoal.service``),
and enables it (the ``multi-user.target.wants`` link, which is what ``systemctl
enable`` makes); where systemd runs, it also reloads systemd and starts the service.
``uninstall`` stops and disables it and removes both files, and with
``--purge-data`` the data dir too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from shoal.cli.private_output import write_private

UNIT_NAME = "shoal.service"
UNIT_DIR = Path("/etc/systemd/system")
CONFIG_DIR = Path("/etc/shoal")
DATA_DIR = Path("/var/lib/shoal")
WANTED_BY = "multi-user.target"


def add_parsers(sub: Any) -> None:
    i = sub.add_parser(
        "install", help="install shoal server as a systemd service and start it",
        description="Write a config file and a systemd unit running `shoal server --config` "
                    "on it, enable it and, where systemd runs, start it. Arguments after "
                    "`--` are more server flags, written into the config file.")
    i.add_argument("--name", default=None, help="the node's name (default: the host name)")
    i.add_argument("--data-dir", type=Path, default=DATA_DIR,
                   help=f"the node's data dir (default: {DATA_DIR})")
    i.add_argument("--join", default=None, metavar="HOST:PORT",
                   help="join the cluster through this member on first start")
    i.add_argument("--token-file", type=Path, default=None, metavar="FILE",
                   help="the join token's file (read by the service; keep it 0600)")
    i.add_argument("--bind", default=None, help="the server's --bind")
    i.add_argument("--advertise", default=None, help="the server's --advertise")
    _paths(i)
    i.add_argument("--no-start", action="store_true",
                   help="enable the service but do not start it now")
    i.add_argument("server_flags", nargs=argparse.REMAINDER,
                   help="-- then more `shoal server` flags, e.g. -- --runtime process")
    u = sub.add_parser("uninstall", help="stop and remove the systemd service",
                       description="Stop and disable the service, remove its unit and config "
                                   "file; with --purge-data, the node's data dir too.")
    _paths(u)
    u.add_argument("--purge-data", action="store_true",
                   help="also delete the data dir named in the config file (the replica, "
                        "keys and certificates: the node must join again)")


def _paths(p: argparse.ArgumentParser) -> None:
    p.add_argument("--unit-dir", type=Path, default=UNIT_DIR,
                   help=f"where the unit goes (default: {UNIT_DIR})")
    p.add_argument("--config-dir", type=Path, default=CONFIG_DIR,
                   help=f"where the config file goes (default: {CONFIG_DIR})")


def shoal_binary() -> str:
    """The ``shoal`` script of this installation (a venv's or pipx's bin), else PATH's."""
    here = Path(sys.executable).parent / "shoal"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here.absolute())
    found = shutil.which("shoal")
    return str(Path(found).absolute()) if found else str(here.absolute())


def render_unit(binary: str, config: Path) -> str:
    return f"""[Unit]
Description=Shoal: a leaderless Kubernetes node
Wants=network-online.target
After=network-online.target

[Service]
Type=exec
ExecStart={binary} server --config {config}
# SIGTERM to shoal alone: it stops its pods itself, then anything left is killed.
KillMode=mixed
TimeoutStopSec=60
Restart=always
RestartSec=5s
# runc containers get cgroups of their own under the service's.
Delegate=yes
LimitNOFILE=1048576
TasksMax=infinity

[Install]
WantedBy={WANTED_BY}
"""


def server_config(args: argparse.Namespace) -> dict[str, Any]:
    """The config file's contents: what was given, plus any flags after ``--``."""
    import yaml  # here, not at the top: a running node loads no PyYAML (2.6 MB)

    config: dict[str, Any] = {"data-dir": str(args.data_dir.absolute())}
    for key in ("name", "join", "bind", "advertise"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    if args.token_file is not None:
        config["token-file"] = str(args.token_file.absolute())
    extra = [a for a in args.server_flags if a != "--"]
    while extra:
        flag = extra.pop(0)
        if not flag.startswith("--"):
            raise ValueError(f"{flag!r} is not a flag of shoal server")
        key, _, value = flag[2:].partition("=")
        if not value:
            value = extra.pop(0) if extra and not extra[0].startswith("--") else "true"
        if key.startswith("no-") and value == "true":  # --no-bus: bus: false
            key, value = key[3:], "false"
        config[key] = yaml.safe_load(value) if value in ("true", "false") else value
    return config


def _systemd_running() -> bool:
    return Path("/run/systemd/system").is_dir()


def _systemctl(*args: str) -> None:
    subprocess.run(["systemctl", *args], check=True, timeout=120)


def install(args: argparse.Namespace) -> int:
    import yaml  # here, not at the top: a running node loads no PyYAML (2.6 MB)

    from shoal.cli import config_file
    from shoal.cli.main import _parser, _subparser

    config = server_config(args)
    path = args.config_dir / "config.yaml"
    args.config_dir.mkdir(parents=True, exist_ok=True)
    # Written beside the file and checked as the service will read it, so a bad flag is
    # refused now, not at boot, and a refused install leaves the installed file as it was.
    candidate = path.with_name(path.name + ".new")
    write_private(yaml.safe_dump(config, sort_keys=False), candidate, "shoal install")
    try:
        parser = _parser()
        config_file.apply(_subparser(parser, "server"), ["--config", str(candidate)], {})
        parser.parse_args(["server", "--config", str(candidate)])
    except BaseException:
        candidate.unlink(missing_ok=True)
        raise
    candidate.replace(path)
    unit = args.unit_dir / UNIT_NAME
    args.unit_dir.mkdir(parents=True, exist_ok=True)
    unit.write_text(render_unit(shoal_binary(), path.absolute()))
    unit.chmod(0o644)
    wants = args.unit_dir / f"{WANTED_BY}.wants"
    wants.mkdir(exist_ok=True)
    link = wants / UNIT_NAME
    link.unlink(missing_ok=True)
    link.symlink_to(unit.absolute())
    print(f"wrote {path} and {unit}; enabled ({link})")
    if not _systemd_running():
        print("systemd is not running here: start the node with "
              f"`{shoal_binary()} server --config {path}` or boot with systemd")
        return 0
    _systemctl("daemon-reload")
    if not args.no_start:
        _systemctl("restart", UNIT_NAME)
        print(f"started {UNIT_NAME}: `journalctl -u shoal -f` follows its log")
    return 0


def uninstall(args: argparse.Namespace) -> int:
    import yaml  # here, not at the top: a running node loads no PyYAML (2.6 MB)

    path = args.config_dir / "config.yaml"
    unit = args.unit_dir / UNIT_NAME
    data_dir: Path | None = None
    pods_dir: Path | None = None
    with contextlib.suppress(OSError, KeyError, TypeError, yaml.YAMLError):
        config = yaml.safe_load(path.read_text())
        if config.get("pods-dir"):
            pods_dir = Path(str(config["pods-dir"]))
        data_dir = Path(str(config["data-dir"]))
    if _systemd_running() and unit.exists():
        subprocess.run(["systemctl", "disable", "--now", UNIT_NAME], check=False, timeout=120)
    for gone in (args.unit_dir / f"{WANTED_BY}.wants" / UNIT_NAME, unit, path):
        if gone.is_symlink() or gone.exists():
            gone.unlink()
            print(f"removed {gone}")
    if _systemd_running():
        _systemctl("daemon-reload")
    if args.purge_data:
        if data_dir is None:
            print(f"shoal uninstall: --purge-data: no data-dir in {path}; nothing purged",
                  file=sys.stderr)
            return 1
        from shoal.cli.data_dir_lock import DataDirInUse, DataDirLock

        leftovers = _pods_dirs(data_dir, pods_dir)  # named by the data dir's real path
        if data_dir.exists():
            try:
                DataDirLock.acquire(data_dir).release()
            except DataDirInUse as e:
                print(f"shoal uninstall: {e}", file=sys.stderr)
                return 1
            shutil.rmtree(data_dir)
            print(f"removed {data_dir}")
        for gone in leftovers:
            if gone.is_dir() and not gone.is_symlink():
                shutil.rmtree(gone)
                print(f"removed {gone}")
    return 0


def _pods_dirs(data_dir: Path, pods_dir: Path | None) -> list[Path]:
    """Where a node on ``data_dir`` kept process pods' files outside it: ``--pods-dir`` or,
    run as root, its own dir under /var/lib/shoal-pods, and the local-path volumes beside."""
    from shoal.node.pod_user import PODS_ROOT
    from shoal.node.runtime_process import node_marker

    if pods_dir is None:
        pods_dir = PODS_ROOT / node_marker(data_dir)
    return [pods_dir, pods_dir.with_name(pods_dir.name + "-local-path")]


def run(args: argparse.Namespace) -> int:
    from shoal.cli.config_file import ConfigError

    try:
        return install(args) if args.command == "install" else uninstall(args)
    except (OSError, ValueError, ConfigError, subprocess.CalledProcessError) as e:
        print(f"shoal {args.command}: {e}", file=sys.stderr)
        return 1
