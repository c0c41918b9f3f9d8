"""avp_http: AVP over HTTP (spec/avp-http.md), server and client.

Public API (everything in underscore modules is private):

    from avp_http import AvpApp, ServerConfig, Mailbox, Receiver, serve, BackgroundServer
    from avp_http import AvpClient, Reply, MessageStore, HttpProblem, RemoteAvpError

- ``AvpApp(receiver, ServerConfig(...))`` is an ASGI application; ``serve`` runs it on hypercorn
  (HTTP/1.1, h2c, h2 over TLS) until SIGINT/SIGTERM; ``BackgroundServer`` runs it on a thread.
- A ``Receiver`` decides the protocol side (negotiate, check_header, on_tensor, deliver);
  ``Mailbox`` is the model-less one. ``MessageStore`` holds messages by digest (2.3), which is
  how a sender hosts a large payload for a peer to fetch by reference.
- ``AvpClient`` speaks the binding with httpx over HTTP/2 or HTTP/1.1.
- ``post_body`` posts raw bytes to a running server and returns (status, problem or None);
  ``check_body`` does the same with a hostile-corpus entry point's contract (a summary, or the
  server's AvpError); ``open_session`` makes a handshake for the ``deliver`` resource.
- ``status_of(code)`` is the R-H5.2 table; ``prefix_digest(ids)`` the 2.4 digest.

The codec (``avp_codec``) never imports this package.
"""

from __future__ import annotations

from ._media import CONTENT_TYPE, MEDIA_TYPE, VERSIONS, message_digest, prefix_digest
from ._problem import HttpProblem, RemoteAvpError, status_of
from ._run import BackgroundServer, serve
from ._session import Negotiated, Session
from .client import AvpClient, Reply
from .probe import check_body, open_session, post_body
from .receiver import Answer, Delivery, Mailbox, Receiver
from .server import SERVER_LIMITS, AvpApp, ServerConfig
from .store import MessageStore, Stored

__all__ = [
    "AvpApp", "ServerConfig", "SERVER_LIMITS", "serve", "BackgroundServer",
    "Receiver", "Mailbox", "Answer", "Delivery", "Negotiated", "Session",
    "AvpClient", "Reply", "MessageStore", "Stored",
    "HttpProblem", "RemoteAvpError", "status_of", "post_body", "check_body", "open_session",
    "MEDIA_TYPE", "CONTENT_TYPE", "VERSIONS", "message_digest", "prefix_digest",
]
