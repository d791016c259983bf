"""A document_content selector and its warmer, as the knowledge app would write them; the
warm-up tests point settings.CACHE_DOCUMENT_WARMERS here."""

from openspark.core.cache import DOCUMENT_CONTENT, cached

computed: list[int] = []


@cached(
    DOCUMENT_CONTENT,
    key=lambda *, document_id: document_id,
    version_of=lambda *, document_id: ("document", document_id),
    hot=lambda *, document_id: document_id,
)
def document_text(*, document_id: int) -> str:
    computed.append(document_id)
    return f"text of document {document_id}"


def document_warm(*, document_ids: list[int]) -> int:
    for document_id in document_ids:
        document_text(document_id=document_id)
    return len(document_ids)
