"""smtpcore.testing's SMTP AUTH: sessions that run PLAIN and LOGIN exchanges
(challenges, and ``*`` to cancel one, RFC 4954 §4), and a permissive peer
that answers them through smtpcore.sasl."""

from __future__ import annotations

from hypothesis import find, given, settings

from smtpcore import NEED_DATA, PAUSED, smtp
from smtpcore.smtp import Auth, AuthResponse, BadCommand, ClientConnection, Ehlo, ServerConnection
from smtpcore.testing import ConnectionPair
from smtpcore.testing import strategies as sst

SESSIONS = settings(max_examples=40)


def _auth_server() -> ServerConnection:
    return ServerConnection("mx.test", auth_mechanisms=["PLAIN", "LOGIN"], auth_require_tls=False)


def _pair() -> ConnectionPair:
    pair = ConnectionPair(server=_auth_server())
    pair.send(Ehlo("client.test"))
    return pair


def _last_reply(pair: ConnectionPair) -> smtp.Reply:
    return pair.answers[-1].reply


def test_the_permissive_peer_runs_a_login_exchange() -> None:
    """Before, AUTH LOGIN got 235 at once, with no Username: or Password: challenge."""
    pair = _pair()
    pair.send(Auth("LOGIN"))
    assert _last_reply(pair).code == 334
    assert _last_reply(pair).challenge_data() == b"Username:"
    assert pair.client.state is smtp.State.AUTH
    pair.send(AuthResponse(b"john"))
    assert _last_reply(pair).challenge_data() == b"Password:"
    pair.send(AuthResponse(b"secret"))
    assert _last_reply(pair).code == 235
    assert pair.server.authenticated


def test_plain_without_an_initial_response_gets_an_empty_challenge() -> None:
    pair = _pair()
    pair.send(Auth("PLAIN"))
    assert pair.transcript[-1] == ("S", b"334 \r\n")
    pair.send(AuthResponse(b"\x00john\x00secret"))
    assert _last_reply(pair).code == 235
    assert pair.server.authenticated


def test_an_empty_initial_response_is_sent_as_an_equals_sign() -> None:
    """RFC 4954 §4: '='. LOGIN reads it as no user name yet and asks for one;
    PLAIN, whose message cannot be empty (RFC 4616 §2), refuses it with 535."""
    pair = _pair()
    pair.send(Auth("LOGIN", b""))
    assert ("C", b"AUTH LOGIN =\r\n") in pair.transcript
    assert _last_reply(pair).challenge_data() == b"Username:"
    pair.send(AuthResponse(cancel=True))
    pair.send(Auth("PLAIN", b""))
    assert ("C", b"AUTH PLAIN =\r\n") in pair.transcript
    assert _last_reply(pair).code == 535
    assert not pair.server.authenticated


def test_a_cancelled_exchange_gets_501_and_the_session_goes_on() -> None:
    pair = _pair()
    pair.send(Auth("LOGIN"))
    pair.send(AuthResponse(b"john"))
    pair.send(AuthResponse(cancel=True))
    assert ("C", b"*\r\n") in pair.transcript
    assert _last_reply(pair).code == 501
    assert pair.client.state is smtp.State.READY
    pair.send(Auth("PLAIN", b"\x00john\x00secret"))
    assert _last_reply(pair).code == 235


@given(sst.sessions(extensions={"AUTH", "PIPELINING"}, auth_mechanisms=["PLAIN"]))
def test_sessions_draw_only_the_mechanisms_listed(session: sst.ClientSession) -> None:
    assert all(event.mechanism == "PLAIN" for event in session.events if isinstance(event, Auth))


@given(sst.sessions(extensions={"AUTH"}, auth_mechanisms=["CRAM-MD5"]))
def test_sessions_leave_auth_out_when_no_mechanism_listed_is_played(
    session: sst.ClientSession,
) -> None:
    assert not any(isinstance(event, Auth | AuthResponse) for event in session.events)


@given(
    sst.sessions(
        extensions={"AUTH", "P\u0131PELINING"},  # a dotless i: str.upper() makes it an I
        auth_mechanisms=["PLA\u0131N", "Login"],
    )
)
def test_sessions_upper_case_names_in_ascii_alone(session: sst.ClientSession) -> None:
    """Mechanism names and extension keywords are compared upper-cased in ASCII alone,
    as the machines compare them (``smtpcore.smtp.ServerAuth``, ``ServerExtensions``):
    PLAIN or PIPELINING written with a dotless i (U+0131) is neither; ``Login`` is LOGIN."""
    assert all(event.mechanism == "LOGIN" for event in session.events if isinstance(event, Auth))
    assert "PIPELINING" not in session.extensions


def _exchanges(session: sst.ClientSession) -> list[tuple[smtp.Event | bytes, ...]]:
    return [group for group in session.groups if isinstance(group[0], Auth | AuthResponse)]


def test_sessions_draw_every_form_of_exchange() -> None:
    """PLAIN with and without an initial response, LOGIN, and a cancelled exchange."""
    strategy = sst.sessions(extensions={"AUTH"})
    groups: list[tuple[smtp.Event | bytes, ...]] = [
        (Auth("PLAIN", b"\x00john\x00secret"),),  # PLAIN with an initial response
        (Auth("PLAIN"),),  # PLAIN after an empty challenge
        (AuthResponse(b"secret"),),  # LOGIN's password
        (AuthResponse(cancel=True),),  # a cancelled exchange
    ]
    for group in groups:

        def has(session: sst.ClientSession, group: tuple[smtp.Event | bytes, ...] = group) -> bool:
            return group in session.groups

        assert group in _exchanges(find(strategy, has))


@SESSIONS
@given(sst.sessions(extensions={"AUTH", "PIPELINING", "8BITMIME"}), sst.chunk_sizes())
def test_drawn_exchanges_log_in_through_the_permissive_peer(
    session: sst.ClientSession, up: list[int]
) -> None:
    pair = ConnectionPair(server=_auth_server(), client_chunks=up)
    pair.play(session)
    assert not any(isinstance(event, BadCommand) for event in pair.server_events)
    assert pair.server.authenticated == any(isinstance(e, Auth) for e in session.events)
    cancels = [a for a in pair.answers if isinstance(a.command, AuthResponse) and a.command.cancel]
    assert all(answered.reply.code == 501 for answered in cancels)
    assert pair.client.state is smtp.State.CLOSED


@SESSIONS
@given(sst.server_transcripts(extensions={"AUTH", "PIPELINING"}, text=False))
def test_transcripts_answer_exchanges_with_the_mechanisms_challenges(
    transcript: sst.ServerTranscript,
) -> None:
    """A client machine sends each group and reads each group's replies: a 334
    precedes every AUTH response, and the EHLO reply lists both mechanisms."""
    client = ClientConnection("client.test")
    client.receive_data(transcript.writes()[0])
    client.next_event()
    for group, write in zip(transcript.session.groups, transcript.writes()[1:], strict=True):
        for item in group:
            assert not isinstance(item, bytes)
            client.send(item)
        client.receive_data(write)
        while not isinstance(event := client.next_event(), smtp.ConnectionClosed):
            if event is NEED_DATA or event is PAUSED:
                break
    assert client.state is smtp.State.CLOSED
    ehlo = transcript.replies[0][0]
    assert "AUTH PLAIN LOGIN" in ehlo.lines
    for group, replies in zip(transcript.session.groups, transcript.replies, strict=True):
        if isinstance(group[0], AuthResponse) and not group[0].cancel:
            assert replies[0].code in (334, 235)
        if isinstance(group[0], Auth) and group[0].initial_response is None:
            prompt = b"Username:" if group[0].mechanism == "LOGIN" else b""
            assert replies[0].challenge_data() == prompt
