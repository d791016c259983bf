# Chinese punctuation in the zh texts is intended.
# ruff: noqa: RUF001
"""The offline provider: quotes with citations, never a fake model."""

from openspark.llm.base import Delta, Finish, Passage
from openspark.llm.offline import OfflineChatProvider, excerpt, split_pieces

PASSAGES = [
    Passage(1, 10, "Travel guide", 100, "Book trains early. Keep receipts.", score=0.40),
    Passage(
        2,
        11,
        "Leave policy",
        110,
        "Staff get 20 days of annual leave. Unused days expire in March. "
        "Managers approve requests. Sick leave is separate. Ask HR for details.",
        score=0.92,
    ),
    Passage(3, 12, "Office hours", 120, "The office opens at 9.", score=0.10),
    Passage(4, 13, "Canteen", 130, "Lunch is served at noon.", score=0.35),
]


def run(messages, passages=()):
    events = list(OfflineChatProvider().stream(messages, passages=passages))
    deltas = [e for e in events if isinstance(e, Delta)]
    finishes = [e for e in events if isinstance(e, Finish)]
    assert events[-1] is finishes[0] and len(finishes) == 1
    return "".join(d.text for d in deltas), deltas, finishes[0]


def test_with_passages_quotes_the_best_ones_with_citations():
    text, deltas, finish = run([{"role": "user", "content": "How much leave do I get?"}], PASSAGES)

    lines = text.split("\n\n")
    assert lines[0] == (
        "Offline mode — no language model is configured. "
        "Relevant passages from your knowledge bases:"
    )
    # Best three by score, each keeping its own citation number.
    assert lines[1] == (
        '- Leave policy: "Staff get 20 days of annual leave. Unused days expire in March. '
        'Managers approve requests. …" [2]'
    )
    assert lines[2] == '- Travel guide: "Book trains early. Keep receipts." [1]'
    assert lines[3] == '- Canteen: "Lunch is served at noon." [4]'
    assert len(lines) == 4
    assert "glm" not in text.lower()
    assert len(deltas) > 10
    assert finish.finish_reason == "stop"
    assert finish.usage.completion_tokens > 0
    assert finish.usage.prompt_tokens > 0


def test_without_passages_says_no_model_is_configured_and_how_to_fix_it():
    text, deltas, _ = run([{"role": "user", "content": "Who are you? Are you GLM-4?"}])

    assert text.startswith("Offline mode — no language model is configured")
    assert "ZHIPUAI_API_KEY" in text
    assert "OPENAI_COMPAT_BASE_URL" in text
    assert "glm" not in text.lower()
    assert len(deltas) > 10


def test_replies_in_chinese_to_a_chinese_question():
    text, _, _ = run([{"role": "user", "content": "我有多少天年假？"}], PASSAGES[:1])
    assert text.startswith("离线模式：尚未配置语言模型。")
    assert text.endswith("[1]")

    text, _, _ = run([{"role": "user", "content": "你是谁"}])
    assert text.startswith("离线模式")
    assert "ZHIPUAI_API_KEY" in text
    assert "glm" not in text.lower()


def test_language_follows_the_last_user_message():
    messages = [
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "..."},
        {"role": "user", "content": "Now in English please"},
    ]

    text, _, _ = run(messages)

    assert text.startswith("Offline mode")


def test_complete_matches_the_stream():
    provider = OfflineChatProvider()
    messages = [{"role": "user", "content": "leave?"}]

    text, usage = provider.complete(messages, passages=PASSAGES)

    assert text == run(messages, PASSAGES)[0]
    assert usage.completion_tokens > 0
    assert provider.is_offline
    assert provider.name == "offline"


def test_pieces_rejoin_to_the_text():
    text = "Offline mode — 离线模式：尚未配置。 Two  spaces\nnewline"
    pieces = split_pieces(text)
    assert "".join(pieces) == text
    assert max(len(p) for p in pieces) <= len("Offline ")


def test_long_passages_are_cut():
    assert len(excerpt("word " * 500)) <= 301
    assert excerpt("一句。二句。三句。四句。") == "一句。二句。三句。…"
