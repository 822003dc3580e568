"""Sessions: the live list, starting one, its page (terminal or chat), progress and stop."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from agents.services import agent_get
from lapsite.errors import LapError
from sandboxes import services
from sandboxes.models import Session
from sandboxes.recordings import recording_path
from webui.forms import SessionFilterForm
from webui.views import get_or_404, login_required, page_number, pager

PAGE_SIZE = 100
# Bring-up phases in the order a cold start walks them (a warm claim skips some).
PHASES = [phase for phase in Session.Phase if phase != Session.Phase.READY]


def _filtered(request: HttpRequest) -> tuple[SessionFilterForm, list[Session], bool]:
    """The filter form, the page's sessions and whether older ones follow."""
    filters = SessionFilterForm(request.GET)
    filters.is_valid()  # an invalid field is left out of cleaned_data; the others still apply
    query = filters.cleaned_data
    sessions = services.session_list(
        viewer=request.user,
        agent_id=query.get("agent") or None,
        status=query.get("status") or None,
        limit=PAGE_SIZE + 1,  # one more: is there a next page?
        offset=(page_number(request) - 1) * PAGE_SIZE,
    )
    return filters, sessions[:PAGE_SIZE], len(sessions) > PAGE_SIZE


@login_required
def session_list(request: HttpRequest) -> HttpResponse:
    filters, sessions, has_older = _filtered(request)
    context = {
        "filters": filters,
        "sessions": sessions,
        "query": request.GET.urlencode(),
        "pager": pager(request, page_number(request), has_older=has_older),
    }
    return render(request, "webui/session_list.html", context)


@login_required
def session_rows(request: HttpRequest) -> HttpResponse:
    """The list's rows alone: the page polls this to show status changes without a reload."""
    _, sessions, _ = _filtered(request)
    return render(request, "webui/_session_rows.html", {"sessions": sessions})


@login_required
@require_POST
def session_start(request: HttpRequest, agent_id: str) -> HttpResponse:
    agent = get_or_404(agent_get, agent_id, request)
    try:
        session = services.session_create(
            agent=agent, user=request.user, title=request.POST.get("title", "")[:200]
        )
    except LapError as error:
        messages.error(request, f"Could not start a session of {agent.name}: {error.message}")
        return redirect("webui:agent-list")
    return redirect("webui:session-detail", session_id=session.id)


def _phases(session: Session) -> list[tuple[str, str]]:
    """``(phase, done|current|pending)`` for the progress view."""
    current = session.phase if session.phase in PHASES else None
    states, reached = [], current is None and session.status != Session.Status.CREATING
    for phase in reversed(PHASES):
        if phase == current:
            states.append((phase, "current"))
            reached = True
        else:
            states.append((phase, "done" if reached else "pending"))
    return list(reversed(states))


def _session_context(session: Session) -> dict:
    api = reverse("sandboxes:session-item", args=[session.id])
    return {
        "session": session,
        "phases": _phases(session),
        "api": api,
        "tty_path": api + "/tty",
        "recording_url": reverse("sandboxes:session-recording", args=[session.id]),
        # A ready session's runner serves its recording; an ended one has it only if it was
        # kept at stop (one that never came up has none, and the download would fail).
        "has_recording": session.status == Session.Status.READY
        or recording_path(session.id).is_file(),
    }


@login_required
def session_detail(request: HttpRequest, session_id: str) -> HttpResponse:
    session = get_or_404(services.session_get, session_id, request)
    return render(request, "webui/session_detail.html", _session_context(session))


@login_required
def session_progress(request: HttpRequest, session_id: str) -> HttpResponse:
    """The bring-up phases; once the session has left ``creating`` the page reloads itself."""
    session = get_or_404(services.session_get, session_id, request)
    response = render(request, "webui/_session_progress.html", _session_context(session))
    if session.status != Session.Status.CREATING:
        response["HX-Refresh"] = "true"
    return response


@login_required
@require_POST
def session_stop(request: HttpRequest, session_id: str) -> HttpResponse:
    session = get_or_404(services.session_get, session_id, request)
    if services.session_stop(session):
        messages.success(request, "Session stopped; its sandbox is gone, the recording is kept.")
    return redirect("webui:session-detail", session_id=session.id)
