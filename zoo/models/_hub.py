"""Downloads of model cards and weight files from ``$ZOO_WEIGHTS_URL``.

What a weights server sends is checked before anything is written:

- the URL is ``https://`` (or a local ``file://``); plain ``http://`` only when
  the caller allows it (``allow_http=True``, or ``ZOO_WEIGHTS_ALLOW_HTTP=1``),
  and a redirect may not leave https either;
- a card is read into memory (at most 1 MiB) and checked field by field
  ([`ModelCard.from_json`][zoo.models.ModelCard.from_json]): its weight file is
  exactly ``<preset>-<dataset>.safetensors``, a plain name in the cache;
- a weight file streams into a hidden ``.part`` file beside its target, at
  most as many bytes as its card's config needs, and is renamed into place
  only once its SHA-256 matches; any failure removes the ``.part`` file.

Weights from the Hugging Face Hub (``pretrained="hf-hub:<repo>"``) are
downloaded by ``huggingface_hub`` (the ``hub`` extra) into its own cache, from
``$HF_ENDPOINT`` when set. zoo records each file's SHA-256 at its first download
in ``<weights cache>/hf-hub/sha256.json`` (see :func:`hub_record_path`) and
refuses, on every later load, a file whose SHA-256 differs: a cache damaged on
disk, or weights replaced on the Hub under the same name.
"""

import json
import os
import pathlib
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .._files import atomic_write
from ..data._download import _USER_AGENT, _describe, sha256_file
from ._cards import ModelCard, check_name, refuse_link, weights_cache_dir

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


HF_HUB_PREFIX = "hf-hub:"
"""The prefix of a ``pretrained=`` source on the Hugging Face Hub."""
_REPO_RE = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def hub_record_path() -> pathlib.Path:
    """The JSON file of the SHA-256 of every Hub file zoo loaded:
    ``<weights cache>/hf-hub/sha256.json`` (``$ZOO_WEIGHTS_CACHE``, else
    ``$XDG_CACHE_HOME/zoo/weights``, else ``~/.cache/zoo/weights``)."""
    return weights_cache_dir() / "hf-hub" / "sha256.json"


def parse_hub_source(source: str) -> tuple[str, str | None]:
    """``"hf-hub:<owner>/<name>[@<revision>]"`` as ``(repo_id, revision)``.

    Raises:
        ValueError: not of that form.
    """
    repo, _, revision = source.removeprefix(HF_HUB_PREFIX).partition("@")
    if not source.startswith(HF_HUB_PREFIX) or not _REPO_RE.fullmatch(repo):
        raise ValueError(
            f"{source!r} is not a Hub source: write 'hf-hub:<owner>/<name>', e.g. "
            "'hf-hub:timm/resnet50.a1_in1k' (optionally '@<revision>')."
        )
    return repo, revision or None


def _read_record(path: pathlib.Path) -> dict[str, Any]:
    refuse_link(path)
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(
            f"{path} is not the JSON zoo writes ({error}): delete it (the SHA-256 "
            "of each Hub file is recorded again at its next load)."
        ) from None
    if not isinstance(record, dict):
        raise ValueError(f"{path} is not a JSON object: delete it.")
    return record


def check_recorded_sha256(entry: str, path: pathlib.Path, commit: str) -> str:
    """Record ``path``'s SHA-256 as ``entry`` on first sight; later, check it.

    Returns:
        The file's SHA-256.

    Raises:
        ValueError: the SHA-256 differs from the one recorded for ``entry``.
    """
    actual = sha256_file(path)
    record_path = hub_record_path()
    record = _read_record(record_path)
    known = record.get(entry)
    if known is None:
        record[entry] = {"sha256": actual, "commit": commit}
        record_path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps(record, indent=1, sort_keys=True) + "\n"
        atomic_write(record_path, body.encode("utf-8"))
        return actual
    expected = known.get("sha256") if isinstance(known, dict) else None
    if expected != actual:
        raise ValueError(
            f"{path}: SHA-256 {actual}, but zoo recorded {expected} for {entry} "
            f"(commit {known.get('commit') if isinstance(known, dict) else '?'}) "
            f"when it first loaded it. Refused: the file changed since (damaged "
            "in the Hub cache, or replaced on the Hub under the same name). If "
            f"the new file is the one you want, delete the entry {entry!r} from "
            f"{record_path} and load it again."
        )
    return actual


def hub_file(
    source: str, *, preset: str | None = None, filename: str = "model.safetensors"
) -> pathlib.Path:
    """Download ``filename`` of the Hub repository ``source`` (or find it in
    ``huggingface_hub``'s cache), its SHA-256 checked against zoo's record.

    ``$HF_ENDPOINT`` and ``$HF_HUB_CACHE`` are read at each call, so setting
    them after ``huggingface_hub`` was imported still counts.

    Args:
        source: ``"hf-hub:<owner>/<name>[@<revision>]"``.
        preset: the zoo preset it is for: a ``timm/<architecture>.<tag>``
            repository must be of that architecture.
        filename: the file in the repository.

    Raises:
        ImportError: ``huggingface_hub`` is not installed.
        ValueError: a malformed source, a timm repository of another
            architecture, a failed download, or a SHA-256 other than recorded.
    """
    repo_id, revision = parse_hub_source(source)
    owner, _, name = repo_id.partition("/")
    architecture = name.partition(".")[0]
    if preset is not None and owner == "timm" and architecture != preset:
        raise ValueError(
            f"{source} holds timm's {architecture!r}, not {preset!r}: load it "
            f"with zoo.create_model({architecture!r}, pretrained=...)."
        )
    try:
        import huggingface_hub
    except ImportError:
        raise ImportError(
            f"pretrained={source!r} downloads with huggingface_hub: pip install "
            "'typed-zoo[hub]'. Offline, pass the path of a model.safetensors "
            "instead."
        ) from None
    endpoint = os.environ.get("HF_ENDPOINT") or None
    try:
        local = huggingface_hub.hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            endpoint=endpoint,
            cache_dir=os.environ.get("HF_HUB_CACHE") or None,
        )
    except Exception as error:  # huggingface_hub's HTTP, cache and offline errors
        raise ValueError(
            f"Could not get {filename} of {repo_id} from the Hugging Face Hub "
            f"({endpoint or 'https://huggingface.co'}): {type(error).__name__}: "
            f"{error}. Check the name and the network, or pass the path of a "
            "downloaded model.safetensors."
        ) from error
    path = pathlib.Path(local)
    commit = path.parent.name if path.parent.parent.name == "snapshots" else ""
    entry = f"{repo_id}@{revision or 'main'}/{filename}"
    check_recorded_sha256(entry, path, commit)
    return path
