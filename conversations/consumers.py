"""The chat websocket `/ws/chat/` (protocol in docs/chat.md): authenticate, parse a frame,
call a service, relay the conversation group's events and the user's (session ends,
notifications), and keep the user's presence (openspark.core.presence) while open.

Every frame is admitted first: the socket's session must still authenticate its user (a
logout, a password change or a deactivation elsewhere closes the socket with 4401) and the
limiter must admit the frame. The user's group closes the socket without waiting for a frame.

What a socket has already been sent is tracked per reply (`seq`), so a reply can reach it
from two sides at once (the reply log when it joins, the group afterwards) without gaps or
duplicates; see the ordering rule in realtime.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from channels.db import DatabaseSyncToAsync
from channels.generic.websocket import AsyncWebsocketConsumer
from django.utils.translation import gettext as _
from rest_framework import serializers

from accounts.selectors import session_user_get
from openspark.core.errors import ApplicationError
from openspark.core.ids import IdField
from openspark.core.presence import presence_enter, presence_leave, presence_refresh_interval
from openspark.llm import provider_status
from throttling.limiter import LimitDecision
from throttling.services import limiter_check_websocket

from . import realtime
from .models import Message
from .selectors import conversation_get_for_user, message_get, replies_unfinished
from .serializers import conversation_data, message_created_event, reply_final_event
from .services import message_send, reply_stop

logger = logging.getLogger(__name__)


def database_sync_to_async(func):
    """channels' wrapper, but on the shared thread pool: the default (thread-sensitive) runs
    every socket's database work on one thread per process, so a burst of sends queues up."""
    return DatabaseSyncToAsync(func, thread_sensitive=False)


CLOSE_UNAUTHENTICATED = 4401
MAX_FRAME_CHARS = 256 * 1024


class MessageSendFrame(serializers.Serializer):
    conversation_id = IdField(required=False, allow_null=True)
    content = serializers.CharField()
    knowledge_base_ids = serializers.ListField(child=IdField(), required=False, max_length=50)
    client_id = serializers.CharField(max_length=64, required=False, allow_blank=True)
    assistant_id = IdField(required=False, allow_null=True)


class MessageStopFrame(serializers.Serializer):
    message_id = IdField()


class ConversationJoinFrame(serializers.Serializer):
    conversation_id = IdField()
    # {"<reply id>": <last seq the client has>} for a client resuming after a reconnect.
    last_seq = serializers.DictField(
        child=serializers.IntegerField(min_value=0), required=False, default=dict
    )

    def validate_last_seq(self, value: dict) -> dict[int, int]:
        if len(value) > 50 or not all(str(key).isdigit() and len(str(key)) < 19 for key in value):
            raise serializers.ValidationError("Keys must be reply ids.")
        return {int(key): seq for key, seq in value.items()}


class ConversationLeaveFrame(serializers.Serializer):
    conversation_id = IdField()


def _provider_status() -> dict[str, Any]:
    try:
        return provider_status()
    except Exception:  # a misconfigured provider must not break the socket
        logger.exception("provider_status failed")
        return {"name": "unknown", "model": "", "offline": False}


@database_sync_to_async
def _frame_admit(
    *, scope, user, session_key: str | None, endpoint_group: str | None
) -> tuple[Any, LimitDecision | None]:
    """(the user as their session authenticates them now, the limiter's verdict on the frame),
    in one thread hop; (None, None) when the session no longer authenticates `user`."""
    current = session_user_get(session_key=session_key)
    if current is None or current.pk != user.pk:
        return None, None
    decision = limiter_check_websocket(scope=scope, user=current, endpoint_group=endpoint_group)
    return current, decision


@database_sync_to_async
def _session_user(*, session_key: str | None):
    return session_user_get(session_key=session_key)


def _frame_parse(text_data: str | None) -> tuple[dict | None, tuple[str, str] | None]:
    """(frame, None), or (None, (error code, message)) for a malformed frame."""
    if text_data is None:
        return None, ("invalid_frame", _("Frames must be JSON text."))
    if len(text_data) > MAX_FRAME_CHARS:
        return None, ("invalid_frame", _("The frame is too large."))
    try:
        frame = json.loads(text_data)
    except ValueError:
        return None, ("invalid_json", _("The frame is not valid JSON."))
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        return None, ("invalid_frame", _('A frame is a JSON object with a "type".'))
    return frame, None


@database_sync_to_async
def _send(*, user, frame: dict) -> dict:
    message, reply, _task_id = message_send(user=user, **frame)
    return message_created_event(message=message, reply=reply, client_id=frame.get("client_id", ""))


@database_sync_to_async
def _join(*, user, conversation_id: int, resume: list[int]) -> tuple[dict, list[dict], list[int]]:
    """The conversation, the final events of resumed replies that ended meanwhile, and the
    ids of replies still running."""
    conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
    finished = Message.objects.filter(
        id__in=resume, conversation=conversation, status__in=Message.FINISHED
    )
    unfinished = replies_unfinished(conversation_id=conversation_id)
    return (
        conversation_data(conversation),
        [reply_final_event(message) for message in finished],
        [reply.id for reply in unfinished],
    )


@database_sync_to_async
def _message_state(message_id: int) -> tuple[dict | None, int, str]:
    """(final event or None, checkpoint seq, checkpoint text) from the database."""
    message = message_get(message_id=message_id)
    if message is None:
        return None, 0, ""
    if message.is_finished:
        return reply_final_event(message), message.last_seq, message.content
    return None, message.last_seq, message.content


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.user = self.scope.get("user")
        self.closed = False  # once set, nothing more is sent on this socket
        self.session_key: str | None = None
        self.conversations: set[int] = set()
        self.sent_seq: dict[int, int] = {}  # reply id → last seq sent
        self.announced: set[int] = set()  # replies whose message.created was sent
        self.finished: set[int] = set()  # replies whose reply.done / reply.error was sent
        # Accept first: a close code can only be sent on an open socket.
        await self.accept()
        if self.user is None or not self.user.is_authenticated:
            await self._close_unauthenticated()
            return
        self.session_key = self.scope["session"].session_key
        await self.channel_layer.group_add(
            realtime.user_group_name(self.user.pk), self.channel_name
        )
        # "Is a page open?" for any process (notifications of replies that finish unseen).
        await presence_enter(user_id=self.user.pk, channel=self.channel_name)
        self.presence_task = asyncio.create_task(self._presence_keep())
        status = await database_sync_to_async(_provider_status)()
        await self._send_json({"type": "ready", "user": self.user.get_username(), "llm": status})

    async def disconnect(self, code: int) -> None:
        user = getattr(self, "user", None)
        presence_task = getattr(self, "presence_task", None)
        if presence_task is not None:
            presence_task.cancel()
            await presence_leave(user_id=user.pk, channel=self.channel_name)
        if user is not None and user.is_authenticated:
            await self.channel_layer.group_discard(
                realtime.user_group_name(user.pk), self.channel_name
            )
        for conversation_id in getattr(self, "conversations", ()):
            await self.channel_layer.group_discard(
                realtime.group_name(conversation_id), self.channel_name
            )

    # --- client frames ---------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        if self.closed:
            return
        frame, problem = _frame_parse(text_data)
        frame_type = frame["type"] if frame else None
        route = self._routes.get(frame_type) if frame_type else None
        # Malformed frames too: each one costs the server something.
        if not await self._admit(
            frame_type=frame_type if route else None,
            endpoint_group=route[2] if route else None,
        ):
            return
        if problem is not None:
            await self._error(*problem)
            return
        if route is None:
            await self._error("unknown_type", _("Unknown frame type."), frame_type=frame_type[:50])
            return
        serializer_class, handler, _endpoint_group = route
        serializer = serializer_class(data=frame)
        if not serializer.is_valid():
            await self._error(
                "validation_error",
                _("The frame is invalid; see details."),
                details=serializer.errors,
                frame_type=frame_type,
            )
            return
        try:
            await handler(self, dict(serializer.validated_data))
        except ApplicationError as exc:
            await self._error(
                exc.code,
                str(exc.message),
                details=exc.details,
                frame_type=frame_type,
                client_id=frame.get("client_id"),
            )

    async def _on_send(self, frame: dict) -> None:
        event = await _send(user=self.user, frame=frame)
        reply_id = event["reply"]["id"]
        await self._group_add(event["conversation_id"])
        self.announced.add(reply_id)
        await self._send_json(event)
        # A reply read as pending before the socket joined has sent nothing it could miss
        # unless its log exists by now (then the log has it); no database read needed.
        await self._catch_up(reply_id, queued=event["reply"]["status"] == Message.Status.PENDING)

    async def _on_stop(self, frame: dict) -> None:
        # What follows arrives through the group: reply.done with status "stopped".
        await database_sync_to_async(reply_stop)(user=self.user, message_id=frame["message_id"])

    async def _on_join(self, frame: dict) -> None:
        conversation_id = frame["conversation_id"]
        resume: dict[int, int] = frame["last_seq"]
        # Checked before joining the group, so nobody listens to a conversation not theirs.
        await _join(user=self.user, conversation_id=conversation_id, resume=[])
        await self._group_add(conversation_id)
        # Read after joining: whatever ends from here on also arrives through the group.
        conversation, ended, running = await _join(
            user=self.user, conversation_id=conversation_id, resume=list(resume)
        )
        for reply_id, seq in resume.items():
            self.sent_seq[reply_id] = max(self.sent_seq.get(reply_id, 0), seq)
        await self._send_json(
            {"type": "conversation.joined", "conversation": conversation, "running": running}
        )
        for event in ended:
            await self._send_final(event)
        for reply_id in running:
            await self._catch_up(reply_id)

    async def _on_leave(self, frame: dict) -> None:
        conversation_id = frame["conversation_id"]
        if conversation_id in self.conversations:
            self.conversations.discard(conversation_id)
            await self.channel_layer.group_discard(
                realtime.group_name(conversation_id), self.channel_name
            )
        await self._send_json({"type": "conversation.left", "conversation_id": conversation_id})

    # frame type → (serializer, handler, the endpoint group of the REST request it stands for)
    _routes = {
        "message.send": (MessageSendFrame, _on_send, "messages"),
        "message.stop": (MessageStopFrame, _on_stop, "messages"),
        "conversation.join": (ConversationJoinFrame, _on_join, "conversations"),
        "conversation.leave": (ConversationLeaveFrame, _on_leave, "conversations"),
    }

    # --- group events ----------------------------------------------------------------------

    async def session_ended(self, event: dict) -> None:
        if event.get("session") == realtime.session_digest(self.session_key):
            await self._close_unauthenticated()

    async def user_changed(self, event: dict) -> None:
        user = await _session_user(session_key=self.session_key)
        if user is None or user.pk != self.user.pk:
            await self._close_unauthenticated()
        else:
            self.user = user

    async def message_created(self, event: dict) -> None:
        reply_id = event["reply"]["id"]
        if reply_id not in self.announced:
            self.announced.add(reply_id)
            await self._send_json(event)

    async def reply_delta(self, event: dict) -> None:
        reply_id, seq = event["message_id"], event["seq"]
        if reply_id in self.finished:
            return
        last = self.sent_seq.get(reply_id, 0)
        if seq <= last:
            return
        if seq > last + 1:
            # A batch went missing on the way (joined without catch-up, or the channel layer
            # dropped one at capacity): the log has them all, in order.
            await self._catch_up(reply_id)
            return
        self.sent_seq[reply_id] = seq
        await self._send_json(event)

    async def reply_done(self, event: dict) -> None:
        reply_id = event["message"]["id"]
        if reply_id not in self.finished and self.sent_seq.get(reply_id, 0) < (
            event["message"].get("last_seq") or 0
        ):
            # Batches the channel layer dropped (capacity): from the log, then the end.
            await self._catch_up(reply_id)
        await self._send_final(event)

    async def reply_error(self, event: dict) -> None:
        await self._send_final(event)

    async def conversation_updated(self, event: dict) -> None:
        await self._send_json(event)

    async def notification_created(self, event: dict) -> None:
        await self._send_json(event)

    async def notification_read(self, event: dict) -> None:
        await self._send_json(event)

    # --- helpers ---------------------------------------------------------------------------

    async def _presence_keep(self) -> None:
        while True:
            await asyncio.sleep(presence_refresh_interval())
            await presence_enter(user_id=self.user.pk, channel=self.channel_name)

    async def _catch_up(self, reply_id: int, *, queued: bool = False) -> None:
        """Send what the socket has not seen of a reply: from the log, or from the database
        when there is no log (still queued, or finished long ago).

        Called after joining the group, so when the log does not exist yet every batch of the
        reply will come through the group: nothing to send then. `queued`: the caller saw the
        reply pending before joining, so a missing log can only mean "not started"."""
        if reply_id in self.finished:
            return
        sent = self.sent_seq.get(reply_id, 0)
        entries, exists = await realtime.reply_log_read(message_id=reply_id, after_seq=sent)
        if not exists:
            if queued:
                return
            final, checkpoint_seq, checkpoint_text = await _message_state(reply_id)
            if final is not None:
                await self._send_final(final)
                return
            if not checkpoint_seq:
                return  # not started yet: it all comes through the group
            # A checkpoint: the reply has streamed, and its log either appeared since we read
            # it (then the group brings every batch) or expired (a stream silent for
            # CHAT_REPLY_LOG_TTL, its worker likely gone): only then the checkpoint stands in.
            _entries, exists = await realtime.reply_log_read(
                message_id=reply_id, after_seq=checkpoint_seq
            )
            if not exists and sent == 0 and checkpoint_text:
                self.sent_seq[reply_id] = checkpoint_seq
                await self._send_json(
                    self._delta(reply_id, checkpoint_seq, checkpoint_text, from_seq=1)
                )
            return
        for entry in entries:
            if entry.end is not None:
                final, _seq, _text = await _message_state(reply_id)
                if final is not None:
                    await self._send_final(final)
                return
            if entry.seq > self.sent_seq.get(reply_id, 0):
                self.sent_seq[reply_id] = entry.seq
                await self._send_json(self._delta(reply_id, entry.seq, entry.delta or ""))

    def _delta(self, reply_id: int, seq: int, text: str, from_seq: int | None = None) -> dict:
        event = {"type": "reply.delta", "message_id": reply_id, "seq": seq, "delta": text}
        if from_seq is not None and from_seq != seq:
            event["from_seq"] = from_seq  # one delta standing for seqs from_seq..seq
        return event

    async def _send_final(self, event: dict) -> None:
        reply_id = event["message"]["id"] if event["type"] == "reply.done" else event["message_id"]
        if reply_id in self.finished:
            return
        self.finished.add(reply_id)
        self.sent_seq.pop(reply_id, None)
        await self._send_json(event)

    async def _group_add(self, conversation_id: int) -> None:
        if conversation_id not in self.conversations:
            await self.channel_layer.group_add(
                realtime.group_name(conversation_id), self.channel_name
            )
            self.conversations.add(conversation_id)

    async def _admit(self, *, frame_type: str | None, endpoint_group: str | None) -> bool:
        """Whether to act on a frame: its session still authenticates the socket's user (else
        the socket is closed with 4401) and the limiter admits it (else `rate_limited`)."""
        user, decision = await _frame_admit(
            scope=self.scope,
            user=self.user,
            session_key=self.session_key,
            endpoint_group=endpoint_group,
        )
        if user is None:
            await self._close_unauthenticated()
            return False
        self.user = user  # a plan change applies from this frame on
        if decision.allowed:
            return True
        event = {"type": "rate_limited", "retry_after": decision.retry_after}
        if frame_type:
            event["frame_type"] = frame_type
        await self._send_json(event)
        return False

    async def _close_unauthenticated(self) -> None:
        self.closed = True
        await self.close(code=CLOSE_UNAUTHENTICATED)

    async def _error(self, code: str, message: str, **extra: Any) -> None:
        extra = {key: value for key, value in extra.items() if value is not None}
        await self._send_json({"type": "error", "code": code, "message": message, **extra})

    async def _send_json(self, data: dict) -> None:
        if self.closed:
            return  # events still queued for a socket closed as unauthenticated
        await self.send(text_data=json.dumps(data, ensure_ascii=False))
