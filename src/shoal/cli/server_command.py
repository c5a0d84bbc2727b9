"""``shoal server`` and ``shoal join``: settings from the command line, then the node."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from shoal.cli.settings import (
    AgentSettings,
    ApiSettings,
    BusSettings,
    ControllerSettings,
    MeshSettings,
    NetworkSettings,
    NoAdvertiseAddress,
    NodeSettings,
    advertise_for,
)
from shoal.mesh.pki import LIFETIME_ENV
from shoal.node.node_status import WEAK_HEARTBEAT_SECONDS


class UsageError(Exception):
    """Flags that do not go together (exit status 2)."""


def peer_role(args: argparse.Namespace) -> str:
    """The mesh role from --super-peer and --sync-via (shoal.mesh.topology.Role)."""
    return "super" if args.super_peer else ("weak" if args.sync_via == "super" else "full")


def heartbeat_interval(args: argparse.Namespace) -> float:
    """--heartbeat-interval, or its default: 10 s as the kubelet's, 30 s on a weak peer (its
    renewals are most of its idle traffic; its Lease then declares 120 s)."""
    if args.heartbeat_interval is not None:
        return float(args.heartbeat_interval)
    return WEAK_HEARTBEAT_SECONDS if peer_role(args) == "weak" else 10.0


def join_token(args: argparse.Namespace, argv: list[str]) -> str | None:
    """The join token from --token-file, --token (warned about when on the command line:
    `ps` shows a process's arguments to every user of the host) or SHOAL_TOKEN."""
    if args.token_file is not None:
        try:
            return str(args.token_file.read_text().strip()) or None
        except OSError as e:
            raise UsageError(f"cannot read --token-file: {e}") from None
    if args.token is not None:
        if any(a == "--token" or a.startswith("--token=") for a in argv):
            print(f"shoal {args.command}: warning: --token shows the join token in `ps` to "
                  "every user of this host; prefer --token-file FILE or the SHOAL_TOKEN "
                  "environment variable", file=sys.stderr)
        return str(args.token)
    # Taken out of the environment, so that no helper process (runc, CNI plugins,
    # wireguard-go) inherits it.
    env = os.environ.pop("SHOAL_TOKEN", "").strip()
    return env if env and args.join is not None else None


def settings_from_args(args: argparse.Namespace, argv: list[str]) -> NodeSettings:
    """The node's settings, checked; raises UsageError for flags that do not go together."""
    if args.data_dir is None:
        raise UsageError("--data-dir is required (or SHOAL_DATA_DIR, or data-dir in --config)")
    if args.command == "join" and args.join is None:
        raise UsageError("shoal join needs --join HOST:PORT (or SHOAL_JOIN, or join in --config)")
    if args.super_peer and args.sync_via == "super":
        raise UsageError("a super-peer cannot also sync via super-peers")
    # A node that has joined needs no token any more: a service restarted after the token
    # file was deleted keeps starting, its --join only a seed.
    joined = args.join is not None and (args.data_dir / "pki" / "node.crt").exists()
    try:
        token = join_token(args, argv)
    except UsageError as e:
        if not joined:
            raise
        print(f"shoal {args.command}: {e}; not needed: this node has joined already",
              file=sys.stderr)
        token = None
    if (args.join is None) != (token is None) and not joined:
        raise UsageError("--join needs a token (--token-file FILE, SHOAL_TOKEN or --token), "
                         "and a token needs --join")
    try:
        advertise = advertise_for(args.bind, args.advertise)
    except NoAdvertiseAddress as e:
        raise UsageError(str(e)) from None
    return NodeSettings(
        name=args.name, data_dir=args.data_dir,
        api=ApiSettings(bind=args.bind, port=args.api_port, advertise=advertise,
                        bookmark_interval=args.bookmark_interval,
                        summary_interval=args.summary_interval,
                        idle_timeout=args.api_idle_timeout, health_port=args.health_port,
                        tls_handshake_timeout=args.api_tls_handshake_timeout),
        mesh=MeshSettings(peer_port=args.peer_port, peer_advertise=args.peer_advertise,
                          join=args.join, join_token=token, join_give_up=args.join_timeout,
                          role=peer_role(args), idle_timeout=args.peer_idle_timeout,
                          tls_handshake_timeout=args.peer_tls_handshake_timeout,
                          site=args.site, region=args.region, preset=args.mesh_preset),
        controllers=ControllerSettings(node_monitor_grace=args.node_monitor_grace_period,
                                       pod_eviction_timeout=args.pod_eviction_timeout),
        agent=AgentSettings(runtime=args.runtime, heartbeat_interval=heartbeat_interval(args),
                            status_report_every=args.node_status_report_frequency or None,
                            allow_root_pods=args.allow_root_pods, pods_dir=args.pods_dir,
                            container_log_max_size=args.container_log_max_size,
                            container_log_max_files=args.container_log_max_files),
        network=NetworkSettings(cluster_cidr=args.cluster_cidr, pod_network=args.pod_network,
                                dns_port=args.dns_port, cluster_domain=args.cluster_domain,
                                proxy_mode=args.proxy_mode,
                                ingress_http_port=args.ingress_http_port,  # ingress
                                ingress_https_port=args.ingress_https_port),
        bus=BusSettings(enabled=args.bus, port=args.bus_port,
                        cluster_port=args.bus_cluster_port,
                        leafnode_port=args.bus_leafnode_port,
                        mqtt_port=args.bus_mqtt_port),
    )


def run(args: argparse.Namespace, argv: list[str]) -> int:
    from shoal.cli.main import run_event_loop

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.log_format == "json":  # observability
        from shoal.cli.log_format import use_json

        use_json(args.name)
    try:
        settings = settings_from_args(args, argv)
    except UsageError as e:
        print(f"shoal {args.command}: {e}", file=sys.stderr)
        return 2
    if args.cert_lifetime:
        os.environ[LIFETIME_ENV] = str(args.cert_lifetime)
    from shoal.cli.data_dir_lock import DataDirInUse
    from shoal.cli.node import serve
    from shoal.cli.ports import PortInUse
    from shoal.mesh.join import JoinError
    from shoal.mesh.join_tokens import TokenError

    try:
        run_event_loop(serve(settings))
    except (OSError, JoinError, TokenError, DataDirInUse, PortInUse) as e:
        print(f"shoal {args.command}: {e}", file=sys.stderr)
        return 1
    return 0
