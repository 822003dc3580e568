from django.urls import path

from sandboxes import api, conversation_api

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
    path(
        "sessions/<str:session_id>/message",
        conversation_api.SessionMessageApi.as_view(),
        name="session-message",
    ),
    path(
        "sessions/<str:session_id>/message_stream",
        conversation_api.SessionMessageStreamApi.as_view(),
        name="session-message-stream",
    ),
    path(
        "sessions/<str:session_id>/messages",
        conversation_api.SessionMessagesApi.as_view(),
        name="session-messages",
    ),
    path(
        "sessions/<str:session_id>/events",
        conversation_api.SessionEventsApi.as_view(),
        name="session-events",
    ),
    path(
        "sessions/<str:session_id>/abort",
        conversation_api.SessionAbortApi.as_view(),
        name="session-abort",
    ),
    path(
        "sessions/<str:session_id>/restart",
        conversation_api.SessionRestartApi.as_view(),
        name="session-restart",
    ),
]
