"""Ids from clients are bounded to what the database can store: an id beyond a 64-bit
integer is a 404 (in a URL) or a validation error (in a body), never an overflow inside the
database driver."""

from rest_framework import serializers

MAX_ID = 2**63 - 1


def IdField(**kwargs) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=1, max_value=MAX_ID, **kwargs)


class IdConverter:
    """`<id:name>` in URLs: at most 18 digits, so it always fits a 64-bit integer."""

    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)
