"""OpenLDAP's slapd (Debian's ``slapd`` package) on a free loopback port with a temporary database.

The directory holds people and groups for the sign-on tests (``PEOPLE``, ``GROUPS``); StartTLS is
offered with a throw-away CA's certificate. ``python -m tests.servers.ldap`` starts one by hand and
prints its settings."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.servers.tls import TestPki, make_pki

SLAPD = os.environ.get("LABGPU_TEST_SLAPD", "/usr/sbin/slapd")
SLAPADD = os.environ.get("LABGPU_TEST_SLAPADD", "/usr/sbin/slapadd")
SUFFIX = "dc=lab,dc=test"
BIND_DN = f"cn=labgpu,ou=services,{SUFFIX}"
BIND_PASSWORD = "svc-quartz-48-lantern"

# uid: (cn, mail, password); uids that are not Linux names or are taken are on purpose.
PEOPLE = {
    "alice": ("Alice Liu", "alice@lab.test", "alice-dir-pass-9"),
    "bob": ("Bob Wang", "bob@lab.test", "bob-dir-pass-9"),
    "carol": ("Carol Chen", "carol@lab.test", "carol-dir-pass-9"),
    "boss": ("Another Boss", "other-boss@lab.test", "boss-dir-pass-9"),
    "Dave.Smith": ("Dave Smith", "dave@lab.test", "dave-dir-pass-9"),
    "erin": ("Erin Zhao", "erin@lab.test", "erin-dir-pass-9"),
}
GROUPS = {
    "gpu-users": ["alice", "bob", "carol", "boss", "Dave.Smith"],
    "gpu-fast": ["carol"],
    "gpu-admins": ["bob"],
}


@dataclass(frozen=True)
class LdapServer:
    url: str
    pki: TestPki
    port: int

    def settings(self) -> dict[str, str]:
        """labgpu settings (as strings, like environment variables) for this directory."""
        return {
            "ldap_url": self.url,
            "ldap_ca_file": str(self.pki.ca_file),
            "ldap_user_base": f"ou=people,{SUFFIX}",
            "ldap_bind_dn": BIND_DN,
            "ldap_bind_password": BIND_PASSWORD,
            "ldap_group_base": f"ou=groups,{SUFFIX}",
        }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ldif() -> str:
    parts = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Lab\ndc: lab\n",
        f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n",
        f"dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services\n",
        f"dn: {BIND_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: labgpu\n"
        f"userPassword: {BIND_PASSWORD}\n",
    ]
    for uid, (cn, mail, password) in PEOPLE.items():
        sn = cn.split()[-1]
        parts.append(
            f"dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {cn}\nsn: {sn}\n"
            f"mail: {mail}\nuserPassword: {password}\n"
        )
    for group, uids in GROUPS.items():
        members = "".join(f"member: uid={u},ou=people,{SUFFIX}\n" for u in uids)
        parts.append(f"dn: cn={group},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: {group}\n{members}")
    return "\n".join(parts)


def _config(folder: Path, pki: TestPki) -> str:
    schema = "/etc/ldap/schema"
    return f"""
include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/inetorgperson.schema
include {schema}/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {folder}/slapd.pid
TLSCACertificateFile {pki.ca_file}
TLSCertificateFile {pki.cert_file}
TLSCertificateKeyFile {pki.key_file}
database mdb
maxsize 16777216
suffix "{SUFFIX}"
rootdn "cn=root,{SUFFIX}"
directory {folder}/db
access to attrs=userPassword by anonymous auth by * none
access to * by users read by anonymous auth
"""


@contextmanager
def running_slapd(folder: Path) -> Iterator[LdapServer]:
    """slapd serving the test directory until the block ends. Fails clearly when slapd is missing."""
    if not Path(SLAPD).exists():
        raise RuntimeError(
            f"{SLAPD} is missing: apt-get install slapd ldap-utils (scripts/install-deps --test)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "db").mkdir(exist_ok=True)
    pki = make_pki(folder / "pki")
    conf = folder / "slapd.conf"
    conf.write_text(_config(folder, pki))
    (folder / "data.ldif").write_text(_ldif())
    subprocess.run(
        [SLAPADD, "-f", str(conf), "-l", str(folder / "data.ldif")], check=True, capture_output=True
    )
    port = _free_port()
    url = f"ldap://127.0.0.1:{port}"
    log = (folder / "slapd.log").open("w")
    proc = subprocess.Popen(
        [SLAPD, "-f", str(conf), "-h", url + "/", "-d", "0"], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "slapd did not start:\n" + (folder / "slapd.log").read_text()[-2000:]
                    ) from None
                time.sleep(0.05)
        yield LdapServer(url=url, pki=pki, port=port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


if __name__ == "__main__":  # pragma: no cover - a developer's convenience
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, running_slapd(Path(tmp)) as server:
        for key, value in server.settings().items():
            print(f"LABGPU_{key.upper()}={value}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    shutil.rmtree(tmp, ignore_errors=True)
