"""Compact values: msgpack, zlib-compressed above CACHE_COMPRESS_MIN_BYTES.

One header byte tells the formats apart so the threshold can change without a flush.
Dates, datetimes (timezone kept), decimals and UUIDs survive a round trip; tuples come back
as lists (like JSON)."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
import zlib

import msgpack
from django.conf import settings
from django.utils.functional import Promise

_PLAIN = b"m"
_ZLIB = b"z"

_EXT_DATETIME = 1
_EXT_DATE = 2
_EXT_DECIMAL = 3
_EXT_UUID = 4
_EXT_TIME = 5


def _default(obj):
    if isinstance(obj, dt.datetime):
        return msgpack.ExtType(_EXT_DATETIME, obj.isoformat().encode())
    if isinstance(obj, dt.date):
        return msgpack.ExtType(_EXT_DATE, obj.isoformat().encode())
    if isinstance(obj, dt.time):
        return msgpack.ExtType(_EXT_TIME, obj.isoformat().encode())
    if isinstance(obj, decimal.Decimal):
        return msgpack.ExtType(_EXT_DECIMAL, str(obj).encode())
    if isinstance(obj, uuid.UUID):
        return msgpack.ExtType(_EXT_UUID, obj.bytes)
    if isinstance(obj, Promise):  # lazy translations
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"Cannot cache a value of type {type(obj).__name__}")


def _ext_hook(code: int, data: bytes):
    if code == _EXT_DATETIME:
        return dt.datetime.fromisoformat(data.decode())
    if code == _EXT_DATE:
        return dt.date.fromisoformat(data.decode())
    if code == _EXT_TIME:
        return dt.time.fromisoformat(data.decode())
    if code == _EXT_DECIMAL:
        return decimal.Decimal(data.decode())
    if code == _EXT_UUID:
        return uuid.UUID(bytes=data)
    return msgpack.ExtType(code, data)


def dumps(value) -> bytes:
    packed = msgpack.packb(value, default=_default, use_bin_type=True)
    if len(packed) >= settings.CACHE_COMPRESS_MIN_BYTES:
        return _ZLIB + zlib.compress(packed, 1)
    return _PLAIN + packed


def loads(data: bytes):
    header, body = data[:1], data[1:]
    if header == _ZLIB:
        body = zlib.decompress(body)
    elif header != _PLAIN:
        raise ValueError("Not a cached value")
    return msgpack.unpackb(body, ext_hook=_ext_hook, raw=False, strict_map_key=False)
