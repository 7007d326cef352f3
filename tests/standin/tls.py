"""A throw-away certificate authority, so clients can use real ``https:`` URLs.

Clients reach the stand-in through ``CONNECT archive.org:443`` and then speak
TLS to it, exactly as they would to archive.org; they trust it because
``REQUESTS_CA_BUNDLE`` names the CA made here. One CA and one server
certificate (SANs ``archive.org``, ``*.archive.org``, ``*.us.archive.org`` -
a wildcard covers one label, so data nodes need the last one) are made per
process with the ``openssl`` command, in a temporary directory removed at
exit. The keys never leave that directory and are useless anywhere else.
"""

from __future__ import annotations

import atexit
import secrets
import shutil
import ssl
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

HOST_NAMES = ("archive.org", "*.archive.org", "*.us.archive.org")

_CA_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
x509_extensions = ca_ext
[dn]
CN = iabulk archive stand-in test CA
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""

_SERVER_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = {sans}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""

_lock = threading.Lock()
_made: CertificateFiles | None = None


@dataclass(frozen=True)
class CertificateFiles:
    """Paths of the CA bundle clients trust and the server's certificate and key."""

    ca_bundle: str
    cert: str
    key: str

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def certificate_files() -> CertificateFiles:
    """The process-wide CA and server certificate, made on first call."""
    global _made
    with _lock:
        if _made is None:
            _made = _make()
        return _made


def _make() -> CertificateFiles:
    directory = Path(tempfile.mkdtemp(prefix="iabulk-standin-ca-"))
    atexit.register(shutil.rmtree, directory, True)
    (directory / "ca.cnf").write_text(_CA_CONFIG)
    (directory / "server.ext").write_text(
        _SERVER_EXTENSIONS.format(sans=", ".join(f"DNS:{h}" for h in HOST_NAMES))
    )
    ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    serial = secrets.token_hex(16)

    def openssl(command: str) -> None:  # every argument is space-free
        subprocess.run(
            ["openssl", *command.split()], cwd=directory, check=True, capture_output=True
        )

    openssl(f"req -x509 {ec} -config ca.cnf -days 30 -keyout ca.key -out ca.pem")
    openssl(f"req {ec} -subj /CN=archive.org -keyout server.key -out server.csr")
    openssl(
        f"x509 -req -in server.csr -CA ca.pem -CAkey ca.key -days 30 -set_serial 0x{serial}"
        " -extfile server.ext -out server.pem"
    )
    return CertificateFiles(
        ca_bundle=str(directory / "ca.pem"),
        cert=str(directory / "server.pem"),
        key=str(directory / "server.key"),
    )
