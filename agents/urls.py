from django.urls import path

from agents import api

app_name = "agents"

urlpatterns = [
    path("agents", api.AgentCollectionApi.as_view(), name="agent-collection"),
    path("agents/<str:agent_id>", api.AgentItemApi.as_view(), name="agent-item"),
]
