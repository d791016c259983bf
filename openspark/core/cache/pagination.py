"""Cached pages for list endpoints: the page's rows and count come from the cache, the links
are rebuilt for each request (they hold the caller's host), and the shape is exactly DRF's
`{"count", "next", "previous", "results"}`.

Conditional requests: a page's `ETag` is made of the version counters its cached read saw
(and what else shapes the response: the key, page, size, host). A client that sends it back
in `If-None-Match` gets `304 Not Modified` after one read of the counters, without the page
being read or rendered; any write that would invalidate the cached page moves a counter, so
it changes the ETag too."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

from django.utils.cache import patch_vary_headers
from django.utils.http import parse_etags, quote_etag
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from .keys import Scope, key_part
from .service import cache_get_or_set_versioned, cache_versions_get

# The caller (session cookie or API key) shapes the response as much as the URL does.
VARY = ("Authorization", "Cookie")


def _etag(request, namespace: str, key: tuple, versions: str) -> str:
    shape = f"{request.scheme}://{request.get_host()}|{namespace}|{key_part(key)}|{versions}"
    return quote_etag(hashlib.blake2b(shape.encode(), digest_size=16).hexdigest())


def _not_modified(request, etag: str) -> bool:
    tags = parse_etags(request.headers.get("If-None-Match", ""))
    return "*" in tags or etag in tags


def _page_number(request, paginator) -> int | str | None:
    """The page as DRF's paginator takes it: Django's Paginator reads the parameter with
    int(), so `page=001`, `page=+1` and `page= 1` are page 1; a `last_page_strings` value is
    kept as it is (its number depends on the count). None for what DRF answers 404 to."""
    value = request.query_params.get(paginator.page_query_param) or "1"
    if value in paginator.last_page_strings:
        return value
    try:
        number = int(value)
    except ValueError:
        return None
    return number if number >= 1 else None


def cached_page_response(
    *,
    request,
    view,
    paginator,
    namespace: str,
    key: tuple,
    scopes: Scope | Iterable[Scope],
    queryset: Callable,
    serialize: Callable[[list], list],
) -> Response:
    """paginator.paginate_queryset + get_paginated_response, cached under
    (key…, page, page size) in `namespace` and invalidated by `scopes`, both read as DRF's
    paginator reads them, so every spelling of one page shares one entry. Pages that are not
    page numbers get DRF's answer (404), uncached."""
    page_size = paginator.get_page_size(request)
    page = _page_number(request, paginator)
    if page is None:
        rows = paginator.paginate_queryset(queryset(), request, view=view)
        return paginator.get_paginated_response(list(serialize(rows)))

    def compute() -> dict:
        rows = paginator.paginate_queryset(queryset(), request, view=view)
        return {
            "count": paginator.page.paginator.count,
            "number": paginator.page.number,
            "num_pages": paginator.page.paginator.num_pages,
            "results": list(serialize(rows)),
        }

    page_key = (*key, page, page_size)
    if request.headers.get("If-None-Match"):
        current = cache_versions_get(namespace, scopes=scopes)
        etag = current and _etag(request, namespace, page_key, current)
        if etag and _not_modified(request, etag):
            response = Response(status=304, headers={"ETag": etag})
            patch_vary_headers(response, VARY)
            return response
    data, versions = cache_get_or_set_versioned(
        namespace, key=page_key, compute=compute, scopes=scopes
    )
    url = request.build_absolute_uri()
    number, param = data["number"], paginator.page_query_param
    next_link = replace_query_param(url, param, number + 1) if number < data["num_pages"] else None
    previous_link = None
    if number > 1:
        previous_link = (
            remove_query_param(url, param)
            if number == 2
            else replace_query_param(url, param, number - 1)
        )
    response = Response(
        {
            "count": data["count"],
            "next": next_link,
            "previous": previous_link,
            "results": data["results"],
        }
    )
    if versions is not None:
        # The versions the page was read under: never newer than its content.
        response["ETag"] = _etag(request, namespace, page_key, versions)
    patch_vary_headers(response, VARY)
    return response
