"""Assembling and running one Shoal node: replica, controllers, node status and the API."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import signal
import urllib.parse
from pathlib import Path
from typing import Any

from shoal.api import web
from shoal.api.admission import default_tolerations  # DefaultTolerationSeconds (issue 12)
from shoal.api.health import HealthServer
from shoal.api.limit_ranger import LimitRanger  # issue 12
from shoal.api.memory import HeapTrimmer  # memory a burst freed goes back (issue 11)
from shoal.api.pod_proxy import PodProxy
from shoal.api.priority_admission import PriorityAdmission  # issue 12
from shoal.api.quota_admission import QuotaAdmission  # issue 12
from shoal.api.server import IDLE_TIMEOUT as API_IDLE_TIMEOUT
from shoal.api.server import ApiServer, Credentials, server_ssl_context
from shoal.api.token_request import TokenRequests  # service accounts
from shoal.api.weak_leases import NodeLeases  # issue 10
from shoal.authz.scopes import RecordFormerWriters
from shoal.authz.service_account_tokens import TokenIssuer  # service accounts
from shoal.bus.crds import check_streams  # bus
from shoal.bus.nats_config import TlsFiles  # bus
from shoal.bus.service import BusPorts, BusService, bus_wanted  # bus
from shoal.cli import joining
from shoal.cli.data_dir_lock import LOCK_FILE, DataDirLock  # peer identity
from shoal.cli.observability import Observability  # observability
from shoal.cli.ports import check_free, in_use
from shoal.cli.settings import NodeSettings
from shoal.control import manager
from shoal.control.crd_establishing import serve_crds
from shoal.control.horizontal_autoscaler import HorizontalPodAutoscaler  # issue 12
from shoal.control.kubernetes_service import KubernetesService  # issue 12
from shoal.control.loop_stalls import LoopStalls
from shoal.control.ownership import LeaseAges  # the acting peer leaves out lapsed Leases
from shoal.control.rbac_bootstrap import PolicyInPlace  # authz: /readyz
from shoal.control.service_accounts import admit_pod  # service accounts
from shoal.control.storage_protection import add_finalizer  # part W7
from shoal.control.token_secrets import TokenSecrets  # token Secrets (part T)
from shoal.devices.service import DeviceMappers  # devices (issue 15)
from shoal.mesh import cert_renewal, join, member_list  # cert_renewal: peer identity
from shoal.mesh import config as mesh_config
from shoal.mesh.catch_up import CatchUp, may_create, may_create_defaults  # caught-up gating
from shoal.mesh.member_list import MemberListKeeper
from shoal.mesh.peer import MeshPeer
from shoal.mesh.pki import NodePKI
from shoal.mesh.replication_policy import LEASES, NODE_LEASE_NAMESPACE  # issue 10
from shoal.mesh.streams import StreamMux
from shoal.mesh.tls_transport import HANDSHAKE_TIMEOUT as PEER_HANDSHAKE_TIMEOUT
from shoal.mesh.tls_transport import IDLE_TIMEOUT as PEER_IDLE_TIMEOUT
from shoal.mesh.tls_transport import TlsTransport
from shoal.mesh.topology import LeaseHolders, Role, WeakNames  # issue 10: weak peers
from shoal.model.kinds import KindRegistry
from shoal.net.cluster_dns import ClusterDns, DnsSettings, pod_gateway  # cluster dns
from shoal.net.ingress import (  # ingress (part W5)
    IngressController,
    IngressSettings,
    ingress_ports,
    ingress_wanted,
)
from shoal.net.ingress_admission import DefaultIngressClass  # ingress
from shoal.net.ingress_config import Listen  # ingress
from shoal.net.network_policy import NetworkPolicyEnforcer, NetworkPolicySettings  # netpol
from shoal.net.node_pod_network import NodePodNetwork  # pod network
from shoal.net.service_proxy import ProxySettings, ServiceProxy, proxy_enabled  # service proxy
from shoal.node.agent import NodeAgent, make_runtime  # node agent
from shoal.node.env import kubernetes_service_env  # service accounts
from shoal.node.node_status import NodeStatusReporter
from shoal.node.pod_tokens import PodTokens  # service accounts
from shoal.node.pod_user import PodIsolation  # at rest
from shoal.node.runtime_process import LogFile, ProcessRuntime  # at rest, log rotation
from shoal.node.stream_service import PodStreamService
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica

log = logging.getLogger("shoal")


class ShoalNode:
    def __init__(self, cfg: NodeSettings) -> None:
        self.cfg = cfg
        self.registry = KindRegistry()
        self.replica = Replica(cfg.data_dir, cfg.name)
        self.store = ObjectStore(self.replica, self.registry)
        serve_crds(self.store)
        self.pki = NodePKI(cfg.data_dir / "pki")
        advertise = cfg.api.address
        self.advertise = advertise
        # A joined node has no CA key: prepare_pki says when a signer must renew its serving cert.
        self._renew_serving_cert = join.prepare_pki(self.pki, cfg.name, [cfg.api.bind, advertise])
        self.transport: TlsTransport | None = None
        self.streams: StreamMux | None = None  # pod streams
        self.mesh: MeshPeer | None = None
        self.catch_up: CatchUp | None = None  # caught-up gating: controllers wait for it
        self.stalls = LoopStalls(self.replica.wall)  # a resume re-arms the Lease judges' grace
        self.url = f"https://{_host_for_url(advertise)}:{cfg.api.port}"
        self.api = ApiServer(
            self.store, self.registry,
            Credentials(_admin_tokens(self.pki)),  # peer identity: only on signers
            server_address=f"{advertise}:{cfg.api.port}",
            bookmark_interval=cfg.api.bookmark_interval,
            idle_timeout=API_IDLE_TIMEOUT if cfg.api.idle_timeout is None
            else cfg.api.idle_timeout,
        )
        # --- api authentication: ServiceAccount tokens are verified against the cluster CA ---
        self.api.credentials.ca_cert_pem = self.pki.ca_cert.read_bytes()
        # --- end api authentication ---
        admission = self.api.handlers.admission
        if cfg.mesh.role != Role.FULL and admission is not None:  # issue 10: Leases held
            admission.hooks.append(NodeLeases(cfg.name, self._holds_lease, str(cfg.mesh.role)))
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self.health_server: HealthServer | None = None  # --health-port
        # --- node agent: runs the pods bound here; logs and exec reach it through the API ---
        LogFile.max_bytes = cfg.agent.container_log_max_size  # observability: log rotation
        LogFile.max_files = cfg.agent.container_log_max_files
        self.agent = NodeAgent(self.store, cfg.name, advertise, cfg.data_dir,
                               make_runtime(cfg.agent.runtime, cfg.data_dir))
        self.api.handlers.node_agent = self.agent
        # --- service accounts: pods get a ServiceAccount, a token volume and the API's address ---
        self.store.admission.append(lambda kind, obj: admit_pod(kind, obj, self.replica))
        self.store.admission.append(default_tolerations)  # issue 12
        self.store.admission.append(DefaultIngressClass(self.replica))  # ingress (part W5)
        # issue 12: Priority, LimitRanger, then ResourceQuota (which counts what they set)
        quota = QuotaAdmission(self.replica)
        self.store.admission += [PriorityAdmission(self.replica), LimitRanger(self.replica), quota]
        self.store.update_admission.append(quota.on_update)  # quota on update (part W7)
        self.store.admission.append(add_finalizer)  # pvc-protection, pv-protection (part W7)
        # A Scope update records the writers it removes (replication accepts what they wrote).
        self.store.update_admission.append(RecordFormerWriters(self.replica, self.replica.hlc.now))
        issuer = IssuerFiles(self.pki, cfg.name)
        self.api.handlers.token_requests = TokenRequests(
            issuer.current, signers=lambda: join.read_signers(self.pki))
        self.agent.tokens = PodTokens(issuer.current, self.replica.get)
        # The pod's own node's API at the address the serving certificate covers; a pod in a
        # network namespace of its own reaches it there when the API listens on it (--bind).
        self.agent.service_env = kubernetes_service_env(advertise, cfg.api.port)
        # --- end service accounts ---
        # --- at rest: process pods run as their own user, their files outside the data dir ---
        if isinstance(self.agent.runtime, ProcessRuntime):
            self.agent.pod_isolation = PodIsolation.for_node(
                self.agent.runtime.marker, cfg.agent.allow_root_pods, cfg.agent.pods_dir)
        # --- end at rest ---
        # --- end node agent ---
        # --- pod network: pods' namespaces and addresses, the overlay (shoal.net) ---
        network = cfg.network
        self.pod_network = NodePodNetwork(network.pod_network, self.agent.runtime.name, self.store,
                                          cfg.name, advertise, cfg.data_dir, network.cluster_cidr)
        self.agent.pod_network = self.pod_network.network
        # --- end pod network ---
        # --- cluster dns: answered from this replica (shoal.net.cluster_dns) ---
        self.dns = ClusterDns(self.store, DnsSettings(
            port=network.dns_port, bind=cfg.api.bind, cluster_domain=network.cluster_domain),
            gateway=self._dns_gateway)
        # --- end cluster dns ---
        # --- service proxy: Service rules in nftables from this replica (shoal.net) ---
        self.service_proxy: ServiceProxy | None = None
        if proxy_enabled(cfg.network.proxy_mode):
            self.service_proxy = ServiceProxy(self.replica, cfg.name, ProxySettings(
                cluster_cidr=cfg.network.cluster_cidr, dns_listener=self.dns.listener,
                is_reachable=self._node_reachable))
        # --- end service proxy ---
        # --- network policy: NetworkPolicies in nftables, for pods with their own netns ---
        self.network_policy: NetworkPolicyEnforcer | None = None
        if self.service_proxy is not None and self.pod_network.mode == "cni":
            self.network_policy = NetworkPolicyEnforcer(self.replica, cfg.name, NetworkPolicySettings(
                cluster_cidr=cfg.network.cluster_cidr, dns_listener=self.dns.listener))
        # --- end network policy ---
        # --- ingress: haproxy answers Ingresses from this replica (shoal.net.ingress) ---
        self.ingress: IngressController | None = None
        http_port, https_port = ingress_ports(cfg.api.bind, network.ingress_http_port,
                                              network.ingress_https_port)
        if ingress_wanted(http_port, https_port):
            self.ingress = IngressController(self.store, cfg.data_dir, IngressSettings(
                listen=Listen(cfg.api.bind, http_port, https_port),
                is_reachable=self._node_reachable))
        # --- end ingress ---
        # --- bus: nats-server configured from the replica; pods get NATS_URL ---
        check_streams(self.store)  # with the bus or not, as every peer must
        self.bus: BusService | None = None
        if bus_wanted(cfg.bus.enabled):
            self.bus = BusService(
                self.store, cfg.name, cfg.data_dir, cfg.api.bind, advertise,
                TlsFiles(self.pki.server_cert, self.pki.server_key, self.pki.ca_cert),
                BusPorts(cfg.bus.port, cfg.bus.cluster_port, cfg.bus.leafnode_port,
                         cfg.bus.mqtt_port),
                lambda: self.mesh.members() if self.mesh is not None else [])
            self.bus.keep_env(self.agent.service_env)  # NATS_URL, kept if the bus moves
        # --- end bus ---
        # --- devices: built-in mappers for this node's Devices (shoal.devices, issue 15) ---
        self.devices = DeviceMappers(self.store, cfg.name,
                                     lambda: self.bus.url if self.bus is not None else None)
        # --- end devices ---
        # --- observability: /metrics, /shoal/v1/status, metrics.k8s.io, /ui/ ---
        self.observability = Observability(self)
        # --- end observability ---

    async def start(self) -> None:
        await self._start_peer()
        self._start_peer_images()  # peer-to-peer images
        catch_up = self.catch_up
        reporter = NodeStatusReporter(self.store, self.cfg.name, self.advertise,
                                      self.cfg.agent.heartbeat_interval,
                                      labels=topology_labels(self.cfg),  # super-peers
                                      report_every=self.cfg.agent.status_report_every,
                                      runtime=self.agent.runtime.name,
                                      api_port=self._api_port(),
                                      # a joiner: the cluster's namespaces, not new ones
                                      may_create=lambda: may_create_defaults(catch_up))
        await reporter.register()
        if self.bus is not None:  # bus: once this node's Node exists, before its pods
            await self.bus.start(self.catch_up)
        await self.pod_network.start()  # pod network: before the pods come back
        await self.agent.start()  # node agent: brings back this node's pods, offline too
        self.devices.start()  # devices: their mappers, offline too
        await self.dns.start(self.catch_up)  # cluster dns: a joiner's kube-dns after a pull
        if self.service_proxy is not None:  # service proxy
            self.service_proxy.start()
        if self.network_policy is not None:  # network policy
            self.network_policy.start()
        if self.ingress is not None:  # ingress
            self.ingress.start(self.catch_up)  # its default class: a joiner's after a pull
        # authz: /readyz waits for the default RBAC policy (kube-apiserver's
        # poststarthook/rbac/bootstrap-roles), so a client told ready is not refused /api
        policy = PolicyInPlace(self.store)
        self.api.health.ready["rbac-bootstrap"] = policy
        self._tasks.append(asyncio.create_task(policy.run(), name="rbac-in-place"))
        # Build the OpenAPI documents off the loop so kubectl's first request does not wait.
        warm = asyncio.get_running_loop().run_in_executor(None, self.api.openapi.warm)
        self._tasks.append(asyncio.create_task(self.stalls.run(), name="loop-stalls"))
        controllers = self.cfg.controllers
        self._tasks += manager.start(self.store, MeshView(self), controllers.pod_eviction_timeout,
                                     controllers.node_monitor_grace, self.cfg.network.cluster_cidr,
                                     ca_cert_pem=self.pki.ca_cert.read_bytes(),  # service accounts
                                     caught_up=self.catch_up)  # caught-up gating
        self._tasks.append(asyncio.create_task(reporter.run(), name="node-status"))
        # issue 12: the `kubernetes` Service and its endpoints, on each node's API port; once
        # caught up, or a joiner's create of the Service would replace the cluster's
        self._tasks.append(asyncio.create_task(manager.run_when_caught_up(KubernetesService(
            self.store, self._api_port(), MeshView(self),
            grace=self.cfg.controllers.node_monitor_grace,
            may_create=lambda: may_create(catch_up)), catch_up),
            name="kubernetes-service"))
        # issue 12: the HPA, on the samples kubectl top reads (each node's own, over the peer link)
        self._tasks.append(asyncio.create_task(manager.run_when_caught_up(
            HorizontalPodAutoscaler(self.store, self.observability.resource_metrics,
                                    MeshView(self)), self.catch_up),
            name="horizontal-pod-autoscaler"))
        # token Secrets (part T): a service-account-token Secret's token, on a signer peer
        self._tasks.append(asyncio.create_task(manager.run_when_caught_up(
            TokenSecrets(self.store, IssuerFiles(self.pki, self.cfg.name).current,
                         self.pki.ca_cert.read_bytes()), self.catch_up), name="token-secrets"))
        self._tasks.append(asyncio.create_task(
            self.api.summary_loop(self.cfg.api.summary_interval), name="summary"))
        self._tasks.append(asyncio.create_task(HeapTrimmer().run(), name="heap-trimmer"))
        await self._serve_api()
        await warm
        if self.cfg.api.health_port is not None:  # probes answered off the event loop
            self.health_server = HealthServer(self.api.health, self.cfg.api.bind,
                                              self.cfg.api.health_port)
            try:
                port = self.health_server.start()
            except OSError as e:
                raise in_use("--health-port", self.cfg.api.bind, self.cfg.api.health_port,
                             e) from None
            log.info("health checks on http://%s:%d/readyz", self.cfg.api.bind, port)
        # --- peer identity: renew node.crt and server.crt before they expire ---
        self._tasks.append(asyncio.create_task(self._renew_certificates(), name="cert-renewal"))
        # --- end peer identity ---
        (self.cfg.data_dir / "server-url").write_text(self.url + "\n")
        log.info("node %s serving the Kubernetes API on %s (data in %s, revision %d)",
                 self.cfg.name, self.url, self.cfg.data_dir, self.replica.revision)

    async def _serve_api(self) -> None:
        """Listen on the API port with TLS, with the API's limits (idle, TLS handshake)."""
        ctx = server_ssl_context(str(self.pki.server_cert), str(self.pki.server_key),
                                 str(self.pki.ca_cert))
        self._api_ssl = ctx  # peer identity: reloaded when the serving certificate is renewed
        self._runner = self.api.runner()  # its keep-alive timer is the API's idle timeout
        await self._runner.setup()
        handshake = self.cfg.api.tls_handshake_timeout
        if handshake is not None and not web.NATIVE:
            log.warning("--api-tls-handshake-timeout is not applied with "
                        "SHOAL_HTTP_SERVER=aiohttp (asyncio's 60 s)")
        # aiohttp's TCPSite takes no handshake limit; the native one's default is None.
        limit: dict[str, Any] = {"ssl_handshake_timeout": handshake} if web.NATIVE else {}
        site = web.TCPSite(self._runner, self.cfg.api.bind, self.cfg.api.port,
                           ssl_context=ctx, backlog=1024, **limit)
        try:
            await site.start()
        except OSError as e:
            raise in_use("--api-port", self.cfg.api.bind, self.cfg.api.port, e) from None

    # --- peers and joining: the peer listener, the join service and the mesh hook ---
    async def _start_peer(self) -> None:
        port = DEFAULT_PEER_PORT if self.cfg.mesh.peer_port is None else self.cfg.mesh.peer_port
        identity = join.node_identity(self.pki)
        idle = PEER_IDLE_TIMEOUT if self.cfg.mesh.idle_timeout is None \
            else self.cfg.mesh.idle_timeout
        handshake = self.cfg.mesh.tls_handshake_timeout or PEER_HANDSHAKE_TIMEOUT
        def transport_on(port: int) -> TlsTransport:
            return TlsTransport(identity, bind=self.cfg.api.bind, port=port,
                                advertise=self.advertise,
                                advertise_address=self.cfg.mesh.peer_advertise,
                                idle_timeout=idle, handshake_timeout=handshake)

        self.transport = transport_on(port)
        try:
            await self.transport.start()
        except OSError as e:
            if self.cfg.mesh.peer_port is not None:
                raise in_use("--peer-port", self.cfg.api.bind, port, e) from None
            log.warning("peer port %d is taken (%s); using a free port instead: pass "
                        "--peer-port to choose one", port, e)
            self.transport = transport_on(0)
            await self.transport.start()
        self.transport.set_control_handler(join.JoinService(
            self.pki, self.transport, live_member=self._live_member).handle)  # peer identity
        (self.cfg.data_dir / "peer-address").write_text(self.transport.address + "\n")
        if self._renew_serving_cert:
            try:
                await join.renew_serving_cert(self.pki, self.transport, self.cfg.name,
                                              [self.cfg.api.bind, self.advertise])
                log.info("a signer renewed the serving certificate for the new addresses")
            except join.JoinError as e:
                log.warning("serving with the old certificate, which does not cover %s: %s",
                            [self.cfg.api.bind, self.advertise], e)
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
        first_seed = [self.cfg.mesh.join] if self.cfg.mesh.join else []
        seeds = [a for a in dict.fromkeys([*first_seed, *join.read_signers(self.pki)])
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
        hosts = [self.cfg.api.bind, self.advertise]

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

    def _api_port(self) -> int:
        return urllib.parse.urlsplit(self.url).port or 6443

    def _holds_lease(self, node: str) -> bool:
        """Whether this peer holds ``node``'s Lease of kube-node-lease (``NodeLeases``)."""
        return self.mesh is not None and not self.mesh.anti_entropy.policy.withheld(
            self.cfg.name, LEASES, NODE_LEASE_NAMESPACE, node)

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
        await self.devices.stop()  # devices: before the bus they publish on
        if self.bus is not None:  # bus: after the pods, which may publish to the end
            await self.bus.stop()
        await self.pod_network.stop()  # pod network
        await self.dns.stop()  # cluster dns
        if self.service_proxy is not None:  # service proxy: its table goes too
            await self.service_proxy.stop()
        if self.network_policy is not None:  # network policy: its table goes too
            await self.network_policy.stop()
        if self.ingress is not None:  # ingress: haproxy stops with the node
            await self.ingress.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._runner is not None:
            await self._runner.cleanup()
        if self.health_server is not None:
            self.health_server.stop()
        if self.mesh is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.mesh.stop(leave=True), 3.0)
        if self.streams is not None:  # pod streams
            await self.streams.close()
        if self.transport is not None:
            await self.transport.close()
        self.replica.close()


DEFAULT_PEER_PORT = 7443


class MeshView:
    """The controllers' view of the live peers: this node plus what membership believes alive,
    which of them let their node Lease run out (``lapsed``), and when this node last resumed
    from standing still (``resumed``)."""

    def __init__(self, node: ShoalNode) -> None:
        self._node = node
        self._weak = WeakNames()
        self._leases = LeaseAges(node.store, node.cfg.controllers.node_monitor_grace,
                                 self.resumed)
        self._holders = LeaseHolders()

    @property
    def name(self) -> str:
        return self._node.cfg.name

    def live(self) -> list[str]:
        mesh = self._node.mesh
        others = [m.name for m in mesh.live_peers()] if mesh is not None else []
        return [self.name, *others]

    def weak(self) -> list[str]:
        """The members whose role is weak (``ownership.weak_peers``)."""
        return self._weak.of(self._node.mesh)

    def lapsed(self) -> frozenset[str]:
        """The live peers whose node Lease ran out (``ownership.lapsed_peers``)."""
        return self._leases.lapsed(self.live())

    def holds_lease(self, peer: str, node: str) -> bool:
        """Whether ``peer`` holds ``node``'s Lease (``ownership.lease_actors``)."""
        return self._holders.holds(self._node.mesh, peer, node)

    def resumed(self) -> float:
        """When this node last resumed from a freeze, a suspend or starvation
        (``ownership.resumed_at``)."""
        return self._node.stalls.check()


async def _join_if_needed(cfg: NodeSettings) -> None:
    """First start with --join: get certificates from the cluster before anything serves."""
    if cfg.mesh.join is None or cfg.mesh.join_token is None:
        return
    pki = NodePKI(cfg.data_dir / "pki")
    if join.is_joined(pki) and join.node_cert_expired(pki) is None:  # peer identity: or rejoin
        log.info("%s already holds a node certificate; ignoring --join", cfg.data_dir)
        return
    if pki.ca_key.exists():
        raise join.JoinError(f"{cfg.data_dir} already holds its own cluster CA (it was started "
                             "without --join); use a fresh --data-dir to join another cluster")
    await joining.join_with_retry(pki, cfg.name, [cfg.api.bind, cfg.api.address],
                                  cfg.mesh.join, cfg.mesh.join_token, cfg.mesh.join_give_up)


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


async def serve(cfg: NodeSettings) -> None:
    fresh = not cfg.data_dir.exists()
    # --- peer identity: the data dir's lock, before anything reads or writes there ---
    lock = DataDirLock.acquire(cfg.data_dir)
    try:
        await _serve_locked(cfg)
    finally:
        lock.release()
        if fresh:  # a start that failed early (a taken port, a join) leaves no empty dir
            _remove_unjoined(cfg.data_dir)
    # --- end peer identity ---


async def _serve_locked(cfg: NodeSettings) -> None:
    # Before anything starts: a taken API port would otherwise fail only after the pods ran.
    check_free(cfg.api.bind, cfg.api.port, "--api-port")
    if cfg.mesh.peer_port:
        check_free(cfg.api.bind, cfg.mesh.peer_port, "--peer-port")
    for asked, flag in ((cfg.network.ingress_http_port, "--ingress-http-port"),  # ingress
                        (cfg.network.ingress_https_port, "--ingress-https-port")):
        if asked:
            check_free(cfg.api.bind, asked, flag)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if not await _joined(cfg, stop):
        return
    node = ShoalNode(cfg)
    # The replica is a large, long-lived tree of dicts without cycles: keep the cyclic
    # collector from rescanning it (freeze what start-up loaded, collect young objects
    # less often), or full collections stall requests for hundreds of milliseconds.
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    await node.start()
    await stop.wait()
    log.info("node %s stopping", cfg.name)
    await node.stop()


async def _joined(cfg: NodeSettings, stop: asyncio.Event) -> bool:
    """Join first if asked to; False when stopped meanwhile."""
    joining.discard_staging(cfg.data_dir / "pki")  # from a join that was killed
    attempt = asyncio.create_task(_join_if_needed(cfg))
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([attempt, stopped], return_when=asyncio.FIRST_COMPLETED)
        if not attempt.done():
            attempt.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await attempt
            log.info("stopped while joining; nothing was kept")
            return False
        attempt.result()
        return True
    finally:
        stopped.cancel()


def _remove_unjoined(data_dir: Path) -> None:
    """Remove a data dir this start made, if it holds only the lock (it failed early)."""
    with contextlib.suppress(OSError):
        if {p.name for p in data_dir.iterdir()} <= {LOCK_FILE}:
            (data_dir / LOCK_FILE).unlink(missing_ok=True)
            data_dir.rmdir()


# --- super-peers (shoal.mesh.topology) ---
ROLE_LABEL = "shoal.dev/role"
ZONE_LABEL = "topology.kubernetes.io/zone"


def node_site(cfg: NodeSettings, replica: Replica) -> str:
    """--site, else the zone label this node's Node object already carries."""
    if cfg.mesh.site is not None:
        return cfg.mesh.site
    node = replica.get("nodes", "", cfg.name) or {}
    return str(((node.get("metadata") or {}).get("labels") or {}).get(ZONE_LABEL, ""))


def mesh_settings(cfg: NodeSettings, replica: Replica) -> mesh_config.MeshConfig:
    return cfg.mesh.mesh_config(node_site(cfg, replica))


def topology_labels(cfg: NodeSettings) -> dict[str, str | None]:
    """The Node labels for the role (none for a full peer) and, with --site, the zone."""
    role = cfg.mesh.role
    labels: dict[str, str | None] = {ROLE_LABEL: None if role == "full" else role}
    if cfg.mesh.site:
        labels[ZONE_LABEL] = cfg.mesh.site
    return labels
# --- end super-peers ---
