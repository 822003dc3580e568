"""Container images of the kubelet double, made from this machine instead of pulled.

An ``Image`` is what a container sees besides ``/usr`` and a few ``/etc`` entries of the host:
read-only binds, symlinks and environment defaults (as a Dockerfile's ``ENV``). The LAP images
are built from the same pieces the local driver binds into its jails (``local_jail``):

- ``<registry>/harness-<id>:<tag>``: the runner package and its libraries at ``/opt/lap/lib``
  and ``python3`` on ``PATH`` (the platform's interpreter), the host's tools in ``/usr``;
- ``<registry>/vault:<tag>``: the ``sidecar`` package and the environment's site-packages
  (mitmproxy) with ``python3`` on ``PATH``, and iptables from the host's ``/usr/sbin``.

An image reference the double does not know cannot be pulled (``ErrImagePull``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from agents.harnesses import harness_ids
from sandboxes.drivers import local_jail

BIN = "/opt/lap/bin"


@dataclass(frozen=True)
class Image:
    binds: tuple[tuple[str, str], ...] = ()
    symlinks: tuple[tuple[str, str], ...] = ()  # (target, link)
    env: dict[str, str] = field(default_factory=dict)


def lap_images(registry: str = "lap", tag: str = "0.1.0") -> dict[str, Image]:
    runner = local_jail.resolve_runtime(None)
    vault = local_jail.resolve_sidecar_runtime(sys.executable)
    harness = Image(
        binds=runner.binds,
        symlinks=((runner.python, f"{BIN}/python3"),),
        env={"PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": local_jail.JAIL_LIB},
    )
    sidecar_env = local_jail.sidecar_command(vault)[1]
    sidecar = Image(
        binds=vault.binds,
        symlinks=((vault.python, f"{BIN}/python3"),),
        env={"PATH": f"{BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        | sidecar_env,
    )
    images = {f"{registry}/harness-{harness_id}:{tag}": harness for harness_id in harness_ids()}
    images[f"{registry}/vault:{tag}"] = sidecar
    return images
