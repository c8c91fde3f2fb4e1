"""A small blocking JSON client for the operator tools (demotool.py, gtool.py).

Every call has one deadline for the whole exchange (connecting, sending, the answer's head and its
body: a reply dripped a byte at a time cannot hold a tool longer), reads at most MAX_REPLY_BYTES,
follows no redirect (the operator token must never go to another host, and a POST must never turn
into a GET) and turns every failure (a bad URL, no answer, a broken HTTP answer, a reply that is not
JSON, an error answered by the node) into one ToolError whose message is one line a person can act
on; the tools print it and exit 1, never a traceback.

TLS (an https:// URL): the server's certificate is checked against the system's CAs, or --cacert
FILE's (the network's own CA, tls/ca.pem of a node, for ENABLE_REST_SSL 1 and 2), and must carry
the URL's host name or --server-name NAME (the network's certificates name nodes, not hosts: the
RadioStation's carries "loopchain-radiostation", a peer's its peer id); --cert FILE and --key FILE
present a client certificate (ENABLE_REST_SSL 2), the key opened with $LOOPCHAIN_TLS_KEY_PASSWORD
when it is encrypted (as the nodes open theirs).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import socket
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from loopchain.types.certificates import CertificateError, check_password_text

MAX_REPLY_BYTES = 64 * 1024 * 1024  # a block of the largest size, with room to spare
# objects and arrays a reply may hold (outside its strings): a block's has a few a transaction
# (some thousands); a node answering 60 MB of "[{},{},...]" had a tool parse 30 million dicts
# (3 GB, review). Those in strings are not counted: a transaction's data holds what its client
# wrote, braces too (the first count refused a block of five such transactions: review)
MAX_REPLY_CONTAINERS = 250_000
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
DEFAULT_TIMEOUT = 10.0
READ_CHUNK = 64 * 1024
TLS_KEY_PASSWORD_ENV = "LOOPCHAIN_TLS_KEY_PASSWORD"  # as the nodes read it (p2p.grpc_util)


class ReplyTooComplex(ValueError):
    """A reply holding more objects and arrays than any answer of a node does."""


def parse_reply(raw: bytes) -> Any:
    """The JSON of a node's reply (at most MAX_REPLY_BYTES); ReplyTooComplex when it holds more
    than MAX_REPLY_CONTAINERS objects and arrays, ValueError or RecursionError when it is not
    JSON."""
    if raw.count(b"{") + raw.count(b"[") > MAX_REPLY_CONTAINERS and _containers(raw) > (
        MAX_REPLY_CONTAINERS
    ):
        raise ReplyTooComplex(
            f"the reply holds more than {MAX_REPLY_CONTAINERS} objects and arrays"
        )
    return json.loads(raw)


def _containers(raw: bytes) -> int:
    """The objects and arrays a JSON text opens outside its strings."""
    bare = _JSON_STRING.sub(b"", raw)
    return bare.count(b"{") + bare.count(b"[")


# control characters other than a line's end and a tab: a node's words printed as they came drove
# the terminal (clearing it, setting its title: review)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_text(text: str) -> str:
    """`text` with its control characters (but line ends and tabs) escaped, to print it."""
    return _CONTROLS.sub(lambda found: found[0].encode("unicode_escape").decode("ascii"), text)


class ToolError(Exception):
    """A failure to report on one line (exit status 1); its words are printable as they are."""

    def __init__(self, message: str) -> None:
        super().__init__(terminal_text(message))


def base_url(text: str, default_scheme: str = "http") -> str:
    """`http(s)://host:port` (or `host:port`) checked and without a trailing slash; ValueError
    naming what is wrong otherwise."""
    text = text.strip()
    if "://" not in text:
        text = f"{default_scheme}://{text}"
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{text!r}: the URL must start with http:// or https://")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r}: the port is not a number in 1..65535") from None
    if not parts.hostname or port is None or port == 0:
        raise ValueError(f"{text!r}: expected http://host:port")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ValueError(f"{text!r}: give only scheme, host and port (no path)")
    return f"{parts.scheme}://{parts.netloc}"


def _message(body: Any) -> str:
    if isinstance(body, dict):
        code, message = body.get("response_code"), body.get("message")
        if message is not None:
            return f"{message} (response_code {code})" if code is not None else str(message)
    return json.dumps(body)[:300] if not isinstance(body, str) else body[:300]


class _Deadline(TimeoutError):
    """The whole exchange's deadline passed."""


class _DeadlineSocket:
    """A connected socket whose every send and receive waits at most until `deadline` (a
    time.monotonic() value), however the peer spaces its bytes: the socket's own timeout bounds
    one operation only. http.client reads the answer through makefile()."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def _arm(self) -> None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise _Deadline
        self._sock.settimeout(left)

    def sendall(self, data: bytes) -> None:
        self._arm()
        self._sock.sendall(data)

    def recv_into(self, buffer: Any, size: int = 0) -> int:
        self._arm()
        return self._sock.recv_into(buffer, size)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self))

    def close(self) -> None:
        """Nothing: http.client closes its connection as soon as a head says Connection: close,
        before the body is read (a real socket stays open while its makefile() reader does);
        RestClient._exchange closes the socket once the answer is read."""


class _DeadlineReader(io.RawIOBase):
    def __init__(self, sock: _DeadlineSocket) -> None:
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._sock.recv_into(buffer)


def _printable(text: str, limit: int = 200) -> str:
    """Text from the network shown on one line: control characters escaped, cut at `limit`."""
    shown = text[:limit].encode("unicode_escape").decode("ascii")
    return shown + ("..." if len(text) > limit else "")


class RestClient:
    """JSON requests to one node's REST API (`base` is http(s)://host:port); over https with
    `tls` (default: the system's CAs) and the server's certificate naming `server_name`
    (default: the URL's host)."""

    def __init__(
        self,
        base: str,
        timeout: float = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
    ) -> None:
        self.base = base
        self.timeout = timeout
        self.headers = dict(headers or {})
        self.tls = tls
        self.server_name = server_name

    def _connection(self, deadline: float) -> tuple[http.client.HTTPConnection, socket.socket]:
        """A connected HTTP(S) connection whose socket keeps `deadline`, and that socket (the
        caller closes it)."""
        parts = urllib.parse.urlsplit(self.base)
        left = max(deadline - time.monotonic(), 0.001)
        connection = http.client.HTTPConnection(parts.netloc, timeout=left)
        connection.connect()
        sock: socket.socket = connection.sock
        if parts.scheme == "https":  # the handshake, within what is left of the deadline
            context = self.tls or ssl.create_default_context()
            try:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock = context.wrap_socket(sock, server_hostname=self.server_name or parts.hostname)
            except BaseException:
                connection.sock.close()
                raise
        connection.sock = _DeadlineSocket(sock, deadline)
        return connection, sock

    def _exchange(
        self, method: str, target: str, data: bytes | None, headers: dict[str, str]
    ) -> tuple[int, str | None, bytes]:
        """(status, Location, at most MAX_REPLY_BYTES + 1 bytes of the body) of one request."""
        deadline = time.monotonic() + self.timeout
        connection, sock = self._connection(deadline)
        try:
            connection.request(method, target, body=data, headers=headers)
            response = connection.getresponse()
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_REPLY_BYTES:
                chunk = response.read(min(READ_CHUNK, MAX_REPLY_BYTES + 1 - size))
                if not chunk:
                    if response.length:  # the connection ended before the promised length
                        raise http.client.IncompleteRead(b"".join(chunks), response.length)
                    break
                chunks.append(chunk)
                size += len(chunk)
            return response.status, response.getheader("Location"), b"".join(chunks)
        finally:
            connection.close()
            sock.close()

    def call(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """(HTTP status, decoded JSON) of one request; error statuses are returned, not raised.
        ToolError when there is no complete answer within the timeout, the answer redirects
        elsewhere or is not JSON."""
        query = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        target = path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body).encode()
        sent = {**self.headers, **(headers or {})}
        if data is not None:
            sent["Content-Type"] = "application/json"
        try:
            status, location, raw = self._exchange(method, target, data, sent)
        except TimeoutError:  # the deadline, or the socket's timeout that counts down to it
            raise ToolError(
                f"{self.base} gave no complete answer within {self.timeout:g} s"
            ) from None
        except http.client.HTTPException as exc:  # before OSError: RemoteDisconnected is both
            what = _printable(str(exc)) or type(exc).__name__
            if isinstance(exc, http.client.RemoteDisconnected) and self.base.startswith("https"):
                what += " (a server of mutual TLS does so without a client certificate: --cert)"
            raise ToolError(
                f"{method} {path}: {self.base} gave a broken HTTP answer: {what}"
            ) from None
        except ssl.SSLCertVerificationError as exc:  # before SSLError, which it is
            why = str(exc.verify_message or exc.reason).rstrip(".")
            hint = "--server-name NAME" if "mismatch" in why else "--cacert FILE of its CA"
            raise ToolError(f"TLS with {self.base} failed: {why} (see {hint})") from None
        except ssl.SSLError as exc:  # an OSError too: the TLS handshake
            why = str(exc.reason or exc)
            if "ALERT" in why:  # the server's refusal: TLS 1.3 CERTIFICATE_REQUIRED, say
                why += " (the server refused: does it want a client certificate, --cert?)"
            raise ToolError(f"TLS with {self.base} failed: {why}") from None
        except OSError as exc:
            raise ToolError(f"cannot reach {self.base}: {exc.strerror or exc}") from None
        if 300 <= status < 400:
            where = _printable(location or "(no Location)")
            raise ToolError(
                f"{method} {path}: HTTP {status}: redirected to {where}, which is not followed;"
                " give the node's own URL"
            )
        if len(raw) > MAX_REPLY_BYTES:
            raise ToolError(f"{method} {path}: the reply is larger than {MAX_REPLY_BYTES} bytes")
        try:
            return status, parse_reply(raw or b"null")
        except ReplyTooComplex as exc:
            raise ToolError(f"{method} {path}: {exc}") from None
        except (ValueError, RecursionError):
            raise ToolError(
                f"{method} {path} answered HTTP {status} with something that is not JSON"
            ) from None

    def ok(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """The decoded JSON of a successful request (HTTP 200 and response_code 0 when there is
        one); ToolError with the node's message otherwise."""
        status, reply = self.call(method, path, params, body, headers)
        code = reply.get("response_code", 0) if isinstance(reply, dict) else 0
        if status != 200 or code not in (0, "0"):
            raise ToolError(f"{method} {path}: HTTP {status}: {_message(reply)}")
        return reply

    def get(self, path: str, **params: Any) -> Any:
        return self.ok("GET", path, params)


def url_arg(text: str) -> str:
    """argparse type: a REST base URL (base_url), refused with its reason."""
    try:
        return base_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def seconds_arg(text: str) -> float:
    """argparse type: a number of seconds in (0, 3600]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 3600] seconds")
    return value


def add_tls_arguments(
    parser: argparse.ArgumentParser, key_flags: tuple[str, ...] = ("--key", "--tls-key")
) -> None:
    """--cacert, --cert, the client key (`key_flags`, into `tls_key`) and --server-name: TLS with
    an https:// node (tls_context)."""
    add = parser.add_argument
    add(
        "--cacert",
        metavar="FILE",
        help="CA certificates (PEM) the server's must chain to (default: the system's);"
        " a node's tls/ca.pem for the network's own (ENABLE_REST_SSL 1 and 2)",
    )
    add(
        "--cert", metavar="FILE", help="client certificate (PEM) for mutual TLS (ENABLE_REST_SSL 2)"
    )
    add(
        *key_flags,
        dest="tls_key",
        metavar="FILE",
        help=f"the client certificate's private key (PEM; encrypted: ${TLS_KEY_PASSWORD_ENV})",
    )
    add(
        "--server-name",
        metavar="NAME",
        help="the name the server's certificate must carry (default: the URL's host; the"
        " network's certificates name nodes: loopchain-radiostation, or a peer's id)",
    )


def tls_context(
    cacert: str | None, cert: str | None, key: str | None, environ: Mapping[str, str] | None = None
) -> ssl.SSLContext | None:
    """The client's TLS context for --cacert/--cert/--key (None when none is given); ToolError
    naming the file that cannot be read or used."""
    if cacert is None and cert is None and key is None:
        return None
    if key is not None and cert is None:
        raise ToolError("a client key needs --cert (the client certificate it belongs to)")
    context = ssl.create_default_context()
    if cacert is not None:
        try:
            context.load_verify_locations(cafile=cacert)
        except (OSError, ssl.SSLError) as exc:
            raise ToolError(f"--cacert {cacert}: {_file_problem(exc)}") from None
    if cert is not None:
        password = (os.environ if environ is None else environ).get(TLS_KEY_PASSWORD_ENV) or None
        try:
            check_password_text(password, f"${TLS_KEY_PASSWORD_ENV}")
            # "" rather than None: OpenSSL would ask on the terminal for an encrypted key's password
            context.load_cert_chain(cert, key, password=password or "")
        except CertificateError as exc:
            raise ToolError(str(exc)) from None
        except (OSError, ssl.SSLError) as exc:
            files = f"--cert {cert}" + (f" --key {key}" if key else "")
            raise ToolError(f"{files}: {_file_problem(exc)}") from None
    return context


def _file_problem(exc: OSError) -> str:
    """What is wrong with a certificate or key file, on one line."""
    if isinstance(exc, ssl.SSLError):
        return f"not a usable certificate or key ({exc.reason or exc})"
    return f"cannot read it: {exc.strerror or exc}"


def client_from_args(
    base: str, args: argparse.Namespace, headers: Mapping[str, str] | None = None
) -> RestClient:
    """A RestClient for `base` with the timeout and TLS options of `args` (add_tls_arguments)."""
    tls = tls_context(args.cacert, args.cert, args.tls_key)
    if tls is not None and not base.startswith("https://"):
        raise ToolError(f"--cacert, --cert and --key are for an https:// URL, not {base}")
    return RestClient(base, args.timeout, headers, tls, args.server_name)


def tls_argv(args: argparse.Namespace, key_flag: str = "--key") -> list[str]:
    """The TLS options of `args` as arguments again (for the menu's subcommands, loadtool)."""
    given = [
        ("--cacert", args.cacert),
        ("--cert", args.cert),
        (key_flag, args.tls_key),
        ("--server-name", args.server_name),
    ]
    return [text for flag, value in given if value is not None for text in (flag, value)]
