"""Staff edit assistants in the admin; the form refuses what the API refuses."""

import pytest
from django.test import Client

from assistants.models import Assistant
from knowledge.models import KnowledgeBase

pytestmark = pytest.mark.django_db

ADD = "/admin/assistants/assistant/add/"


@pytest.fixture
def admin_client(staff_user):
    client = Client()
    client.force_login(staff_user)
    return client


def form(owner, **fields):
    return {
        "owner": owner.pk,
        "name": "Support",
        "icon": "chat",
        "llm": "",
        "visibility": "everyone",
        "questions": "How do I reset my password?\n\nWhere is my invoice?",
        **fields,
    }


def test_staff_create_an_assistant_with_a_served_model(admin_client, staff_user, settings):
    settings.ZHIPUAI_API_KEY, settings.GLM_MODELS = "k", ["glm-4-flash"]
    page = admin_client.get(ADD).content.decode()
    assert 'value="zhipuai:glm-4-flash"' in page
    base = KnowledgeBase.objects.create(owner=staff_user, name="FAQ")
    response = admin_client.post(
        ADD, form(staff_user, llm="zhipuai:glm-4-flash", knowledge_bases=[base.id])
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assistant = Assistant.objects.get()
    assert (assistant.provider, assistant.model) == ("zhipuai", "glm-4-flash")
    assert assistant.suggested_questions == ["How do I reset my password?", "Where is my invoice?"]
    assert list(assistant.knowledge_bases.all()) == [base]


def test_the_admin_refuses_a_model_the_server_does_not_serve(admin_client, staff_user, settings):
    settings.ZHIPUAI_API_KEY = ""
    response = admin_client.post(ADD, form(staff_user, llm="zhipuai:glm-4"))
    assert response.status_code == 200
    assert "llm" in response.context["adminform"].form.errors
    assert not Assistant.objects.exists()


def test_the_admin_refuses_lending_a_users_private_base_from_their_assistant(admin_client, user):
    private = KnowledgeBase.objects.create(owner=KnowledgeBase._meta.get_field("owner")
                                           .related_model.objects.create(username="x"),
                                           name="Theirs")  # fmt: skip
    response = admin_client.post(ADD, form(user, knowledge_bases=[private.id]))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "owner owns or everyone can read" in str(errors["knowledge_bases"])
    assert not Assistant.objects.exists()
