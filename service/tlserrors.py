"""Telling a TLS certificate that is not trusted from any other failure to connect."""

from __future__ import annotations

import ssl

__all__ = ["certificate_error"]


def certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The failed certificate check somewhere down ``exc``'s chain of causes, if that is what happened.

    HTTP clients wrap it (httpx.ConnectError from ssl's error), and what to tell the operator
    differs: a missing CA file, not a network fault.
    """
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None
