from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django_q.models import Schedule

from agents.models import Agent

pytestmark = pytest.mark.django_db


def run(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_lap_bootstrap_is_idempotent(tmp_path, settings):
    settings.LAP_HOME = tmp_path
    first, _ = run("lap_bootstrap")
    second, _ = run("lap_bootstrap")
    assert "admin user:  admin / " in first
    assert settings.LAP_MASTER_KEY in first
    assert "shell-agent" in first
    assert settings.LAP_MASTER_KEY not in second
    assert "admin /" not in second
    assert "already bootstrapped" in second and "keys.json" in second
    assert Agent.objects.get(name="shell-agent").harness_id == "shell"
    assert Schedule.objects.filter(func="sandboxes.tasks.sandbox_reconcile").count() == 1
    password = first.split("admin user:  admin / ")[1].split()[0]
    from django.contrib.auth import authenticate

    assert authenticate(username="admin", password=password) is not None
