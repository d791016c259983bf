"""Cached pages for list endpoints: the page's rows and count come from the cache, the links
are rebuilt for each request (they hold the caller's host), and the shape is exactly DRF's
`{"count", "next", "previous", "results"}`."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from .edge import edge_allow
from .keys import Scope
from .service import cache_get_or_set


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
    (key…, page, page size) in `namespace` and invalidated by `scopes`.
    Invalid pages raise DRF's NotFound as before (and are not cached)."""
    page_size = paginator.get_page_size(request)
    page = request.query_params.get(paginator.page_query_param) or "1"

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
    edge_allow(params=(paginator.page_query_param, paginator.page_size_query_param))
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
