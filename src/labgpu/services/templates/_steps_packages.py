"""Build steps for a Python venv from wheels and for Node packages, both fetched on the host so the builder needs
no network (template keys ``pip`` and ``npm``, issue 16)."""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Mapping

from labgpu.services.templates._spec import TemplateSpec
from labgpu.services.templates._step_types import Action, HostBundle, Push, Run, Step

NODE_WRAPPER = """\
#!/bin/sh
# labgpu template: {program} from {prefix}, run with the Node.js bundled there.
PATH={node_bin}:"$PATH" exec {target} "$@"
"""


def package_steps(spec: TemplateSpec, env: Mapping[str, str], work_dir: str) -> list[Step]:
    """A Python venv from wheels and Node packages, both fetched on the host (no network in the builder)."""
    steps: list[Step] = []
    if spec.pip is not None:
        pip = spec.pip
        wheels = f"{work_dir}/wheels"
        actions: list[Action] = [
            Run(("mkdir", "-p", wheels, posixpath.dirname(pip.venv) or "/")),
            # The spec's own index, else the lab's (pip_index_url, put into the environment by lab_mirrors).
            HostBundle(
                "pip", wheels, tuple(pip.packages), pip.python, pip.index_url or env.get("PIP_INDEX_URL")
            ),
            Run(("python3", "-m", "venv", pip.venv), env),
            Run(
                (
                    f"{pip.venv}/bin/pip",
                    "install",
                    "--no-index",
                    "--no-cache-dir",
                    "--disable-pip-version-check",
                    "--find-links",
                    wheels,
                    "--",
                    *pip.packages,
                ),
                env,
            ),
        ]
        actions += [Run(("ln", "-sf", f"{pip.venv}/bin/{p}", f"/usr/local/bin/{p}")) for p in pip.expose]
        owner = pip.owner or "root"
        if owner != "root":
            actions.append(Run(("chown", "-R", f"{owner}:{owner}", pip.venv)))
        steps.append(
            Step("python", f"Python packages in {pip.venv} ({len(pip.packages)} asked)", tuple(actions))
        )
    if spec.npm is not None:
        npm = spec.npm
        actions = [
            Run(("mkdir", "-p", npm.prefix)),
            HostBundle("npm", npm.prefix, tuple(npm.packages), npm.node, npm.registry),
        ]
        for program in npm.expose:
            text = NODE_WRAPPER.format(
                program=program,
                prefix=npm.prefix,
                node_bin=shlex.quote(f"{npm.prefix}/node/bin"),
                target=shlex.quote(f"{npm.prefix}/lib/bin/{program}"),
            )
            actions.append(Push(f"/usr/local/bin/{program}", text.encode(), mode=0o755))
        steps.append(
            Step("node", f"Node.js {npm.node} and {', '.join(npm.packages)} in {npm.prefix}", tuple(actions))
        )
    return steps
