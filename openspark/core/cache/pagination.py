"""Cached pages for list endpoints: the page's rows and count come from the cache, the links
are rebuilt for each request (they hold the caller's host), and the shape is exactly DRF's
`{"count", "next", "previous", "results"}`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from urllib.parse import urlencode

from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from .edge import edge_allow
from .keys import Scope
from .service import cache_get_or_set


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

    data = cache_get_or_set(namespace, key=(*key, page, page_size), compute=compute, scopes=scopes)
    # The response is this read plus the request's own URL: it may be replayed (edge.py).
    read = ((paginator.page_query_param, page), (paginator.page_size_query_param, page_size))
    edge_allow(
        query=urlencode([(name, value) for name, value in read if name in request.query_params])
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
    return Response(
        {
            "count": data["count"],
            "next": next_link,
            "previous": previous_link,
            "results": data["results"],
        }
    )
