"""`labgpu auth test NAME`: a log-in checked against every configured backend, a real slapd among them;
it says which accepted it and why the others did not, and writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.servers.ldap import PEOPLE, LdapServer

ADMIN_PASSWORD = "quartz-meadow-93-lantern"


def _labgpu(env: dict[str, str], *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labgpu.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_auth_test_names_the_backend_that_accepted_and_why_the_others_did_not(
    ldap_server: LdapServer, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABGPU_")}
    env.update({f"LABGPU_{k.upper()}": v for k, v in ldap_server.settings().items()})
    env.update(
        LABGPU_STATE_DIR=str(tmp_path / "state"),
        LABGPU_RUNTIME_URL=f"unix://{tmp_path}/no-daemon.sock",
        LABGPU_CAS_URL="https://cas.univ.test/cas",
        LABGPU_SIGNON_ADMIN_GROUPS="gpu-admins",
    )
    assert _labgpu(env, "db", "upgrade", stdin="").returncode == 0
    made = _labgpu(env, "admin", "create", "boss", "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    assert made.returncode == 0, made.stderr

    # A directory user: LDAP accepts, with the groups and what the group rules make of them.
    r = _labgpu(env, "auth", "test", "bob", "--password-stdin", "--json", stdin=PEOPLE["bob"][2] + "\n")
    assert r.returncode == 0, r.stderr
    verdicts = {v["backend"]: v for v in json.loads(r.stdout)}
    assert verdicts["ldap"]["accepted"] and "gpu-admins" in verdicts["ldap"]["detail"]
    assert "group rules: admin" in verdicts["ldap"]["detail"]
    assert not verdicts["local"]["accepted"] and "no labgpu account" in verdicts["local"]["detail"]
    assert "needs a browser" in verdicts["cas"]["detail"]

    # The local admin: accepted locally; the directory's own "boss" has another password.
    r = _labgpu(env, "auth", "test", "boss", "--password-stdin", "--json", stdin=ADMIN_PASSWORD + "\n")
    verdicts = {v["backend"]: v for v in json.loads(r.stdout)}
    assert r.returncode == 0 and verdicts["local"]["accepted"] and not verdicts["ldap"]["accepted"]
    assert verdicts["ldap"]["detail"] == "unknown name, several matches, or wrong password"

    # Nobody accepts: exit code 1, and each says why (the table for people); an injection matches nobody.
    r = _labgpu(env, "auth", "test", "*)(uid=*", "--password-stdin", stdin=PEOPLE["alice"][2] + "\n")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "no labgpu account" in r.stdout and "unknown name" in r.stdout

    # The directory down: said plainly.
    env["LABGPU_LDAP_URL"] = "ldap://127.0.0.1:9"
    r = _labgpu(env, "auth", "test", "alice", "--password-stdin", stdin=PEOPLE["alice"][2] + "\n")
    assert r.returncode == 1 and "server unreachable" in r.stdout
