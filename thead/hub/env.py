"""The Hub's environment, read when called (not when ``huggingface_hub`` was imported, so the
variables work whatever was imported first): ``HF_ENDPOINT``, ``HF_HUB_CACHE``/``HF_HOME``, the
offline rule, ``$THEAD_HUB_TIMEOUT``; and one-line reasons for network failures."""

from __future__ import annotations

import os

from thead.errors import WeightsError

WEIGHTS_ENV = "THEAD_WEIGHTS"
TIMEOUT_ENV = "THEAD_HUB_TIMEOUT"
DEFAULT_TIMEOUT_S = 5.0


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def endpoint() -> str:
    """The Hub's URL: ``$HF_ENDPOINT`` as it is now, else huggingface_hub's default."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def cache_dir() -> str:
    """The Hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else huggingface_hub's default."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return constants.HF_HUB_CACHE


def offline() -> bool:
    """thead's offline rule (``thead.download.offline``: ``$THEAD_OFFLINE``/``$HF_HUB_OFFLINE``),
    plus what ``huggingface_hub`` also honours: ``$TRANSFORMERS_OFFLINE`` and its own
    ``HF_HUB_OFFLINE`` constant."""
    from huggingface_hub import constants

    from thead import download

    return download.offline() or _env_true("TRANSFORMERS_OFFLINE") or constants.HF_HUB_OFFLINE


def timeout_s(timeout_s: float | None) -> float:
    """Seconds the Hub may take to answer: the argument, else ``$THEAD_HUB_TIMEOUT``, else 5."""
    if timeout_s is not None:
        return float(timeout_s)
    value = os.environ.get(TIMEOUT_ENV)
    if value:
        try:
            return float(value)
        except ValueError:
            raise WeightsError(f"${TIMEOUT_ENV} must be a number of seconds, got {value!r}") from None
    return DEFAULT_TIMEOUT_S


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def network_reason(e: BaseException) -> str:
    import httpx2

    if isinstance(e, httpx2.TimeoutException):
        return "no answer within the timeout"
    if isinstance(e, httpx2.ConnectError):
        return f"connection failed: {first_line(e)}"
    return first_line(e)
