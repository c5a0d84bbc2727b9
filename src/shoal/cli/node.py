"""Assembling and running one Shoal node: replica, controllers, node status and the API."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import random
import signal
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from shoal.api.admission import default_tolerations  # DefaultTolerationSeconds (issue 12)
from shoal.api.pod_proxy import PodProxy
from shoal.api.server import ApiServer, Credentials, server_ssl_context
from shoal.api.token_request import TokenRequests  # service accounts
from shoal.authz.scopes import RecordFormerWriters
from shoal.authz.service_account_tokens import TokenIssuer  # service accounts
from shoal.bus.nats_config import TlsFiles  # bus
from shoal.bus.service import BusPorts, BusService, bus_wanted  # bus
from shoal.cli.data_dir_lock import DataDirLock  # peer identity
from shoal.cli.observability import Observability  # observability
from shoal.control import manager
from shoal.control.crd_establishing import CRD_RESOURCE, crd_observer
from shoal.control.kubernetes_service import KubernetesService  # issue 12
from shoal.control.service_accounts import admit_pod  # service accounts
from shoal.mesh import cert_renewal, join, member_list  # cert_renewal: peer identity
from shoal.mesh import config as mesh_config
from shoal.mesh.catch_up import CatchUp  # caught-up gating
from shoal.mesh.member_list import MemberListKeeper
from shoal.mesh.peer import MeshPeer
from shoal.mesh.pki import NodePKI
from shoal.mesh.streams import StreamMux
from shoal.mesh.tls_transport import TlsTransport
from shoal.mesh.transport import TransportError
from shoal.model.kinds import KindRegistry
from shoal.net.cluster_dns import ClusterDns, DnsSettings, pod_gateway  # cluster dns
from shoal.net.node_pod_network import NodePodNetwork  # pod network
from shoal.net.service_proxy import ProxySettings, ServiceProxy, proxy_enabled  # service proxy
from shoal.node.agent import NodeAgent, make_runtime  # node agent
from shoal.node.env import kubernetes_service_env  # service accounts
from shoal.node.node_status import NodeStatusReporter
from shoal.node.pod_tokens import PodTokens  # service accounts
from shoal.node.pod_user import PodIsolation  # at rest
from shoal.node.runtime_process import ProcessRuntime  # at rest
from shoal.node.stream_service import PodStreamService
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica

log = logging.getLogger("shoal")


@dataclass
class NodeConfig:
    name: str
    data_dir: Path
    bind: str = "127.0.0.1"
    api_port: int = 6443
    advertise: str | None = None
    bookmark_interval: float = 60.0
    summary_interval: float = 60.0
    heartbeat_interval: float = 10.0
    runtime: str = "auto"  # node agent: auto, process or runc (shoal.node.agent.make_runtime)
    node_monitor_grace: float = 40.0
    """Seconds without a Lease renewal before a node is unreachable (NotReady)."""
    pod_eviction_timeout: float = 300.0
    """Seconds a node may be unreachable before its pods are replaced elsewhere."""
    cluster_cidr: str = "10.42.0.0/16"
    """The pod address range; each node gets a /24 of it (shoal.control.node_ipam)."""
    # --- pod network ---
    pod_network: str = "auto"
    """auto, cni or host (shoal.net.node_pod_network.choose_mode)."""
    # --- end pod network ---
    # --- peers and joining ---
    peer_port: int | None = None
    """None: 7443, or a free port if 7443 is taken; 0: always a free port."""
    join: str | None = None
    join_token: str | None = None
    peer_advertise: str | None = None
    """host:port peers dial to reach this node, when that is not --advertise:--peer-port."""
    # --- end peers and joining ---
    # --- cluster dns ---
    dns_port: int = 53
    """Where cluster DNS answers on --bind when there is no pod network; 0 turns it off."""
    cluster_domain: str = "cluster.local"
    # --- end cluster dns ---
    # --- service proxy ---
    proxy_mode: str = "auto"
    """auto, nftables or none (shoal.net.service_proxy.proxy_enabled)."""
    # --- end service proxy ---
    # --- at rest: process pods' users and files (shoal.node.pod_user) ---
    allow_root_pods: bool = False
    """A process-runtime container may run as uid 0 (runAsUser: 0)."""
    pods_dir: Path | None = None
    """Process pods' working dirs and volumes; None: /var/lib/shoal-pods/<node marker>."""
    # --- end at rest ---
    # --- super-peers (shoal.mesh.topology) ---
    role: str = "full"
    """full, super (--super-peer) or weak (--sync-via super)."""
    site: str | None = None
    """--site; None: the Node's topology.kubernetes.io/zone label, else no site."""
    # --- end super-peers ---
    # --- bus: this node's nats-server (shoal.bus) ---
    bus: bool | None = None
    """Run the bus; None: when nats-server is installed."""
    bus_port: int | None = None
    """Clients' port; None: 4222, or a free port if taken; 0: always a free port."""
    bus_cluster_port: int | None = None
    bus_leafnode_port: int | None = None
    # --- end bus ---


class ShoalNode:
    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.registry = KindRegistry()
        self.replica = Replica(cfg.data_dir, cfg.name)
        self.store = ObjectStore(self.replica, self.registry)
        self.store.observers.append(
            lambda kind, old, new: crd_observer(kind, old, new, self.registry)
        )
        for crd in self.replica.list(CRD_RESOURCE):
            self.registry.register_crd(crd)
        self.pki = NodePKI(cfg.data_dir / "pki")
        advertise = _advertise(cfg)
        self.advertise = advertise
        # A joined node has no CA key: prepare_pki says when a signer must renew its serving cert.
        self._renew_serving_cert = join.prepare_pki(self.pki, cfg.name, [cfg.bind, advertise])
        self.transport: TlsTransport | None = None
        self.streams: StreamMux | None = None  # pod streams
        self.mesh: MeshPeer | None = None
        self.catch_up: CatchUp | None = None  # caught-up gating: controllers wait for it
        self.url = f"https://{_host_for_url(advertise)}:{cfg.api_port}"
        self.api = ApiServer(
            self.store, self.registry,
            Credentials(_admin_tokens(self.pki)),  # peer identity: only on signers
            server_address=f"{advertise}:{cfg.api_port}",
            bookmark_interval=cfg.bookmark_interval,
        )
        # --- api authentication: ServiceAccount tokens are verified against the cluster CA ---
        self.api.credentials.ca_cert_pem = self.pki.ca_cert.read_bytes()
        # --- end api authentication ---
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        # --- node agent: runs the pods bound here; logs and exec reach it through the API ---
        self.agent = NodeAgent(self.store, cfg.name, advertise, cfg.data_dir,
                               make_runtime(cfg.runtime, cfg.data_dir))
        self.api.handlers.node_agent = self.agent
        # --- service accounts: pods get a ServiceAccount, a token volume and the API's address ---
        self.store.admission.append(lambda kind, obj: admit_pod(kind, obj, self.replica))
        self.store.admission.append(default_tolerations)  # issue 12
        # A Scope update records the writers it removes (replication accepts what they wrote).
        self.store.update_admission.append(RecordFormerWriters(self.replica, self.replica.hlc.now))
        issuer = IssuerFiles(self.pki, cfg.name)
        self.api.handlers.token_requests = TokenRequests(
            issuer.current, signers=lambda: join.read_signers(self.pki))
        self.agent.tokens = PodTokens(issuer.current, self.replica.get)
        # The pod's own node's API at the address the serving certificate covers; a pod in a
        # network namespace of its own reaches it there when the API listens on it (--bind).
        self.agent.service_env = kubernetes_service_env(advertise, cfg.api_port)
        # --- end service accounts ---
        # --- at rest: process pods run as their own user, their files outside the data dir ---
        if isinstance(self.agent.runtime, ProcessRuntime):
            self.agent.pod_isolation = PodIsolation.for_node(
                self.agent.runtime.marker, cfg.allow_root_pods, cfg.pods_dir)
        # --- end at rest ---
        # --- end node agent ---
        # --- pod network: pods' namespaces and addresses, the overlay (shoal.net) ---
        self.pod_network = NodePodNetwork(cfg.pod_network, self.agent.runtime.name, self.store,
                                          cfg.name, advertise, cfg.data_dir, cfg.cluster_cidr)
        self.agent.pod_network = self.pod_network.network
        # --- end pod network ---
        # --- cluster dns: answered from this replica (shoal.net.cluster_dns) ---
        self.dns = ClusterDns(self.store, DnsSettings(
            port=cfg.dns_port, bind=cfg.bind, cluster_domain=cfg.cluster_domain,
            ensure_delay=JOINING_DNS_DELAY if cfg.join else 0.0), gateway=self._dns_gateway)
        # --- end cluster dns ---
        # --- service proxy: Service rules in nftables from this replica (shoal.net) ---
        self.service_proxy: ServiceProxy | None = None
        if proxy_enabled(cfg.proxy_mode):
            self.service_proxy = ServiceProxy(self.replica, cfg.name, ProxySettings(
                cluster_cidr=cfg.cluster_cidr, dns_listener=self.dns.listener,
                is_reachable=self._node_reachable))
        # --- end service proxy ---
        # --- bus: nats-server configured from the replica; pods get NATS_URL ---
        self.bus: BusService | None = None
        if bus_wanted(cfg.bus):
            self.bus = BusService(
                self.store, cfg.name, cfg.data_dir, cfg.bind, advertise,
                TlsFiles(self.pki.server_cert, self.pki.server_key, self.pki.ca_cert),
                BusPorts(cfg.bus_port, cfg.bus_cluster_port, cfg.bus_leafnode_port),
                lambda: self.mesh.members() if self.mesh is not None else [])
            self.bus.keep_env(self.agent.service_env)  # NATS_URL, kept if the bus moves
        # --- end bus ---
        # --- observability: /metrics, /shoal/v1/status, metrics.k8s.io, /ui/ ---
        self.observability = Observability(self)
        # --- end observability ---

    async def start(self) -> None:
        await self._start_peer()
        self._start_peer_images()  # peer-to-peer images
        reporter = NodeStatusReporter(self.store, self.cfg.name, self.advertise,
                                      self.cfg.heartbeat_interval,
                                      labels=topology_labels(self.cfg))  # super-peers
        await reporter.register()
        if self.bus is not None:  # bus: once this node's Node exists, before its pods
            await self.bus.start()
        await self.pod_network.start()  # pod network: before the pods come back
        await self.agent.start()  # node agent: brings back this node's pods, offline too
        await self.dns.start()  # cluster dns
        if self.service_proxy is not None:  # service proxy
            self.service_proxy.start()
        # Build the OpenAPI documents off the loop so kubectl's first request does not wait.
        warm = asyncio.get_running_loop().run_in_executor(None, self.api.openapi.warm)
        self._tasks += manager.start(self.store, MeshView(self), self.cfg.pod_eviction_timeout,
                                     self.cfg.node_monitor_grace, self.cfg.cluster_cidr,
                                     ca_cert_pem=self.pki.ca_cert.read_bytes(),  # service accounts
                                     # --- authz: a joining node lets its replica fill first ---
                                     rbac_ensure_delay=JOINING_DNS_DELAY if self.cfg.join else 0.0,
                                     caught_up=self.catch_up)  # caught-up gating
        self._tasks.append(asyncio.create_task(reporter.run(), name="node-status"))
        # issue 12: the `kubernetes` Service and its endpoints, on this node's API port
        self._tasks.append(asyncio.create_task(KubernetesService(
            self.store, urllib.parse.urlsplit(self.url).port or 6443, MeshView(self)).run(),
            name="kubernetes-service"))
        self._tasks.append(asyncio.create_task(self.api.summary_loop(self.cfg.summary_interval),
                                               name="summary"))
        ctx = server_ssl_context(str(self.pki.server_cert), str(self.pki.server_key),
                                 str(self.pki.ca_cert))
        self._api_ssl = ctx  # peer identity: reloaded when the serving certificate is renewed
        self._runner = web.AppRunner(self.api.app(), access_log=None, handle_signals=False,
                                     shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.bind, self.cfg.api_port, ssl_context=ctx,
                           backlog=1024)
        await site.start()
        await warm
        # --- peer identity: renew node.crt and server.crt before they expire ---
        self._tasks.append(asyncio.create_task(self._renew_certificates(), name="cert-renewal"))
        # --- end peer identity ---
        (self.cfg.data_dir / "server-url").write_text(self.url + "\n")
        log.info("node %s serving the Kubernetes API on %s (data in %s, revision %d)",
                 self.cfg.name, self.url, self.cfg.data_dir, self.replica.revision)

    # --- peers and joining: the peer listener, the join service and the mesh hook ---
    async def _start_peer(self) -> None:
        port = DEFAULT_PEER_PORT if self.cfg.peer_port is None else self.cfg.peer_port
        identity = join.node_identity(self.pki)
        self.transport = TlsTransport(identity, bind=self.cfg.bind, port=port,
                                      advertise=self.advertise,
                                      advertise_address=self.cfg.peer_advertise)
        try:
            await self.transport.start()
        except OSError as e:
            if self.cfg.peer_port is not None:
                raise
            log.warning("peer port %d is taken (%s); using a free port instead: pass "
                        "--peer-port to choose one", port, e)
            self.transport = TlsTransport(identity, bind=self.cfg.bind, port=0,
                                          advertise=self.advertise,
                                          advertise_address=self.cfg.peer_advertise)
            await self.transport.start()
        self.transport.set_control_handler(join.JoinService(
            self.pki, self.transport, live_member=self._live_member).handle)  # peer identity
        (self.cfg.data_dir / "peer-address").write_text(self.transport.address + "\n")
        if self._renew_serving_cert:
            try:
                await join.renew_serving_cert(self.pki, self.transport, self.cfg.name,
                                              [self.cfg.bind, self.advertise])
                log.info("a signer renewed the serving certificate for the new addresses")
            except join.JoinError as e:
                log.warning("serving with the old certificate, which does not cover %s: %s",
                            [self.cfg.bind, self.advertise], e)
        # The mesh over this transport: membership and replication (shoal.mesh.peer).
        keeper = MemberListKeeper(self.replica, self.cfg.name)
        self.mesh = MeshPeer(self.cfg.name, self.transport, self.replica,
                             mesh_settings(self.cfg, self.replica),  # super-peers: role, site
                             random.Random(), hooks=keeper)
        await self.mesh.start()
        # --- scopes: GET /shoal/v1/scopes reports the mesh's lag per scope, once it has one ---
        self.api.mesh_scope_status = getattr(self.mesh.anti_entropy, "scope_status", None)
        # --- pod streams: logs, exec and port-forward to and from other peers' pods ---
        self.streams = StreamMux(self.transport)
        self.streams.set_acceptor(PodStreamService(self.agent).handle)
        mesh = self.mesh
        self.api.handlers.pod_proxy = PodProxy(
            self.streams, lambda: {m.name: m.address for m in mesh.members()})
        # --- end pod streams ---
        # --- observability: the membership log, the peer-report streams ---
        self._tasks += self.observability.mesh_started()
        # --- end observability ---
        # The members we knew before a restart: we rejoin even if every seed is down.
        self.mesh.membership.add_known(member_list.load_tagged(self.replica))  # with tags
        # Seeds: the peer we joined through on first start, then the signers we learnt.
        seeds = [a for a in dict.fromkeys([*([self.cfg.join] if self.cfg.join else []),
                                           *join.read_signers(self.pki)])
                 if a != self.transport.address]
        if seeds:
            self._tasks.append(asyncio.create_task(self._mesh_join(seeds), name="mesh-join"))
        # --- caught-up gating: the controllers and /readyz wait until this replica caught up
        catch_up = self.catch_up = CatchUp(self.mesh.anti_entropy, self.mesh.membership,
                                           expect_peers=bool(seeds or self.mesh.live_peers()))
        self.api.health.ready["caught-up"] = (
            lambda: None if catch_up.done() else "not caught up with the mesh yet")
        # --- end caught-up gating ---

    async def _mesh_join(self, seeds: list[str]) -> None:
        assert self.mesh is not None
        answered = await self.mesh.join(seeds)
        log.info("mesh: joined through %d of %d seeds (%s)", answered, len(seeds),
                 ", ".join(seeds))
    # --- end peers and joining ---

    # --- peer identity: who holds a live member's name; certificate renewal ---
    def _live_member(self, name: str) -> str | None:
        """The peer address of the live member called ``name`` (the join service refuses
        that name to anyone who does not hold its key)."""
        mesh = self.mesh
        if mesh is None:
            return None
        return next((m.address for m in mesh.live_peers() if m.name == name), None)

    async def _renew_certificates(self) -> None:
        assert self.transport is not None
        transport = self.transport
        hosts = [self.cfg.bind, self.advertise]

        def reload() -> None:
            transport.reload_identity()
            self._api_ssl.load_cert_chain(str(self.pki.server_cert), str(self.pki.server_key))

        await cert_renewal.keep_renewed(self.pki, transport, self.cfg.name, hosts, reload)
    # --- end peer identity ---

    # --- cluster dns: on the pod bridge's gateway when the pod network is on ---
    def _dns_gateway(self) -> str | None:
        network = self.agent.pod_network
        if network is None or network.name != "cni":
            return None
        node = self.replica.get("nodes", "", self.cfg.name) or {}
        return pod_gateway((node.get("spec") or {}).get("podCIDR"))
    # --- end cluster dns ---

    # --- service proxy: which nodes' endpoints this node may route to now ---
    def _node_reachable(self, node: str) -> bool:
        """False once the mesh holds the node dead or gone, or suspect for a few seconds
        (``MeshConfig.routing_unreachable_after``): no side of a partition waits for the
        suspicion timeout, which nobody confirms on a node cut off from the rest."""
        return self.mesh is None or node == self.cfg.name or self.mesh.routable(node)
    # --- end service proxy ---

    # --- peer-to-peer images: blobs from peers that hold them (shoal.node.peer_images) ---
    def _start_peer_images(self) -> None:
        from shoal.node import peer_images

        if self.transport is not None and self.mesh is not None:
            peer_images.attach(self.agent.runtime, self.transport, self.mesh.members,
                               self.cfg.name)
    # --- end peer-to-peer images ---

    async def stop(self) -> None:
        await self.agent.stop()  # node agent: stops the pods it runs
        if self.bus is not None:  # bus: after the pods, which may publish to the end
            await self.bus.stop()
        await self.pod_network.stop()  # pod network
        await self.dns.stop()  # cluster dns
        if self.service_proxy is not None:  # service proxy: its table goes too
            await self.service_proxy.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._runner is not None:
            await self._runner.cleanup()
        if self.mesh is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.mesh.stop(leave=True), 3.0)
        if self.streams is not None:  # pod streams
            await self.streams.close()
        if self.transport is not None:
            await self.transport.close()
        self.replica.close()


DEFAULT_PEER_PORT = 7443
JOINING_DNS_DELAY = 15.0  # cluster dns: seconds a joining node lets its replica fill first


class MeshView:
    """The controllers' view of the live peers: this node plus what membership believes alive."""

    def __init__(self, node: ShoalNode) -> None:
        self._node = node

    @property
    def name(self) -> str:
        return self._node.cfg.name

    def live(self) -> list[str]:
        mesh = self._node.mesh
        others = [m.name for m in mesh.live_peers()] if mesh is not None else []
        return [self.name, *others]


def _advertise(cfg: NodeConfig) -> str:
    return cfg.advertise or (cfg.bind if cfg.bind not in ("0.0.0.0", "::") else "127.0.0.1")


async def _join_if_needed(cfg: NodeConfig) -> None:
    """First start with --join: get certificates from the cluster before anything serves."""
    if cfg.join is None or cfg.join_token is None:
        return
    pki = NodePKI(cfg.data_dir / "pki")
    if join.is_joined(pki) and join.node_cert_expired(pki) is None:  # peer identity: or rejoin
        log.info("%s already holds a node certificate; ignoring --join", cfg.data_dir)
        return
    if pki.ca_key.exists():
        raise join.JoinError(f"{cfg.data_dir} already holds its own cluster CA (it was started "
                             "without --join); use a fresh --data-dir to join another cluster")
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    await join.join_cluster(pki, cfg.name, [cfg.bind, _advertise(cfg)], cfg.join, cfg.join_token)


# --- peer identity: the admin token is a signer's alone ---
def _admin_tokens(pki: NodePKI) -> dict[str, str]:
    """The admin bearer token, accepted only where it was made: a joined node has no admin
    credential (one left by an older version's join is ignored, and logged)."""
    if not join.is_signer(pki):
        if pki.admin_token.exists() or pki.admin_key.exists():
            log.warning("%s holds an admin credential from an older join; it is not used: "
                        "delete admin.crt, admin.key and admin.token there", pki.dir)
        return {}
    return {pki.admin_token.read_text().strip(): "shoal-admin"}
# --- end peer identity ---


# --- service accounts ---
class IssuerFiles:
    """The token issuer from this node's key files, reloaded when a renewal replaced them."""

    def __init__(self, pki: NodePKI, name: str) -> None:
        self.pki = pki
        self.name = name
        self._stamp: tuple[float, ...] = ()
        self._issuer: TokenIssuer | None = None

    def current(self) -> TokenIssuer:
        paths = (join.node_key_path(self.pki), join.node_cert_path(self.pki), self.pki.ca_key)
        stamp = tuple(p.stat().st_mtime if p.exists() else 0.0 for p in paths)
        if self._issuer is None or stamp != self._stamp:
            key, cert, ca_key = paths
            self._issuer = TokenIssuer(self.name, key.read_bytes(), cert.read_bytes(),
                                       ca_key.read_bytes() if ca_key.exists() else None)
            self._stamp = stamp
        return self._issuer
# --- end service accounts ---


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def serve(cfg: NodeConfig) -> None:
    # --- peer identity: the data dir's lock, before anything reads or writes there ---
    lock = DataDirLock.acquire(cfg.data_dir)
    try:
        await _serve_locked(cfg)
    finally:
        lock.release()
    # --- end peer identity ---


async def _serve_locked(cfg: NodeConfig) -> None:
    try:
        await _join_if_needed(cfg)
    except TransportError as e:
        raise join.JoinError(f"cannot join through {cfg.join}: {e}") from e
    node = ShoalNode(cfg)
    # The replica is a large, long-lived tree of dicts without cycles: keep the cyclic
    # collector from rescanning it (freeze what start-up loaded, collect young objects
    # less often), or full collections stall requests for hundreds of milliseconds.
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    await stop.wait()
    log.info("node %s stopping", cfg.name)
    await node.stop()


# --- super-peers (shoal.mesh.topology) ---
ROLE_LABEL = "shoal.dev/role"
ZONE_LABEL = "topology.kubernetes.io/zone"


def node_site(cfg: NodeConfig, replica: Replica) -> str:
    """--site, else the zone label this node's Node object already carries."""
    if cfg.site is not None:
        return cfg.site
    node = replica.get("nodes", "", cfg.name) or {}
    return str(((node.get("metadata") or {}).get("labels") or {}).get(ZONE_LABEL, ""))


def mesh_settings(cfg: NodeConfig, replica: Replica) -> mesh_config.MeshConfig:
    return mesh_config.for_role(dataclasses.replace(mesh_config.default(), role=cfg.role,
                                                    site=node_site(cfg, replica)))


def topology_labels(cfg: NodeConfig) -> dict[str, str | None]:
    """The Node labels for the role (none for a full peer) and, with --site, the zone."""
    labels: dict[str, str | None] = {ROLE_LABEL: None if cfg.role == "full" else cfg.role}
    if cfg.site:
        labels[ZONE_LABEL] = cfg.site
    return labels
# --- end super-peers ---
