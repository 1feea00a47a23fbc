"""Message content against the framing policy, whatever carried it.

DATA content arrives dot-stuffed and BDAT content arrives raw (RFC 3030 §2),
but both are the same message once unstuffed, and the same rules hold for
it: a bare CR or bare LF is smuggling material (RFC 5321 §2.3.8), NUL has no
place in a message (RFC 5322 §2.1, RFC 6152 §3: only BODY=BINARYMIME carries
arbitrary octets), and a text line is at most 1000 octets with its CRLF
(RFC 5321 §4.5.3.1.6, which counts no stuffing dot, as the dot is not
content). :class:`ContentFilter` applies those rules to the unstuffed content,
chunk by chunk, with chunk boundaries anywhere (even between a CR and its LF),
so that DATA and BDAT cannot disagree.
"""

from __future__ import annotations

import io

from smtpcore._lines import FramingPolicy, line_length_exceeded

__all__ = ["ContentFilter", "LineEndings", "crlf_only", "passes_whole"]

_NewlineDecoder = io.IncrementalNewlineDecoder


class LineEndings:
    """Tells whether every CR and every LF in a chunk stands in a CRLF pair.

    The standard library's newline decoder notes the kinds of line ending it
    meets (CR, LF, CRLF) in one C-level pass, stopping only at control
    characters; read as Latin-1, any octets are text to it. That costs about
    a third of deleting all but the CRs and LFs with ``translate`` and then
    counting the CRLF pairs. One per filter, never shared: the decoder keeps
    state between ``reset`` and ``decode``.
    """

    __slots__ = ("_decoder",)

    def __init__(self) -> None:
        self._decoder = io.IncrementalNewlineDecoder(None, translate=False)

    def only_crlf(self, chunk: bytes) -> bool:
        """True when ``chunk`` holds no bare CR and no bare LF (a CR at its very end
        counts as bare: the caller holds back a CR that an LF may still follow)."""
        decoder = self._decoder
        decoder.reset()
        decoder.decode(chunk.decode("latin-1"), True)
        return decoder.newlines in (None, "\r\n")


def crlf_only(data: bytes) -> bool:
    """:meth:`LineEndings.only_crlf` with a decoder of its own: for data checked once
    (content of one piece, a chunk a ``DotEncoder`` sends), where a decoder kept
    for the next chunk would be memory held for nothing. The decoder costs about
    0.1 µs to make; the pass about 0.5 µs a KB, a third of counting CR, LF and
    CRLF."""
    newlines = _NewlineDecoder(None, False)  # translate=False
    newlines.decode(data.decode("latin-1"), True)
    return newlines.newlines in (None, "\r\n")


class ContentFilter:
    """Checks (and under a normalising policy, rewrites) unstuffed message content.

    :meth:`feed` takes each chunk and returns the content to pass on: the
    chunk itself, or under ``normalize_content`` the chunk with every bare CR
    and bare LF written as CRLF (a CR at a chunk's end is held until the next
    chunk shows whether an LF follows it). :meth:`end` closes the message.
    Breaches never stop the reading; they set ``bad_line_ending``,
    ``nul`` or ``line_too_long``, so that the caller can refuse the message
    once it has been read to its real end (Postfix's delayed reject).
    """

    __slots__ = (
        "_allow_bare_cr",
        "_allow_bare_lf",
        "_allow_nul",
        "_held_cr",
        "_line_endings",
        "_line_length",
        "_max_line_length",
        "_normalize",
        "bad_line_ending",
        "line_too_long",
        "nul",
    )

    def __init__(
        self, policy: FramingPolicy | None = None, *, max_line_length: int | None = None
    ) -> None:
        policy = policy or FramingPolicy()
        self._normalize = policy.normalize_content
        self._allow_bare_lf = policy.bare_lf_in_content
        self._allow_bare_cr = policy.bare_cr_in_content
        self._allow_nul = policy.nul_in_content
        self._max_line_length = max_line_length
        self._line_endings = LineEndings()
        self._held_cr = False
        self._line_length = 0
        self.bad_line_ending = False
        self.nul = False
        self.line_too_long = False

    @property
    def refused(self) -> bool:
        """Whether the message breaks the policy or the line limit so far."""
        return self.bad_line_ending or self.nul or self.line_too_long

    def feed(self, chunk: bytes) -> bytes:
        """Check one chunk of unstuffed content; return the content to pass on."""
        given = chunk
        if self._held_cr:
            chunk = b"\r" + chunk
            self._held_cr = False
        if chunk.endswith(b"\r"):
            chunk = chunk[:-1]  # may be half of a CRLF: judged with the next chunk
            self._held_cr = True
        if chunk:
            if not self._allow_nul and 0 in chunk:  # an int: a memchr, with no bytes to parse
                self.nul = True
            if self._normalize:
                chunk = _normalized(chunk, self._line_endings)
            elif not (self._allow_bare_lf or self._allow_bare_cr):  # strict: the default
                if not self._line_endings.only_crlf(chunk):
                    self.bad_line_ending = True
            else:
                self._check_endings(chunk)
            if self._max_line_length is not None:
                exceeded, self._line_length = line_length_exceeded(
                    chunk, self._max_line_length, self._line_length
                )
                self.line_too_long |= exceeded
        return chunk if self._normalize else given

    def end(self) -> bytes:
        """The message is complete: judge a trailing CR; return any content held back."""
        tail = b""
        if self._held_cr:
            self._held_cr = False
            if self._normalize:
                tail = b"\r\n"
            elif not self._allow_bare_cr:
                self.bad_line_ending = True
        return tail

    def _check_endings(self, chunk: bytes) -> None:
        if self._allow_bare_lf and self._allow_bare_cr:
            return
        if not (self._allow_bare_lf or self._allow_bare_cr):
            if not self._line_endings.only_crlf(chunk):
                self.bad_line_ending = True
            return
        rest = chunk.replace(b"\r\n", b"")
        if (not self._allow_bare_lf and b"\n" in rest) or (
            not self._allow_bare_cr and b"\r" in rest
        ):
            self.bad_line_ending = True


def _normalized(chunk: bytes, line_endings: LineEndings) -> bytes:
    """``chunk`` with each bare CR and bare LF written as CRLF.

    A CR that ends ``chunk`` is bare: the caller holds back the CR that might
    pair with an LF in the next chunk, so one left here was followed by it.
    """
    if b"\r" not in chunk:
        return chunk.replace(b"\n", b"\r\n")
    if line_endings.only_crlf(chunk):
        return chunk
    # bytes.splitlines breaks at CRLF, CR and LF alone, and nothing else.
    joined = b"\r\n".join(chunk.splitlines())
    return joined + b"\r\n" if chunk.endswith((b"\n", b"\r")) else joined


def passes_whole(content: bytes, policy: FramingPolicy, max_line_length: int | None) -> bool:
    """Whether the whole content of a message, ``content`` (ending in CRLF), needs
    nothing done: what a :class:`ContentFilter` fed it and ended would pass on
    unchanged, flagging nothing (a property test holds them equal). False means
    it may not: a filter reads it then.

    Most messages arrive whole in one read, and most pass: one C-level pass a
    rule over the content, and no filter to build for it.
    """
    if 0 in content and not policy.nul_in_content:
        return False
    if policy.normalize_content or not (policy.bare_lf_in_content and policy.bare_cr_in_content):
        # LineEndings.only_crlf, with a decoder of its own: nothing is shared.
        newlines = _NewlineDecoder(None, False)  # no decoder before it; translate=False
        newlines.decode(content.decode("latin-1"), True)
        if newlines.newlines not in (None, "\r\n"):
            return False
    if max_line_length is not None:
        # line_length_exceeded(content, max_line_length, 0), without the call: the
        # last LF of each window of max_line_length octets ends the lines before it.
        start = 0
        end = max_line_length
        size = len(content)
        while end <= size:
            newline = content.rfind(b"\n", start, end)
            if newline < 0:
                return False
            start = newline + 1
            end = start + max_line_length
    return True
