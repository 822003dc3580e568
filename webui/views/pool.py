"""The warm pool: targets and counts per harness, and editing the targets."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from pool import services
from webui.forms import PoolTargetsForm
from webui.views import login_required


@login_required
@require_http_methods(["GET", "POST"])
def pool_page(request: HttpRequest) -> HttpResponse:
    if request.method == "POST" and not request.user.is_staff:
        raise PermissionDenied("only staff set pool targets")
    harnesses = services.pool_status()
    form = PoolTargetsForm(request.POST or None, harnesses=harnesses)
    if request.method == "POST" and form.is_valid():
        for harness, problem in services.pool_target_errors(form.cleaned_data).items():
            form.add_error(harness, problem)
        if form.is_valid():
            services.pool_targets_set(form.cleaned_data)
            messages.success(request, "Pool targets saved; the pool is being topped up.")
            return redirect("webui:pool")
    rows = [(form[harness], counts) for harness, counts in harnesses.items()]
    return render(request, "webui/pool.html", {"rows": rows, "max": settings.LAP_POOL_MAX})
