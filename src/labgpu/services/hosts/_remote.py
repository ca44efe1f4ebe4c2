"""Hosts besides the local daemon: add (trust both ways), remove, drain, and set their public address.

``add_host`` trusts in both directions before it records anything:

1. the daemon's certificate is fetched and PINNED: it must match the fingerprint inside the trust token,
   or the one the admin gave (``--fingerprint``), or the admin confirms it on the terminal (``--yes`` skips
   the question, trust on first use);
2. labgpu's own client certificate (made once in ``state_dir/certs``, key mode 0600) is trusted by the
   daemon, with a one-time trust token (``incus config trust add NAME`` / ``lxc config trust add --name
   NAME``) or LXD's legacy trust password; a certificate the daemon trusts already needs neither;
3. a standalone daemon becomes one host row; a cluster, added through any member, becomes one row per
   cluster member, named like the member, each reached at its own address when labgpu can reach it there
   (else through the address given), with the member as the runtime's ``target``.

Nothing is done to the daemon's instances, ever: removing a host only forgets it (its containers keep
running) and drops labgpu's certificate from its trust store when it can.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import select

from labgpu.errors import BadInput, Conflict, LabgpuError, NotFound
from labgpu.runtime.certs import (
    certificate_fingerprint,
    decode_trust_token,
    fetch_server_certificate,
    generate_client_certificate,
)
from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.endpoint import Endpoint
from labgpu.runtime.errors import RuntimeForbidden
from labgpu.services.clients import (
    HostAddress,
    client_cert_paths,
    parse_host_url,
    server_cert_path,
)
from labgpu.services.context import Services
from labgpu.store.models import Host, HostKind, Member, MemberState, PortMap

DEFAULT_PORT = 8443
_HOST_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?\Z")
# The address part of an agent URL: a DNS name or IPv4 address, or an IPv6 literal (without its brackets).
_AGENT_ADDRESS_RE = re.compile(r"^(?:[a-z0-9](?:[a-z0-9._-]{0,251}[a-z0-9])?|[0-9a-f:.]*:[0-9a-f:.]*)\Z")
_FINGERPRINT_RE = re.compile(r"^[0-9a-f]{12,64}\Z")


def validate_host_name(name: str) -> str:
    """Return ``name`` if it can name a host; raise BadInput otherwise."""
    if not _HOST_NAME_RE.match(name or ""):
        raise BadInput(
            f"invalid host name {name!r}: use 1-63 letters, digits, dots, hyphens and underscores, "
            "starting and ending with a letter or digit"
        )
    return name


def normalize_url(url: str) -> str:
    """``https://host[:port]`` (port 8443 when left out) or ``unix:///path``. Raises BadInput."""
    text = url.strip()
    if "://" not in text:
        text = "https://" + text
    parsed = urlparse(text)
    if parsed.scheme == "unix":
        if parsed.netloc or not parsed.path.startswith("/"):
            raise BadInput(
                f"invalid URL {url!r}: a socket path must be absolute (unix:///var/lib/incus/unix.socket)"
            )
        return f"unix://{parsed.path}"
    if parsed.scheme != "https" or not parsed.hostname:
        raise BadInput(f"invalid URL {url!r}: use https://ADDRESS[:PORT] or unix:///path/to/unix.socket")
    if parsed.path not in ("", "/") or parsed.query or parsed.username:
        raise BadInput(f"invalid URL {url!r}: give only the address and port, e.g. https://gpu2.lab:8443")
    host = parsed.hostname
    shown = f"[{host}]" if ":" in host else host
    return f"https://{shown}:{parsed.port or DEFAULT_PORT}"


def _fingerprint_arg(text: str | None) -> str | None:
    if text is None:
        return None
    value = text.strip().lower().replace(":", "")
    if not _FINGERPRINT_RE.match(value):
        raise BadInput(
            "invalid --fingerprint: give the SHA-256 fingerprint in hex (at least its first 12 characters), "
            "as `incus info` / `lxc info` shows it under certificate_fingerprint"
        )
    return value


@dataclass(frozen=True)
class AddedHosts:
    """What `host add` recorded."""

    names: tuple[str, ...]
    kind: str
    version: str
    url: str
    fingerprint: str
    cluster: str | None = None
    trusted_now: bool = False  # labgpu's certificate was trusted by this add (not before)
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["names"] = list(self.names)
        out["notes"] = list(self.notes)
        return out


@dataclass(frozen=True)
class _Member:
    name: str
    url: str


def ensure_client_certificate(svc: Services) -> str:
    """labgpu's client certificate (PEM), made once in state_dir/certs (key mode 0600)."""
    cert, key = client_cert_paths(svc.settings)
    if cert.is_file() and key.is_file():
        return cert.read_text()
    cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return generate_client_certificate(cert, key, common_name=f"labgpu@{socket.gethostname()}")


def add_host(
    svc: Services,
    name: str,
    url: str,
    *,
    public_address: str | None = None,
    token: str | None = None,
    password: str | None = None,
    fingerprint: str | None = None,
    confirm: Callable[[str], bool] | None = None,
) -> AddedHosts:
    """Add a standalone daemon as host ``name``, or every member of a cluster (named after the members).

    The daemon's certificate is pinned only when it matches the token's fingerprint, ``fingerprint``, or
    ``confirm(fingerprint)`` says yes. Raises BadInput (bad name/URL, fingerprint refused, no way to be
    trusted), Conflict (name taken, the daemon is known already), RuntimeUnavailable (cannot reach it),
    RuntimeForbidden (the daemon refused the token or password). Records the rows and audit
    ``host.add``; nothing is recorded when a step fails."""
    validate_host_name(name)
    base = normalize_url(url)
    if token is not None and password is not None:
        raise BadInput("give --token or --password, not both")
    if public_address is not None and not public_address.strip():
        raise BadInput("--public-address is empty")
    want_fp = _fingerprint_arg(fingerprint)
    with svc.session() as session:
        _check_name_free(session, name)
    notes: list[str] = []

    if base.startswith("unix://"):
        client = RuntimeClient(Endpoint.parse(base), timeout=svc.settings.runtime_timeout)
        pem, fp = None, ""
        trusted_now = False
    else:
        parsed = urlparse(base)
        assert parsed.hostname is not None and parsed.port is not None
        pem = fetch_server_certificate(parsed.hostname, parsed.port, timeout=svc.settings.host_timeout)
        fp = certificate_fingerprint(pem)
        _accept_fingerprint(fp, base, token=token, want=want_fp, confirm=confirm)
        client_pem = ensure_client_certificate(svc)
        client, trusted_now = _trusted_client(
            svc, name, base, pem, client_pem, token=token, password=password
        )
    try:
        info = client.server(refresh=True)
        _check_not_known(svc, fp, info.certificate_fingerprint, base)
        members = _cluster_members(svc, client, base, fp) if info.clustered else []
    finally:
        client.close()

    rows: list[tuple[str, str, str | None]]
    if info.clustered:
        if public_address is not None:
            raise BadInput(
                "--public-address names one host, and this is a cluster: add it without, then set each "
                "member's with `labgpu host set MEMBER --public-address ADDRESS`"
            )
        rows = [
            (m.name, HostAddress(base=m.url, cluster=name, target=m.name).to_url(), None) for m in members
        ]
        for m in members:
            if m.url != base:
                notes.append(f"{m.name} is reached at its own address {m.url}")
    else:
        rows = [(name, base, public_address.strip() if public_address else None)]

    written: list[Path] = []
    try:
        with svc.session() as session:
            for row_name, _, _ in rows:
                validate_host_name(row_name)
                _check_name_free(session, row_name, cluster=name if info.clustered else None)
            for row_name, row_url, address in rows:
                session.add(
                    Host(
                        name=row_name,
                        url=row_url,
                        kind=HostKind(info.kind),
                        public_address=address,
                    )
                )
                if pem is not None:
                    path = server_cert_path(svc.settings, row_name)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(pem)
                    written.append(path)
            session.flush()
            svc.audit(
                session,
                "host.add",
                name,
                url=base,
                kind=info.kind,
                version=info.version,
                fingerprint=fp or None,
                cluster_members=[m.name for m in members] or None,
                trusted_with="token" if token else "password" if password else None,
            )
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return AddedHosts(
        names=tuple(r[0] for r in rows),
        kind=info.kind,
        version=info.version,
        url=base,
        fingerprint=fp,
        cluster=name if info.clustered else None,
        trusted_now=trusted_now,
        notes=tuple(notes),
    )


def _check_name_free(session: Any, name: str, *, cluster: str | None = None) -> None:
    if session.scalars(select(Host.id).where(Host.name == name)).first() is not None:
        where = f" (a member of cluster {cluster})" if cluster else ""
        raise Conflict(
            f"a host named {name} exists already{where}",
            hint="list them with `labgpu host list`; remove a stale one with `labgpu host rm NAME`",
        )


def _accept_fingerprint(
    fp: str, base: str, *, token: str | None, want: str | None, confirm: Callable[[str], bool] | None
) -> None:
    """Pin ``fp`` only with a reason to: the token's, the admin's, or the admin's yes."""
    if token is not None:
        expected = decode_trust_token(token).fingerprint
        if expected != fp:
            raise BadInput(
                f"{base} presented certificate {fp[:12]}, but the token was made by the daemon with "
                f"certificate {expected[:12]}: refusing (wrong address, or someone in between)"
            )
        return
    if want is not None:
        if not fp.startswith(want):
            raise BadInput(f"{base} presented certificate {fp}, not {want}: refusing")
        return
    if confirm is None or not confirm(fp):
        raise BadInput(
            f"{base} presented certificate {fp}; not pinned",
            hint="compare it with `incus info` / `lxc info` on that host (certificate_fingerprint), then "
            "give it with --fingerprint, or answer yes (--yes)",
        )


def _trusted_client(
    svc: Services,
    name: str,
    base: str,
    server_pem: str,
    client_pem: str,
    *,
    token: str | None,
    password: str | None,
) -> tuple[RuntimeClient, bool]:
    """A client for ``base`` with the server pinned, after making the daemon trust labgpu if needed.

    The pinned certificate is written to a scratch file under state_dir until the host is recorded."""
    scratch = svc.settings.state_dir / "certs" / "pending"
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    pinned = scratch / f"{name}.crt"
    pinned.write_text(server_pem)
    cert, key = client_cert_paths(svc.settings)
    endpoint = Endpoint.parse(base, client_cert=cert, client_key=key, server_cert=pinned)
    client = RuntimeClient(endpoint, timeout=svc.settings.runtime_timeout)
    try:
        if client.server(refresh=True).trusted:
            return client, False
        if token is None and password is None:
            raise BadInput(
                f"the daemon at {base} does not trust labgpu yet",
                hint="on that host run `incus config trust add labgpu` (LXD: `lxc config trust add --name "
                "labgpu`) and give what it prints with --token; on LXD 5.0 --password works too",
            )
        label = decode_trust_token(token).client_name if token else ""
        try:
            client.redeem_trust(
                client_pem, name=label or f"labgpu@{socket.gethostname()}", token=token, password=password
            )
        except RuntimeForbidden as exc:
            what = "token" if token else "password"
            raise BadInput(
                f"the daemon at {base} refused the trust {what}: {exc.message}",
                hint="a token works once and may have expired: make a new one",
            ) from None
        if not client.server(refresh=True).trusted:
            raise BadInput(
                f"the daemon at {base} accepted the {'token' if token else 'password'} but does not trust labgpu"
            )
        return client, True
    except BaseException:
        client.close()
        raise
    finally:
        # The client keeps its loaded TLS context; the scratch file is not needed after the handshake.
        pinned.unlink(missing_ok=True)


def _check_not_known(svc: Services, fp: str, server_fp: str, base: str) -> None:
    """Refuse a daemon labgpu knows already: the local one, or a host added before."""
    fps = {f for f in (fp, server_fp) if f}
    if not fps:
        return
    try:
        local = svc.runtime.server().certificate_fingerprint
    except LabgpuError:
        local = ""
    if local and local in fps:
        raise Conflict(f"{base} is the local daemon, which labgpu manages already")
    with svc.session() as session:
        for host in session.scalars(select(Host).where(Host.url.is_not(None))):
            path = server_cert_path(svc.settings, host.name)
            if path.is_file() and certificate_fingerprint(path.read_text()) in fps:
                raise Conflict(f"{base} is known already, as host {host.name}")


def _cluster_members(svc: Services, client: RuntimeClient, base: str, fp: str) -> list[_Member]:
    """The cluster's members, each with the address labgpu will reach it at: its own when it answers
    there with the cluster's certificate, else ``base`` (the daemon forwards by ``target``)."""
    out = []
    for data in client.cluster_members():
        member = str(data.get("server_name") or "")
        own = str(data.get("url") or "")
        url = base
        if own and fp:
            try:
                own_base = normalize_url(own)
            except BadInput:
                own_base = ""
            parsed = urlparse(own_base)
            if own_base and own_base != base and parsed.hostname and parsed.port:
                try:
                    pem = fetch_server_certificate(
                        parsed.hostname, parsed.port, timeout=svc.settings.host_timeout
                    )
                    if certificate_fingerprint(pem) == fp:
                        url = own_base
                except LabgpuError:
                    pass
        out.append(_Member(name=member, url=url))
    if not out:
        raise BadInput(f"{base} says it is clustered but lists no members")
    return out


# Remove, drain, set ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemovedHost:
    names: tuple[str, ...]
    unplaced_members: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "unplaced_members": list(self.unplaced_members),
            "notes": list(self.notes),
        }


def _rows_named(session: Any, name: str) -> list[Host]:
    """The host ``name``, or every member of the cluster added as ``name``."""
    host = session.scalars(select(Host).where(Host.name == name)).first()
    if host is not None:
        return [host]
    rows = [
        h
        for h in session.scalars(select(Host).where(Host.url.is_not(None)))
        if parse_host_url(h.url or "").cluster == name
    ]
    if not rows:
        raise NotFound(f"no host or cluster named {name}", hint="list them with `labgpu host list`")
    return rows


def remove_host(svc: Services, name: str, *, force: bool = False) -> RemovedHost:
    """Forget host ``name`` (or every member of the cluster added as ``name``). The daemon's instances
    are never touched; labgpu's certificate is dropped from its trust store when the daemon answers
    and no other host row still uses it.

    Refused (Conflict) while members live there, unless ``force``: then those members are unplaced
    (their ports there freed, state provisioning), and `labgpu reconcile` gives them a new container on
    a host chosen by placement; their home stays where it was. Raises NotFound. Audit ``host.rm``."""
    from labgpu.services.hosts._clients import runtime_for

    notes: list[str] = []
    with svc.session() as session:
        rows = _rows_named(session, name)
        if any(h.url is None for h in rows):
            raise BadInput(f"{name} is the local daemon labgpu runs with; it cannot be removed")
        ids = [h.id for h in rows]
        living = list(session.scalars(select(Member).where(Member.host_id.in_(ids)).order_by(Member.name)))
        if living and not force:
            names = ", ".join(m.name for m in living[:10]) + (" ..." if len(living) > 10 else "")
            raise Conflict(
                f"{len(living)} member(s) live on {name}: {names}",
                hint="move them first (`labgpu member move NAME --to HOST`), or give --force to unplace them",
            )
        fingerprint_users = {h.name for h in rows}
        clients = [runtime_for(svc, h) for h in rows]
    # Drop our certificate from the daemon while we can still reach it (best effort).
    client_cert, _ = client_cert_paths(svc.settings)
    if client_cert.is_file():
        with svc.session() as session:
            others = [
                h
                for h in session.scalars(select(Host).where(Host.url.is_not(None)))
                if h.name not in fingerprint_users
            ]
            other_fps = set()
            for h in others:
                p = server_cert_path(svc.settings, h.name)
                if p.is_file():
                    other_fps.add(certificate_fingerprint(p.read_text()))
        mine = {
            certificate_fingerprint(server_cert_path(svc.settings, n).read_text())
            for n in fingerprint_users
            if server_cert_path(svc.settings, n).is_file()
        }
        if mine and not (mine & other_fps):
            try:
                fp = certificate_fingerprint(client_cert.read_text())
                # Within host_timeout: a host that is gone must not hold up its removal.
                clients[0].untrust_certificate(
                    fp, what="remove labgpu's certificate", timeout=svc.settings.host_timeout
                )
            except LabgpuError as exc:
                notes.append(f"labgpu's certificate stays in {name}'s trust list ({exc.message})")
    unplaced: dict[str, list[str]] = {}  # member -> the port purposes they had (given again elsewhere)
    with svc.session() as session:
        rows = _rows_named(session, name)
        ids = [h.id for h in rows]
        for member in session.scalars(select(Member).where(Member.host_id.in_(ids))):
            unplaced[member.name] = sorted(str(pm.purpose) for pm in member.port_maps)
            for pm in list(member.port_maps):
                member.port_maps.remove(pm)
            member.host_id = None
            member.state = MemberState.PROVISIONING
            member.spec_version += 1
        session.flush()
        # Port maps of members elsewhere never point here, but a half-finished move may have left some.
        for pm in session.scalars(select(PortMap).where(PortMap.host_id.in_(ids))):
            session.delete(pm)
        for host in rows:
            session.delete(host)
        svc.audit(
            session,
            "host.rm",
            name,
            hosts=[h.name for h in rows],
            force=force,
            unplaced_members=unplaced or None,
        )
    for host_name in fingerprint_users:
        server_cert_path(svc.settings, host_name).unlink(missing_ok=True)
    for host_id in ids:
        svc.clients.forget(host_id)
    if unplaced:
        notes.append(
            f"unplaced member(s) {', '.join(sorted(unplaced))}: `labgpu reconcile` gives them new containers on "
            "other hosts; their homes stay where they were"
        )
    return RemovedHost(
        names=tuple(sorted(fingerprint_users)), unplaced_members=tuple(sorted(unplaced)), notes=tuple(notes)
    )


def set_drained(svc: Services, name: str, drained: bool) -> list[str]:
    """Drain (no new containers are placed there; its members stay) or undrain a host, or every member
    of a cluster. Returns the host names. Raises NotFound. Audit ``host.drain`` / ``host.undrain``."""
    with svc.session() as session:
        rows = _rows_named(session, name)
        for host in rows:
            host.drained = drained
        svc.audit(session, "host.drain" if drained else "host.undrain", name, hosts=[h.name for h in rows])
        return [h.name for h in rows]


def set_public_address(svc: Services, name: str, address: str | None) -> None:
    """Set (or, with None, clear) the address members are told to connect to for host ``name``.

    Existing members see it on their next connection sheet; their ports stay. Raises NotFound, BadInput."""
    if address is not None and (not address.strip() or any(c.isspace() for c in address.strip())):
        raise BadInput(f"invalid public address {address!r}")
    with svc.session() as session:
        host = session.scalars(select(Host).where(Host.name == name)).first()
        if host is None:
            raise NotFound(f"no host named {name}")
        host.public_address = address.strip() if address else None
        svc.audit(session, "host.set", name, public_address=host.public_address)


def normalize_agent_url(url: str) -> str:
    """``http(s)://address[:port][/path]`` of a `labgpu agent`, without a trailing slash. Raises BadInput.

    The URL is stored as typed, and the portal sends the agent token to it: so no white space or control
    characters anywhere (urlparse drops tabs and newlines, and would check another URL than the one
    stored), and an address of letters, digits, dots, hyphens (or an IPv6 literal)."""
    text = url.strip().rstrip("/")
    if not text.isprintable() or any(c.isspace() for c in text):
        raise BadInput(f"invalid agent URL {url!r}: no spaces or control characters")
    try:
        parsed = urlparse(text)
    except ValueError:  # an unbalanced [ of an IPv6 literal
        raise BadInput(f"invalid agent URL {url!r}: use http://ADDRESS:9410") from None
    if parsed.hostname and not _AGENT_ADDRESS_RE.match(parsed.hostname):
        raise BadInput(f"invalid agent URL {url!r}: {parsed.hostname!r} is no address or host name")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise BadInput(f"invalid agent URL {url!r}: use http://ADDRESS:9410 (the agent's address and port)")
    if parsed.query or parsed.fragment or parsed.username or parsed.password:
        raise BadInput(
            f"invalid agent URL {url!r}: give only the address, port and path; the token is the "
            "agent_token setting"
        )
    try:
        parsed.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise BadInput(f"invalid agent URL {url!r}: the port is not a number") from None
    return text


def set_agent_url(svc: Services, name: str, url: str | None) -> str | None:
    """Set (or, with None, clear) where host ``name``'s `labgpu agent` answers: the portal reads that
    host's GPU usage from it (without one, only a host on this machine is read, in process). Returns the
    stored URL. Raises NotFound, BadInput. Audit ``host.set``."""
    value = normalize_agent_url(url) if url is not None else None
    with svc.session() as session:
        host = session.scalars(select(Host).where(Host.name == name)).first()
        if host is None:
            raise NotFound(f"no host named {name}")
        host.agent_url = value
        svc.audit(session, "host.set", name, agent_url=value)
    return value
