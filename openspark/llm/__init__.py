"""Chat and embedding providers behind two small interfaces; see `base` for the contract and
`factory` for which provider a deployment uses."""

from .base import (
    ChatEvent,
    ChatMessage,
    ChatProvider,
    Delta,
    EmbeddingProvider,
    ErrorCode,
    Finish,
    LLMError,
    Passage,
    Usage,
)
from .factory import (
    ChatModel,
    UnknownChatModel,
    chat_model_check,
    chat_models_available,
    get_chat_provider,
    get_embedding_provider_for_remote,
    get_retry_policy,
    provider_status,
)
from .retry import RetryPolicy, call_with_retry, stream_with_retry

__all__ = [
    "ChatEvent",
    "ChatMessage",
    "ChatModel",
    "ChatProvider",
    "Delta",
    "EmbeddingProvider",
    "ErrorCode",
    "Finish",
    "LLMError",
    "Passage",
    "RetryPolicy",
    "UnknownChatModel",
    "Usage",
    "call_with_retry",
    "chat_model_check",
    "chat_models_available",
    "get_chat_provider",
    "get_embedding_provider_for_remote",
    "get_retry_policy",
    "provider_status",
    "stream_with_retry",
]
