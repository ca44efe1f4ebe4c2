"""Settings: one typed object, read from a TOML file and ``LABGPU_*`` variables.

Precedence, highest first: explicit overrides (tests, CLI flags), environment variables, the TOML file,
the defaults below. The file is ``--config``, else ``$LABGPU_CONFIG``, else ``/etc/labgpu/labgpu.toml``
when it exists. Every setting has a type, a default and a help text; ``docs/configuration.md`` must
describe each one (a test checks it). Nothing here runs at import time: call :func:`load_settings`.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from labgpu.errors import ConfigError
from labgpu.settings_apps import AppsSettings
from labgpu.settings_my_templates import MyTemplateSettings
from labgpu.settings_network import NetworkSettings
from labgpu.settings_selfservice import SelfServiceSettings
from labgpu.settings_signon import SignOnSettings
from labgpu.settings_terminal import TerminalSettings

DEFAULT_CONFIG_PATH = Path("/etc/labgpu/labgpu.toml")

# Values people copy from examples; refused outside development mode.
WEAK_SECRETS = frozenset({"change-me", "changeme", "changethis", "secret", "labgpu", "password"})

_file_values: ContextVar[dict[str, Any]] = ContextVar("_file_values", default={})  # noqa: B039


class _FileSource(PydanticBaseSettingsSource):
    """Values read from the TOML file (parsed by :func:`load_settings`)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return _file_values.get().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_file_values.get())


class Settings(
    BaseSettings,
    NetworkSettings,
    SignOnSettings,
    AppsSettings,
    TerminalSettings,
    MyTemplateSettings,
    SelfServiceSettings,
):
    """All of labgpu's settings. See docs/configuration.md for the full reference."""

    model_config = SettingsConfigDict(env_prefix="LABGPU_", extra="forbid", validate_default=True)

    development: bool = Field(
        False,
        description="Development mode: allows weak secrets and shows more detail in errors. Never in production.",
    )
    state_dir: Path = Field(
        Path("/var/lib/labgpu"),
        description="Folder for labgpu's own state: the SQLite database, the secret key, certificates, caches.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the store. Empty: a SQLite file 'labgpu.db' in state_dir. "
        "PostgreSQL: postgresql+psycopg://user:password@host/dbname.",
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Key that signs sessions and CSRF tokens. Empty: generated once and kept in "
        "state_dir/secret_key (mode 0600). At least 32 characters when set.",
    )
    runtime_url: str | None = Field(
        None,
        description="Where the LXD/Incus API is: unix:///path/to/unix.socket or https://host:8443. "
        "Empty: auto-detect ($LXD_DIR, $INCUS_DIR, the snap LXD socket, /var/lib/lxd, /var/lib/incus).",
    )
    runtime_client_cert: Path | None = Field(
        None, description="Client certificate (PEM) for an HTTPS runtime_url."
    )
    runtime_client_key: Path | None = Field(None, description="Key (PEM) of runtime_client_cert.")
    runtime_server_cert: Path | None = Field(
        None,
        description="The daemon's certificate (PEM), pinned for an HTTPS runtime_url. "
        "Empty: the system CA store is used.",
    )
    runtime_timeout: float = Field(
        30.0, gt=0, description="Seconds to wait for one request to the LXD/Incus daemon to answer."
    )
    operation_timeout: float = Field(
        300.0, gt=0, description="Seconds to wait for a background operation (create, start, publish) to end."
    )
    runtime_project: str = Field("default", description="The LXD/Incus project labgpu's containers live in.")
    storage_pool: str = Field(
        "default", description="Storage pool for containers; `host init` creates it when missing."
    )
    storage_driver: Literal["auto", "btrfs", "zfs", "dir"] = Field(
        "auto",
        description="Driver for a pool that `host init` creates: auto picks btrfs, then zfs, then dir, "
        "as the host supports them.",
    )
    profile_name: str = Field("labgpu", description="Name of the LXD/Incus profile labgpu manages.")
    default_template: str = Field(
        "labgpu-minimal", description="Image alias new containers are created from when none is given."
    )
    default_gpus: str = Field(
        "all",
        description="GPUs a new member's container gets unless told otherwise: all (shared by everyone, the "
        "usual lab setup), none, or indexes such as 0,1. On a host without GPUs, all attaches nothing; on a "
        "host in assigned or booked GPU mode a new member starts with none.",
    )
    agent_host: str = Field(
        "127.0.0.1",
        description="Address `labgpu agent` (GPU inventory and Prometheus metrics) listens on. Any address "
        "but a loopback one needs agent_token.",
    )
    agent_port: int = Field(9410, ge=1, le=65535, description="Port `labgpu agent` listens on.")
    agent_token: SecretStr | None = Field(
        None,
        description="Bearer token the portal and Prometheus send to `labgpu agent` (Authorization: Bearer "
        "TOKEN). Empty: the agent only listens on loopback. At least 32 characters when set.",
    )
    ssh_ready_timeout: float = Field(
        120.0, gt=0, description="Seconds `member add` waits for the new container's sshd to answer."
    )
    provision_workers: int = Field(
        4,
        ge=1,
        le=32,
        description="How many approved applications the portal provisions at the same time (each creates "
        "a container and waits for its sshd; 50 approvals at once take about 50/N provisioning times).",
    )
    home_base: Path = Field(
        Path("/srv/labgpu/home"), description="Host folder holding each member's home folder."
    )
    home_archive: Path = Field(
        Path("/srv/labgpu/archive"),
        description="Where a removed member's home folder is moved (homes are never deleted without --purge).",
    )
    container_home: str = Field(
        "/home/ubuntu/{name}",
        description="Where the home is mounted inside the container; {name} is the member.",
    )
    container_user: str = Field(
        "ubuntu", pattern=r"^[a-z_][a-z0-9_-]{0,31}$", description="The login user inside containers."
    )
    container_sudo_nopasswd: bool = Field(
        True,
        description="The container's user runs sudo without a password. The container is the member's own "
        "and unprivileged; a key-only member never needs the admin's initial password. false: sudo asks "
        "for the user's password.",
    )
    snapshots_keep: int = Field(
        5,
        ge=0,
        description="How many automatic snapshots (the ones `member snapshot` names itself) are kept per "
        "member; after a new one, the oldest beyond this are deleted. Named snapshots are never deleted "
        "automatically. 0: never delete snapshots automatically.",
    )
    uid_base: int = Field(
        70000,
        ge=1000,
        description="First host uid/gid of the range reserved for members' homes (one uid per member). "
        "It must lie OUTSIDE the daemon's own subuid range for containers (often root:100000:...), "
        "between the host's normal users (below 60000) and that range.",
    )
    uid_count: int = Field(10000, ge=1, description="Size of the member uid range starting at uid_base.")
    port_range_start: int = Field(22000, ge=1024, le=65535, description="First host port for port maps.")
    port_range_end: int = Field(22999, ge=1024, le=65535, description="Last host port for port maps.")
    listen_address: str = Field(
        "0.0.0.0",  # noqa: S104 - members connect from the campus network by design
        description="Host address the proxy devices listen on.",
    )
    public_address: str | None = Field(
        None, description="Address members are told to connect to. Empty: the host's name."
    )
    host_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds to wait for each host when labgpu asks all hosts at once (`host list`, "
        "`container list`, placing a new container); a host that has not answered by then is shown as "
        "unreachable and the others are not held up.",
    )
    homes_shared: bool = Field(
        False,
        description="Members' homes are on storage that every host mounts at home_base (NFS, CephFS): a "
        "move between hosts copies nothing. Off: each host keeps the homes of its own containers on its own "
        "disk; labgpu creates them on other hosts and copies them on a move with rsync over SSH "
        "(host_ssh_user, host_ssh_command).",
    )
    host_ssh_user: str = Field(
        "root",
        description="User labgpu logs in as, with a key and no password, to create and copy members' homes "
        "on other hosts (only when homes_shared is off).",
    )
    host_ssh_command: str = Field(
        "ssh -o BatchMode=yes -o ConnectTimeout=10",
        description="The SSH command (and options) for host_ssh_user's logins and for rsync's transport.",
    )
    smtp_host: str | None = Field(
        None,
        description="SMTP server for mail to members and admins. Empty: no mail is sent (and it is logged).",
    )
    smtp_port: int = Field(
        25, ge=1, le=65535, description="SMTP server port (587 for STARTTLS, 465 for TLS)."
    )
    smtp_security: Literal["none", "starttls", "tls"] = Field(
        "none", description="How to secure the SMTP connection: none, starttls or tls."
    )
    smtp_user: str | None = Field(None, description="SMTP login user; empty: no login.")
    smtp_password: SecretStr | None = Field(None, description="SMTP login password.")
    mail_from: str = Field("labgpu@localhost", description="Sender address of labgpu's mail.")
    portal_url: str | None = Field(
        None,
        description="The portal's address as members reach it, used in mail (e.g. https://gpu.lab.edu/).",
    )
    applications_open: bool = Field(
        True,
        description="Whether visitors may apply for an account on the portal (/apply). Off: only admins add "
        "members.",
    )
    apply_max_per_hour: int = Field(
        5,
        ge=1,
        description="Applications one client address may send per hour; more are refused (HTTP 429).",
    )
    apply_max_pending: int = Field(
        200,
        ge=1,
        description="Applications that may wait for an admin at once; past it, new ones are refused (HTTP 429).",
    )
    web_host: str = Field("127.0.0.1", description="Address `labgpu serve` listens on.")
    web_port: int = Field(8000, ge=1, le=65535, description="Port `labgpu serve` listens on.")
    secure_cookies: bool = Field(
        False,
        description="Always mark the portal's cookies Secure (sent over HTTPS only). They are Secure anyway "
        "when the request came over HTTPS; set this when a TLS proxy in front does not say so "
        "(X-Forwarded-Proto).",
    )
    trusted_proxies: str = Field(
        "127.0.0.1,::1",
        description="Comma-separated addresses of reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto headers are believed (for the client address in the audit log and throttling, "
        "and for https). Empty: trust none; * trusts everyone (only behind a proxy that overwrites them).",
    )
    # The portal's TLS (labgpu.system.tls; docs/admin/portal.md) ----------------------------------------
    web_tls: Literal["auto", "on", "off", "proxy"] = Field(
        "auto",
        description="HTTPS for `labgpu serve`: auto (plain HTTP on a loopback web_host, HTTPS on any other "
        "address with web_tls_cert or a self-signed certificate generated into state_dir/tls), on (HTTPS "
        "everywhere), proxy (plain HTTP on any address: a reverse proxy in front terminates TLS; cookies "
        "always Secure), off (plain HTTP, refused on an address other than loopback).",
    )
    web_tls_cert: Path | None = Field(
        None,
        description="The portal's certificate chain (PEM), e.g. from the campus CA or Let's Encrypt. "
        "Empty: a self-signed one is generated when HTTPS is needed (its SHA-256 fingerprint is shown by "
        "setup, serve and doctor).",
    )
    web_tls_key: Path | None = Field(None, description="The private key (PEM) of web_tls_cert.")
    session_idle_minutes: int = Field(
        120,
        ge=1,
        description="A portal login ends after this many minutes without a request (the idle timeout).",
    )
    session_max_hours: int = Field(
        24,
        ge=1,
        description="A portal login ends this many hours after it began, however active (the absolute timeout).",
    )
    # Two-factor log-in (TOTP) -------------------------------------------------------------------------
    require_totp_for_admins: bool = Field(
        False,
        description="Admins must log in to the portal with a second factor (a TOTP code from an "
        "authenticator app). An admin without one is sent to set it up right after the password, before any "
        "admin page; API tokens are not affected. Off by default so that an upgrade does not change how "
        "existing admins log in: set up your own first (My account -> Two-factor log-in), then turn it on.",
    )
    login_throttle_minutes: int = Field(
        15, ge=1, description="Window in which failed logins are counted for throttling."
    )
    login_max_failures_per_account: int = Field(
        5,
        ge=1,
        description="Failed logins for one account within the window after which its logins are refused "
        "(HTTP 429) until the window passes. A successful login clears that account's count.",
    )
    login_max_failures_per_address: int = Field(
        20,
        ge=1,
        description="Failed logins from one client address within the window (any accounts) after which "
        "logins from it are refused (HTTP 429). Failures of an account that then logged in from there "
        "are forgiven; others are not.",
    )
    gpu_passthrough: Literal["auto", "cdi", "nvidia-runtime", "none"] = Field(
        "auto",
        description="How the NVIDIA driver's user-space (libraries, nvidia-smi) reaches containers given a GPU "
        "by labgpu: cdi (the gpu device names a CDI id, nvidia.com/gpu=N; needs the runtime's gpu_cdi API "
        "extension and `nvidia-ctk cdi generate`), nvidia-runtime (nvidia.runtime=true; needs "
        "nvidia-container-cli on the host), none (device nodes only). auto: cdi when the runtime supports "
        "it, else nvidia-runtime when nvidia-container-cli is installed, else none.",
    )
    booking_slot_minutes: int = Field(
        15,
        description="Bookings hold whole slots of this many minutes (5, 10, 15, 20, 30 or 60): a start is "
        "rounded down and an end up to a slot boundary. Change it only when no booking is in the future.",
    )
    booking_max_gpus: int = Field(0, ge=0, description="Most GPUs in one booking. 0: no limit.")
    booking_max_gpus_per_member: int = Field(
        0, ge=0, description="Most GPUs one member may hold through bookings at the same moment. 0: no limit."
    )
    booking_max_gpu_hours_per_week: float = Field(
        0,
        ge=0,
        description="Most GPU-hours (GPUs x hours) a member may book within ANY 7 consecutive days (a rolling "
        "week, counting bookings that ran, run or will run). 0: no limit.",
    )
    booking_advance_days: int = Field(
        14, ge=0, description="How many days ahead a booking may start. 0: no limit."
    )
    booking_min_minutes: int = Field(30, ge=1, description="Shortest booking, in minutes.")
    booking_max_hours: float = Field(
        168, ge=0, description="Longest booking, in hours (extensions included). 0: no limit."
    )
    booking_approval: bool = Field(
        False,
        description="Bookings wait for an admin's approval (`labgpu gpu approve ID`). A waiting booking "
        "already holds its GPUs, so no two overlapping requests can both be approved.",
    )
    gpu_idle_threshold: float = Field(
        5.0,
        gt=0,
        le=100,
        description="A booked or assigned GPU whose utilization stays below this percentage for "
        "gpu_idle_minutes is idle (memory held does not count as use).",
    )
    gpu_idle_minutes: int = Field(
        60, ge=1, description="How long a booked or assigned GPU must be seen idle before labgpu acts."
    )
    gpu_idle_action: Literal["notify", "release"] = Field(
        "notify",
        description="What happens to an idle GPU: notify (mail the member once per idle spell) or release "
        "(mail the member and end the booking early, detaching its GPUs; assigned GPUs are only notified).",
    )
    gpu_sample_seconds: int = Field(
        60,
        ge=10,
        description="How often the job runner samples GPU utilization for idle detection and the portal.",
    )
    gpu_samples_keep_days: int = Field(
        14, ge=1, description="GPU utilization samples older than this many days are deleted."
    )
    reconcile_interval_minutes: int = Field(
        10, ge=1, description="How often the job runner repairs drift between the store and the daemon."
    )
    jobs_in_serve: bool = Field(
        True,
        description="Run the job runner (booking starts and ends, idle checks, reconcile) inside "
        "`labgpu serve`. Off: run `labgpu jobs run-once` from cron every minute instead.",
    )
    gateway_group: str = Field(
        "labgpu-members",
        pattern=r"^[a-z_][a-z0-9_-]{0,31}$",
        description="Host group of the members' gateway accounts (`labgpu host gateway`). sshd's Match block "
        "and the sudoers rule name it; put nobody else in it.",
    )
    gateway_login_command: Path = Field(
        Path("/usr/local/bin/labgpu-login"),
        description="Where `host gateway enable` installs labgpu-login, the program sshd runs for every "
        "gateway login (ForceCommand and the accounts' shell).",
    )
    gateway_helper: Path = Field(
        Path("/usr/local/lib/labgpu/gateway-exec"),
        description="Where `host gateway enable` installs the privileged helper that labgpu-login runs "
        "through sudo; the only command the sudoers rule allows members.",
    )
    gateway_sshd_config: Path = Field(
        Path("/etc/ssh/sshd_config.d/labgpu-gateway.conf"),
        description="The sshd_config drop-in `host gateway enable` writes (Match Group gateway_group, "
        "ForceCommand, no forwarding). The main sshd_config must Include it (Debian and Ubuntu do).",
    )
    gateway_sudoers: Path = Field(
        Path("/etc/sudoers.d/labgpu-gateway"),
        description="The sudoers drop-in `host gateway enable` writes (checked with visudo first).",
    )
    gateway_dir: Path = Field(
        Path("/etc/labgpu/gateway"),
        description="Root-owned folder with the gateway's member map (map.json, root only), the members' "
        "authorized keys (keys/NAME, read-only) and the accounts' empty home.",
    )
    gateway_password_login: bool = Field(
        False,
        description="Let gateway accounts log in with a password (a random one, shown once by `host gateway "
        "add-user`, to change at first login). Off: SSH keys only (recommended).",
    )
    gateway_python: Path = Field(
        Path("/usr/bin/python3"),
        description="Interpreter of the installed labgpu-login and gateway helper (run with -I -S: no "
        "environment, no site-packages); every member must be able to execute it.",
    )
    backup_dir: Path = Field(
        Path("/var/backups/labgpu"),
        description="Where `labgpu backup create` writes backups (one folder each) unless --dest is given.",
    )
    backup_keep: int = Field(
        7,
        ge=0,
        description="How many backups `backup create` keeps in its folder; older ones are deleted after a "
        "new one succeeded. 0: keep every backup.",
    )
    # Notifications (services/notify) ------------------------------------------------------------------
    notify_urls: list[SecretStr] = Field(
        [],
        description="The lab's notification channels, for the admins: Apprise URLs such as "
        "wecombot://KEY, dingtalk://TOKEN/, feishu://TOKEN, mailtos://USER:PASS@HOST?to=ADDR or "
        "json://HOST/PATH. Prefix one with event kinds to send it only those: "
        "'application,limit-reached=wecombot://KEY'. Secret: shown masked. Mail to the admins' own "
        "addresses needs only smtp_host.",
    )
    notify_member_schemes: list[str] = Field(
        ["wecombot", "dingtalk", "feishu", "lark", "slack", "tgram", "discord", "ntfys", "bark", "barks"],
        description="Apprise URL schemes members may use for their own channels. Generic webhooks "
        "(json, jsons, form, forms) let a member make the portal post to any address it can reach: "
        "add them only where that is acceptable.",
    )
    notify_mail_kinds: list[str] = Field(
        [
            "application", "approval", "booking-start", "booking-end", "booking-reminder", "idle-gpu",
            "limit-reached", "gpu-free", "weekly-report", "container", "test",
        ],
        description="Event kinds sent by mail to members' and admins' account addresses when smtp_host "
        "is set (mail is the default channel). Members add other channels on the portal.",
    )  # fmt: skip
    notify_max_attempts: int = Field(
        12,
        ge=1,
        description="Attempts to deliver one notification to one channel before it is given up; the wait "
        "between attempts doubles from 1 minute up to 1 hour.",
    )
    notify_booking_reminder_minutes: int = Field(
        15, ge=0, description="Remind a member this many minutes before their booking starts. 0: no reminder."
    )
    jobs_tick_seconds: float = Field(
        15.0,
        ge=0.5,
        le=300,
        description="How often the job runner inside `labgpu serve` looks for due jobs.",
    )
    # GPU usage history and fair use (services/gpus/_history.py, _fair_use.py) ---------------------
    usage_samples_keep_days: int = Field(
        14,
        ge=1,
        description="Raw GPU usage samples (one per member and GPU at every gpu_sample_seconds) older than "
        "this many days are deleted, once rolled up into hours.",
    )
    usage_hourly_keep_days: int = Field(
        400, ge=1, description="Hourly GPU usage rollups older than this many days are deleted."
    )
    usage_daily_keep_days: int = Field(
        0, ge=0, description="Daily GPU usage rollups older than this many days are deleted. 0: keep them."
    )
    fair_use_max_gpus: int = Field(
        0,
        ge=0,
        description="Shared mode: most GPUs a member may use at once (processes on them). 0: no limit. "
        "`labgpu gpu limits MEMBER` sets one member's own.",
    )
    fair_use_max_gpu_hours_per_week: float = Field(
        0,
        ge=0,
        description="Shared mode: most GPU-hours a member may use in any 7 days. 0: no limit.",
    )
    fair_use_booked: bool = Field(
        True,
        description="Booked mode: a member's process on a GPU they have not booked is a fair-use "
        "violation (treated as fair_use_* says).",
    )
    fair_use_notify_member: bool = Field(
        True, description="Tell a member when they break a fair-use limit (once per spell)."
    )
    fair_use_notify_admins: bool = Field(
        True, description="Tell the admins when a member breaks a fair-use limit (once per spell)."
    )
    fair_use_stop: bool = Field(
        False,
        description="Stop (SIGTERM) the processes that break a fair-use limit once it has lasted "
        "fair_use_grace_minutes. Off: labgpu never stops anything.",
    )
    fair_use_grace_minutes: int = Field(
        30, ge=0, description="How long a fair-use violation may last before fair_use_stop acts."
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.port_range_end < self.port_range_start:
            raise ValueError("port_range_end must not be below port_range_start")
        if self.booking_slot_minutes not in (5, 10, 15, 20, 30, 60):
            raise ValueError("booking_slot_minutes must be 5, 10, 15, 20, 30 or 60 (a divisor of an hour)")
        if self.secret_key is not None and not self.development:
            value = self.secret_key.get_secret_value()
            if value.lower() in WEAK_SECRETS or len(value) < 32:
                raise ValueError(
                    "secret_key is a default or too short (under 32 characters). Remove it to let labgpu "
                    "generate one in state_dir, or set a random one: "
                    "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
                )
        if self.agent_token is not None and not self.development:
            value = self.agent_token.get_secret_value()
            if value.lower() in WEAK_SECRETS or len(value) < 32:
                raise ValueError(
                    "agent_token is a default or too short (under 32 characters); set a random one: "
                    "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
                )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls))

    # Derived values --------------------------------------------------------

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'labgpu.db'}"

    def session_secret(self) -> str:
        """The secret key, generating and storing one in state_dir on first use."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        path = self.state_dir / "secret_key"
        if path.exists():
            return path.read_text().strip()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        return key


def resolve_config_path(config: Path | None) -> Path | None:
    """The TOML file to read: ``--config``, ``$LABGPU_CONFIG``, or the default when present."""
    if config is not None:
        return config
    env = os.environ.get("LABGPU_CONFIG")
    if env:
        return Path(env)
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except PermissionError:
        raise ConfigError(f"config file {path} cannot be read (permission denied)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    # Allow an optional [labgpu] table as well as top-level keys.
    if set(data) == {"labgpu"} and isinstance(data["labgpu"], dict):
        data = data["labgpu"]
    return data


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from the file, the environment and ``overrides``. Raises ConfigError with a
    message naming the setting and how to fix it."""
    path = resolve_config_path(config)
    values = _read_toml(path) if path is not None else {}
    token = _file_values.set(values)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        where = f" (config file {path})" if path else ""
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown setting"
            problems.append(f"{loc}: {msg}" if loc else msg)
        raise ConfigError("invalid settings" + where + ": " + "; ".join(problems)) from None
    finally:
        _file_values.reset(token)
