"""Small SMTP servers, each correct but for one planted defect, for the checks to find.

:class:`SmallServer` is a deliberately plain SMTP server session written by
hand (not with smtpcore's machines, which would not have the defects): it
speaks EHLO, MAIL, RCPT, DATA, BDAT, RSET, NOOP, VRFY, HELP, QUIT and, when
given a TLS context, STARTTLS, and keeps the limits RFC 5321 names. Each
subclass below plants one defect that a published bug class has shown in
real servers:

- :class:`LfDotLfServer` ends DATA on ``LF.LF`` as well as ``CRLF.CRLF``
  (SMTP smuggling);
- :class:`DotSpaceEndServer` ends DATA at a dot line with blanks around the dot
  (``CRLF.SP CRLF``, ``CRLF SP.CRLF``) too: it strips them before it looks for
  the end (SMTP smuggling; RFC 5321 §4.1.1.4 ends data at ``CRLF.CRLF`` only);
- :class:`EagerBdatServer` answers ``BDAT`` before it has read the chunk's
  octets (RFC 3030 §2 says the reply follows the chunk);
- :class:`HoleBdatServer` refuses a malformed ``BDAT`` line but keeps the
  transaction open, so a later ``BDAT n LAST`` delivers the message with a
  hole (RFC 3030 §2 says the transaction has failed);
- :class:`DroppedReplyServer` fails the transaction at a refused ``BDAT`` line
  but sends no reply to the ``BDAT n LAST`` after it, and
  :class:`SilentHoleServer` also keeps the transaction open, so that BDAT
  delivers the message with a hole, unanswered (RFC 3030 §2: every BDAT gets
  one reply);
- :class:`NonAsciiDigitServer` parses numbers with ``str.isdigit()`` and
  ``int()``, so ``SIZE=²`` crashes the session;
- :class:`OutOfOrderServer` answers commands that arrived together out of
  order (refusals after acceptances; RFC 2920 §3.1 wants them in order);
- :class:`SplitCommandServer` takes whatever one read returned as a whole
  command (the same session gives other replies when the network splits it);
- :class:`PlaintextAfterStartTlsServer` runs commands that were pipelined
  behind ``STARTTLS`` after the handshake (CVE-2011-0411);
- :class:`LongLineTailServer` cuts an over-long command line at the limit
  and runs the rest as a command of its own;
- :class:`LongTextLineServer` folds message lines at 1000 octets, so the
  tail of a long line can be a lone dot that ends the message;
- :class:`FewRecipientsServer` refuses the eleventh recipient with ``550``
  (RFC 5321 §4.5.3.1.8 wants 100, and ``452`` for too many);
- :class:`SizeIgnoringServer` offers ``SIZE 10000`` and accepts anything;
- :class:`RcptBeforeMailServer` takes ``RCPT`` with no ``MAIL`` before it, opening
  a transaction with an implicit sender, as a planted aiosmtpd did (RFC 5321
  §3.3 wants 503);
- :class:`MailKeepsRecipientsServer` takes a second ``MAIL`` inside a transaction
  but keeps the old one's recipients, so ``DATA`` gets ``354`` (RFC 5321 §3.3:
  MAIL resets all state, recipients included).
- :class:`RsetKeepsRecipientsServer` and :class:`EhloKeepsRecipientsServer` keep
  a transaction's recipients through ``RSET`` or a new ``EHLO``, so the next
  transaction's ``DATA`` gets ``354`` with no ``RCPT`` of its own (RFC 5321
  §4.1.1.5, §4.1.4: both reset the recipients).
- :class:`UnstuffFirstOnlyServer` removes the stuffing dot of a message's first dot
  line only, and :class:`ReversedChunksServer` joins BDAT chunks last first: both
  answer as a good server does, and store another body (RFC 5321 §4.5.2, RFC 3030
  §2).
- :class:`PipelinedRsetServer` loses a message when an ``RSET`` comes in the same
  read as its end, though it answers ``250`` (RFC 2920 §3.1 lets a client pipeline
  RSET there).

Correct servers that a check must not blame, for they do what RFC 5321
allows: :class:`NewTransactionMailServer` answers a second ``MAIL`` ``250`` and
starts a new transaction, as qmail-smtpd does (§3.3), and
:class:`HardErrorLimitServer` ends the session with ``421`` after a few refused
commands, as Postfix does at its ``smtpd_hard_error_limit`` (§3.8). And
:class:`RateLimitedServer`, served through :func:`rate_limited`, refuses some
connections with a ``421`` greeting or a ``421`` to EHLO (§3.8), as a server that
limits a client's connection rate does, or with a ``554`` greeting (§3.1).

Two ways to run one:

- in-process, with no socket: ``session = LfDotLfServer()``, write
  ``session.greeting()``, then for each piece the client sends,
  ``session.receive(piece)`` returns the bytes the server answers (the
  :class:`NonAsciiDigitServer` raises ``ValueError`` from it, as its crash);
  ``session.closed`` tells when it hung up and ``session.messages`` holds
  the messages it took, so a smuggled second message shows there;
- on a loopback port, a thread per connection:
  ``with serve(LfDotLfServer) as server:`` then connect to
  ``(server.host, server.port)``; ``server.sessions`` and ``server.crashes``
  say what happened.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import ssl
import threading
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "BROKEN_SERVERS",
    "DigitSizeBdatServer",
    "DotSpaceEndServer",
    "EhloKeepsRecipientsServer",
    "DroppedReplyServer",
    "EagerBdatServer",
    "FewRecipientsServer",
    "HardErrorLimitServer",
    "HoleBdatServer",
    "LfDotLfClosingServer",
    "LfDotLfOneCommandServer",
    "LfDotLfServer",
    "LongLineTailServer",
    "LongTextLineServer",
    "MailKeepsRecipientsServer",
    "NewTransactionMailServer",
    "NonAsciiDigitServer",
    "OutOfOrderServer",
    "PipelinedRsetServer",
    "ReversedChunksServer",
    "PlaintextAfterStartTlsServer",
    "RateLimitedServer",
    "RcptBeforeMailServer",
    "RsetKeepsRecipientsServer",
    "RunningServer",
    "SilentHoleServer",
    "SizeIgnoringServer",
    "SlowLfDotLfDroppingServer",
    "SmallServer",
    "SplitCommandServer",
    "StateFirstBdatServer",
    "UnstuffFirstOnlyServer",
    "rate_limited",
    "raw_server",
    "serve",
]

HOSTNAME: Final = "broken.test"


def _reply(code: int, text: str) -> bytes:
    return f"{code} {text}\r\n".encode()


class SmallServer:
    """One SMTP server session, sans-I/O and correct: the base of the broken ones.

    ``receive(data)`` takes the client's bytes and returns the server's
    answer; after ``220`` to STARTTLS, ``start_tls`` is True until the runner
    calls :meth:`tls_started`. Limits: command lines of 512 octets, 100
    recipients, messages of ``max_size`` octets (offered as ``SIZE``).
    """

    max_line = 512
    max_recipients = 100
    max_size = 10_000

    def __init__(self, *, starttls: bool = False) -> None:
        self.offers_starttls = starttls
        self.buffer = bytearray()
        self.mode = "command"  # or "data", "bdat"
        self.discarding = False
        self.closed = False
        self.start_tls = False
        self.tls = False
        self.hello: str | None = None
        self.in_transaction = False
        self.recipients = 0
        self.chunk_left = 0
        self.chunk_last = False
        self.chunk_refusal: bytes | None = None
        self.content = bytearray()
        self.messages: list[bytes] = []
        self.commands: list[bytes] = []

    # -- the runner's side --------------------------------------------

    def greeting(self) -> bytes:
        return _reply(220, f"{HOSTNAME} ESMTP broken on purpose")

    def receive(self, data: bytes) -> bytes:
        """Take bytes from the client (``b""``: none, just work on what is buffered)."""
        self.buffer += data
        replies: list[bytes] = []
        while not self.closed and not self.start_tls:
            answer = self.step()
            if answer is None:
                break
            replies.append(answer)
        return self.emit(replies)

    def emit(self, replies: list[bytes]) -> bytes:
        """The bytes to write for the replies one ``receive`` produced, in order."""
        return b"".join(replies)

    def tls_started(self) -> None:
        self.start_tls = False
        self.tls = True
        self.hello = None
        self.reset()

    # -- reading --------------------------------------------------------

    def step(self) -> bytes | None:
        if self.mode == "data":
            return self.read_content()
        if self.mode == "bdat":
            return self.read_chunk()
        line = self.next_line()
        if line is None:
            return None
        return self.command(line)

    def next_line(self) -> bytes | None:
        """The next line, CRLF included; only CRLF ends one (RFC 5321 §2.3.8)."""
        end = self.buffer.find(b"\r\n")
        if end < 0:
            if len(self.buffer) > self.max_line:
                del self.buffer[:-1]  # the last octet may be the CR of the CRLF
                self.discarding = True
            return None
        end += 1
        line = bytes(self.buffer[: end + 1])
        del self.buffer[: end + 1]
        if self.discarding or len(line) > self.max_line:
            self.discarding = False
            return b""  # stands for "too long"
        return line

    def find_end_of_data(self) -> tuple[int, int] | None:
        """Where the content ends: (index, length of the terminator), or None yet."""
        if self.buffer.startswith(b".\r\n"):
            return 0, 3
        index = self.buffer.find(b"\r\n.\r\n")
        return None if index < 0 else (index + 2, 3)

    def read_content(self) -> bytes | None:
        found = self.find_end_of_data()
        if found is None:
            return None
        index, length = found
        raw = bytes(self.buffer[:index])
        del self.buffer[: index + length]
        self.mode = "command"
        lines = raw.split(b"\r\n")
        content = b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)
        return self.end_of_message(content)

    def read_chunk(self) -> bytes | None:
        taken = bytes(self.buffer[: self.chunk_left])
        del self.buffer[: self.chunk_left]
        if self.chunk_refusal is None:  # a refused chunk's octets are skipped
            self.content += taken
        self.chunk_left -= len(taken)
        if self.chunk_left:
            return None
        self.mode = "command"
        return self.chunk_done()

    def chunk_done(self) -> bytes:
        refusal, self.chunk_refusal = self.chunk_refusal, None
        if refusal is not None:
            return refusal
        if not self.chunk_last:
            return _reply(250, f"2.0.0 {len(self.content)} octets received")
        content = bytes(self.content)
        self.content.clear()
        return self.end_of_message(content)

    def end_of_message(self, content: bytes) -> bytes:
        self.reset()
        if len(content) > self.max_size:
            return _reply(552, "5.3.4 Message too big")
        self.messages.append(content)
        return _reply(250, f"2.0.0 Message {len(self.messages)} accepted")

    # -- commands -------------------------------------------------------

    def parse_number(self, text: str) -> int | None:
        """A decimal number on the wire: ASCII digits only."""
        if text.isascii() and text.isdigit() and len(text) <= 20:
            return int(text)
        return None

    def command(self, line: bytes) -> bytes:
        self.commands.append(line)
        if not line:
            return _reply(500, "5.5.2 Line too long")
        if b"\n" in line[:-2]:
            return self.bare_lf_line(line)
        try:
            text = line[:-2].decode()
        except UnicodeDecodeError:
            return _reply(500, "5.5.2 Invalid UTF-8")
        verb, _, argument = text.partition(" ")
        verb = verb.upper()
        if verb in ("EHLO", "HELO"):
            if not argument:
                return _reply(501, "5.5.4 Domain needed")
            self.hello = argument
            self.reset()
            if verb == "HELO":
                return _reply(250, HOSTNAME)
            keywords = [HOSTNAME, "PIPELINING", f"SIZE {self.max_size}", "CHUNKING"]
            keywords += ["8BITMIME", "ENHANCEDSTATUSCODES"]
            if self.offers_starttls and not self.tls:
                keywords.append("STARTTLS")
            lines = [f"250-{word}" for word in keywords[:-1]] + [f"250 {keywords[-1]}"]
            return "".join(line + "\r\n" for line in lines).encode()
        if verb == "MAIL":
            return self.mail(argument)
        if verb == "RCPT":
            return self.rcpt(argument)
        if verb == "DATA":
            if self.recipients == 0:
                return _reply(503 if not self.in_transaction else 554, "5.5.1 No recipients")
            self.mode = "data"
            return _reply(354, "End data with <CR><LF>.<CR><LF>")
        if verb == "BDAT":
            return self.bdat(argument)
        if verb == "RSET":
            self.reset()
            return _reply(250, "2.0.0 OK")
        if verb == "NOOP":
            return _reply(250, "2.0.0 OK")
        if verb == "VRFY":
            return _reply(252, "2.5.0 Cannot VRFY")
        if verb == "HELP":
            return _reply(214, "2.0.0 See RFC 5321")
        if verb == "QUIT":
            self.closed = True
            return _reply(221, "2.0.0 Bye")
        if verb == "STARTTLS" and self.offers_starttls and not self.tls:
            self.start_tls = True
            self.forget_plaintext()
            return _reply(220, "2.0.0 Ready to start TLS")
        return _reply(500, "5.5.2 Command unrecognized")

    def bare_lf_line(self, line: bytes) -> bytes:
        """Refused whole; but where a BDAT follows the LF, a reader that ends lines
        there takes the next octets for its chunk, so no one knows where commands
        resume: close."""
        if any(part.lstrip(b" \t").upper().startswith(b"BDAT") for part in line.split(b"\n")[1:]):
            self.closed = True
            return _reply(421, "4.5.2 BDAT after a bare LF")
        return _reply(500, "5.5.2 Bare LF in command")

    def forget_plaintext(self) -> None:
        """Bytes behind STARTTLS came before the handshake: never read them."""
        self.buffer.clear()

    def mail(self, argument: str) -> bytes:
        if self.hello is None:
            return _reply(503, "5.5.1 Send EHLO first")
        if self.in_transaction:
            return _reply(503, "5.5.1 Nested MAIL")
        if not argument.upper().startswith("FROM:<") or ">" not in argument:
            return _reply(501, "5.5.4 Syntax: MAIL FROM:<address>")
        for param in argument.split(">", 1)[1].split():
            keyword, _, value = param.partition("=")
            if keyword.upper() == "SIZE":
                answer = self.check_size(value)
                if answer is not None:
                    return answer
            elif keyword.upper() != "BODY":
                return _reply(555, f"5.5.4 Unsupported parameter {keyword}")
        self.in_transaction = True
        return _reply(250, "2.1.0 OK")

    def check_size(self, value: str) -> bytes | None:
        size = self.parse_number(value)
        if size is None:
            return _reply(501, "5.5.4 Bad SIZE value")
        if size > self.max_size:
            return _reply(552, "5.3.4 Message too big")
        return None

    def rcpt(self, argument: str) -> bytes:
        if not self.in_transaction:
            return _reply(503, "5.5.1 Need MAIL first")
        if not argument.upper().startswith("TO:<") or ">" not in argument:
            return _reply(501, "5.5.4 Syntax: RCPT TO:<address>")
        if self.recipients >= self.max_recipients:
            return _reply(452, "4.5.3 Too many recipients")
        self.recipients += 1
        return _reply(250, "2.1.5 OK")

    def bdat(self, argument: str) -> bytes:
        words = argument.split()
        size = self.parse_number(words[0]) if words else None
        last = len(words) == 2 and words[1].upper() == "LAST"
        if size is None:
            return _reply(501, "5.5.4 Syntax: BDAT size [LAST]")
        self.chunk_left, self.chunk_last = size, last
        self.mode = "bdat"
        if len(words) > 2 or (len(words) == 2 and not last):
            return self.refuse_chunk(_reply(501, "5.5.4 Syntax: BDAT size [LAST]"))
        if self.recipients == 0:  # read the chunk, then refuse it
            self.chunk_refusal = _reply(503, "5.5.1 No valid recipients")
        return self.after_bdat_command() or b""

    def refuse_chunk(self, reply: bytes) -> bytes:
        """A BDAT line refused at once: its chunk is skipped all the same, and the
        transaction has failed, so a later BDAT gets 503 (RFC 3030 §2)."""
        self.chunk_refusal = b""  # refused already: its octets get no reply of their own
        self.fail_transaction()
        return reply

    def fail_transaction(self) -> None:
        self.reset()

    def after_bdat_command(self) -> bytes | None:
        """Nothing yet: the reply to BDAT follows its octets (RFC 3030 §2)."""
        return None

    def reset(self) -> None:
        self.in_transaction = False
        self.recipients = 0
        self.content.clear()


# -- the planted defects ------------------------------------------------------------------


class LfDotLfServer(SmallServer):
    """Ends DATA at ``LF.LF`` too: a message can hide a second one (SMTP smuggling)."""

    def find_end_of_data(self) -> tuple[int, int] | None:
        found = super().find_end_of_data()
        index = self.buffer.find(b"\n.\n")
        if index >= 0 and (found is None or index + 1 < found[0]):
            return index + 1, 2
        return found


class LfDotLfDroppingServer(LfDotLfServer):
    """Ends DATA at ``LF.LF`` too, and drops what else its read held after that end:
    one write of a message and its pipelined commands gets one reply, but a marker in
    a read of its own is run as a command (SMTP smuggling all the same)."""

    def read_content(self) -> bytes | None:
        found = self.find_end_of_data()
        answer = super().read_content()
        if found is not None and found[1] == 2:  # LF.LF's end, not CRLF.CRLF's
            self.buffer.clear()
        return answer


class LfDotLfClosingServer(LfDotLfServer):
    """Ends DATA at ``LF.LF`` too, and answers a command other than ``QUIT`` after a
    message 421, and closes (a server that takes one message a session): the marker
    after ``LF.LF`` gets a 421, as ``QUIT`` might from a server shutting down."""

    after_message = False

    def end_of_message(self, content: bytes) -> bytes:
        self.after_message = True
        return super().end_of_message(content)

    def command(self, line: bytes) -> bytes:
        if self.after_message and not line.upper().startswith(b"QUIT"):
            self.commands.append(line)
            self.closed = True
            return _reply(421, "4.3.2 Shutting down")
        return super().command(line)


class SlowLfDotLfDroppingServer(LfDotLfDroppingServer):
    """The same, reading so slowly that a message written in two writes, a pause
    apart, comes in one read (here: in DATA it reads nothing before ``QUIT`` is
    in too): the marker goes with the rest of the read, QUIT with it, and the
    message gets one reply, QUIT none and no close."""

    def receive(self, data: bytes) -> bytes:
        if self.mode == "data" and not (self.buffer + data).endswith(b"QUIT\r\n"):
            self.buffer += data
            return b""
        return super().receive(data)


class LfDotLfOneCommandServer(LfDotLfServer):
    """Ends DATA at ``LF.LF`` too, and takes one command from each read, dropping
    the rest: a marker after ``LF.LF`` is run (250) and QUIT behind it dropped, so
    a message and QUIT get two replies, the second not 221."""

    def receive(self, data: bytes) -> bytes:
        self.buffer += data
        replies = []
        while not self.closed and self.mode != "command":
            answer = self.step()
            if answer is None:
                break
            replies.append(answer)
        if self.mode == "command" and not self.closed:
            answer = self.step()
            if answer is not None:
                replies.append(answer)
                if self.mode == "command":
                    self.buffer.clear()
        return self.emit(replies)


class DotSpaceEndServer(SmallServer):
    """Ends DATA at a line that is a dot once its spaces and tabs are stripped
    (``". "``, ``" ."``), as a reader that trims lines before it compares them does."""

    def find_end_of_data(self) -> tuple[int, int] | None:
        start = 0
        while (end := self.buffer.find(b"\r\n", start)) >= 0:
            if self.buffer[start:end].strip(b" \t") == b".":
                return start, end + 2 - start
            start = end + 2
        return None


class EagerBdatServer(SmallServer):
    """Answers ``BDAT`` as soon as the command line is in, before the chunk's octets."""

    def after_bdat_command(self) -> bytes | None:
        if self.chunk_refusal is not None:
            return self.chunk_refusal
        if not self.chunk_last:
            return _reply(250, "2.0.0 Chunk accepted")
        return _reply(250, f"2.0.0 Message {len(self.messages) + 1} accepted")

    def chunk_done(self) -> bytes:
        super().chunk_done()  # keeps the message; the reply went out already
        return b""


class BareLfBdatServer(SmallServer):
    """Refuses a line holding a bare LF whole, then reads a BDAT's chunk after it as
    commands (what smtpcore did before it closed there)."""

    def bare_lf_line(self, line: bytes) -> bytes:
        return _reply(500, "5.5.2 Bare LF in command")


class HoleBdatServer(SmallServer):
    """Refuses a malformed BDAT line (``BDAT 4 FIRST``) and skips its chunk, but keeps
    the transaction open: a later ``BDAT n LAST`` delivers the message without the
    refused chunk (what smtpcore's own server did before it failed the transaction)."""

    def fail_transaction(self) -> None:
        pass


class DroppedReplyServer(SmallServer):
    """Fails the transaction at a refused BDAT line, as it should, but sends no reply
    to the ``BDAT n LAST`` after it: QUIT's 221 comes where that reply was due."""

    dropping = False

    def refuse_chunk(self, reply: bytes) -> bytes:
        self.dropping = True
        return super().refuse_chunk(reply)

    def chunk_done(self) -> bytes:
        answer = super().chunk_done()
        if self.dropping and self.chunk_last:
            self.dropping = False
            return b""
        return answer


class SilentHoleServer(DroppedReplyServer):
    """Keeps the transaction open at a refused BDAT line, as :class:`HoleBdatServer`
    does, and delivers the message with a hole at ``BDAT n LAST`` without a reply."""

    def fail_transaction(self) -> None:
        pass


class NonAsciiDigitServer(SmallServer):
    """Trusts ``str.isdigit()``: ``int("²")`` raises, and the session dies with it."""

    def parse_number(self, text: str) -> int | None:
        if text.isdigit():
            return int(text)
        return None


class StateFirstBdatServer(SmallServer):
    """Refuses BDAT outside a transaction before it reads the size (503), and
    inside one trusts ``str.isdigit()``: ``BDAT ²`` crashes the session, but
    only once MAIL and RCPT are accepted."""

    def bdat(self, argument: str) -> bytes:
        if self.recipients == 0:
            return _reply(503, "5.5.1 Need RCPT first")
        words = argument.split()
        if words and words[0].isdigit():
            words[0] = str(int(words[0]))  # int("²") raises: the session dies
        return super().bdat(" ".join(words))


class DigitSizeBdatServer(SmallServer):
    """Reads a chunk size in any script's digits (``unicodedata.digit``: ``²`` is 2),
    refuses one that is not ASCII at once (501) and then skips that many octets, as a
    refused chunk's: the start of the next command goes with them, and the rest of it
    is answered as a command."""

    def bdat(self, argument: str) -> bytes:
        words = argument.split()
        if not words or words[0].isascii():
            return super().bdat(argument)
        try:
            size = int("".join(str(unicodedata.digit(char)) for char in words[0]))
        except ValueError:
            return super().bdat(argument)
        self.chunk_left, self.chunk_last, self.mode = size, False, "bdat"
        self.chunk_refusal = b""  # refused already: its octets get no reply of their own
        return _reply(501, "5.5.4 BDAT size in ASCII digits, please")


class OutOfOrderServer(SmallServer):
    """Of the commands that arrived together, answers the refused ones last."""

    def emit(self, replies: list[bytes]) -> bytes:
        good = [answer for answer in replies if answer[:1] in (b"2", b"3")]
        bad = [answer for answer in replies if answer[:1] not in (b"2", b"3")]
        return b"".join(good + bad)


class SplitCommandServer(SmallServer):
    """Takes the end of each read as the end of a command line, CRLF or not."""

    def receive(self, data: bytes) -> bytes:
        if self.mode == "command" and data and not data.endswith(b"\r\n"):
            data += b"\r\n"
        return super().receive(data)


class PlaintextAfterStartTlsServer(SmallServer):
    """Keeps commands pipelined behind ``STARTTLS`` and runs them over TLS."""

    def forget_plaintext(self) -> None:
        pass


class LongLineTailServer(SmallServer):
    """Cuts an over-long line at the limit and reads the rest as a line of its own."""

    def next_line(self) -> bytes | None:
        end = self.buffer.find(b"\r\n")
        if end < 0 and len(self.buffer) <= self.max_line:
            return None
        if end < 0 or end >= self.max_line:
            line = bytes(self.buffer[: self.max_line])
            del self.buffer[: self.max_line]
            return line + b"\r\n"
        return super().next_line()


def _fold(data: bytes, width: int) -> bytes:
    lines = data.split(b"\n")
    out = []
    for line in lines:
        end = b"\r" if line.endswith(b"\r") else b""
        body = line[: len(line) - len(end)]
        pieces = [body[i : i + width] for i in range(0, len(body), width)] or [b""]
        out.append(b"\r\n".join(pieces) + end)
    return b"\n".join(out)


class LongTextLineServer(SmallServer):
    """Folds message lines at 1000 octets: a long line's tail can be a lone dot."""

    def find_end_of_data(self) -> tuple[int, int] | None:
        self.buffer[:] = _fold(bytes(self.buffer), 1000)
        return super().find_end_of_data()


class FewRecipientsServer(SmallServer):
    """Refuses every recipient after the tenth with ``550`` (too few, and the wrong code)."""

    def rcpt(self, argument: str) -> bytes:
        if self.in_transaction and self.recipients >= 10:
            return _reply(550, "5.5.3 Too many recipients")
        return super().rcpt(argument)


class SizeIgnoringServer(SmallServer):
    """Offers ``SIZE 10000`` but takes a bigger ``SIZE=`` and a bigger message."""

    def check_size(self, value: str) -> bytes | None:
        return None if self.parse_number(value) is not None else _reply(501, "5.5.4 Bad SIZE")

    def end_of_message(self, content: bytes) -> bytes:
        self.reset()
        self.messages.append(content)
        return _reply(250, f"2.0.0 Message {len(self.messages)} accepted")


class RcptBeforeMailServer(SmallServer):
    """Takes RCPT before MAIL, as if MAIL had come with an implicit sender."""

    def rcpt(self, argument: str) -> bytes:
        self.in_transaction = True
        return super().rcpt(argument)


class MailKeepsRecipientsServer(SmallServer):
    """Takes a MAIL inside a transaction, but keeps that transaction's recipients: the
    DATA after it gets 354 for recipients the new transaction never named."""

    def mail(self, argument: str) -> bytes:
        if self.in_transaction:
            return _reply(250, "2.1.0 OK")
        return super().mail(argument)


class RsetKeepsRecipientsServer(SmallServer):
    """Ends the transaction at RSET but keeps its recipients: DATA after the next MAIL
    gets 354 for a recipient the client took back."""

    resetting: bytes = b"RSET\r\n"

    def command(self, line: bytes) -> bytes:
        kept = self.recipients
        answer = super().command(line)
        if line.upper().startswith(self.resetting):
            self.recipients = kept
        return answer


class EhloKeepsRecipientsServer(RsetKeepsRecipientsServer):
    """Keeps a transaction's recipients through a new EHLO, as its sibling does RSET."""

    resetting = b"EHLO "


class UnstuffFirstOnlyServer(SmallServer):
    """Removes the stuffing dot from the first line that starts with one, and keeps the
    others' (RFC 5321 §4.5.2 has every such line lose its first dot)."""

    def read_content(self) -> bytes | None:
        found = self.find_end_of_data()
        if found is None:
            return None
        index, length = found
        lines = bytes(self.buffer[:index]).split(b"\r\n")
        del self.buffer[: index + length]
        self.mode = "command"
        first = next((n for n, line in enumerate(lines) if line.startswith(b".")), None)
        if first is not None:
            lines[first] = lines[first][1:]
        return self.end_of_message(b"\r\n".join(lines))


class ReversedChunksServer(SmallServer):
    """Joins a message's BDAT chunks last first: its replies are a good server's."""

    def __init__(self, *, starttls: bool = False) -> None:
        super().__init__(starttls=starttls)
        self.chunk_starts: list[int] = []

    def bdat(self, argument: str) -> bytes:
        self.chunk_starts.append(len(self.content))
        return super().bdat(argument)

    def end_of_message(self, content: bytes) -> bytes:
        edges = [*self.chunk_starts, len(content)]
        chunks = [content[a:b] for a, b in itertools.pairwise(edges)]
        return super().end_of_message(b"".join(reversed(chunks)) if chunks else content)

    def reset(self) -> None:
        super().reset()
        self.chunk_starts = []


class DataWithoutRecipientServer(SmallServer):
    """Answers DATA 354 in a transaction with no recipient (RFC 5321 §3.3 asks 503 or
    554), and reads what follows as content."""

    def command(self, line: bytes) -> bytes:
        if line.upper().startswith(b"DATA") and self.in_transaction and not self.recipients:
            self.commands.append(line)
            self.mode = "data"
            return _reply(354, "End data with <CR><LF>.<CR><LF>")
        return super().command(line)


class PipelinedRsetServer(SmallServer):
    """Loses a message whose end came in the same read as an RSET pipelined behind it
    (RFC 2920 §3.1 allows it), yet answers the end 250: it takes the RSET for one
    that cancels the transaction still open, as a server that looks ahead in its
    buffer before it commits the message might."""

    def end_of_message(self, content: bytes) -> bytes:
        if self.buffer[:4].upper() == b"RSET":
            self.reset()
            return _reply(250, "2.0.0 Message accepted")
        return super().end_of_message(content)


# -- correct servers that differ from SmallServer where RFC 5321 allows it ---------------


class NewTransactionMailServer(SmallServer):
    """A MAIL inside a transaction starts a new one, as qmail-smtpd does: RFC 5321 §3.3
    has MAIL "reset all its state tables and buffers, including any recipients", and
    §4.1.4's "MUST NOT be sent if a mail transaction is already open" binds the client."""

    def mail(self, argument: str) -> bytes:
        if self.hello is not None:
            self.reset()
        return super().mail(argument)


class HardErrorLimitServer(SmallServer):
    """After ``error_limit`` refused commands, answers the next command (QUIT included)
    421 and closes: Postfix's ``smtpd_hard_error_limit``, which RFC 5321 §3.8 allows."""

    error_limit = 2

    def __init__(self, *, starttls: bool = False) -> None:
        super().__init__(starttls=starttls)
        self.errors = 0

    def command(self, line: bytes) -> bytes:
        if self.errors >= self.error_limit:
            self.commands.append(line)
            self.closed = True
            return _reply(421, "4.7.0 Error: too many errors")
        answer = super().command(line)
        if answer[:1] in (b"4", b"5"):
            self.errors += 1
        return answer


class RateLimitedServer(SmallServer):
    """A session of a server that limits how often a client may connect (Postfix's
    ``smtpd_client_connection_rate_limit``, anvil; postscreen): when ``refused``, it
    says ``code`` where its greeting or (``at="ehlo"``) the reply to the first command
    was due (EHLO, but for ``command-line-length``'s NOOP), and with 421 closes (RFC
    5321 §3.8); after a 554 greeting it waits for QUIT and answers anything else 503
    (RFC 5321 §3.1). :func:`rate_limited` decides which sessions
    are refused."""

    def __init__(
        self,
        *,
        starttls: bool = False,
        refused: bool = False,
        at: str = "greeting",
        code: int = 421,
    ) -> None:
        super().__init__(starttls=starttls)
        self.refused = refused
        self.at = at
        self.code = code

    def refusal(self) -> bytes:
        if self.code == 421:
            self.closed = True
            return _reply(421, "4.7.0 Error: too many connections from 127.0.0.1")
        return _reply(self.code, "5.7.1 No SMTP service here for you")

    def greeting(self) -> bytes:
        if self.refused and self.at == "greeting":
            return self.refusal()
        return super().greeting()

    def command(self, line: bytes) -> bytes:
        if not (self.refused and self.at == "greeting" and self.code == 554):
            if self.refused and self.at == "ehlo":
                self.commands.append(line)
                return self.refusal()
            return super().command(line)
        self.commands.append(line)
        if line[:4].upper() == b"QUIT":
            self.closed = True
            return _reply(221, "2.0.0 Bye")
        return _reply(503, "5.5.1 Bad sequence of commands")


def rate_limited(
    refuse: Callable[[int], bool],
    *,
    at: str = "greeting",
    code: int = 421,
    cls: type[RateLimitedServer] = RateLimitedServer,
) -> Callable[..., RateLimitedServer]:
    """A factory for :func:`serve` whose ``n``-th connection (from 1) is refused where
    ``refuse(n)`` is true: ``lambda n: n > 3`` is a rate limit met at the fourth.
    ``cls`` may mix a planted defect in."""
    count = itertools.count(1)
    lock = threading.Lock()

    def factory(*, starttls: bool = False) -> RateLimitedServer:
        with lock:
            number = next(count)
        return cls(starttls=starttls, refused=refuse(number), at=at, code=code)

    return factory


BROKEN_SERVERS: Final[tuple[type[SmallServer], ...]] = (
    LfDotLfServer,
    DotSpaceEndServer,
    EagerBdatServer,
    HoleBdatServer,
    DroppedReplyServer,
    SilentHoleServer,
    NonAsciiDigitServer,
    OutOfOrderServer,
    SplitCommandServer,
    PlaintextAfterStartTlsServer,
    LongLineTailServer,
    LongTextLineServer,
    FewRecipientsServer,
    SizeIgnoringServer,
    RcptBeforeMailServer,
    MailKeepsRecipientsServer,
    RsetKeepsRecipientsServer,
    EhloKeepsRecipientsServer,
    PipelinedRsetServer,
    UnstuffFirstOnlyServer,
    ReversedChunksServer,
)
"""Every server with a planted defect (not :class:`SmallServer` itself)."""


# -- serving one on a loopback port -------------------------------------------------------


@dataclass
class RunningServer:
    """A :func:`serve` in progress: where it listens and what its sessions did."""

    host: str
    port: int
    sessions: list[SmallServer] = field(default_factory=list)
    crashes: list[BaseException] = field(default_factory=list)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def messages(self) -> list[bytes]:
        """Every message every session accepted, in session order."""
        return [message for session in self.sessions for message in session.messages]


def _run_session(
    sock: socket.socket,
    session: SmallServer,
    tls: ssl.SSLContext | None,
    running: RunningServer,
) -> None:
    try:
        sock.sendall(session.greeting())
        while not session.closed:
            data = sock.recv(65536)
            if not data:
                return
            answer = session.receive(data)
            if answer:
                sock.sendall(answer)
            if session.start_tls:
                assert tls is not None
                sock = tls.wrap_socket(sock, server_side=True)
                session.tls_started()
                answer = session.receive(b"")
                if answer:
                    sock.sendall(answer)
    except OSError:
        pass  # the client went away
    except Exception as exc:  # the planted crash: the worker dies, the connection drops
        running.crashes.append(exc)
    finally:
        with contextlib.suppress(OSError):
            sock.close()


@contextlib.contextmanager
def serve(
    factory: Callable[..., SmallServer],
    *,
    tls: ssl.SSLContext | None = None,
    host: str = "127.0.0.1",
) -> Iterator[RunningServer]:
    """Serve a fresh ``factory()`` session per connection on a free loopback port.

    With ``tls`` (a server-side context), STARTTLS is offered. Leaving the
    block stops listening, cuts the connections still open and joins every
    thread.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind((host, 0))
    listener.listen(16)
    listener.settimeout(0.05)
    running = RunningServer(host, listener.getsockname()[1])
    stop = threading.Event()
    workers: list[threading.Thread] = []
    connections: list[socket.socket] = []

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(30)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            session = factory(starttls=tls is not None)
            running.sessions.append(session)
            connections.append(sock)
            worker = threading.Thread(
                target=_run_session, args=(sock, session, tls, running), daemon=True
            )
            workers.append(worker)
            worker.start()

    acceptor = threading.Thread(target=accept_loop, name=f"serve-{factory}", daemon=True)
    acceptor.start()
    try:
        yield running
    finally:
        stop.set()
        acceptor.join()
        listener.close()
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for worker in workers:
            worker.join(10)


@contextlib.contextmanager
def raw_server(
    session: Callable[[socket.socket, threading.Event], None],
    *,
    socket_timeout: float | None = None,
) -> Iterator[tuple[str, int]]:
    """Run ``session(sock, stop)`` on each loopback connection, in a thread of its own
    (``sock`` under ``socket_timeout``, if given), for a server written straight on the
    socket: one that never stops talking, or never answers. Stop and join them after;
    an ``OSError`` in a session (the client went) ends that session only."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()
    workers: list[threading.Thread] = []

    def serve_one(sock: socket.socket) -> None:
        with sock, contextlib.suppress(OSError):
            if socket_timeout is not None:
                sock.settimeout(socket_timeout)
            session(sock, stop)

    def accept_loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                sock, _ = listener.accept()
                worker = threading.Thread(target=serve_one, args=(sock,), daemon=True)
                workers.append(worker)
                worker.start()

    acceptor = threading.Thread(target=accept_loop, daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        stop.set()
        acceptor.join()
        listener.close()
        for worker in workers:
            worker.join(10)
