"""``serve --tls-cert FILE --tls-key FILE``: a wrong file is named in plain words, not
OpenSSL's ``[SSL] PEM lib``, which said the same for every mistake."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import NameOID

import smtpcore.__main__ as cli
from peers import make_tls_files
from smtpcore.server.config import ConfigError
from smtpcore.server.mailserver import server_tls_context

BROKEN_CERTIFICATE = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
BROKEN_KEY = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"


def _other_key() -> bytes:
    """A private key of another certificate than the one served."""
    return trustme.CA().issue_cert("other.test").private_key_pem.bytes()


def _key_of_another_type() -> bytes:
    """An ed25519 private key, of another type than the served certificate's."""
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _encrypted(key_pem: bytes) -> bytes:
    """``key_pem`` encrypted with a passphrase (PKCS #8, ``ENCRYPTED PRIVATE KEY``).
    OpenSSL asks for the passphrase through ``serve``'s callback, never a terminal:
    the message names the key as encrypted only when that callback was called."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )


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
    "a key of another type": (
        "cert",
        "ed25519",
        "--tls-key key.pem: the private key does not match the certificate in cert.pem"
        " (a key of another type)",
    ),
    "encrypted key": (
        "cert",
        "encrypted",
        "--tls-key key.pem: its private key is encrypted: serve needs an unencrypted key",
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
        "ed25519": _key_of_another_type(),
        "encrypted": _encrypted(files.key_file.read_bytes()),
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


def _self_signed(key_size: int) -> tuple[bytes, rsa.RSAPrivateKey]:
    """A self-signed certificate (PEM) for mx.test with a new RSA key of ``key_size`` bits."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key


def _key_pem(key: rsa.RSAPrivateKey, passphrase: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if passphrase is None
        else serialization.BestAvailableEncryption(passphrase)
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def test_a_key_openssl_refuses_is_named_with_openssls_reason(tmp_path: Path) -> None:
    """A 1024-bit key, well formed, is refused by OpenSSL at its default security level
    (``EE_KEY_TOO_SMALL``): the line said "broken PEM", which sent the operator looking
    at a file that was fine. It now gives OpenSSL's own reason, naming both files."""
    certificate, key = _self_signed(1024)
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(certificate)
    key_file.write_bytes(_key_pem(key))
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        reason = str(exc.reason)
    else:
        pytest.skip("this OpenSSL takes a 1024-bit key")
    with pytest.raises(ConfigError) as raised:
        server_tls_context(cert_file, key_file)
    message = str(raised.value)
    assert message.startswith(f"--tls-cert {cert_file} and --tls-key {key_file} cannot serve")
    assert reason in message and "broken PEM" not in message
