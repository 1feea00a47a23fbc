"""Sans-I/O SASL mechanisms (RFC 4422), client and server side.

Shared by SMTP AUTH (RFC 4954) and POP3 AUTH (RFC 5034). Payloads are raw
octets: base64 and the ``*`` cancel belong to the protocol machines. A
server mechanism answers :meth:`~ServerMechanism.start` and
:meth:`~ServerMechanism.step` with a :class:`Challenge`, :class:`Success` or
:class:`Failure`; a client mechanism answers challenges with
:meth:`~ClientMechanism.respond` and accepts the outcome with
:meth:`~ClientMechanism.verify_success`.

Channel binding data (RFC 5056; ``tls-exporter``, RFC 9266) are an input:
the session gives them to a server mechanism with
:meth:`~ServerMechanism.bind_channel` and to a ``-PLUS`` client mechanism
when it builds it.
"""

from smtpcore.sasl._base import (
    DEFAULT_MAX_RESPONSE_SIZE,
    Authorize,
    Challenge,
    CredentialsUnavailable,
    Failure,
    SASLError,
    Step,
    Success,
    UnexpectedInitialResponse,
)
from smtpcore.sasl._base_client import ClientMechanism
from smtpcore.sasl._base_server import ServerMechanism
from smtpcore.sasl._channel import (
    TLS_EXPORTER,
    TLS_EXPORTER_LABEL,
    TLS_EXPORTER_LENGTH,
    ChannelBindings,
    needs_channel_binding,
    offered_mechanisms,
)
from smtpcore.sasl._crammd5 import CramMD5Client, CramMD5Server, GetPassword
from smtpcore.sasl._oauth import (
    CheckToken,
    OAuthBearerClient,
    OAuthBearerServer,
    XOAuth2Client,
    XOAuth2Server,
)
from smtpcore.sasl._plaintext import (
    CheckPassword,
    LoginClient,
    LoginServer,
    PlainClient,
    PlainServer,
)
from smtpcore.sasl._registry import (
    CLIENT_MECHANISMS,
    PREFERENCE,
    SERVER_MECHANISMS,
    choose_mechanism,
    scram_client,
)
from smtpcore.sasl._saslprep import (
    passwords_match,
    prepared_stored_secret,
    saslprep,
    saslprep_login,
)
from smtpcore.sasl._scram_client import (
    ScramSHA1Client,
    ScramSHA1PlusClient,
    ScramSHA256Client,
    ScramSHA256PlusClient,
)
from smtpcore.sasl._scram_keys import GetCredentials, ScramCredentials, derive_scram_credentials
from smtpcore.sasl._scram_server import (
    ScramSHA1PlusServer,
    ScramSHA1Server,
    ScramSHA256PlusServer,
    ScramSHA256Server,
)

__all__ = [
    "CLIENT_MECHANISMS",
    "DEFAULT_MAX_RESPONSE_SIZE",
    "PREFERENCE",
    "SERVER_MECHANISMS",
    "TLS_EXPORTER",
    "TLS_EXPORTER_LABEL",
    "TLS_EXPORTER_LENGTH",
    "Authorize",
    "ChannelBindings",
    "Challenge",
    "CheckPassword",
    "CheckToken",
    "ClientMechanism",
    "CramMD5Client",
    "CramMD5Server",
    "CredentialsUnavailable",
    "Failure",
    "GetCredentials",
    "GetPassword",
    "LoginClient",
    "LoginServer",
    "OAuthBearerClient",
    "OAuthBearerServer",
    "PlainClient",
    "PlainServer",
    "SASLError",
    "ScramCredentials",
    "ScramSHA1Client",
    "ScramSHA1PlusClient",
    "ScramSHA1PlusServer",
    "ScramSHA1Server",
    "ScramSHA256Client",
    "ScramSHA256PlusClient",
    "ScramSHA256PlusServer",
    "ScramSHA256Server",
    "ServerMechanism",
    "Step",
    "Success",
    "UnexpectedInitialResponse",
    "XOAuth2Client",
    "XOAuth2Server",
    "choose_mechanism",
    "derive_scram_credentials",
    "needs_channel_binding",
    "offered_mechanisms",
    "passwords_match",
    "prepared_stored_secret",
    "saslprep",
    "saslprep_login",
    "scram_client",
]
