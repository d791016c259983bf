"""Writes of the chat pipeline: conversations, sending, stopping and regenerating replies, and
generating a reply (the body of the `generate_ai_response` task).

A reply's life: `pending` (queued) → `streaming` (a worker holds it) → `completed`, `failed`
or `stopped`. Each status change is a conditional UPDATE on the status it leaves, so a stop
request, a redelivered task and a finishing worker can race without overwriting each other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from assistants.models import Assistant
from assistants.selectors import (
    assistant_get_for_user,
    assistant_knowledge_base_ids,
    assistant_reply_fingerprint,
    assistant_usable_by,
)
from knowledge.selectors import (
    knowledge_base_ids_readable,
    knowledge_base_list_readable,
    passages_for_bases,
)
from openspark.core.cache import (
    ai_response_context_fingerprint,
    ai_response_get,
    ai_response_key,
    ai_response_set,
    ai_response_user_scope,
    cache_bump,
    conversation_scope,
    user_scope,
)
from openspark.core.errors import ApplicationError, Conflict
from openspark.core.models import Notification
from openspark.core.presence import presence_page_open
from openspark.core.services import notification_send, task_enqueue, task_id_new
from openspark.llm import (
    Delta,
    Finish,
    LLMError,
    Passage,
    UnknownChatModel,
    chat_model_check,
    get_chat_provider,
    get_retry_policy,
    stream_with_retry,
)
from openspark.llm.base import (
    ChatEvent,
    ChatMessage,
    ChatProvider,
    Usage,
    estimate_prompt_tokens,
    estimate_tokens,
    format_sources,
)
from throttling.quota import tokens_reserve, tokens_settle

from . import prompts, realtime
from .models import Conversation, Message
from .selectors import (
    ai_response_cache_enabled,
    conversation_get_for_user,
    message_get_for_user,
    replies_unfinished,
)
from .serializers import conversation_data, message_created_event, reply_final_event

logger = logging.getLogger(__name__)

_BUSY = gettext_lazy(
    "A reply is still being generated in this conversation; wait for it or stop it first."
)


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


# --- hooks into other apps -------------------------------------------------------------------


def _readable_knowledge_base_ids(*, user, knowledge_base_ids: Sequence[int]) -> list[int]:
    return knowledge_base_ids_readable(user=user, requested_ids=list(knowledge_base_ids))


def passages_retrieve(
    *,
    user,
    knowledge_base_ids: Sequence[int],
    query: str,
    lent_ids: Sequence[int] = (),
    score_threshold: float | None = None,
) -> list[Passage]:
    """The retrieval hook: sources for the question from the bases it named, which the user
    must still be able to read (NotFound otherwise), and those the conversation's assistant
    lends (`assistants.selectors.assistant_knowledge_base_ids`, already checked)."""
    ids = set(_readable_knowledge_base_ids(user=user, knowledge_base_ids=knowledge_base_ids))
    ids |= set(lent_ids)
    if not ids:
        return []
    return list(
        passages_for_bases(
            knowledge_base_ids=sorted(ids), query=query, score_threshold=score_threshold
        )
    )


# --- assistants ------------------------------------------------------------------------------

SOURCES_ONLY_INSTRUCTIONS = (
    "Answer only from the numbered sources. If they do not contain the answer, reply with "
    "exactly this text and nothing else: {fallback}"
)
_FALLBACK = gettext_lazy("I could not find anything about this in the sources I answer from.")
_ASSISTANT_GONE = gettext_lazy("This conversation's assistant is no longer available to you.")


@dataclass(frozen=True, slots=True)
class ReplySettings:
    """How a conversation's replies are made: by its assistant, or by the default assistant
    (no `assistant_id`: the CHAT_* settings and the deployment's model)."""

    system_prompt: str
    assistant_id: int | None = None
    provider: str = ""
    model: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    # Bases the assistant lends to this user, checked when the settings were read.
    knowledge_base_ids: tuple[int, ...] = ()
    sources_only: bool = False
    score_threshold: float | None = None  # None: the bases' own
    fallback_message: str = ""
    # What identifies the assistant's answers in the `ai_response` cache key.
    fingerprint: dict | None = None


def reply_settings_get(*, user, assistant_id: int | None) -> ReplySettings:
    """The settings a reply in a conversation with `assistant_id` is made with, read when it
    is queued (its reservation) and again when it is generated. 403 `permission_denied` when
    the user may no longer use the assistant (unshared, or its owner deactivated)."""
    default_prompt = _setting("CHAT_SYSTEM_PROMPT", "")
    if assistant_id is None:
        return ReplySettings(system_prompt=default_prompt)
    assistant = assistant_usable_by(user=user, assistant_id=assistant_id)
    if assistant is None:
        raise ApplicationError(str(_ASSISTANT_GONE), code="permission_denied", status_code=403)
    prompt = assistant.system_prompt or default_prompt
    fallback = assistant.fallback_message or str(_FALLBACK)
    if assistant.sources_only:
        prompt = f"{prompt}\n\n{SOURCES_ONLY_INSTRUCTIONS.format(fallback=fallback)}".strip()
    return ReplySettings(
        system_prompt=prompt,
        assistant_id=assistant.id,
        provider=assistant.provider,
        model=assistant.model,
        temperature=assistant.temperature,
        max_tokens=assistant.max_tokens,
        knowledge_base_ids=tuple(assistant_knowledge_base_ids(assistant=assistant, user=user)),
        sources_only=assistant.sources_only,
        score_threshold=assistant.score_threshold,
        fallback_message=fallback,
        fingerprint=assistant_reply_fingerprint(assistant),
    )


class FixedReply(ChatProvider):
    """The reply of an assistant that answers only from its sources when they hold nothing
    relevant: its fallback text, streamed like any reply, without a model call (no tokens)."""

    name = "fallback"
    model = ""
    is_offline = True  # never cached: there is no model call to save

    def __init__(self, text: str) -> None:
        self.text = text

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        passages: Sequence[Passage] = (),
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> Generator[ChatEvent, None, None]:
        yield Delta(self.text)
        yield Finish("stop", Usage(prompt_tokens=0, completion_tokens=0))


def _assistant_for_new_conversation(*, user, assistant_id: int | None) -> Assistant | None:
    if assistant_id is None:
        return None
    return assistant_get_for_user(user=user, assistant_id=assistant_id)


# --- conversations ---------------------------------------------------------------------------


def conversation_create(
    *,
    user,
    title: str = "",
    knowledge_base_ids: Sequence[int] | None = None,
    assistant_id: int | None = None,
) -> Conversation:
    ids = _readable_knowledge_base_ids(user=user, knowledge_base_ids=knowledge_base_ids or [])
    assistant = _assistant_for_new_conversation(user=user, assistant_id=assistant_id)
    with transaction.atomic():
        conversation = Conversation.objects.create(
            owner=user, title=title.strip(), assistant=assistant
        )
        if ids:
            conversation.knowledge_bases.set(ids)
        cache_bump(scope=user_scope(user.id))
    return conversation_get_for_user(user=user, conversation_id=conversation.id)


def conversation_update(
    *,
    user,
    conversation_id: int,
    title: str | None = None,
    knowledge_base_ids: Sequence[int] | None = None,
) -> Conversation:
    conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
    with transaction.atomic():
        if title is not None:
            conversation.title = title.strip()
            conversation.save(update_fields=["title", "updated_at"])
        if knowledge_base_ids is not None:
            ids = _readable_knowledge_base_ids(user=user, knowledge_base_ids=knowledge_base_ids)
            conversation.knowledge_bases.set(ids)
        cache_bump(scope=user_scope(user.id))
    conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
    transaction.on_commit(
        lambda: realtime.publish(
            conversation_id=conversation_id,
            event={"type": "conversation.updated", "conversation": conversation_data(conversation)},
        )
    )
    return conversation


def conversation_delete(*, user, conversation_id: int) -> None:
    conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
    # Unfinished replies are stopped first, which settles their token reservations; a worker
    # still streaming one stops at its next batch and settles it itself (the row is gone).
    for reply in replies_unfinished(conversation_id=conversation.id):
        _reply_stop(reply)
    conversation.delete()
    cache_bump(scopes=[user_scope(user.id), conversation_scope(conversation_id)])


# --- sending, stopping, regenerating ---------------------------------------------------------


def _reply_enqueue(
    *,
    user,
    question: Message,
    assistant_id: int | None,
    client_id: str = "",
    new_conversation: bool = False,
) -> tuple[Message, str]:
    """A pending reply to `question`, its token reservation and its queued task; call inside
    a transaction (a refused reservation, 429 `quota_exceeded`, rolls everything back).

    On commit, every socket on the conversation hears `message.created` before the task is
    queued (on_commit callbacks run in order), so no socket sees a delta of an unknown reply.
    A conversation created in this transaction has no sockets yet (joining checks that it
    exists; one that joins after the commit reads the reply from the database): no publish.
    """
    settings_ = reply_settings_get(user=user, assistant_id=assistant_id)
    reservation = tokens_reserve(
        user=user,
        tokens=reply_token_ceiling(
            question=question.content,
            with_sources=bool(question.knowledge_base_ids or settings_.knowledge_base_ids),
            reply_settings=settings_,
        ),
    )
    reply = Message.objects.create(
        conversation_id=question.conversation_id,
        role=Message.Role.ASSISTANT,
        reply_to=question,
        status=Message.Status.PENDING,
        task_id=task_id_new(),  # stored with the row: no UPDATE after queueing
        reserved_tokens=reservation.tokens,
        reserved_month=reservation.month,
    )
    if not new_conversation:
        transaction.on_commit(
            lambda: realtime.publish(
                conversation_id=question.conversation_id,
                event=message_created_event(message=question, reply=reply, client_id=client_id),
            )
        )
    return reply, _reply_task_enqueue(reply=reply, user=user)


def _reply_task_enqueue(*, reply: Message, user) -> str:
    """Queue the reply's task under the new task id already saved on the reply."""
    from .tasks import generate_ai_response

    return task_enqueue(
        task=generate_ai_response, args=[reply.id], user=user, task_id=reply.task_id
    )


def replies_sweep(*, now=None) -> dict[str, int]:
    """Beat job for replies nobody works on (a lost task, a worker killed without redelivery):
    a `pending` reply older than CHAT_PENDING_REQUEUE_SECONDS is queued again (the task is
    idempotent), a `streaming` one whose worker lease is gone and that has not moved for a lease
    period is failed as interrupted — readers saw its beginning, so it is not restarted."""
    now = now or timezone.now()
    pending_before = now - timedelta(seconds=float(_setting("CHAT_PENDING_REQUEUE_SECONDS", 300)))
    quiet_before = now - timedelta(seconds=float(_setting("CHAT_REPLY_LEASE_SECONDS", 180)))
    requeued = interrupted = 0
    assistant = Message.objects.filter(role=Message.Role.ASSISTANT)
    stale_pending = assistant.filter(status=Message.Status.PENDING, created_at__lt=pending_before)
    for reply in stale_pending.select_related("conversation__owner")[:500]:
        if realtime.reply_lease_held(message_id=reply.id):
            continue
        with transaction.atomic():
            reply.task_id = task_id_new()  # GET tasks/{id}/ follows the re-queued task
            reply.save(update_fields=["task_id"])
            _reply_task_enqueue(reply=reply, user=reply.conversation.owner)
        requeued += 1
    stale_streaming = assistant.filter(status=Message.Status.STREAMING, updated_at__lt=quiet_before)
    for reply in stale_streaming[:500]:
        if realtime.reply_lease_held(message_id=reply.id):
            continue
        if _reply_interrupted(reply):
            interrupted += 1
    return {"requeued": requeued, "interrupted": interrupted}


def _content_check(content: str) -> str:
    content = content.strip()
    limit = int(_setting("CHAT_MAX_MESSAGE_CHARS", 8000))
    if not content:
        raise ApplicationError(_("The message is empty."), details={"content": ["empty"]})
    if len(content) > limit:
        raise ApplicationError(
            _("The message is longer than %(limit)d characters.") % {"limit": limit},
            details={"content": ["too_long"]},
        )
    return content


def message_send(
    *,
    user,
    content: str,
    conversation_id: int | None = None,
    knowledge_base_ids: Sequence[int] | None = None,
    client_id: str = "",
    assistant_id: int | None = None,
) -> tuple[Message, Message, str]:
    """Store the user's message and a pending reply in one transaction and queue the reply.

    Returns (message, reply, task_id). A repeated `client_id` (a client retrying after a lost
    connection) returns the first pair instead of asking twice. `assistant_id` chooses the
    assistant of a new conversation; an existing one keeps its own (naming another is a 400).
    """
    content = _content_check(content)
    if client_id:
        earlier = (
            Message.objects.filter(
                conversation__owner=user, role=Message.Role.USER, client_id=client_id
            )
            .order_by("id")
            .first()
        )
        if earlier is not None:
            reply = earlier.replies.order_by("-id").first()
            if reply is not None:
                return earlier, reply, reply.task_id
    requested = knowledge_base_ids is not None
    ids = _readable_knowledge_base_ids(user=user, knowledge_base_ids=knowledge_base_ids or [])
    assistant = None
    if conversation_id is None:
        assistant = _assistant_for_new_conversation(user=user, assistant_id=assistant_id)
    with transaction.atomic():
        if conversation_id is None:
            # Its updated_at is already now: no save at the end.
            conversation = Conversation.objects.create(owner=user, assistant=assistant)
            if ids:
                conversation.knowledge_bases.set(ids)
        else:
            conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
            if assistant_id is not None and assistant_id != conversation.assistant_id:
                raise ApplicationError(
                    _("A conversation keeps the assistant it was started with."),
                    details={"assistant_id": ["differs_from_conversation"]},
                )
            # Serialises concurrent sends to one conversation (the one-reply-at-a-time rule).
            Conversation.objects.select_for_update().filter(id=conversation.id).first()
            if replies_unfinished(conversation_id=conversation.id):
                raise Conflict(_BUSY)
            if not requested:
                ids = sorted(kb.id for kb in conversation.knowledge_bases.all())
        message = Message.objects.create(
            conversation=conversation,
            role=Message.Role.USER,
            content=content,
            knowledge_base_ids=ids,
            client_id=client_id[:64],
        )
        reply, task_id = _reply_enqueue(
            user=user,
            question=message,
            assistant_id=conversation.assistant_id,
            client_id=client_id,
            new_conversation=conversation_id is None,
        )
        if conversation_id is not None:
            # auto_now: the conversation moves to the top of its owner's list.
            conversation.save(update_fields=["updated_at"])
        cache_bump(scopes=[user_scope(user.id), conversation_scope(conversation.id)])
    return message, reply, task_id


def reply_regenerate(*, user, message_id: int) -> tuple[Message, str]:
    """A new reply to the same question (the question itself or one of its replies given).

    Earlier replies stay in the history; the prompt uses the latest usable one."""
    message = message_get_for_user(user=user, message_id=message_id)
    question = message if message.role == Message.Role.USER else message.reply_to
    if question is None:
        raise ApplicationError(_("This message answers no question."))
    with transaction.atomic():
        conversation = (
            Conversation.objects.select_for_update().filter(id=question.conversation_id).first()
        )
        if replies_unfinished(conversation_id=question.conversation_id):
            raise Conflict(_BUSY)
        reply, task_id = _reply_enqueue(
            user=user, question=question, assistant_id=conversation.assistant_id
        )
        Conversation.objects.filter(id=question.conversation_id).update(updated_at=timezone.now())
        cache_bump(scopes=[user_scope(user.id), conversation_scope(question.conversation_id)])
    return reply, task_id


def reply_stop(*, user, message_id: int) -> Message:
    """Stop a reply; stopping a finished one changes nothing (a stop racing the last token).

    A queued reply is stopped here; a streaming one by its worker, which sees the flag at its
    next batch and saves the text so far. A streaming reply whose worker is gone (no lease) is
    stopped here too, or it would wait for the periodic sweep.
    """
    reply = message_get_for_user(user=user, message_id=message_id)
    if reply.role != Message.Role.ASSISTANT:
        raise ApplicationError(_("Only replies can be stopped."))
    _reply_stop(reply)
    reply.refresh_from_db()
    return reply


def _reply_stop(reply: Message) -> None:
    if reply.status == Message.Status.PENDING and not _reply_finish(
        reply=reply, leaving=Message.Status.PENDING, status=Message.Status.STOPPED
    ):
        reply.refresh_from_db()  # a worker claimed it between our read and our update
    if reply.status == Message.Status.STREAMING:
        realtime.reply_stop_request(message_id=reply.id)
        if not realtime.reply_lease_held(message_id=reply.id):
            _reply_finish(
                reply=reply, leaving=Message.Status.STREAMING, status=Message.Status.STOPPED
            )


def message_feedback_set(*, user, message_id: int, rating: int, comment: str = "") -> Message:
    message = message_get_for_user(user=user, message_id=message_id)
    if message.role != Message.Role.ASSISTANT:
        raise ApplicationError(_("Only replies can be rated."))
    if rating not in (1, -1):
        raise ApplicationError(_("The rating must be 1 or -1."), details={"rating": ["invalid"]})
    message.feedback_rating = rating
    message.feedback_comment = comment.strip()
    message.save(update_fields=["feedback_rating", "feedback_comment", "updated_at"])
    cache_bump(scope=conversation_scope(message.conversation_id))
    return message


# --- generating a reply (worker side) --------------------------------------------------------


def _reply_finish(
    *,
    reply: Message,
    leaving: str,
    status: str,
    error_code: str = "",
    error: str = "",
    holder: bool = False,
    **fields: Any,
) -> bool:
    """Move the reply from `leaving` to a final status and settle its token reservation (the
    usage in `fields` is charged, none when absent) in one transaction, then tell its log and
    its sockets. The status change happens once, so the settlement does too.

    False (and nothing published) when the reply had already left `leaving`. `holder`: the
    caller is the worker holding the reply's lease, the one party that settles a reply whose
    row is gone (its conversation was deleted while it streamed)."""
    now = timezone.now()
    with transaction.atomic():
        updated = Message.objects.filter(id=reply.id, status=leaving).update(
            status=status,
            error_code=error_code,
            error=error,
            finished_at=now,
            updated_at=now,
            reserved_tokens=0,
            **fields,
        )
        usage = fields.get("prompt_tokens", 0), fields.get("completion_tokens", 0)
        settles = updated or (holder and not Message.objects.filter(id=reply.id).exists())
        if settles and (reply.reserved_tokens or any(usage)):
            tokens_settle(
                user_id=reply.conversation.owner_id,
                reserved=reply.reserved_tokens,
                month=reply.reserved_month,
                prompt_tokens=usage[0],
                completion_tokens=usage[1],
            )
    if not updated:
        return False
    cache_bump(scope=conversation_scope(reply.conversation_id))
    reply.refresh_from_db()
    realtime.reply_log_end(message_id=reply.id, status=status)
    event = reply_final_event(reply)
    realtime.publish(conversation_id=reply.conversation_id, event=event)
    return True


def _reply_interrupted(reply: Message) -> bool:
    """Fail a `streaming` reply whose worker is gone (nobody holds its lease). It keeps the
    text its readers were sent: the log's batches, when the worker died after sending some it
    had not checkpointed yet (an empty or shorter saved reply would replace what they see)."""
    text, seq = realtime.reply_log_text(message_id=reply.id)
    sent = {"content": text, "last_seq": seq} if seq > reply.last_seq else {}
    return _reply_finish(
        reply=reply,
        leaving=Message.Status.STREAMING,
        status=Message.Status.FAILED,
        error_code="interrupted",
        error=_("The reply was interrupted. Please regenerate it."),
        **sent,
    )


class _StreamCount:
    """Replies streaming in this process right now (worker threads share it)."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


_streaming = _StreamCount()

# The batch window grows by CHAT_DELTA_BATCH_SECONDS for every this many replies streaming in
# the process, up to CHAT_DELTA_BATCH_MAX_SECONDS.
STREAMS_PER_BATCH_STEP = 25


def batch_window() -> float:
    """Seconds between two batches of one reply: CHAT_DELTA_BATCH_SECONDS when the process
    streams few replies, longer when it streams many. Each batch costs the same (a Redis round
    trip, a websocket frame per reader) whatever its size, so under load fewer, larger
    batches keep the CPU for tokens instead of per-batch overhead."""
    base = float(_setting("CHAT_DELTA_BATCH_SECONDS", 0.05))
    most = max(base, float(_setting("CHAT_DELTA_BATCH_MAX_SECONDS", 0.25)))
    return min(most, base * max(1.0, _streaming.value / STREAMS_PER_BATCH_STEP))


def checkpoint_interval() -> float:
    """Seconds between two checkpoints of one reply: CHAT_CHECKPOINT_SECONDS when the process
    streams few replies, one more CHAT_CHECKPOINT_SECONDS per further STREAMS_PER_BATCH_STEP
    replies, up to CHAT_CHECKPOINT_MAX_SECONDS. A checkpoint is a row UPDATE and a cache bump
    whatever the reply's pace, so a fixed interval made the database writes grow with the
    streams, and a slower stream paid for more of them; this keeps a process's checkpoints
    near STREAMS_PER_BATCH_STEP rows per CHAT_CHECKPOINT_SECONDS. The log has every batch
    meanwhile; the checkpoint is what the database shows of a streaming reply."""
    base = float(_setting("CHAT_CHECKPOINT_SECONDS", 1.0))
    most = max(base, float(_setting("CHAT_CHECKPOINT_MAX_SECONDS", 10.0)))
    return min(most, base * max(1.0, _streaming.value / STREAMS_PER_BATCH_STEP))


class _ReplyStream:
    """Batches deltas, numbers them, logs and publishes each batch, checkpoints the row."""

    def __init__(self, reply: Message) -> None:
        self.reply = reply
        self.opened = time.monotonic()
        # [ms since `opened`, characters] per batch: how a cached copy is paced when replayed.
        self.pace: list[list[int]] = []
        self.parts: list[str] = []
        self.pending: list[str] = []
        self.seq = 0
        self.last_flush = 0.0
        self.last_checkpoint = time.monotonic()
        self.checkpointed_seq = 0
        self.stop_requested = False
        self.first_token_at = None

    @property
    def text(self) -> str:
        return "".join(self.parts) + "".join(self.pending)

    def add(self, text: str) -> None:
        if not text:
            return
        self.pending.append(text)
        # The first delta goes out at once (time to first token is what users feel); later
        # ones at most every batch_window(), which bounds Redis and socket traffic per reply.
        if self.seq == 0 or time.monotonic() - self.last_flush >= batch_window():
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        delta = "".join(self.pending)
        self.pending.clear()
        self.seq += 1
        self.parts.append(delta)
        sent_at = time.monotonic()
        self.pace.append([round((sent_at - self.opened) * 1000), len(delta)])
        # Logged before (or atomically with) the publish: see the ordering rule in realtime.py.
        if realtime.reply_batch_send(
            message_id=self.reply.id,
            conversation_id=self.reply.conversation_id,
            seq=self.seq,
            delta=delta,
        ):
            self.stop_requested = True
        # The next window starts when this send is done: when sends are slow (a loaded Redis
        # or channel layer), the tokens that arrived meanwhile go out together in the next
        # batch instead of one batch each, which would only make the sends slower still.
        self.last_flush = time.monotonic()
        if self.seq == 1:
            # Saved with the first checkpoint (or the final save): no database write on the
            # way to the first token.
            self.first_token_at = timezone.now()
        if self.last_flush - self.last_checkpoint >= checkpoint_interval():
            self.checkpoint()

    def checkpoint(self) -> None:
        if self.checkpointed_seq == self.seq:
            return
        Message.objects.filter(id=self.reply.id, status=Message.Status.STREAMING).update(
            content="".join(self.parts),
            last_seq=self.seq,
            first_token_at=self.first_token_at,
            updated_at=timezone.now(),
        )
        cache_bump(scope=conversation_scope(self.reply.conversation_id))
        _connection_release()
        self.checkpointed_seq = self.seq
        self.last_checkpoint = time.monotonic()


def _connection_release() -> None:
    """Streaming lasts seconds to minutes and touches the database once a second at most: a
    worker thread must not hold a connection meanwhile, or 200 concurrent replies need 200
    PostgreSQL connections. The next query reconnects (or takes one from a pool)."""
    if not connection.in_atomic_block:
        connection.close()


def _estimated_usage(*, prompt: list, passages: Sequence[Passage], text: str) -> dict[str, int]:
    """For replies that ended without the provider's own count (stopped, failed mid-way)."""
    if not text:
        return {"prompt_tokens": 0, "completion_tokens": 0}
    return {
        "prompt_tokens": estimate_prompt_tokens(prompt, passages),
        "completion_tokens": estimate_tokens(text),
    }


# Allowance per source for its "[n] title" line in reply_token_ceiling; a reply whose sources
# need more drops its last ones instead (_passages_within).
SOURCE_HEADER_TOKENS = 20


def reply_completion_cap() -> int:
    """Most completion tokens a reply reserves, and is capped at when it has a reservation:
    CHAT_REPLY_MAX_TOKENS, or CHAT_QUOTA_REPLY_TOKENS where that leaves it to the model."""
    return int(_setting("CHAT_REPLY_MAX_TOKENS", 0)) or int(
        _setting("CHAT_QUOTA_REPLY_TOKENS", 4095)
    )


def reply_token_ceiling(
    *, question: str, with_sources: bool, reply_settings: ReplySettings | None = None
) -> int:
    """The most tokens a reply to `question` is reserved, by the estimate the worker builds
    its prompt with (`_prompt_for`): the system prompt; the history window (the question, and
    earlier exchanges only within CHAT_HISTORY_TOKEN_BUDGET); with knowledge bases, the
    sources (instructions, passages within KNOWLEDGE_CONTEXT_TOKEN_BUDGET, a header each);
    and the completion cap. The estimate can undercount the provider's tokenizer on odd text
    (docs/throttling.md states the bound)."""
    reply_settings = reply_settings or ReplySettings(
        system_prompt=_setting("CHAT_SYSTEM_PROMPT", "")
    )
    tokens = estimate_tokens(reply_settings.system_prompt)
    tokens += max(int(_setting("CHAT_HISTORY_TOKEN_BUDGET", 3000)), estimate_tokens(question))
    if with_sources:
        # +1: the blank line joining the sources to the system prompt.
        tokens += estimate_tokens(format_sources([])) + 1
        tokens += int(_setting("KNOWLEDGE_CONTEXT_TOKEN_BUDGET", 3000))
        tokens += SOURCE_HEADER_TOKENS * int(_setting("KNOWLEDGE_TOP_K", 5))
    return tokens + (reply_settings.max_tokens or reply_completion_cap())


def _passages_within(*, prompt: list, passages: list[Passage], budget: int) -> list[Passage]:
    """The leading passages whose prompt fits `budget` (long document titles, or more passages
    than KNOWLEDGE_TOP_K, can exceed the header allowance the reservation made)."""
    while passages and estimate_prompt_tokens(prompt, passages) > budget:
        passages = passages[:-1]
    return passages


def _prompt_for(reply: Message, *, system_prompt: str) -> list:
    question = reply.reply_to
    limit = int(_setting("CHAT_HISTORY_MAX_MESSAGES", 20))
    # Only the tail can fit the window; x3 leaves room for regenerated replies.
    earlier = list(
        Message.objects.filter(conversation_id=reply.conversation_id, id__lt=question.id).order_by(
            "-id"
        )[: limit * 3]
    )[::-1]
    window = prompts.history_window(
        earlier=earlier,
        question=question,
        token_budget=int(_setting("CHAT_HISTORY_TOKEN_BUDGET", 3000)),
        max_messages=limit,
    )
    return prompts.prompt_messages(system_prompt=system_prompt, window=window)


def reply_generate(*, message_id: int) -> str:
    """Generate, stream and save one reply. Idempotent: returns what it did.

    - a finished reply, or one another worker holds, is left alone ("skipped");
    - a `streaming` reply nobody holds was interrupted (its worker died and the broker
      redelivered the task): it is failed with a readable error rather than restarted, since
      its beginning was already shown to readers;
    - otherwise it is streamed to the end, stopped, or failed with the provider's readable error.
    """
    reply = (
        Message.objects.select_related("conversation__owner", "reply_to")
        .filter(id=message_id, role=Message.Role.ASSISTANT)
        .first()
    )
    if reply is None or reply.is_finished or reply.reply_to is None:
        return "skipped"
    if not realtime.reply_lease_acquire(message_id=reply.id):
        return "skipped"
    try:
        if reply.status == Message.Status.PENDING:
            # Before the claim: a stop that arrives after it must survive; one that arrives
            # before it finds the reply pending and stops it in the database.
            realtime.reply_log_reset(message_id=reply.id)
        now = timezone.now()
        claimed = Message.objects.filter(id=reply.id, status=Message.Status.PENDING).update(
            status=Message.Status.STREAMING, started_at=now, updated_at=now
        )
        if claimed:
            cache_bump(scope=conversation_scope(reply.conversation_id))
        if not claimed:
            reply.refresh_from_db()
            if reply.status == Message.Status.STREAMING:
                _reply_interrupted(reply)
                return Message.Status.FAILED
            return "skipped"
        return _reply_stream(reply)
    finally:
        realtime.reply_lease_release(message_id=reply.id)


@dataclass(slots=True)
class _ReplyPlan:
    """What a reply is generated with, settled before its first token."""

    settings: ReplySettings
    provider: ChatProvider
    prompt: list
    passages: list[Passage]
    max_tokens: int | None
    cache_key: str | None = None
    # The cached answer replayed instead of a model call, if any.
    hit: dict | None = None


class _ReplyFailure(Exception):
    """A step before streaming cannot go on: the reply fails with this code and message."""

    def __init__(self, code: str, message: str, *, provider: ChatProvider | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.message = message
        self.provider = provider


def _reply_stream(reply: Message) -> str:
    """Plan the reply, stream it to its readers, save it: the claimed reply's whole run."""
    stream = _ReplyStream(reply)
    try:
        plan = _reply_plan(reply)
    except _ReplyFailure as failure:
        return _reply_fail(
            reply=reply,
            stream=stream,
            provider=failure.provider,
            code=failure.code,
            message=failure.message,
        )
    _connection_release()
    failed = {"reply": reply, "stream": stream, "prompt": plan.prompt, "passages": plan.passages}
    try:
        finish = _events_relay(_reply_events(plan, opened=stream.opened), stream=stream)
    except LLMError as error:
        logger.warning("Reply %s failed: %r", reply.id, error)
        return _reply_fail(
            **failed, provider=plan.provider, code=error.code.value, message=error.message
        )
    except Exception:
        logger.exception("Reply %s failed", reply.id)
        _reply_fail(
            **failed,
            provider=plan.provider,
            code="internal_error",
            message=_("Something went wrong while generating the reply. Please try again."),
        )
        raise
    return _reply_save(reply, stream=stream, plan=plan, finish=finish)


def _reply_plan(reply: Message) -> _ReplyPlan:
    """Settings, provider, prompt, sources within the reservation, and the cached answer."""
    settings_ = _reply_settings_for(reply)
    provider = _reply_provider(reply, reply_settings=settings_)
    prompt = _prompt_for(reply, system_prompt=settings_.system_prompt)
    passages = _reply_passages(reply, reply_settings=settings_, provider=provider)
    max_tokens = settings_.max_tokens or int(_setting("CHAT_REPLY_MAX_TOKENS", 0)) or None
    if reply.reserved_tokens:
        # The reservation counted on this cap and on the prompt's estimate: keep to both.
        max_tokens = settings_.max_tokens or reply_completion_cap()
        passages = _passages_within(
            prompt=prompt, passages=passages, budget=reply.reserved_tokens - max_tokens
        )
    if settings_.sources_only and not passages:
        # Nothing relevant above the bases' thresholds: the fallback text, no model call.
        provider = FixedReply(settings_.fallback_message)
    plan = _ReplyPlan(
        settings=settings_,
        provider=provider,
        prompt=prompt,
        passages=passages,
        max_tokens=max_tokens,
    )
    plan.cache_key, plan.hit = _reply_cache_lookup(reply, plan=plan)
    return plan


def _reply_settings_for(reply: Message) -> ReplySettings:
    try:
        return reply_settings_get(
            user=reply.conversation.owner, assistant_id=reply.conversation.assistant_id
        )
    except ApplicationError as error:
        raise _ReplyFailure("assistant_unavailable", error.message) from error


def _reply_provider(reply: Message, *, reply_settings: ReplySettings) -> ChatProvider:
    try:
        if reply_settings.provider:
            # Still served? Settings may have changed since the assistant was saved.
            chat_model_check(provider=reply_settings.provider, model=reply_settings.model)
        return get_chat_provider(provider=reply_settings.provider, model=reply_settings.model)
    except (ImproperlyConfigured, UnknownChatModel) as error:
        logger.exception("No usable chat provider for reply %s", reply.id)
        raise _ReplyFailure(
            "provider_not_configured",
            _(
                "The AI service is not configured correctly. "
                "An administrator needs to check its settings."
            ),
        ) from error


def _reply_passages(
    reply: Message, *, reply_settings: ReplySettings, provider: ChatProvider
) -> list[Passage]:
    question = reply.reply_to
    try:
        return passages_retrieve(
            user=reply.conversation.owner,
            knowledge_base_ids=question.knowledge_base_ids,
            query=question.content,
            lent_ids=reply_settings.knowledge_base_ids,
            score_threshold=reply_settings.score_threshold,
        )
    except Exception as error:
        logger.exception("Retrieval for reply %s failed", reply.id)
        raise _ReplyFailure(
            "retrieval_failed",
            _("Searching the knowledge bases failed. Please try again."),
            provider=provider,
        ) from error


def _reply_cache_lookup(reply: Message, *, plan: _ReplyPlan) -> tuple[str | None, dict | None]:
    """The reply's `ai_response` key (None: not cacheable) and the answer stored under it."""
    cache_key = _ai_response_key(
        user=reply.conversation.owner,
        provider=plan.provider,
        prompt=plan.prompt,
        passages=plan.passages,
        max_tokens=plan.max_tokens,
        reply_settings=plan.settings,
    )
    hit = None
    # Regenerating asks for another answer: never the cached one (the new one is stored).
    if cache_key and not reply.reply_to.replies.exclude(id=reply.id).exists():
        hit = ai_response_get(cache_key)
    if hit is not None:
        logger.info("Reply %s is replayed from the ai_response cache", reply.id)
    return cache_key, hit


def _reply_events(plan: _ReplyPlan, *, opened: float) -> Iterator[ChatEvent]:
    if plan.hit is not None:
        return _cached_stream(plan.hit, opened=opened)
    return stream_with_retry(
        plan.provider,
        plan.prompt,
        passages=plan.passages,
        temperature=plan.settings.temperature,
        max_tokens=plan.max_tokens,
        policy=get_retry_policy(),
    )


def _events_relay(events: Iterator[ChatEvent], *, stream: _ReplyStream) -> Finish | None:
    """Pass the deltas to `stream` until the provider finishes or a stop is requested; the
    provider's Finish, None when it did not finish."""
    finish = None
    _streaming.add(1)
    try:
        # closing(): on stop, the provider's HTTP stream is released now.
        with closing(events):
            for event in events:
                if isinstance(event, Delta):
                    stream.add(event.text)
                    if stream.stop_requested:
                        break
                else:
                    finish = event
    finally:
        _streaming.add(-1)
    stream.flush()
    return finish


def _reply_save(
    reply: Message, *, stream: _ReplyStream, plan: _ReplyPlan, finish: Finish | None
) -> str:
    """Finish the streamed reply (completed, or stopped), store a completed answer in the
    cache and ask for the conversation's title."""
    text = stream.text
    if finish is None or stream.stop_requested:
        usage = _estimated_usage(prompt=plan.prompt, passages=plan.passages, text=text)
        status = Message.Status.STOPPED
    else:
        usage = {
            "prompt_tokens": finish.usage.prompt_tokens,
            "completion_tokens": finish.usage.completion_tokens,
        }
        status = Message.Status.COMPLETED
    citations = prompts.citations_for(text=text, passages=plan.passages)
    finished = _reply_finish(
        reply=reply,
        leaving=Message.Status.STREAMING,
        status=status,
        holder=True,
        content=text,
        last_seq=stream.seq,
        first_token_at=stream.first_token_at,
        citations=citations,
        provider=plan.provider.name,
        model=plan.provider.model,
        **usage,
    )
    if finished and status == Message.Status.COMPLETED:
        if plan.cache_key and plan.hit is None:
            ai_response_set(
                plan.cache_key, content=text, citations=citations, usage=usage, pace=stream.pace
            )
        if not reply.conversation.title:
            _title_enqueue(conversation_id=reply.conversation_id, user=reply.conversation.owner)
    return status


def _ai_response_key(
    *,
    user,
    provider: ChatProvider,
    prompt: list,
    passages: Sequence[Passage],
    max_tokens,
    reply_settings: ReplySettings,
) -> str | None:
    """The cache key of this exact question: model and settings, the assistant and all of
    its settings (prompt, model, parameters, bases, sources-only mode), the whole prompt
    (history included) and the retrieved context, scoped to users who can read the same
    knowledge bases (those they read themselves and those the assistant lends them) — or None
    when this answer must come from the model (offline provider, caching off for the user's
    plan)."""
    if provider.is_offline or not ai_response_cache_enabled(user=user):
        return None
    readable = {*knowledge_base_list_readable(user=user).values_list("id", flat=True)}
    readable |= set(reply_settings.knowledge_base_ids)
    key_settings: dict[str, Any] = {"max_tokens": max_tokens}
    if reply_settings.assistant_id is not None:
        key_settings["temperature"] = reply_settings.temperature
        key_settings["assistant"] = reply_settings.fingerprint
    return ai_response_key(
        model=f"{provider.name}:{provider.model}",
        settings=key_settings,
        messages=prompt,
        context_fingerprint=ai_response_context_fingerprint(
            chunks=[(p.chunk_id, p.text) for p in passages]
        ),
        user_scope=ai_response_user_scope(readable_knowledge_base_ids=readable),
    )


def _cached_stream(hit: dict, *, opened: float) -> Iterator[Delta | Finish]:
    """A cached answer as the model's stream: each batch at the offset from the start of the
    reply at which it first went out, then the usage the model reported.

    So the reply reaches its readers, and is saved and charged, as the first answer was: a
    user cannot tell that someone else asked the same question (docs/security/chat.md). Only
    the model call is saved."""
    content, position = hit["content"], 0
    for offset_ms, length in hit["pace"]:
        if (delay := opened + offset_ms / 1000 - time.monotonic()) > 0:
            time.sleep(delay)
        yield Delta(content[position : position + length])
        position += length
    usage = hit["usage"]
    yield Finish("stop", Usage(usage["prompt_tokens"], usage["completion_tokens"]))


def _reply_fail(
    *,
    reply: Message,
    stream: _ReplyStream,
    code: str,
    message: str,
    prompt: list | None = None,
    passages: Sequence[Passage] = (),
    provider: ChatProvider | None = None,
) -> str:
    # The partial text stays: readers saw it, and it helps to judge what went wrong.
    stream.flush()
    # Charged only when text came (the estimate is zero otherwise): a provider refusal costs
    # the user nothing.
    usage = _estimated_usage(prompt=prompt or [], passages=passages, text=stream.text)
    _reply_finish(
        reply=reply,
        leaving=Message.Status.STREAMING,
        status=Message.Status.FAILED,
        holder=True,
        error_code=code,
        error=message,
        content=stream.text,
        last_seq=stream.seq,
        first_token_at=stream.first_token_at,
        provider=provider.name if provider else "",
        model=provider.model if provider else "",
        **usage,
    )
    return Message.Status.FAILED


# --- titles ----------------------------------------------------------------------------------

TITLE_MAX_TOKENS = 24


def _title_enqueue(*, conversation_id: int, user) -> None:
    from .tasks import generate_conversation_title

    # Routed to the chat queue by openspark.celery.route_task.
    task_enqueue(task=generate_conversation_title, args=[conversation_id], user=user)


def _title_from_model(
    *, provider: ChatProvider, conversation: Conversation, question: str, answer: str
) -> str:
    """The model's title, paid from the owner's quota like a reply: reserved first (no room
    left: "" and the offline title, which costs nothing), settled with what it used. A worker
    killed mid-call leaves the reservation held until the month ends (on the safe side)."""
    prompt = prompts.title_prompt(question=question, answer=answer)
    try:
        reservation = tokens_reserve(
            user=conversation.owner,
            tokens=estimate_prompt_tokens(prompt, ()) + TITLE_MAX_TOKENS,
        )
    except ApplicationError:
        return ""
    usage = Usage(prompt_tokens=0, completion_tokens=0)
    try:
        raw, usage = provider.complete(prompt, max_tokens=TITLE_MAX_TOKENS)
        return prompts.title_clean(raw)
    except LLMError as error:
        logger.info("Title for conversation %s falls back: %r", conversation.id, error)
        return ""
    finally:
        tokens_settle(
            user_id=conversation.owner_id,
            reserved=reservation.tokens,
            month=reservation.month,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )


def conversation_title_generate(*, conversation_id: int) -> str:
    """Name an untitled conversation after its first completed exchange; a title the user set
    meanwhile wins. Real models write the title; offline, it is the question's first words."""
    conversation = Conversation.objects.select_related("owner").filter(id=conversation_id).first()
    if conversation is None or conversation.title:
        return ""
    reply = (
        Message.objects.select_related("reply_to")
        .filter(
            conversation_id=conversation_id,
            role=Message.Role.ASSISTANT,
            status=Message.Status.COMPLETED,
        )
        .order_by("id")
        .first()
    )
    if reply is None or reply.reply_to is None:
        return ""
    question = reply.reply_to.content
    title = ""
    provider = get_chat_provider()
    if not provider.is_offline:
        title = _title_from_model(
            provider=provider, conversation=conversation, question=question, answer=reply.content
        )
    title = title or prompts.title_from_question(question)
    if not Conversation.objects.filter(id=conversation_id, title="").update(title=title):
        return ""
    cache_bump(scope=user_scope(conversation.owner_id))
    conversation = Conversation.objects.prefetch_related("knowledge_bases").get(id=conversation_id)
    realtime.publish(
        conversation_id=conversation_id,
        event={"type": "conversation.updated", "conversation": conversation_data(conversation)},
    )
    return title


# --- notifications ---------------------------------------------------------------------------


def reply_finished_notify(*, message_id: int, status: str) -> None:
    """A reply that completed or failed while its owner had no page open (no live socket in
    any process: openspark.core.presence) becomes a notification, linked to its
    conversation; with a page open, the page showed it."""
    if status not in (Message.Status.COMPLETED, Message.Status.FAILED):
        return
    reply = (
        Message.objects.select_related("conversation__owner", "reply_to")
        .filter(id=message_id)
        .first()
    )
    if reply is None or presence_page_open(user_id=reply.conversation.owner_id):
        return
    conversation = reply.conversation
    completed = status == Message.Status.COMPLETED
    question = reply.reply_to.content if reply.reply_to else ""
    name = conversation.title or prompts.title_from_question(question)
    notification_send(
        user=conversation.owner,
        kind=Notification.Kind.REPLY_FINISHED,
        title=(_("Reply ready in “%(title)s”") if completed else _("Reply failed in “%(title)s”"))
        % {"title": name[:120]},
        body=(reply.content if completed else reply.error)[:300],
        level="success" if completed else "error",
        url=f"/?c={conversation.id}",
    )
