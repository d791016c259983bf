"""The knowledge API end to end in-process: upload → parse → chunk → embed (real local model)
→ Milvus (Lite and server) → search, and every documented error."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from knowledge.models import Chunk, Document, KnowledgeBase
from knowledge.services import document_vectorize, knowledge_base_create
from knowledge.vectorstore import get_vector_store
from tests.knowledge.conftest import fixture_bytes, ingest

pytestmark = pytest.mark.usefixtures("embedder")

CATS = (
    "The domestic cat is a small carnivorous mammal. Cats sleep for most of the day "
    "and hunt mice at night. A group of cats is called a clowder."
)
VOLCANO = (
    "A volcano is a rupture in the crust of a planet through which lava, ash and gases "
    "escape from a magma chamber below the surface."
)


def _client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _base(client, **extra) -> dict:
    response = client.post("/api/v1/knowledge/bases/", {"name": "Docs", **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _upload(client, base_id: int, *files: tuple[str, bytes]):
    payload = {"file": [SimpleUploadedFile(n, c) for n, c in files]}
    return client.post(f"/api/v1/knowledge/bases/{base_id}/documents/", payload, format="multipart")


def _process(response) -> list[Document]:
    """Run what the worker would for each uploaded document."""
    assert response.status_code == 202, response.content
    body = response.json()
    for doc, task_id in zip(body["documents"], body["task_ids"], strict=True):
        assert doc["status"] == "pending" and doc["task_id"] == task_id
        document_vectorize(document_id=doc["id"], task_id=task_id)
    return [Document.objects.get(id=d["id"]) for d in body["documents"]]


def _search(client, query: str, **extra) -> list[dict]:
    response = client.post("/api/v1/knowledge/search", {"query": query, **extra}, format="json")
    assert response.status_code == 200, response.content
    return response.json()["results"]


def _docx(paragraphs: list[str]) -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Animals", level=1)
    for text in paragraphs:
        document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _pdf_with_text(text: str) -> bytes:
    """A one-page PDF with a text content stream, written by hand (no PDF library writes text)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref))  # fmt: skip
    return out.getvalue()


@pytest.mark.django_db
def test_every_format_becomes_ready_and_searchable(user):
    client = _client(user)
    base = _base(client)
    files = [
        ("cats.txt", CATS.encode()),
        ("cats-gbk.txt", "猫是一种小型食肉哺乳动物，喜欢在白天睡觉。".encode("gbk")),  # noqa: RUF001
        ("notes.md", b"# Volcanoes\n\n" + VOLCANO.encode() + b"\n\n## Cats\n\n" + CATS.encode()),
        (
            "page.html",
            b"<html><head><style>p{}</style><script>var secret='x'</script></head><body>"
            b"<h1>Volcano</h1><p>" + VOLCANO.encode() + b"</p></body></html>",
        ),
        ("table.csv", b"animal,sound\ncat,meow\ndog,woof\n"),
        ("animals.docx", _docx([CATS, VOLCANO])),
        ("hand.pdf", _pdf_with_text("Penguins are flightless birds of the southern ocean")),
        ("spec.pdf", fixture_bytes("shared-mime-info-spec.pdf")),
        ("jieba.docx", fixture_bytes("jieba-readme-pandoc.docx")),
    ]
    documents = _process(_upload(client, base["id"], *files))

    for document in documents:
        assert document.status == "ready", (document.title, document.error)
        assert document.progress == 100
        assert document.chunk_count == document.chunks.count() > 0
        assert set(document.timings) == {"parse", "split", "embed", "store"}
    by_title = {d.title: d for d in documents}
    assert "猫是一种" in by_title["cats-gbk.txt"].chunks.first().text
    html_text = " ".join(by_title["page.html"].chunks.values_list("text", flat=True))
    assert "rupture in the crust" in html_text and "secret" not in html_text
    assert "animal: cat; sound: meow" in by_title["table.csv"].chunks.first().text
    spec = by_title["spec.pdf"]
    assert spec.chunks.filter(page=17).exists() and spec.chunks.filter(page=1).exists()
    jieba = by_title["jieba.docx"]
    assert jieba.chunks.filter(section="特点", text__contains="精确模式").exists()

    # English meaning (vector + keyword), a Chinese keyword query, and a real-world PDF.
    assert _search(client, "where does lava come from?")[0]["document_title"] in {
        "notes.md",
        "page.html",
        "animals.docx",
    }
    assert _search(client, "精确模式")[0]["document_title"] == "jieba.docx"
    assert _search(client, "penguins southern ocean")[0]["document_title"] == "hand.pdf"
    top = _search(client, "magic number glob pattern priority of MIME types", top_k=3)
    assert top[0]["document_title"] == "spec.pdf" and top[0]["page"] is not None


@pytest.mark.django_db
def test_pipeline_search_delete_and_isolation_on_each_backend(vector_backend, user, other_user):
    """The same behaviour against Milvus Lite (BM25 in Milvus) and a Milvus 2.3 server (BM25
    over the Chunk table): ingest, search, re-index without duplicates, delete propagation,
    and user B never sees user A's private chunks."""
    owner, stranger = _client(user), _client(other_user)
    private = _base(owner)
    # Two documents, so chunk ids and base ids differ (Milvus 2.3 once routed rows by the
    # primary key, which only showed when they did).
    files = [("volcano.txt", VOLCANO.encode()), ("cats.txt", CATS.encode())]
    [_volcano, cats] = _process(_upload(owner, private["id"], *files))
    theirs = _base(stranger, name="Theirs")
    _process(_upload(stranger, theirs["id"], ("volcano.txt", VOLCANO.encode())))

    store = get_vector_store()
    assert store.supports_bm25 is (vector_backend == "lite")
    hits = _search(owner, "how long do cats sleep?")
    assert hits[0]["document_id"] == cats.id and hits[0]["vector_score"] > 0.3
    assert all(h["knowledge_base_id"] == private["id"] for h in hits)
    assert _search(owner, "clowder", mode="keyword")[0]["document_id"] == cats.id

    # The stranger: no hits from the private base, whatever they ask or name.
    assert all(h["knowledge_base_id"] == theirs["id"] for h in _search(stranger, "cats sleep"))
    denied = stranger.post(
        "/api/v1/knowledge/search",
        {"query": "cats", "knowledge_base_ids": [private["id"]]},
        format="json",
    )
    assert denied.status_code == 404 and denied.json()["error"]["code"] == "not_found"
    assert stranger.get(f"/api/v1/knowledge/documents/{cats.id}/").status_code == 404

    # Re-index twice: same chunks, never a duplicate vector.
    for _ in range(2):
        reindex = owner.post(f"/api/v1/knowledge/documents/{cats.id}/reindex")
        assert reindex.status_code == 202
        document_vectorize(document_id=cats.id, task_id=reindex.json()["task_id"])
    cats.refresh_from_db()
    assert cats.status == "ready" and cats.chunk_count == 1
    collection = store.collection_name(model=private["embedding_model"], dimension=384)
    assert store.count(collection=collection, expression=f"document_id == {cats.id}") == 1

    # Delete: the next search cannot return the text, and the vectors are gone.
    assert owner.delete(f"/api/v1/knowledge/documents/{cats.id}/").status_code == 204
    after = _search(owner, "how long do cats sleep?") + _search(owner, "clowder", mode="keyword")
    assert all(h["document_id"] != cats.id and "clowder" not in h["snippet"] for h in after)
    assert store.count(collection=collection, expression=f"document_id == {cats.id}") == 0
    assert not Chunk.objects.filter(document_id=cats.id).exists()


@pytest.mark.django_db
def test_upload_errors_have_the_documented_shape(user, settings):
    client = _client(user)
    base = _base(client)

    settings.KNOWLEDGE_MAX_UPLOAD_BYTES = 1024
    too_big = _upload(client, base["id"], ("big.txt", b"a" * 2048))
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "file_too_large"
    settings.KNOWLEDGE_MAX_UPLOAD_BYTES = 20 * 1024 * 1024

    for name, content in [
        ("tool.exe", b"MZ\x90\x00"),
        ("image.png", b"\x89PNG\r\n\x1a\n"),
        ("noextension", b"hello"),
        ("fake.pdf", b"\x89PNG\r\n\x1a\nnot a pdf"),  # wrong extension vs content
        ("fake.txt", fixture_bytes("shared-mime-info-spec.pdf")),
        ("fake.docx", b"plain text pretending to be Word"),
    ]:
        response = _upload(client, base["id"], (name, content))
        assert response.status_code == 415, name
        body = response.json()["error"]
        assert body["code"] == "unsupported_file_type" and body["message"], name

    assert _upload(client, base["id"], ("a.txt", CATS.encode())).status_code == 202
    again = _upload(client, base["id"], ("same-content-other-name.txt", CATS.encode()))
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"
    twice_in_one = _upload(client, base["id"], ("x.txt", b"fresh text"), ("y.txt", b"fresh text"))
    assert twice_in_one.status_code == 409
    assert Document.objects.filter(knowledge_base_id=base["id"]).count() == 1

    not_multipart = client.post(
        f"/api/v1/knowledge/bases/{base['id']}/documents/", {"file": "x"}, format="json"
    )
    assert not_multipart.status_code == 400
    empty = client.post(f"/api/v1/knowledge/bases/{base['id']}/documents/", {}, format="multipart")
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "validation_error"


def _encrypted_pdf(algorithm: str) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(_pdf_with_text("secret plans"))).pages:
        writer.add_page(page)
    writer.encrypt(user_password="s3cret", owner_password="owner", algorithm=algorithm)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def _blank_pdf() -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=612, height=792)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


@pytest.mark.django_db
def test_unreadable_files_fail_with_a_readable_reason(user):
    client = _client(user)
    base = _base(client)
    real_pdf = fixture_bytes("shared-mime-info-spec.pdf")
    cases = {
        "rc4.pdf": (_encrypted_pdf("RC4-128"), "password-protected"),
        "rc4-40.pdf": (_encrypted_pdf("RC4-40"), "password-protected"),
        "blank.pdf": (_blank_pdf(), "No text could be extracted"),
        "truncated.pdf": (real_pdf[:3000], "damaged"),
        "garbage.pdf": (b"%PDF-1.7\n" + bytes(range(256)) * 20, "damaged"),
        "zero.pdf": (b"", "empty"),
        "broken.docx": (b"PK\x03\x04" + b"\x00" * 100, "damaged"),
        "not-word.docx": (_zip_without_word(), "not a Word"),
        "blank.txt": (b"   \n\n  ", "empty"),
    }
    for name, (content, reason) in cases.items():
        [document] = _process(_upload(client, base["id"], (name, content)))
        assert document.status == "failed", name
        assert reason in document.error, (name, document.error)
        assert document.chunk_count == 0 and not document.chunks.exists()
        shown = client.get(f"/api/v1/knowledge/documents/{document.id}/").json()
        assert shown["status"] == "failed" and reason in shown["error"]


def _zip_without_word() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
    return buffer.getvalue()


@pytest.mark.django_db
def test_base_permissions_and_sharing(user, other_user, staff_user):
    owner, other = _client(user), _client(other_user)
    base = _base(owner, visibility="shared", shared_with=[other_user.username])
    ingest(KnowledgeBase.objects.get(id=base["id"]), user, "cats.txt", CATS.encode())

    # Shared: the other user reads and searches, but cannot change or upload.
    assert other.get(f"/api/v1/knowledge/bases/{base['id']}/").status_code == 200
    assert _search(other, "clowder of cats")[0]["knowledge_base_id"] == base["id"]
    assert (
        other.patch(
            f"/api/v1/knowledge/bases/{base['id']}/", {"name": "x"}, format="json"
        ).status_code
        == 403
    )
    assert _upload(other, base["id"], ("x.txt", b"hello")).status_code == 403
    assert other.delete(f"/api/v1/knowledge/bases/{base['id']}/").status_code == 403

    # Unshared: gone for them (404, never 403), and their searches stop finding it.
    response = owner.patch(
        f"/api/v1/knowledge/bases/{base['id']}/", {"visibility": "private"}, format="json"
    )
    assert response.status_code == 200 and response.json()["reindex_task_id"] is None
    assert other.get(f"/api/v1/knowledge/bases/{base['id']}/").status_code == 404
    assert _search(other, "clowder of cats") == []
    assert other.get("/api/v1/knowledge/bases/").json()["count"] == 0
    assert owner.get("/api/v1/knowledge/bases/").json()["results"][0]["document_count"] == 1

    # Staff read every base; unauthenticated callers are refused.
    assert _search(_client(staff_user), "clowder of cats")[0]["knowledge_base_id"] == base["id"]
    assert APIClient().get("/api/v1/knowledge/bases/").status_code in (401, 403)

    bad = owner.post(
        "/api/v1/knowledge/bases/", {"name": "x", "shared_with": ["nobody"]}, format="json"
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "validation_error"


@pytest.mark.django_db
def test_deleting_a_base_removes_its_chunks_and_vectors(user):
    client = _client(user)
    base = knowledge_base_create(owner=user, name="Temp")
    ingest(base, user, "cats.txt", CATS.encode())
    assert _search(client, "clowder")
    assert client.delete(f"/api/v1/knowledge/bases/{base.id}/").status_code == 204
    store = get_vector_store()
    collection = store.collection_name(model=base.embedding_model, dimension=384)
    assert store.count(collection=collection, expression=f"kb_id == {base.id}") == 0
    assert _search(client, "clowder") == []
    assert not Chunk.objects.exists()
