"""Downloads of model cards and weight files from ``$ZOO_WEIGHTS_URL``.

What a weights server sends is checked before anything is written:

- the URL is ``https://`` (or a local ``file://``); plain ``http://`` only when
  the caller allows it (``allow_http=True``, or ``ZOO_WEIGHTS_ALLOW_HTTP=1``),
  and a redirect may not leave https either;
- a card is read into memory (at most 1 MiB) and checked field by field
  ([`ModelCard.from_json`][zoo.ModelCard.from_json]): its weight file is
  exactly ``<preset>-<dataset>.safetensors``, a plain name in the cache;
- a weight file streams into a hidden ``.part`` file beside its target, at
  most as many bytes as its card's config needs, and is renamed into place
  only once its SHA-256 matches; any failure removes the ``.part`` file.
"""

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ..data._download import _USER_AGENT, _describe
from ._cards import ModelCard, check_name

ALLOW_HTTP_ENV = "ZOO_WEIGHTS_ALLOW_HTTP"
"""Set to ``1`` to allow plain-http weight URLs (a local test server, say)."""

MAX_CARD_BYTES = 1 << 20
"""The largest model card zoo downloads."""


def http_allowed(allow_http: bool | None) -> bool:
    """``allow_http``, or when it is ``None``, whether ``$ZOO_WEIGHTS_ALLOW_HTTP=1``."""
    if allow_http is None:
        return os.environ.get(ALLOW_HTTP_ENV, "") == "1"
    return bool(allow_http)


def check_url(url: str, allow_http: bool) -> None:
    """Refuse a weights URL that is not https (or file), or http unless allowed.

    Raises:
        ValueError: another scheme, or http without ``allow_http``.
    """
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme in ("https", "file") or (scheme == "http" and allow_http):
        return
    if scheme == "http":
        raise ValueError(
            f"Refusing to fetch weights over plain http ({url}): anyone on the "
            "way could change them. Use an https:// URL in ZOO_WEIGHTS_URL, or "
            f"allow http explicitly with allow_http=True or {ALLOW_HTTP_ENV}=1 "
            "(for a server you trust on your own network)."
        )
    raise ValueError(
        f"Refusing to fetch weights from {url}: ZOO_WEIGHTS_URL must be an "
        "https:// (or file://) URL."
    )


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects only to URLs that ``check_url`` accepts."""

    def __init__(self, allow_http: bool) -> None:
        self.allow_http = allow_http

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        try:
            check_url(newurl, self.allow_http)
        except ValueError as error:
            raise urllib.error.HTTPError(
                newurl, code, f"redirect refused: {error}", headers, fp
            ) from None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def opener(allow_http: bool) -> Any:
    """A ``(url, timeout) -> response`` that follows only allowed redirects."""
    build = urllib.request.build_opener(_Redirects(allow_http))

    def open_url(url: str, timeout: float) -> Any:
        check_url(url, allow_http)
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        return build.open(request, timeout=timeout)

    return open_url


def join(base: str, file: str) -> str:
    """``base`` (a folder URL) and a plain file name."""
    return f"{base.rstrip('/')}/{file}"


def download_card(
    base: str, preset: str, dataset: str, timeout: float, allow_http: bool
) -> tuple[ModelCard, bytes]:
    """Download and check the card of ``preset`` on ``dataset``; write nothing.

    Returns:
        The card and its bytes, to be written once what it describes is there.

    Raises:
        ValueError: the URL is refused, the download fails, or the body is not
            the valid card of ``preset`` on ``dataset``.
    """
    name = check_name(preset, dataset)
    url = join(base, f"{name}.json")
    check_url(url, allow_http)
    try:
        with opener(allow_http)(url, timeout) as response:
            body = response.read(MAX_CARD_BYTES + 1)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"Could not download the model card {url}: {_describe(error)}."
        ) from None
    if len(body) > MAX_CARD_BYTES:
        raise ValueError(
            f"{url} is larger than a model card can be ({MAX_CARD_BYTES:,} bytes)."
        )
    try:
        data = json.loads(body)
    except ValueError as error:
        raise ValueError(f"{url} is not a zoo model card: {error}") from None
    card = ModelCard.from_json(data, source=url)
    if (card.preset, card.dataset) != (preset, dataset):
        raise ValueError(
            f"{url} is the card of {card.preset!r} on {card.dataset!r}, not of "
            f"{preset!r} on {dataset!r}: the server is misconfigured."
        )
    return card, body
