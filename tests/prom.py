"""Reading /metrics in tests: the exposition parsed with prometheus_client's own parser, and
values summed over the samples whose labels include the given ones."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

TOKEN_HEADER = {"Authorization": "Bearer test-metrics-token"}  # METRICS_TOKEN of test settings


class Scrape:
    def __init__(self, text: str) -> None:
        self.samples = [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        return sum(
            value
            for sample_name, sample_labels, value in self.samples
            if sample_name == name and labels.items() <= sample_labels.items()
        )

    def has(self, name: str, **labels: str) -> bool:
        return any(
            sample_name == name and labels.items() <= sample_labels.items()
            for sample_name, sample_labels, _value in self.samples
        )


def scrape(client) -> Scrape:
    """/metrics through a Django test client that may read it (staff session or token)."""
    response = client.get("/metrics", headers=TOKEN_HEADER)
    assert response.status_code == 200, response.content[:300]
    return Scrape(response.content.decode())
