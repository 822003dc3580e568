from django.contrib.auth import views as auth_views
from django.urls import path
from django.views.generic import RedirectView

from webui.views import agents, pool, sessions, vault

app_name = "webui"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="webui:agent-list"), name="home"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="webui/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("agents/", agents.agent_list, name="agent-list"),
    path("agents/new/", agents.agent_form, name="agent-create"),
    path("agents/<str:agent_id>/edit/", agents.agent_form, name="agent-edit"),
    path("agents/<str:agent_id>/delete/", agents.agent_delete, name="agent-delete"),
    path("agents/<str:agent_id>/sessions/new/", sessions.session_start, name="session-start"),
    path("sessions/", sessions.session_list, name="session-list"),
    path("sessions/rows/", sessions.session_rows, name="session-rows"),
    path("sessions/<str:session_id>/", sessions.session_detail, name="session-detail"),
    path("sessions/<str:session_id>/progress/", sessions.session_progress, name="session-progress"),
    path("sessions/<str:session_id>/stop/", sessions.session_stop, name="session-stop"),
    path("sessions/<str:session_id>/vault/", vault.vault_panel, name="session-vault"),
    path("pool/", pool.pool_page, name="pool"),
]
