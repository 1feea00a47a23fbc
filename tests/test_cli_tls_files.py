"""``serve --tls-cert FILE --tls-key FILE``: a wrong file is named in plain words, not
OpenSSL's ``[SSL] PEM lib``, which said the same for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

import smtpcore.__main__ as cli
from peers import make_tls_files

BROKEN_CERTIFICATE = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
BROKEN_KEY = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"


def _other_key() -> bytes:
    """A private key of another certificate than the one served."""
    return trustme.CA().issue_cert("other.test").private_key_pem.bytes()


#: What each file holds (``"cert"`` and ``"key"``: the good ones, else bytes, None: no
#: such file), and the start of the one line ``serve`` says.
CASES: dict[str, tuple[str | bytes | None, str | bytes | None, str]] = {
    "key as certificate": (
        "key",
        "key",
        "--tls-cert cert.pem has no certificate (PEM, -----BEGIN CERTIFICATE-----) "
        "(it holds a private key: give it as --tls-key)",
    ),
    "certificate as key": (
        "cert",
        "cert",
        "--tls-key key.pem has no private key (PEM) (it holds a certificate: give it as "
        "--tls-cert)",
    ),
    "empty certificate": (b"", "key", "--tls-cert cert.pem is empty"),
    "empty key": ("cert", b"\n", "--tls-key key.pem is empty"),
    "garbage certificate": (b"not PEM\n", "key", "--tls-cert cert.pem has no certificate"),
    "garbage key": ("cert", b"not PEM\n", "--tls-key key.pem has no private key (PEM)"),
    "broken certificate": (
        BROKEN_CERTIFICATE,
        "key",
        "--tls-cert cert.pem: its certificate cannot be read",
    ),
    "broken key": ("cert", BROKEN_KEY, "--tls-key key.pem: its private key cannot be read"),
    "another key": (
        "cert",
        "other",
        "--tls-key key.pem: the private key does not match the certificate in cert.pem",
    ),
    "no key file": ("cert", None, "--tls-key key.pem: cannot read it: No such file"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_wrong_tls_file_is_named_with_what_it_lacks(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: str,
) -> None:
    cert_holds, key_holds, message = CASES[case]
    files = make_tls_files(tmp_path)
    good = {
        "cert": files.cert_file.read_bytes(),
        "key": files.key_file.read_bytes(),
        "other": _other_key(),
    }
    monkeypatch.chdir(tmp_path)
    for name, holds in (("cert.pem", cert_holds), ("key.pem", key_holds)):
        if holds is not None:
            (tmp_path / name).write_bytes(good[holds] if isinstance(holds, str) else holds)
    (tmp_path / "zone").write_text("")
    argv = ["serve", "--data-dir", "data", "--domain", "abc.example", "--resolver", "static:zone"]
    argv += ["--smtp-port", "0", "--submission-port", "0", "--pop3-port", "0"]
    assert cli.main([*argv, "--tls-cert", "cert.pem", "--tls-key", "key.pem"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"smtpcore serve: {message}") and err.count("\n") == 1, err
    assert "PEM lib" not in err
