"""The ``shoal`` command: ``shoal server``, ``shoal kubeconfig``, ``shoal token``."""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from shoal import __version__
from shoal.cli.server_command import peer_role

__all__ = ["main", "parse_duration", "peer_role", "run_event_loop"]


def parse_duration(text: str) -> float:
    """``10s``, ``5m``, ``1h30m``, ``250ms`` or plain seconds."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    total = 0.0
    pos = 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (use e.g. 10s, 5m, 1h)")
    return total


def positive_duration(text: str) -> float:
    """A duration above 0 (a limit that cannot be turned off)."""
    value = parse_duration(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not more than 0")
    return value


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """uvloop where it is installed (it roughly halves the API's per-request cost), else asyncio."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shoal",
                                description="Shoal: a leaderless Kubernetes for the edge.")
    p.add_argument("--version", action="version", version=f"shoal {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    add_server_arguments(sub.add_parser(
        "server", help="run a Shoal node",
        description="Run a Shoal node: the Kubernetes API, the replica of the cluster state "
                    "and the controllers. Every flag can also come from the config file "
                    "(--config) or a SHOAL_* environment variable; a flag wins over the "
                    "variable, which wins over the file."))
    add_server_arguments(sub.add_parser(
        "join", help="run a Shoal node that joins a cluster (shoal server with --join)",
        description="shoal server, with --join required (from the command line, "
                    "SHOAL_JOIN or the config file's join key)."))

    from shoal.cli import token as token_cli

    token_cli.add_parser(sub)

    from shoal.cli import scopes as scopes_cli  # scopes: what a node holds, and its lag

    scopes_cli.add_parser(sub)

    from shoal.cli import status as status_cli  # observability: the mesh as a node sees it

    status_cli.add_parser(sub)

    _image_parser(sub)  # images (shoal.node.images)
    _kubeconfig_parser(sub)

    from shoal.cli import install as install_cli  # install: systemd unit

    install_cli.add_parsers(sub)

    from shoal.cli import snapshot as snapshot_cli  # snapshot: save and restore a replica

    snapshot_cli.add_parser(sub)

    from shoal.cli import kubectl as kubectl_cli  # kubectl: the bundled one

    kubectl_cli.add_parser(sub)
    return p


def add_server_arguments(s: argparse.ArgumentParser) -> None:
    """The flags of ``shoal server`` and ``shoal join``."""
    s.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="a YAML file of flag names and values, e.g. `api-port: 6443` "
                        "(default: SHOAL_CONFIG, else none)")
    s.add_argument("--name", default=socket.gethostname(),
                   help="the node's name, unique in the cluster (default: the host name)")
    s.add_argument("--data-dir", type=Path, required=True,
                   help="where the node keeps its state, certificates and keys (created if missing)")
    s.add_argument("--bind", default="127.0.0.1",
                   help="the address the API listens on (default: 127.0.0.1)")
    s.add_argument("--api-port", type=api_port, default=6443,
                   help="the HTTPS port of the Kubernetes API (default: 6443)")
    s.add_argument("--advertise", default=None,
                   help="the address clients and peers use to reach this node (default: --bind, "
                        "or 127.0.0.1 when binding to all addresses)")
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="debug logs one line per request; info logs a summary line every minute "
                        "(default: info)")
    s.add_argument("--log-format", default="text", choices=["text", "json"],  # observability
                   help="json: one JSON object per line with time, level, logger, node and "
                        "message (default: text)")
    s.add_argument("--container-log-max-size", type=_log_size, default=10 * 1024 * 1024,
                   help="rotate a container's log file when it reaches this size, as the "
                        "kubelet's containerLogMaxSize (default: 10Mi)")  # observability
    s.add_argument("--container-log-max-files", type=_log_files, default=5,
                   help="log files kept per container, the current one included, at least 2 "
                        "(default: 5)")  # observability
    s.add_argument("--bookmark-interval", type=parse_duration, default=60.0,
                   help="how often a watch that allows bookmarks gets one (default: 60s)")
    s.add_argument("--summary-interval", type=parse_duration, default=60.0,
                   help="how often the request summary line is logged (default: 60s)")
    s.add_argument("--heartbeat-interval", type=parse_duration, default=None,
                   help="how often the node renews its Lease, which declares four times this, "
                        "at least 40s; the others judge the node by it (default: 10s, 30s "
                        "with --sync-via super)")
    s.add_argument("--node-status-report-frequency", type=parse_duration, default=0.0,
                   help="also write the Node's status this often when nothing changed, as the "
                        "kubelet's nodeStatusReportFrequency (5m); every refresh reaches every "
                        "peer (default: 0, only when it changed: the Lease is the heartbeat)")
    s.add_argument("--node-monitor-grace-period", type=parse_duration, default=40.0,
                   help="how long a node may go without renewing its Lease before the others "
                        "mark it unreachable, NotReady (default: 40s)")
    s.add_argument("--peer-advertise", default=None, metavar="HOST:PORT",
                   help="the address peers dial to reach this node's peer port, when it is not "
                        "--advertise and --peer-port (a NAT port mapping, a proxy)")
    s.add_argument("--cluster-cidr", default="10.42.0.0/16",
                   help="the pod address range: each node gets a /24 of it in spec.podCIDR; "
                        "every peer must be given the same (default: 10.42.0.0/16)")
    s.add_argument("--pod-eviction-timeout", type=parse_duration, default=300.0,
                   help="how long a node may be unreachable before its pods are replaced on "
                        "other nodes (they are not deleted; when it returns the copies that "
                        "ran longest are kept); a node's annotation "
                        "shoal.dev/pod-eviction-timeout overrides it (default: 5m)")
    # --- node agent ---
    s.add_argument("--runtime", default="auto", choices=["auto", "process", "runc"],
                   help="how pods run: runc runs OCI containers from images (Debian's runc "
                        "package, as root; images come from `shoal image import`, registries "
                        "and peers); process runs each container's command as a host process, "
                        "with no image; auto picks runc when a test container runs here, else "
                        "process, and logs why (default: auto)")
    # --- end node agent ---
    # --- pod network (shoal.net.node_pod_network) ---
    s.add_argument("--pod-network", default="auto", choices=["auto", "cni", "host"],
                   help="how pods are networked: cni gives each runc pod its own network "
                        "namespace and an address from the node's podCIDR (CNI plugins from "
                        "containernetworking-plugins, VXLAN between nodes); host keeps every "
                        "pod on the node's network (the process runtime always does); auto is "
                        "cni with runc and the plugins installed, else host (default: auto)")
    # --- end pod network ---
    # --- cluster dns (shoal.net.cluster_dns) ---
    s.add_argument("--dns-port", type=port_or_zero, default=53,
                   help="the port cluster DNS answers on at --bind when there is no pod "
                        "network (with one it answers on the pod bridge's gateway, port 53); "
                        "0 turns cluster DNS off (default: 53)")
    s.add_argument("--cluster-domain", default="cluster.local",
                   help="the DNS domain of Services and pods (default: cluster.local)")
    # --- end cluster dns ---
    # --- service proxy (shoal.net.service_proxy) ---
    s.add_argument("--proxy-mode", default="auto", choices=["auto", "nftables", "none"],
                   help="how Services answer on this node: nftables programs cluster IPs "
                        "and node ports in the table ip shoal-services, as kube-proxy's "
                        "nftables mode; none leaves them unanswered; auto is nftables when "
                        "nft works here (root), else none (default: auto)")
    # --- end service proxy ---
    # --- ingress (shoal.net.ingress, part W5) ---
    s.add_argument("--ingress-http-port", type=port_or_zero, default=None,
                   help="the port haproxy answers Ingresses on over HTTP at --bind; 0 is off "
                        "(default: 80 when run as root, else off)")
    s.add_argument("--ingress-https-port", type=port_or_zero, default=None,
                   help="the port haproxy answers Ingresses on over TLS at --bind; 0 is off "
                        "(default: 443 when run as root, else off)")
    # --- end ingress ---
    # --- peers and joining (shoal.mesh.tls_transport, shoal.mesh.join) ---
    # --- at rest: process pods' users and files ---
    s.add_argument("--allow-root-pods", action="store_true",
                   help="let process-runtime pods run as root (securityContext.runAsUser: 0); "
                        "by default they run as 65534 or the user they ask for")
    s.add_argument("--pods-dir", type=Path, default=None,
                   help="where process-runtime pods' working dirs and volumes go, outside the "
                        "0700 data dir (default /var/lib/shoal-pods/<node marker>)")
    # --- end at rest ---
    s.add_argument("--peer-port", type=port_or_zero, default=None,
                   help="the mutual-TLS port peers and joining nodes connect to, on --bind "
                        "(default: 7443; 0 picks a free port; if the default is taken, a free "
                        "port is used and a warning is logged)")
    s.add_argument("--join", default=None, metavar="HOST:PORT",
                   help="on first start, join the cluster through the peer port of any member; "
                        "ignored once this data dir holds a node certificate")
    s.add_argument("--join-timeout", type=parse_duration, default=None, metavar="DURATION",
                   help="give up a first join whose seed does not answer after this long "
                        "(0: after one attempt); by default it retries forever, with backoff "
                        "from 1s to 30s, logging each attempt")
    s.add_argument("--token-file", type=Path, default=None, metavar="FILE",
                   help="a file holding the join token from `shoal token create` on a signer "
                        "(with --join); the environment variable SHOAL_TOKEN works too. "
                        "Either keeps the token out of `ps`")
    s.add_argument("--token", default=None,
                   help="the join token itself (visible in `ps` to every user of this host: "
                        "prefer --token-file or SHOAL_TOKEN)")
    s.add_argument("--cert-lifetime", type=parse_duration, default=None,
                   help=argparse.SUPPRESS)  # tests: short-lived node certificates, to renew
    # --- end peers and joining ---
    # --- super-peers (shoal.mesh.topology) ---
    s.add_argument("--super-peer", action="store_true",
                   help="serve as a super-peer: weak peers of this site sync through it "
                        "(node label shoal.dev/role=super)")
    s.add_argument("--sync-via", default="all", choices=["all", "super"],
                   help="super: a weak peer, exchanging state and membership only with the "
                        "super-peers of its site (node label shoal.dev/role=weak)")
    s.add_argument("--site", default=None, metavar="NAME",
                   help="this node's site (default: its topology.kubernetes.io/zone label, "
                        "else none); a weak peer syncs through the super-peers of its site")
    s.add_argument("--region", default=None, metavar="NAME",
                   help="this node's region, a group of sites (default: what precedes the "
                        "last / of the site, else none); super-peers of a region track "
                        "tombstone coverage for other regions as one")
    # --- end super-peers ---
    # --- bus (shoal.bus) ---
    s.add_argument("--bus", action=argparse.BooleanOptionalAction, default=None,
                   help="run this node's nats-server, configured from the cluster "
                        "(default: on when nats-server is installed)")
    s.add_argument("--bus-port", type=port_or_zero, default=None,
                   help="the bus's client port (default 4222, or a free port if taken)")
    s.add_argument("--bus-cluster-port", type=port_or_zero, default=None,
                   help="routes between the bus peers of a site (default 6222)")
    s.add_argument("--bus-leafnode-port", type=port_or_zero, default=None,
                   help="leaf links from other sites, on hub peers (default 7422)")
    s.add_argument("--bus-mqtt-port", type=port_or_zero, default=None,
                   help="MQTT 3.1.1 for devices (docs/devices.md; default 1883, or a free "
                        "port if taken)")
    # --- end bus ---
    # --- timeouts on the API and peer ports (shoal.api.server, shoal.mesh.tls_transport) ---
    s.add_argument("--api-idle-timeout", type=parse_duration, default=None, metavar="DURATION",
                   help="close an API connection that waits this long for a request, or whose "
                        "headers or body take this long (slowloris); never one being served, "
                        "such as a watch; 0: no limit (default: 60s)")
    s.add_argument("--peer-idle-timeout", type=parse_duration, default=None, metavar="DURATION",
                   help="close an inbound peer connection silent this long with nothing in "
                        "flight, or whose frame stalls this long; 0: no limit (default: 60s)")
    s.add_argument("--api-tls-handshake-timeout", type=positive_duration, default=None,
                   metavar="DURATION",
                   help="close an API connection whose TLS handshake is not over this long "
                        "after it opened (default: the API idle timeout, at most 60s)")
    s.add_argument("--peer-tls-handshake-timeout", type=positive_duration, default=None,
                   metavar="DURATION",
                   help="close a peer connection whose TLS handshake is not over this long "
                        "after it opened, inbound or dialled; a node's hello must follow "
                        "within it too (default: 10s)")
    # --- end timeouts ---
    s.add_argument("--health-port", type=port_or_zero, default=None,
                   help="also serve /livez, /readyz and /healthz over plain HTTP on this port "
                        "of --bind, from a thread, so probes are answered however busy the "
                        "node is (default: off; 0: a free port)")
    # --- mesh presets (shoal.mesh.config) ---
    s.add_argument("--mesh-preset", default="default", choices=["default", "lan", "wan"],
                   help="the mesh's timers: default suits an edge site; lan detects failures "
                        "faster on a fast, reliable LAN; wan is patient with long, variable "
                        "round trips (default: default)")
    # --- end mesh presets ---


def _kubeconfig_parser(sub: Any) -> None:
    k = sub.add_parser("kubeconfig", help="print a kubeconfig (on a signer)",
                       description="Print a kubeconfig holding the cluster CA and the admin "
                                   "credential, or with --user a new credential for a person. "
                                   "Run it on a signer's data dir (one holding pki/ca.key, "
                                   "such as the first node's); with --server it works against "
                                   "any peer. The output holds a private key: a file it is "
                                   "written or redirected to is made 0600.")
    k.add_argument("--data-dir", type=Path, required=True, help="a signer's data dir")
    k.add_argument("--server", default=None,
                   help="the API URL of any peer, e.g. https://127.0.0.1:6443 (default: the "
                        "URL this node last served on)")
    k.add_argument("--token", action="store_true",
                   help="use the admin bearer token instead of the admin client certificate "
                        "(it is accepted only by signers)")
    k.add_argument("--user", default=None, metavar="NAME",
                   help="issue a client certificate for NAME (not an administrator: what it "
                        "may do is what RBAC bindings for NAME and its groups allow)")
    k.add_argument("--group", action="append", default=[], metavar="GROUP",
                   help="a group of --user (repeatable)")
    k.add_argument("--ttl", type=parse_duration, default=8760 * 3600.0,
                   help="how long the --user certificate is valid (default: 8760h)")
    k.add_argument("--output", "-o", type=Path, default=None, metavar="FILE",
                   help="write to FILE (mode 0600) instead of stdout")


def api_port(text: str) -> int:
    """A TCP port, 1-65535."""
    port = _int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (1-65535)")
    return port


def port_or_zero(text: str) -> int:
    """A TCP or UDP port, or 0 (a free port, or off, as the flag says)."""
    port = _int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0-65535)")
    return port


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


# --- images (shoal.node.images, shoal.node.registry_client) ---
DEFAULT_DATA_DIR = Path("/var/lib/shoal")


def _image_parser(sub: Any) -> None:
    i = sub.add_parser("image", help="manage the node's local images (for the runc runtime)")
    isub = i.add_subparsers(dest="image_command", required=True)
    for name, help_ in (("import", "import an OCI layout (directory or tar) or a docker save "
                         "archive; safe while the node runs"),
                        ("pull", "pull an image from its registry"),
                        ("ls", "list the images in the store")):
        c = isub.add_parser(name, help=help_, description=help_)
        c.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                       help=f"the node's data dir (default: {DEFAULT_DATA_DIR})")
        if name != "ls":
            c.add_argument("source", metavar="FILE" if name == "import" else "IMAGE")


def _image(args: argparse.Namespace) -> int:
    from shoal.node.images import ImageError, ImageStore
    from shoal.node.registry_client import ImagePuller

    store = ImageStore(args.data_dir)
    try:
        if args.image_command == "import":
            for ref in store.import_archive(Path(args.source)):
                print(f"imported {ref}")
        elif args.image_command == "pull":
            async def pull() -> None:
                puller = ImagePuller(store)
                try:
                    print(f"{args.source} {await puller.pull(args.source)}")
                finally:
                    await puller.registry.close()
            run_event_loop(pull())
        else:
            for ref, digest in store.images():
                print(f"{ref}\t{digest}")
    except (ImageError, OSError) as e:
        print(f"shoal image {args.image_command}: {e}", file=sys.stderr)
        return 1
    return 0
# --- end images ---


# --- peer identity: the join token off the command line; kubeconfigs ---
def _kubeconfig(args: argparse.Namespace) -> int:
    from shoal.cli.kubeconfig import NoCredential, default_server, render, render_user
    from shoal.cli.private_output import write_private

    server = args.server or default_server(args.data_dir)
    try:
        if args.user is not None:
            text = render_user(args.data_dir, server, args.user, args.group, args.ttl)
        else:
            if args.group:
                print("shoal kubeconfig: --group goes with --user", file=sys.stderr)
                return 2
            text = render(args.data_dir, server, use_token=args.token)
        write_private(text, args.output, "shoal kubeconfig")
    except (NoCredential, OSError) as e:
        print(f"shoal kubeconfig: {e}", file=sys.stderr)
        return 1
    return 0
# --- end peer identity ---


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]  # type: ignore[no-any-return]
    raise KeyError(name)


# --- observability: container log rotation ---
def _log_size(text: str) -> int:
    from shoal.model.quantity import parse_quantity

    try:
        size = int(parse_quantity(text))
    except (ValueError, ArithmeticError) as e:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 10Mi)") from e
    if size < 1024:
        raise argparse.ArgumentTypeError("at least 1Ki")
    return size


def _log_files(text: str) -> int:
    try:
        n = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from e
    if n < 2:
        raise argparse.ArgumentTypeError("at least 2 (the current file and one rotated)")
    return n
# --- end observability ---


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["kubectl"]:  # kubectl: every argument is kubectl's
        from shoal.cli import kubectl as kubectl_cli

        return kubectl_cli.run(argv[1:])
    parser = _parser()
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in ("server", "join"):
        from shoal.cli import config_file

        try:  # the config file and SHOAL_* variables become the flags' defaults
            config_file.apply(_subparser(parser, command), argv[argv.index(command) + 1:])
        except config_file.ConfigError as e:
            print(f"shoal {command}: {e}", file=sys.stderr)
            return 2
        for warning in config_file.unknown_variables(_subparser(parser, command)):
            print(f"shoal {command}: warning: {warning}", file=sys.stderr)
    args = parser.parse_args(argv)
    if args.command == "image":
        return _image(args)
    if args.command in ("server", "join"):
        from shoal.cli import server_command

        return server_command.run(args, argv)
    if args.command == "token":
        from shoal.cli import token as token_cli

        return token_cli.run(args)
    if args.command == "kubeconfig":
        return _kubeconfig(args)
    if args.command == "scopes":
        from shoal.cli import scopes as scopes_cli

        return scopes_cli.run(args)
    if args.command == "status":  # observability
        from shoal.cli import status as status_cli

        return status_cli.run(args)
    if args.command in ("install", "uninstall"):  # install
        from shoal.cli import install as install_cli

        return install_cli.run(args)
    if args.command == "snapshot":  # snapshot
        from shoal.cli import snapshot as snapshot_cli

        return snapshot_cli.run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
