"""Building a template from a spec: base, builder container, steps, publish.

The outer method :meth:`Builder.run` is fixed: build or pull the base, create a temporary builder
container from it (``user.labgpu.builder=true``, no profile, only a root disk and, when the host has
a container network, a NIC), run the spec's steps in it (made by
:func:`labgpu.services.templates._steps.plan_steps`), clean, stop, publish the image as ``NAME`` and
``NAME/VERSION``, delete the builder. Each command runs through ``instances.exec`` with its output
going to a log in the builder's /run, read while it runs (``--verbose``) and at its end.

A failed step raises TemplateBuildError naming the step, its command and the tail of its output; the
builder and any half-published image are deleted (the builder is kept with ``keep_builder``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import shlex
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from labgpu.domain import mirrors
from labgpu.errors import BadInput, LabgpuError
from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.errors import RuntimeConflict, RuntimeNotFound
from labgpu.runtime.images import RemoteImage, split_image_fingerprint
from labgpu.services.templates._build_report import BuildReporter, BuildResult, TemplateBuildError
from labgpu.services.templates._catalog import (
    PROP_BUILT_AT,
    PROP_SPEC_HASH,
    PROP_TEMPLATE,
    PROP_VERSION,
    next_version,
    template_versions,
)
from labgpu.services.templates._spec import TemplateSpec
from labgpu.services.templates._spec_loading import LoadedSpec
from labgpu.services.templates._steps import (
    BASE_LABEL,
    BUILDER_LABEL,
    BUILDER_TEMPLATE_LABEL,
    CLEAN_SCRIPT,
    CLEAN_SCRIPT_TEXT,
    NET_SCRIPT,
    NET_SCRIPT_TEXT,
    RUNNER,
    RUNNER_TEXT,
    TAIL_LINES,
    USER_SCRIPT,
    USER_SCRIPT_TEXT,
    WORK_DIR,
    Download,
    OsRelease,
    Push,
    Run,
    Step,
    guess_os_release,
    plan_steps,
)
from labgpu.settings import Settings
from labgpu.system import base_image

if TYPE_CHECKING:
    from labgpu.services.context import Services


def base_recipe(spec: TemplateSpec, *, architecture: str | None = None) -> base_image.ImageRecipe:
    """The cached-image recipe of a spec's debootstrap base: its suite, mirror, variant, the default
    packages (sshd, sudo, systemd, ...) plus ``include``, and the spec's user. Raises ValueError for a
    spec whose base is a server image, BadInput for values debootstrap cannot take."""
    deb = spec.base.debootstrap
    if deb is None:
        raise ValueError("the spec's base is not debootstrap")
    return base_image.debootstrap_recipe(
        suite=deb.suite,
        mirror=deb.mirror,
        include=[*base_image.DEFAULT_INCLUDE, *deb.include],
        user=spec.user.name,
        uid=spec.user.uid,
        variant=deb.variant,
        architecture=architecture,
    )


def lab_mirrors(loaded: LoadedSpec, settings: Settings) -> LoadedSpec:
    """The spec with the lab's package mirrors where it names none of its own (settings apt_mirror,
    pip_index_url): debootstrap's mirror when it is Debian's default, apt.mirror, and PIP_INDEX_URL in the
    build's environment. The spec's hash changes with them (another mirror, another cache entry)."""
    want = mirrors.Mirrors.from_settings(settings.apt_mirror, settings.pip_index_url, settings.conda_mirror)
    spec = loaded.spec
    update: dict[str, object] = {}
    if want.apt:
        family = guess_os_release(spec).family
        deb = spec.base.debootstrap
        if deb is not None and deb.mirror.rstrip("/") == base_image.DEFAULT_MIRROR:
            update["base"] = spec.base.model_copy(
                update={"debootstrap": deb.model_copy(update={"mirror": f"{want.apt}/debian"})}
            )
        if spec.apt.mirror is None and family in ("debian", "ubuntu"):
            security = f"{want.apt}/debian-security" if family == "debian" else None
            update["apt"] = spec.apt.model_copy(
                update={
                    "mirror": f"{want.apt}/{family}",
                    "security_mirror": spec.apt.security_mirror or security,
                }
            )
    if want.pip and "PIP_INDEX_URL" not in spec.environment:
        update["environment"] = {**spec.environment, "PIP_INDEX_URL": want.pip}
    if not update:
        return loaded
    return dataclasses.replace(loaded, spec=spec.model_copy(update=update))


def builder_network(
    settings_network_mode: str, settings_network_name: str, override: str | None
) -> str | None:
    """The network the builder's NIC joins, or None for no NIC: ``override`` ("none" for no NIC), else
    the host's container network when network_mode gives one."""
    if override is not None:
        return None if override == "none" else override
    return settings_network_name if settings_network_mode in ("bridge", "macvlan") else None


def check_network(steps: Sequence[Step], network: str | None) -> None:
    """Refuse a plan that needs the network in a builder without one (before anything is built)."""
    if network is not None:
        return
    needy = [s.name for s in steps if s.needs_network]
    if needy:
        raise BadInput(
            f"step{'s' if len(needy) > 1 else ''} {', '.join(needy)} install packages with apt inside the "
            "builder, which needs a network, but the builder gets no NIC (network_mode is none)",
            hint="set network_mode=bridge and run `labgpu host init`, or give --network NAME; packages can "
            "also come from the host with base.debootstrap.include",
        )


def build_template(
    svc: Services,
    loaded: LoadedSpec,
    *,
    reporter: BuildReporter | None = None,
    keep_builder: bool = False,
    network: str | None = None,
    step_timeout: float = 3600.0,
    cache_dir: Path | None = None,
) -> BuildResult:
    """Build ``loaded`` into a published template (aliases NAME and NAME/VERSION) and record it in the
    audit log.

    ``network``: the network for the builder's NIC ("none": no NIC; default from the settings).
    Waits for the whole build: the base (about a minute for a debootstrap base not yet cached), each
    step (at most ``step_timeout`` seconds), the publish. Raises BadInput before building anything
    when a step needs a network the builder will not have, TemplateBuildError when a step fails
    (leaving no builder unless ``keep_builder``, and no image), ImageBuildError when the base cannot
    be built, runtime errors."""
    settings = svc.settings
    loaded = lab_mirrors(loaded, settings)
    net = builder_network(settings.network_mode, settings.network_name, network)
    builder = Builder(
        svc.runtime,
        loaded,
        reporter=reporter or BuildReporter(),
        pool=settings.storage_pool,
        network=net,
        keep_builder=keep_builder,
        step_timeout=step_timeout,
        cache_dir=cache_dir,
        container_user=settings.container_user,
    )
    result = builder.run()
    with svc.session() as session:
        svc.audit(
            session,
            "template.build",
            f"{result.name}/{result.version}",
            fingerprint=result.fingerprint,
            spec=loaded.source,
            spec_hash=result.spec_hash,
        )
    return result


class Builder:
    """One build. :meth:`run` is the fixed outer method; the phases are methods a subclass (a test
    fake) may override."""

    def __init__(
        self,
        runtime: RuntimeClient,
        loaded: LoadedSpec,
        *,
        reporter: BuildReporter,
        pool: str,
        network: str | None,
        keep_builder: bool = False,
        step_timeout: float = 3600.0,
        cache_dir: Path | None = None,
        container_user: str = base_image.DEFAULT_USER,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.runtime = runtime
        self.loaded = loaded
        self.spec = loaded.spec
        self.reporter = reporter
        self.pool = pool
        self.network = network
        self.keep_builder = keep_builder
        self.step_timeout = step_timeout
        self.cache_dir = cache_dir
        self.container_user = container_user
        self.now = now or (lambda: datetime.now(UTC))
        self.name = (
            f"labgpu-build-{self.spec.name}-{hashlib.sha256(str(time.time_ns()).encode()).hexdigest()[:6]}"
        )
        self._created = False
        self._temp_base: str | None = None
        self._ids: dict[str, tuple[int, int]] = {"root": (0, 0)}
        self._step_no = 0
        self._total = 0
        self._current = "base"

    # The outer method ----------------------------------------------------------------------------------

    def run(self) -> BuildResult:
        started = time.monotonic()
        spec_hash = self.loaded.spec_hash()
        steps = plan_steps(
            self.loaded, os_release=guess_os_release(self.spec), network=self.network is not None
        )
        check_network(steps, self.network)
        if self.spec.user.name != self.container_user:
            self.reporter.note(
                f"the template's user is {self.spec.user.name!r} but the container_user setting is "
                f"{self.container_user!r}: members' containers expect {self.container_user!r}"
            )
        self._total = len(steps) + 3
        self.reporter.start(self.spec.name, self._total)
        ok = False
        try:
            source = self._phase("base", self._base_title(), self.prepare_base)
            os_release = self._phase(
                "builder", f"builder container {self.name}", lambda: self.start_builder(source)
            )
            steps = plan_steps(self.loaded, os_release=os_release, network=self.network is not None)
            for step in steps:
                self._phase(step.name, step.title, functools.partial(self.run_step, step))
            fingerprint, version, built_at = self._phase(
                "publish", f"publish {self.spec.name}", lambda: self.publish(spec_hash, os_release)
            )
            ok = True
        finally:
            self._cleanup(ok)
        image = self.runtime.images.get(fingerprint)
        return BuildResult(
            name=self.spec.name,
            version=version,
            fingerprint=fingerprint,
            aliases=(self.spec.name, f"{self.spec.name}/{version}"),
            spec_hash=spec_hash,
            built_at=built_at,
            size=image.size,
            seconds=time.monotonic() - started,
            builder=self.name,
            builder_kept=self.keep_builder,
        )

    def _phase(self, name: str, title: str, fn: Callable[[], Any]) -> Any:
        self._step_no += 1
        self._current = name
        self.reporter.step(self._step_no, self._total, name, title)
        began = time.monotonic()
        result = fn()
        self.reporter.step_done(self._step_no, self._total, name, time.monotonic() - began)
        return result

    def _base_title(self) -> str:
        deb = self.spec.base.debootstrap
        if deb is not None:
            return f"base: debootstrap {deb.suite} ({deb.variant}) from {deb.mirror}"
        return f"base: {self.spec.base.image} from {self.spec.base.remote_server}"

    def _cleanup(self, ok: bool) -> None:
        """Delete the builder (unless kept) and the temporary base. A failure here is reported, never
        raised: it must not hide why the build failed."""
        if self._created and self.keep_builder:
            tool = "incus" if self.runtime.server().kind == "incus" else "lxc"
            start = "" if not ok else f"`{tool} start {self.name}`, then "
            self.reporter.note(
                f"kept the builder {self.name}: {start}`{tool} exec {self.name} -- bash` to look inside, "
                f"`{tool} delete --force {self.name}` when done"
            )
        elif self._created:
            try:
                self._delete_builder()
            except LabgpuError as exc:
                self.reporter.note(f"could not delete the builder {self.name}: {exc}; delete it by hand")
        if self._temp_base is not None:
            try:
                self.runtime.images.delete(self._temp_base)
            except RuntimeNotFound:
                pass
            except LabgpuError as exc:
                self.reporter.note(f"could not delete the temporary base image {self._temp_base[:12]}: {exc}")

    def _delete_builder(self) -> None:
        try:
            inst = self.runtime.instances.get(self.name)
        except RuntimeNotFound:
            return
        if inst.status != "Stopped":
            self.runtime.instances.stop(self.name, force=True)
        self.runtime.instances.delete(self.name)

    # Phases ---------------------------------------------------------------------------------------------

    def prepare_base(self) -> str | RemoteImage:
        """The fingerprint of a local base image (debootstrap, imported if the daemon lacks it), or the
        remote image the daemon will pull."""
        deb = self.spec.base.debootstrap
        if deb is None:
            return RemoteImage(server=self.spec.base.remote_server, alias=self.spec.base.remote_alias)
        recipe = base_recipe(self.spec)
        say = self.reporter.output if self.reporter.verbose else None
        built = base_image.build_image(
            recipe, cache_dir=self.cache_dir, progress=(lambda line: say(line + "\n")) if say else None
        )
        fingerprint = split_image_fingerprint(built.meta, built.rootfs)
        if self.runtime.images.find(fingerprint) is None:
            self.runtime.images.import_tarballs(
                built.meta, built.rootfs, properties={BASE_LABEL: "true"}, timeout=self.step_timeout
            )
            self._temp_base = fingerprint
        return fingerprint

    def start_builder(self, source: str | RemoteImage) -> OsRelease:
        """Create and start the builder, wait until it runs commands, put the helper scripts in."""
        devices: dict[str, dict[str, str]] = {"root": {"type": "disk", "path": "/", "pool": self.pool}}
        if self.network is not None:
            devices["eth0"] = {"type": "nic", "network": self.network, "name": "eth0"}
        self._created = True  # from here on, a failure deletes whatever got made
        self.runtime.instances.create(
            self.name,
            fingerprint=source if isinstance(source, str) else None,
            remote_image=source if isinstance(source, RemoteImage) else None,
            config={BUILDER_LABEL: "true", BUILDER_TEMPLATE_LABEL: self.spec.name},
            devices=devices,
            profiles=[],
            description=f"labgpu: builds template {self.spec.name}; deleted when the build ends",
            start=True,
            timeout=self.step_timeout,
        )
        self._wait_for_exec()
        # Booted first: systemd mounts a fresh tmpfs on /run (WORK_DIR's parent) early in its boot, which a
        # slow start (a loaded host) lets come after a mkdir made at once, hiding the folder.
        self._wait_for_boot()
        self._exec_checked(["mkdir", "-p", WORK_DIR], what="prepare the builder")
        for path, text in (
            (RUNNER, RUNNER_TEXT),
            (NET_SCRIPT, NET_SCRIPT_TEXT),
            (USER_SCRIPT, USER_SCRIPT_TEXT),
            (CLEAN_SCRIPT, CLEAN_SCRIPT_TEXT),
        ):
            self.runtime.instances.push_file(self.name, path, text.encode(), mode=0o755)
        return OsRelease.parse(self._exec_checked(["cat", "/etc/os-release"], what="read /etc/os-release"))

    def _wait_for_boot(self, timeout: float = 120) -> None:
        """Wait until the base's init has finished booting, so that first-boot units (host keys, machine
        id) have run before the steps and the clean step. Right after the start, systemd may not even
        answer yet ("offline"): keep asking. A base without systemd is not waited for."""
        deadline = time.monotonic() + timeout
        offline_since = time.monotonic()
        while time.monotonic() < deadline:
            try:
                result = self.runtime.instances.exec(
                    self.name, ["systemctl", "is-system-running"], timeout=30
                )
            except LabgpuError as exc:
                if "not found" in str(exc).lower():
                    return  # no systemctl: nothing to wait for
                result = None
            state = result.stdout.strip() if result is not None else ""
            if state in ("running", "degraded"):
                return
            if state != "offline":
                offline_since = time.monotonic()
            elif time.monotonic() - offline_since > 20:
                return  # init is not systemd
            time.sleep(0.5)
        self.reporter.note(f"the builder {self.name} did not finish booting within {timeout:.0f}s; going on")

    def _wait_for_exec(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.runtime.instances.exec(self.name, ["true"], timeout=30).ok:
                    return
            except LabgpuError:
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise TemplateBuildError(f"the builder {self.name} does not run commands", step="builder")
            time.sleep(0.5)

    def _exec_checked(self, argv: list[str], *, what: str) -> str:
        result = self.runtime.instances.exec(self.name, argv, timeout=120)
        if not result.ok:
            raise TemplateBuildError(
                f"{what} failed in the builder (exit {result.exit_code}): {shlex.join(argv)}",
                step=self._current,
                command=argv,
                output_tail=_tail(result.stdout + result.stderr),
            )
        return result.stdout

    def run_step(self, step: Step) -> None:
        for number, action in enumerate(step.actions, 1):
            if isinstance(action, Run):
                self._run(step, number, action)
            elif isinstance(action, Push):
                self._push(action)
            else:
                self._download(step, action)

    def _run(self, step: Step, number: int, action: Run) -> None:
        log = f"{WORK_DIR}/log-{self._step_no}-{number}"
        argv = ["/bin/sh", RUNNER, log, *action.argv]
        outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                outcome["result"] = self.runtime.instances.exec(
                    self.name, argv, environment=dict(action.env), timeout=self.step_timeout
                )
            except BaseException as exc:  # handed to the main thread
                outcome["error"] = exc

        thread = threading.Thread(target=target, name=f"exec {self.name}", daemon=True)
        thread.start()
        shown = 0
        # A second client reads the log while the first one waits for the command (one HTTP client
        # per thread).
        reader = RuntimeClient(
            self.runtime.endpoint, timeout=self.runtime.timeout, project=self.runtime.project
        )
        try:
            while thread.is_alive():
                thread.join(1.0)
                if self.reporter.verbose and thread.is_alive():
                    shown = self._show_log(reader, log, shown)
            output = self._read_log(reader, log)
        finally:
            reader.close()
        if self.reporter.verbose and len(output) > shown:
            self.reporter.output(output[shown:])
        if "error" in outcome:
            error = outcome["error"]
            if isinstance(error, LabgpuError):
                raise TemplateBuildError(
                    f"step {self._step_no}/{self._total} '{step.name}' failed: {action.describe()}: {error}",
                    step=step.name,
                    command=action.argv,
                    output_tail=_tail(output),
                ) from error
            raise error
        result = outcome["result"]
        if not result.ok:
            extra = result.stdout + result.stderr  # only the runner itself writes here
            raise TemplateBuildError(
                f"step {self._step_no}/{self._total} '{step.name}' failed (exit {result.exit_code}): "
                f"{action.describe()}",
                step=step.name,
                command=action.argv,
                output_tail=_tail(output + extra),
                hint=None
                if self.keep_builder
                else "run the build again with --keep-builder to look inside the builder",
            )

    def _read_log(self, reader: RuntimeClient, log: str) -> str:
        try:
            return reader.instances.pull_file(self.name, log).decode("utf-8", errors="replace")
        except RuntimeNotFound:
            return ""

    def _show_log(self, reader: RuntimeClient, log: str, shown: int) -> int:
        text = self._read_log(reader, log)
        if len(text) > shown:
            self.reporter.output(text[shown:])
        return max(shown, len(text))

    def _owner(self, user: str) -> tuple[int, int]:
        if user not in self._ids:
            uid = self._exec_checked(["id", "-u", user], what=f"look up user {user}").strip()
            gid = self._exec_checked(["id", "-g", user], what=f"look up user {user}").strip()
            self._ids[user] = (int(uid), int(gid))
        return self._ids[user]

    def _push(self, action: Push) -> None:
        data = (
            action.data if action.data is not None else (action.source.read_bytes() if action.source else b"")
        )
        uid, gid = self._owner(action.owner)
        self.runtime.instances.push_file(self.name, action.path, data, uid=uid, gid=gid, mode=action.mode)

    def _download(self, step: Step, action: Download) -> None:
        self.reporter.output(f"downloading {action.url} on the host\n") if self.reporter.verbose else None
        digest = hashlib.sha256()
        with tempfile.TemporaryFile() as f:
            try:
                with httpx.stream("GET", action.url, follow_redirects=True, timeout=60) as response:
                    response.raise_for_status()
                    for chunk in response.iter_bytes(1 << 20):
                        digest.update(chunk)
                        f.write(chunk)
            except httpx.HTTPError as exc:
                raise TemplateBuildError(
                    f"step {self._step_no}/{self._total} '{step.name}': cannot download {action.url}: {exc}",
                    step=step.name,
                    hint="check the URL and that this host reaches it, or give a local installer file",
                ) from None
            if action.sha256 and digest.hexdigest() != action.sha256:
                raise TemplateBuildError(
                    f"step {self._step_no}/{self._total} '{step.name}': {action.url} has sha256 "
                    f"{digest.hexdigest()}, not {action.sha256} as the spec says",
                    step=step.name,
                )
            f.seek(0)
            self.runtime.instances.push_file(self.name, action.path, f.read(), mode=0o755)

    def publish(self, spec_hash: str, os_release: OsRelease) -> tuple[str, str, str]:
        """Stop the builder and publish it as NAME/VERSION (a new version) and NAME. Returns the
        fingerprint, version and build time. Deletes the image again if the aliases cannot be set."""
        try:
            self.runtime.instances.stop(self.name, stop_timeout=60, timeout=120)
        except LabgpuError:
            self.runtime.instances.stop(self.name, force=True)
        name = self.spec.name
        built = self.now()
        built_at = built.strftime("%Y-%m-%dT%H:%M:%SZ")
        version = next_version(template_versions(self.runtime.images.all(), name), built.astimezone().date())
        properties = {
            PROP_TEMPLATE: name,
            PROP_VERSION: version,
            PROP_SPEC_HASH: spec_hash,
            PROP_BUILT_AT: built_at,
            "description": self.spec.description or f"labgpu template {name}",
            "os": os_release.id,
            "release": os_release.codename,
        }
        fingerprint = self.runtime.images.publish(self.name, properties=properties, timeout=self.step_timeout)
        try:
            for _attempt in range(10):
                try:
                    self.runtime.images.create_alias(f"{name}/{version}", fingerprint)
                    break
                except RuntimeConflict:  # another build of the same template took this version
                    taken = template_versions(self.runtime.images.all(), name)
                    version = next_version([*taken, version], built.astimezone().date())
                    self.runtime.images.set_properties(fingerprint, {PROP_VERSION: version})
            else:
                raise TemplateBuildError(f"could not find a free version for {name}", step="publish")
            self.runtime.images.set_alias(name, fingerprint)
        except BaseException:
            self.runtime.images.delete(fingerprint)
            raise
        return fingerprint, version, built_at


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])
