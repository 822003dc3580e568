"""Which sandbox driver (and runner client) the services use.

``settings.LAP_SANDBOX_DRIVER`` names a driver in ``DRIVERS`` or gives a dotted
path. The class is imported on first use, so a bubblewrap install never
imports ``kubernetes``, and it gets plain values from settings, so drivers
never read Django settings themselves. Tests install doubles with
``use_driver(...)``. ``SANDBOX_ENV_NAMES`` tells code that may not import the drivers
(the agents' validation) which env names the drivers set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from sandboxes.drivers import local_jail
from sandboxes.drivers.base import SANDBOX_ENV, SandboxDriver

DRIVERS = {
    "local": "sandboxes.drivers.local.LocalDriver",
    "kubernetes": "sandboxes.drivers.kubernetes.KubernetesDriver",
}
RUNNER_CLIENT = "sandboxes.runner_client.RunnerClient"

# Every name a driver's ``sandbox_env()`` sets, whichever the driver: the local jail's layout
# (PATH, HOME…, with the tools) and the proxy and CA variables, all that Kubernetes sets.
SANDBOX_ENV_NAMES = frozenset(local_jail.sandbox_env(has_tools=True)) | frozenset(SANDBOX_ENV)

RunnerClientFactory = Callable[[str, str], Any]

_loaded: SandboxDriver | None = None
_override: tuple[SandboxDriver, RunnerClientFactory | None] | None = None


def _driver_options(name: str) -> dict[str, Any]:
    if name == "local":
        return {
            "home": settings.LAP_HOME,
            "upstream_ca": settings.LAP_VAULT_UPSTREAM_CA or None,
            "tools": settings.LAP_TOOLS_DIR or None,
        }
    if name == "kubernetes":
        return {
            "namespace": settings.LAP_K8S_NAMESPACE,
            "instance": settings.LAP_INSTANCE,
            "image_registry": settings.LAP_K8S_IMAGE_REGISTRY,
            "image_tag": settings.LAP_K8S_IMAGE_TAG,
            "runtime_class": settings.LAP_K8S_RUNTIME_CLASS,
            "node_selector": settings.LAP_K8S_NODE_SELECTOR,
            "priority_class_active": settings.LAP_K8S_PRIORITY_CLASS_ACTIVE,
            "priority_class_warm": settings.LAP_K8S_PRIORITY_CLASS_WARM,
            "ingress_cidrs": tuple(settings.LAP_K8S_INGRESS_CIDRS),
            "kubeconfig_b64": settings.LAP_K8S_KUBECONFIG_B64,
            "upstream_ca": settings.LAP_VAULT_UPSTREAM_CA or None,
            "unschedulable_grace": float(settings.LAP_K8S_UNSCHEDULABLE_GRACE),
        }
    return {}


def get_driver() -> SandboxDriver:
    """The configured driver (one instance per process)."""
    global _loaded
    if _override is not None:
        return _override[0]
    if _loaded is None:
        name = settings.LAP_SANDBOX_DRIVER
        driver_class = import_string(DRIVERS.get(name, name))
        _loaded = driver_class(**_driver_options(name))
    return _loaded


def runner_client(runner_url: str, token: str) -> Any:
    """A client for the runner at ``runner_url`` (see docs/runner-protocol.md)."""
    if _override is not None and _override[1] is not None:
        return _override[1](runner_url, token)
    return import_string(RUNNER_CLIENT)(runner_url, token)


@contextmanager
def use_driver(
    driver: SandboxDriver, *, runner_client: RunnerClientFactory | None = None
) -> Iterator[SandboxDriver]:
    """Make services use ``driver`` (and ``runner_client``) inside the block; for tests."""
    global _override
    previous, _override = _override, (driver, runner_client)
    try:
        yield driver
    finally:
        _override = previous


def _forget(*, setting: str, **kwargs: Any) -> None:
    global _loaded
    if setting.startswith("LAP_K8S_") or setting in (
        "LAP_SANDBOX_DRIVER",
        "LAP_HOME",
        "LAP_VAULT_UPSTREAM_CA",
        "LAP_INSTANCE",
        "LAP_TOOLS_DIR",
    ):
        _loaded = None


setting_changed.connect(_forget)
