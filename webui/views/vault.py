"""The session page's vault panel: credentials (names, stubs, hosts) and the interception log."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from sandboxes.services import session_get
from vault.services import vault_keys, vault_records_for
from webui.views import get_or_404, login_required

LOG_SIZE = 200  # newest records shown


@login_required
def vault_panel(request: HttpRequest, session_id: str) -> HttpResponse:
    session = get_or_404(session_get, session_id, request)
    records = vault_records_for(session, refresh=True)
    total = records.count()
    newest = list(records[max(0, total - LOG_SIZE) :])[::-1]
    context = {"session": session, "keys": vault_keys(session), "records": newest, "total": total}
    return render(request, "webui/_vault_panel.html", context)
