from __future__ import annotations

from sandboxes import messages
from sandboxes.models import SessionMessage


def test_messages_append_with_increasing_seq_and_finish_once(session):
    first = messages.session_message_append(session, role="user", parts=[{"type": "text"}])
    second = messages.session_message_append(session, role="assistant", parts=[])
    assert (first.seq, second.seq) == (0, 1)
    assert messages.session_message_finish(second, status="complete", parts=[{"t": 1}]) is True
    assert messages.session_message_finish(second, status="failed") is False
    second.refresh_from_db()
    assert (second.status, second.parts) == ("complete", [{"t": 1}])
    assert second.completed_at is not None
    assert SessionMessage.objects.filter(session=session).count() == 2
