from django.urls import path

from sandboxes import api

app_name = "sandboxes"

urlpatterns = [
    path("agents/<str:agent_id>/session", api.AgentSessionApi.as_view(), name="agent-session"),
    path("sessions", api.SessionCollectionApi.as_view(), name="session-collection"),
    path("sessions/<str:session_id>", api.SessionItemApi.as_view(), name="session-item"),
    path("sessions/<str:session_id>/exec", api.SessionExecApi.as_view(), name="session-exec"),
    path(
        "sessions/<str:session_id>/recording",
        api.SessionRecordingApi.as_view(),
        name="session-recording",
    ),
]
