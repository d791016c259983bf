"""/api/v1/assistants/: CRUD, who sees and changes what, the plan flag, and settings checked
when an assistant is saved (model served, parameters in range, bases lendable)."""

import pytest

from assistants.models import Assistant
from knowledge.models import KnowledgeBase
from tests.factories import UserFactory, plan
from throttling.models import Plan

pytestmark = pytest.mark.django_db

URL = "/api/v1/assistants/"


def detail(assistant_id: int) -> str:
    return f"{URL}{assistant_id}/"


def code(response) -> str:
    return response.json()["error"]["code"]


def test_create_read_update_delete(pro_client, pro_user, settings):
    settings.ZHIPUAI_API_KEY, settings.GLM_MODEL = "k", "glm-4"
    settings.GLM_MODELS = ["glm-4-flash"]
    base = KnowledgeBase.objects.create(owner=pro_user, name="Handbook")
    created = pro_client.post(
        URL,
        {
            "name": "  HR helper ",
            "icon": "book",
            "description": "Answers HR questions",
            "system_prompt": "You answer HR questions.",
            "knowledge_base_ids": [base.id],
            "provider": "zhipuai",
            "model": "glm-4-flash",
            "temperature": 0.2,
            "max_tokens": 300,
            "opening_message": "Hi! Ask me about leave.",
            "suggested_questions": ["How many days of leave?", " ", "Who approves?"],
            "sources_only": True,
            "fallback_message": "Not in the handbook.",
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["name"] == "HR helper" and body["icon"] == "book"
    assert body["suggested_questions"] == ["How many days of leave?", "Who approves?"]
    assert body["knowledge_base_ids"] == [base.id] and body["model"] == "glm-4-flash"
    assert body["visibility"] == "private" and body["is_owner"] and body["can_edit"]

    url = detail(body["id"])
    changed = pro_client.patch(url, {"name": "HR", "temperature": None}, format="json")
    assert changed.status_code == 200
    assert changed.json()["name"] == "HR" and changed.json()["temperature"] is None
    # Untouched fields stay.
    assert changed.json()["system_prompt"] == "You answer HR questions."
    assert [a["name"] for a in pro_client.get(URL).json()["results"]] == ["HR"]

    assert pro_client.delete(url).status_code == 204
    assert code(pro_client.get(url)) == "not_found"


@pytest.mark.parametrize(
    ("visibility", "who", "read", "change"),
    [
        ("private", "owner", 200, 200),
        ("private", "listed", 404, 404),
        ("private", "other", 404, 404),
        ("private", "staff", 200, 200),
        ("private", "anonymous", 401, 401),
        ("listed", "owner", 200, 200),
        ("listed", "listed", 200, 403),
        ("listed", "other", 404, 404),
        ("listed", "staff", 200, 200),
        ("listed", "anonymous", 401, 401),
        ("everyone", "owner", 200, 200),
        ("everyone", "listed", 200, 403),
        ("everyone", "other", 200, 403),
        ("everyone", "staff", 200, 200),
        ("everyone", "anonymous", 401, 401),
    ],
)
def test_visibility_matrix(
    visibility, who, read, change, pro_user, make_assistant, client_for, staff_user
):
    listed = UserFactory()
    assistant = make_assistant(
        pro_user,
        name="Secretive",
        system_prompt="the secret prompt",
        visibility=visibility,
        shared_with=[listed.username],
    )
    caller = {
        "owner": pro_user,
        "listed": listed,
        "other": UserFactory(),
        "staff": staff_user,
        "anonymous": None,
    }[who]
    client = client_for(caller)

    got = client.get(detail(assistant.id))
    assert got.status_code == read
    listing = client.get(URL)
    names = [a["name"] for a in listing.json().get("results", [])]
    assert ("Secretive" in names) == (read == 200)
    if read == 200:
        # The prompt and settings are shown to whoever may change them, and no one else.
        assert ("system_prompt" in got.json()) == (change == 200)
    else:
        assert "secret" not in got.content.decode()

    patched = client.patch(detail(assistant.id), {"name": "Renamed"}, format="json")
    assert patched.status_code == change
    deleted = client.delete(detail(assistant.id))
    assert deleted.status_code == (204 if change == 200 else change)
    assert Assistant.objects.filter(id=assistant.id).exists() == (change != 200)


def test_plan_flag_gates_creating_and_editing(auth_client, user, pro_client, make_assistant):
    # Defaults: off for free, on for pro and enterprise.
    assert not plan("free").can_create_assistants
    assert plan("pro").can_create_assistants and plan("enterprise").can_create_assistants
    refused = auth_client.post(URL, {"name": "Mine"}, format="json")
    assert refused.status_code == 403 and code(refused) == "permission_denied"
    assert not Assistant.objects.exists()
    assert auth_client.get(f"{URL}options/").json()["can_create"] is False

    Plan.objects.filter(tier="free").update(can_create_assistants=True)
    user.refresh_from_db()
    created = auth_client.post(URL, {"name": "Mine"}, format="json")
    assert created.status_code == 201
    # Downgraded: the assistant stays usable and deletable, but not editable.
    Plan.objects.filter(tier="free").update(can_create_assistants=False)
    url = detail(created.json()["id"])
    assert code(auth_client.patch(url, {"name": "x"}, format="json")) == "permission_denied"
    assert auth_client.get(url).status_code == 200
    assert auth_client.delete(url).status_code == 204


def test_staff_create_whatever_their_plan(client_for, staff_user):
    assert not plan("free").can_create_assistants and staff_user.plan_id is None
    assert client_for(staff_user).post(URL, {"name": "Team"}, format="json").status_code == 201


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"provider": "zhipuai", "model": "glm-4"}, "model"),  # no Zhipu key configured
        ({"provider": "openai_compatible"}, "model"),  # no server configured
        ({"provider": "offline", "model": "glm-4"}, "model"),
        ({"provider": "nonsense"}, "model"),
        ({"model": "glm-4"}, "model"),  # a model without its provider
        ({"temperature": 1.5}, "temperature"),
        ({"score_threshold": 2}, "score_threshold"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 100_000}, "max_tokens"),
        ({"icon": "<svg onload=alert(1)>"}, "icon"),
        ({"sources_only": True}, "sources_only"),  # without a knowledge base
        ({"suggested_questions": ["x" * 201]}, "suggested_questions"),
        ({"shared_with": ["nobody-has-this-name"]}, "shared_with"),
    ],
)
def test_invalid_settings_are_refused_when_saved(pro_client, settings, fields, field):
    settings.ZHIPUAI_API_KEY, settings.OPENAI_COMPAT_BASE_URL = "", ""
    response = pro_client.post(URL, {"name": "Bad", **fields}, format="json")
    assert response.status_code == 400, response.json()
    assert code(response) == "validation_error"
    assert field in response.json()["error"]["details"]
    assert not Assistant.objects.exists()


def test_models_offered_are_the_configured_ones(pro_client, settings):
    settings.ZHIPUAI_API_KEY, settings.GLM_MODEL, settings.GLM_MODELS = "k", "glm-4", ["glm-4-air"]
    settings.OPENAI_COMPAT_BASE_URL = "http://127.0.0.1:1/v1"
    settings.OPENAI_COMPAT_MODEL, settings.OPENAI_COMPAT_MODELS = "glm-4-9b-chat", []
    options = pro_client.get(f"{URL}options/").json()
    assert options["models"] == [
        {"provider": "zhipuai", "model": "glm-4"},
        {"provider": "zhipuai", "model": "glm-4-air"},
        {"provider": "openai_compatible", "model": "glm-4-9b-chat"},
        {"provider": "offline", "model": "offline"},
    ]
    for choice in options["models"]:
        response = pro_client.post(URL, {"name": choice["model"], **choice}, format="json")
        assert response.status_code == 201
    unserved = pro_client.post(
        URL, {"name": "x", "provider": "zhipuai", "model": "gpt-4"}, format="json"
    )
    assert unserved.status_code == 400


def test_knowledge_bases_must_be_readable_and_lendable(pro_client, pro_user, make_assistant):
    owner = UserFactory()
    own = KnowledgeBase.objects.create(owner=pro_user, name="Own")
    public = KnowledgeBase.objects.create(owner=owner, name="Public", visibility="public")
    shared = KnowledgeBase.objects.create(owner=owner, name="Shared", visibility="shared")
    shared.shared_with.add(pro_user)
    hidden = KnowledgeBase.objects.create(owner=owner, name="Hidden")

    unreadable = pro_client.post(
        URL, {"name": "a", "knowledge_base_ids": [hidden.id]}, format="json"
    )
    assert unreadable.status_code == 404 and "Hidden" not in unreadable.content.decode()
    # A base shared with the owner serves the owner's private assistant...
    private = pro_client.post(
        URL, {"name": "b", "knowledge_base_ids": [own.id, shared.id]}, format="json"
    )
    assert private.status_code == 201
    # ...but it is not theirs to lend to others.
    lent = pro_client.patch(detail(private.json()["id"]), {"visibility": "everyone"}, format="json")
    assert lent.status_code == 400
    assert lent.json()["error"]["details"]["refused_ids"] == [shared.id]
    ok = pro_client.post(
        URL,
        {"name": "c", "visibility": "everyone", "knowledge_base_ids": [own.id, public.id]},
        format="json",
    )
    assert ok.status_code == 201
