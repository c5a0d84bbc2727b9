"""Node certificates and the join exchange on the peer port.

A joining node has no certificate yet. It opens TLS to any peer without verifying
it, asks for the CA certificate, and trusts nothing until that CA's key hash equals
the join token's (:mod:`shoal.mesh.join_tokens`) and the peer's own certificate is
issued by it. It then sends two CSRs (its keys never leave it: one for its node
identity on the peer port, one for serving the API on its bind and advertise
addresses) with the token, and gets back both certificates and the CA certificate:
its own node credential and nothing more. The admin credential stays on the signer;
``shoal kubeconfig`` there makes kubeconfigs that work against every peer.

A *signer* holds ``ca.key`` (the first node). A peer without it relays the request,
token included, over its authenticated connection to a signer it knows
(``pki/signers.json``, learnt from its own join). Only the signer checks and spends
the token, and it refuses a name that is a live member of the cluster unless the
request's node key is the key that member holds now, which it reads from the
member's TLS certificate over a mutual-TLS connection (so a replica write cannot
forge it): a node that rejoins proves possession of its key; a stranger cannot take
a running node's name. Everything is persisted under ``DATA_DIR/pki``, so a restart
needs no ``--join``.

Control requests (JSON): ``ca`` and ``join`` from anyone; ``renew`` (new node and
serving certificates for the caller's own name, never another's) only from an
authenticated node. A request for another node's name is refused and logged.
"""

from __future__ import annotations

import datetime
import hmac
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shoal.mesh.join_tokens import TokenError, check_token, parse_token, spend_token
from shoal.mesh.pki import (
    IssuanceError,
    NodePKI,
    ca_hash,
    covers,
    read_certificate,
    run_issuance,
    run_issuance_async,
    subject_common_name,
    write_private,
)
from shoal.mesh.tls_transport import (
    JoinConnection,
    PeerIdentity,
    TlsIdentity,
    TlsTransport,
)
from shoal.mesh.transport import TransportError
from shoal.store.system_crypto import (
    CryptoError,
    csr_public_key,
    load_der_certificate,
    load_pem_certificate,
    load_private_key,
)

log = logging.getLogger("shoal.mesh.join")

JOIN_TIMEOUT = 30.0


class JoinError(Exception):
    """A join (or a token) was refused; the message says why, for the operator."""


# -- files ---------------------------------------------------------------------------------


def node_cert_path(pki: NodePKI) -> Path:
    return pki.node_cert


def node_key_path(pki: NodePKI) -> Path:
    return pki.node_key


def signers_path(pki: NodePKI) -> Path:
    return pki.dir / "signers.json"


def node_identity(pki: NodePKI) -> TlsIdentity:
    """The files the peer transport authenticates with."""
    return TlsIdentity(node_cert_path(pki), node_key_path(pki), pki.ca_cert)


def is_signer(pki: NodePKI) -> bool:
    return pki.ca_key.exists()


def is_joined(pki: NodePKI) -> bool:
    """This data dir holds a node identity issued by a cluster CA it does not own."""
    return pki.ca_cert.exists() and not pki.ca_key.exists() and node_cert_path(pki).exists()


def read_signers(pki: NodePKI) -> list[str]:
    try:
        data = json.loads(signers_path(pki).read_text())
    except (FileNotFoundError, ValueError):
        return []
    return [str(a) for a in data] if isinstance(data, list) else []


def remember_signers(pki: NodePKI, addresses: list[str]) -> None:
    known = read_signers(pki)
    merged = known + [a for a in addresses if a and a not in known]
    if merged != known:
        write_private(signers_path(pki), json.dumps(merged).encode())


# -- certificates --------------------------------------------------------------------------


# Keys and certificates are read here through the system's libcrypto; keys, requests and
# certificates are made by shoal.mesh.issuance, in a child process on a running node.


async def _issue(request: dict[str, Any]) -> dict[str, Any]:
    try:
        return await run_issuance_async(request)
    except IssuanceError as e:
        raise JoinError(str(e)) from None


def sign_renewal_request(pki: NodePKI, name: str, csrs: dict[str, Any]) -> dict[str, Any]:
    """The ``sign`` issuance request: ``{node,serving}_cert`` for whichever of
    ``{node,serving}_csr`` is given, as ``name``, from this signer's CA."""
    return {"op": "sign", "dir": str(pki.dir), "name": name,
            **{k: str(csrs[k]) for k in ("node_csr", "serving_csr") if csrs.get(k)}}


def prepare_pki(pki: NodePKI, name: str, hosts: list[str]) -> bool:
    """Make sure this node has its certificates; True if the serving one must be renewed.

    A signer (or a brand-new first node) creates and signs whatever is missing. A joined
    node cannot sign: if its addresses changed it asks a signer (:func:`renew_certificates`).
    """
    if is_joined(pki):
        cn = subject_common_name(node_cert_path(pki))
        if cn != name:
            raise JoinError(f"this data dir belongs to node {cn!r}, not {name!r}")
        expired = node_cert_expired(pki)
        if expired is not None:
            raise JoinError(f"this node's certificate expired at {expired} (it was not renewed "
                            "in time, so no peer accepts it): rejoin with --join and a new "
                            "token; the data dir keeps its key and its state")
        return not covers(pki.server_cert, hosts, name)
    if pki.ca_cert.exists() and not pki.ca_key.exists():
        raise JoinError(f"{pki.dir} has a CA certificate but neither the CA key nor a node "
                        "certificate: finish the join with --join and --token")
    if not pki.signer_complete(name, hosts):
        try:
            run_issuance({"op": "prepare_signer", "dir": str(pki.dir), "name": name,
                          "hosts": hosts})
        except IssuanceError as e:
            raise JoinError(f"making this node's certificates in {pki.dir} failed: {e}") from e
    return False


def node_cert_expired(pki: NodePKI, now: datetime.datetime | None = None) -> str | None:
    """When the node certificate expired (ISO 8601), or None while it is valid."""
    not_after = load_pem_certificate(node_cert_path(pki).read_bytes()).not_after
    expiry = datetime.datetime.fromtimestamp(not_after, datetime.UTC)
    if (now or datetime.datetime.now(datetime.UTC)) < expiry:
        return None
    return expiry.isoformat(timespec="seconds")


def _key_pem_on_disk(path: Path) -> str | None:
    """The P-256 key in a PEM file, or None if there is none that fits."""
    try:
        pem = path.read_bytes()
        return pem.decode() if load_private_key(pem).is_p256() else None
    except (FileNotFoundError, CryptoError, UnicodeDecodeError):
        return None


def _public_key_of(key_pem: str) -> bytes:
    return load_private_key(key_pem.encode()).spki_der


def _matches(cert_pem: bytes, key_pem: str, ca_pem: bytes) -> bool:
    """Whether a returned certificate is for our key and issued by the cluster CA."""
    try:
        cert = load_pem_certificate(cert_pem)
        return (cert.spki_der == _public_key_of(key_pem)
                and cert.issued_by(load_pem_certificate(ca_pem)))
    except CryptoError:
        return False


# -- the joining side ----------------------------------------------------------------------


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        msg = json.loads(raw)
    except ValueError:
        raise JoinError("the peer answered something that is not JSON") from None
    if not isinstance(msg, dict):
        raise JoinError("the peer answered something that is not a JSON object")
    if "error" in msg:
        raise JoinError(str(msg["error"]))
    return msg


async def join_cluster(pki: NodePKI, name: str, hosts: list[str], peer: str, token_text: str,
                       timeout: float = JOIN_TIMEOUT) -> None:
    """Get this node's certificates from the cluster through ``peer`` and persist them.

    A node key already in the data dir (a join that was interrupted, a node rejoining)
    is reused, so that the signer can see it is the key the node holds."""
    token = parse_token(token_text)
    conn = await JoinConnection.open(peer, timeout)
    try:
        ca_pem = _decode(await conn.request(b'{"op":"ca"}', timeout)).get("ca", "").encode()
        try:
            got = ca_hash(ca_pem)
        except ValueError:
            raise JoinError(f"{peer} sent no valid CA certificate") from None
        if not hmac.compare_digest(got, token.ca_hash):
            raise JoinError(f"{peer} belongs to another cluster: its CA hash {got} differs "
                            f"from the token's {token.ca_hash}")
        try:
            pinned = load_der_certificate(conn.peer_cert_der()).issued_by(
                load_pem_certificate(ca_pem))
        except CryptoError:
            pinned = False
        if not pinned:
            raise JoinError(f"{peer}'s certificate is not issued by the pinned cluster CA")
        made = await _issue({"op": "requests", "name": name, "requests": [
            {"kind": "node", "key_pem": _key_pem_on_disk(node_key_path(pki)), "hosts": hosts},
            {"kind": "serving", "key_pem": None, "hosts": hosts}]})
        request = {"op": "join", "token": str(token), "name": name,
                   "node_csr": made["node"]["csr"], "serving_csr": made["serving"]["csr"]}
        answer = _decode(await conn.request(json.dumps(request).encode(), timeout))
    finally:
        await conn.close()
    node_pem = str(answer["node_cert"]).encode()
    serving_pem = str(answer["serving_cert"]).encode()
    node_key, serving_key = str(made["node"]["key_pem"]), str(made["serving"]["key_pem"])
    for pem, key in ((node_pem, node_key), (serving_pem, serving_key)):
        if not _matches(pem, key, ca_pem):
            raise JoinError("the signer returned a certificate that does not match our request")
    pki.dir.mkdir(parents=True, exist_ok=True)
    os.chmod(pki.dir, 0o700)
    write_private(pki.server_key, serving_key.encode())
    write_private(pki.server_cert, serving_pem)
    write_private(node_key_path(pki), node_key.encode())
    write_private(node_cert_path(pki), node_pem)
    remember_signers(pki, [str(a) for a in answer.get("signers", [])])
    # The CA last: its presence with a node certificate is what marks the join as complete.
    write_private(pki.ca_cert, ca_pem)
    log.info("joined the cluster through %s as %s", peer, name)


def _cert_hosts(cert_path: Path) -> list[str]:
    """The addresses and names a certificate covers (its SANs)."""
    cert = read_certificate(cert_path)
    return [*cert.dns_names, *cert.ip_addresses] if cert is not None else []


async def _renewal_csrs(pki: NodePKI, name: str, hosts: list[str], *, node: bool,
                        serving: bool) -> tuple[dict[str, str], dict[str, str]]:
    """CSRs for the certificates to renew, with the keys on disk (a renewal keeps the key,
    so the transport and the API only swap certificates, and a connection that proved the
    old certificate's key still proves the node's), and those keys' PEM."""
    wanted = [("node", node, node_key_path(pki), node_cert_path(pki)),
              ("serving", serving, pki.server_key, pki.server_cert)]
    made = await _issue({"op": "requests", "name": name, "requests": [
        {"kind": kind, "key_pem": _key_pem_on_disk(key_path),
         "hosts": [*hosts, *_cert_hosts(cert_path)]}
        for kind, want, key_path, cert_path in wanted if want]})
    csrs = {f"{kind}_csr": str(m["csr"]) for kind, m in made.items()}
    return csrs, {kind: str(m["key_pem"]) for kind, m in made.items()}


def _store_renewed(pki: NodePKI, answer: dict[str, Any], keys: dict[str, str],
                   source: str) -> None:
    paths = {"node": (node_key_path(pki), node_cert_path(pki)),
             "serving": (pki.server_key, pki.server_cert)}
    for kind, key in keys.items():
        if not _matches(str(answer[f"{kind}_cert"]).encode(), key, pki.ca_cert.read_bytes()):
            raise JoinError(f"{source} returned a {kind} certificate that does not match our "
                            "request")
    for kind, key in keys.items():
        key_path, cert_path = paths[kind]
        on_disk = _key_pem_on_disk(key_path)
        if on_disk is None or _public_key_of(on_disk) != _public_key_of(key):
            write_private(key_path, key.encode())
        write_private(cert_path, str(answer[f"{kind}_cert"]).encode())


async def renew_certificates(pki: NodePKI, transport: TlsTransport, name: str,
                             hosts: list[str], *, node: bool = True, serving: bool = True,
                             timeout: float = JOIN_TIMEOUT) -> None:
    """New node and/or serving certificates for this node's own name: signed here on a
    signer, else by a known signer over the authenticated transport."""
    csrs, keys = await _renewal_csrs(pki, name, hosts, node=node, serving=serving)
    if is_signer(pki):
        _store_renewed(pki, await _issue(sign_renewal_request(pki, name, csrs)), keys,
                       "this signer")
        return
    request = json.dumps({"op": "renew", **csrs}).encode()
    errors = []
    for signer in read_signers(pki):
        try:
            answer = _decode(await transport.request_control(signer, request, timeout))
        except (TransportError, JoinError) as e:
            errors.append(f"{signer}: {e}")
            continue
        _store_renewed(pki, answer, keys, signer)
        return
    raise JoinError("no signer renewed the certificates: " + ("; ".join(errors) or
                                                             "no signer is known"))


async def renew_serving_cert(pki: NodePKI, transport: TlsTransport, name: str,
                             hosts: list[str], timeout: float = JOIN_TIMEOUT) -> None:
    """A serving certificate for new addresses (the node certificate is kept)."""
    await renew_certificates(pki, transport, name, hosts, node=False, serving=True,
                             timeout=timeout)


# -- the serving side ----------------------------------------------------------------------

LiveMember = Callable[[str], "str | None"]
"""The peer address of the live member called ``name``, or None if no live member has it."""


def _csr_key(csr_pem: str) -> bytes:
    try:
        return csr_public_key(csr_pem.encode())
    except CryptoError as e:
        raise JoinError(str(e)) from None


class JoinService:
    """Answers control requests on the peer port: signs when it can, relays when it cannot."""

    def __init__(self, pki: NodePKI, transport: TlsTransport,
                 live_member: LiveMember | None = None, timeout: float = JOIN_TIMEOUT) -> None:
        self.pki = pki
        self.transport = transport
        self.live_member = live_member
        self.timeout = timeout

    async def handle(self, peer: PeerIdentity, raw: bytes) -> bytes:
        who = peer.address + (f" (node {peer.name})" if peer.name else "")
        try:
            msg = json.loads(raw)
            if not isinstance(msg, dict):
                raise JoinError("a control request must be a JSON object")
            op = msg.get("op")
            if op == "ca":
                answer: dict[str, Any] = {"ca": self.pki.ca_cert.read_text()}
            elif op == "join":
                answer = await self._join(peer, msg)
            elif op == "renew" and peer.name is not None:
                answer = await self._renew(peer.name, msg)
            else:
                raise JoinError(f"unknown or unauthorised control request {op!r}")
        except (JoinError, TokenError) as e:
            log.warning("join request from %s refused: %s", who, e)
            answer = {"error": str(e)}
        except (ValueError, KeyError, TypeError) as e:
            log.warning("bad control request from %s: %r", who, e)
            answer = {"error": f"bad request: {e}"}
        return json.dumps(answer).encode()

    def _signers(self) -> list[str]:
        own = [self.transport.address] if is_signer(self.pki) else []
        return own + [a for a in read_signers(self.pki) if a not in own]

    async def _join(self, peer: PeerIdentity, msg: dict[str, Any]) -> dict[str, Any]:
        name = str(msg["name"])
        if not name or len(name) > 253:
            raise JoinError("a node name must have 1 to 253 characters")
        if not is_signer(self.pki):
            return await self._relay(peer, msg)
        check_token(self.pki, str(msg.get("token", "")))
        node_csr, serving_csr = str(msg["node_csr"]), str(msg["serving_csr"])
        _csr_key(serving_csr)
        await self._refuse_a_live_name(name, _csr_key(node_csr))
        signed = await _issue(sign_renewal_request(
            self.pki, name, {"node_csr": node_csr, "serving_csr": serving_csr}))
        node_cert, serving_cert = str(signed["node_cert"]), str(signed["serving_cert"])
        # Spent only now, and atomically: of two joins racing for its last use one fails.
        left = spend_token(self.pki, str(msg["token"]))
        relayed = msg.get("relayed_for")
        log.info("signed certificates for node %s (request from %s%s; the token has %d "
                 "uses left)", name, relayed or peer.address,
                 f", relayed by {peer.name}" if peer.name else "", left)
        return {"node_cert": node_cert, "serving_cert": serving_cert,
                "signers": self._signers()}

    async def _refuse_a_live_name(self, name: str, key: bytes) -> None:
        """A live member's name goes only to the holder of that member's key."""
        if name == self.transport.name:
            held = load_pem_certificate(node_cert_path(self.pki).read_bytes()).spki_der
        else:
            address = self.live_member(name) if self.live_member is not None else None
            if address is None:
                return
            try:
                held = await self.transport.peer_public_key(name, address, self.timeout)
            except TransportError as e:
                raise JoinError(f"node {name} is a live member of the cluster and its key "
                                f"could not be checked ({e}); try again later") from e
        if held != key:
            raise JoinError(f"node {name} is a live member of the cluster: a join with its "
                            "name must prove possession of its key (the request's node key "
                            "is not the key it holds)")

    async def _relay(self, peer: PeerIdentity, msg: dict[str, Any]) -> dict[str, Any]:
        if peer.name is not None:
            raise JoinError("relayed join requests are not relayed again")
        request = {k: v for k, v in msg.items() if k in
                   ("op", "token", "name", "node_csr", "serving_csr")}
        request["relayed_for"] = peer.address
        errors = []
        for signer in read_signers(self.pki):
            try:
                raw = await self.transport.request_control(signer, json.dumps(request).encode(),
                                                           self.timeout)
            except TransportError as e:
                errors.append(f"{signer}: {e}")
                continue
            answer = json.loads(raw)
            if isinstance(answer, dict) and "error" not in answer:
                log.info("relayed the join of %s to signer %s", msg.get("name"), signer)
                answer["signers"] = [*answer.get("signers", []), *self._signers()]
            return answer if isinstance(answer, dict) else {"error": "bad answer from signer"}
        raise JoinError("this peer cannot sign and reached no signer: " + ("; ".join(errors) or
                                                                          "none is known"))

    async def _renew(self, caller: str, msg: dict[str, Any]) -> dict[str, Any]:
        """New certificates for the caller's own name: the name is the one its certificate
        proves, whatever the request says, and a request naming another node is refused."""
        asked = msg.get("name")
        if asked is not None and asked != caller:
            raise JoinError(f"node {caller} may renew only its own certificates, not those of "
                            f"{asked!r}")
        if not is_signer(self.pki):
            raise JoinError("this peer does not hold the CA key")
        if not (msg.get("node_csr") or msg.get("serving_csr")):
            raise JoinError("a renewal needs a node_csr or a serving_csr")
        answer = await _issue(sign_renewal_request(self.pki, caller, msg))
        log.info("renewed the %s certificate(s) of node %s",
                 " and ".join(k.removesuffix("_cert") for k in answer), caller)
        return answer
