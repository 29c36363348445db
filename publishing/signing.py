"""Code signing of Expo Updates manifests: one RSA key and certificate per app.

BuildHub generates the key (or takes an uploaded one) and a self-signed certificate that
``expo-updates`` accepts as a trusted root: RSA, ``digitalSignature`` key usage and the
``codeSigning`` extended key usage. The app embeds the certificate
(``updates.codeSigningCertificate``) and asks for signatures; every manifest and directive
part is then signed with RSASSA-PKCS1-v1_5 over SHA-256 (``alg="rsa-v1_5-sha256"``) over the
exact bytes sent. The private key is encrypted at rest like account secrets and never leaves
the server: the API hands out the certificate only.
"""

import base64
import datetime as dt
import hashlib
import threading
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from buildhub.errors import ServiceError
from publishing import edge
from publishing.models import App, AppSigningKey
from publishing.secrets import fernet

ALGORITHM = "rsa-v1_5-sha256"
KEY_BITS = 2048
CERTIFICATE_YEARS = 10
DEFAULT_KEY_ID = "main"

_loaded: dict[int, tuple[str, rsa.RSAPrivateKey]] = {}  # app id -> (row version, key)
_signatures: dict[tuple[str, bytes], str] = {}  # (key version, body digest) -> header
MAX_SIGNATURES = 1024
_loaded_lock = threading.Lock()


def self_signed_certificate(key: rsa.RSAPrivateKey, common_name: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365 * CERTIFICATE_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _refuse(message: str, field: str) -> ServiceError:
    return ServiceError(message, fields={field: message})


def check_certificate(certificate: x509.Certificate, key: rsa.RSAPrivateKey) -> None:
    """What expo-updates checks of a code signing certificate, checked before it is kept."""
    public = certificate.public_key()
    if not isinstance(public, rsa.RSAPublicKey) or public.public_numbers() != (
        key.public_key().public_numbers()
    ):
        raise _refuse("The certificate is not for this private key.", "certificate_pem")
    now = dt.datetime.now(dt.UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise _refuse("The certificate is not valid now.", "certificate_pem")
    usage: x509.KeyUsage | None
    extended: x509.ExtendedKeyUsage | None
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        extended = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usage = extended = None
    if (
        usage is None
        or not usage.digital_signature
        or extended is None
        or ExtendedKeyUsageOID.CODE_SIGNING not in extended
    ):
        raise _refuse(
            "The certificate needs the digitalSignature key usage and the codeSigning extended "
            "key usage.",
            "certificate_pem",
        )


def generate_key(app: App, key_id: str = DEFAULT_KEY_ID) -> AppSigningKey:
    """A new RSA key and self-signed certificate for ``app`` (replacing any it had)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    certificate = self_signed_certificate(key, f"BuildHub {app.account.slug}/{app.slug}")
    return _store(app, key, certificate, key_id, uploaded=False)


def upload_key(app: App, private_key_pem: str, certificate_pem: str, key_id: str) -> AppSigningKey:
    try:
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    except (ValueError, TypeError):
        raise _refuse(
            "private_key_pem is not an unencrypted PEM private key.", "private_key_pem"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < KEY_BITS:
        raise _refuse(f"The key must be RSA of at least {KEY_BITS} bits.", "private_key_pem")
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
    except ValueError:
        raise _refuse("certificate_pem is not a PEM certificate.", "certificate_pem") from None
    check_certificate(certificate, key)
    return _store(app, key, certificate, key_id, uploaded=True)


def _store(app, key, certificate, key_id: str, *, uploaded: bool) -> AppSigningKey:
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    row, _ = AppSigningKey.objects.update_or_create(
        app=app,
        defaults={
            "key_id": key_id,
            "private_key_encrypted": fernet().encrypt(private_pem),
            "certificate_pem": certificate.public_bytes(serialization.Encoding.PEM).decode(),
            "uploaded": uploaded,
        },
    )
    with _loaded_lock:
        _loaded.pop(app.pk, None)
    transaction.on_commit(lambda: cache.delete(_cache_key(app.pk)))
    transaction.on_commit(lambda: edge.forget(app.app_key))  # its signed answers
    return row


def _cache_key(app_id: int) -> str:
    return f"signing-key:{app_id}"


@dataclass(frozen=True)
class SigningKey:
    """What signing needs of an app's key row (plain values: it is kept in the cache)."""

    app_id: int
    key_id: str
    version: str  # changes whenever the key is replaced
    encrypted: bytes


def key_for(app: App) -> SigningKey | None:
    """The app's signing key, from the cache when warm (signed checks are device traffic)."""
    key = cache.get(_cache_key(app.pk))
    if key is None:
        row = AppSigningKey.objects.filter(app=app).first()
        key = (
            SigningKey(
                app.pk,
                row.key_id,
                f"{row.pk}:{row.updated_at.isoformat()}",
                bytes(row.private_key_encrypted),
            )
            if row
            else False
        )
        cache.set(_cache_key(app.pk), key, settings.UPDATE_CHECK_CACHE_SECONDS)
    return key or None


def certificate_fingerprint(row: AppSigningKey) -> str:
    certificate = x509.load_pem_x509_certificate(row.certificate_pem.encode())
    return certificate.fingerprint(hashes.SHA256()).hex()


def _private_key(key: SigningKey) -> rsa.RSAPrivateKey:
    """The app's key, decrypted once per process and key version."""
    with _loaded_lock:
        cached = _loaded.get(key.app_id)
    if cached and cached[0] == key.version:
        return cached[1]
    private = serialization.load_pem_private_key(fernet().decrypt(key.encrypted), password=None)
    if not isinstance(private, rsa.RSAPrivateKey):
        raise TypeError(f"app {key.app_id}'s signing key is not an RSA key")
    with _loaded_lock:
        _loaded[key.app_id] = (key.version, private)
    return private


def signature_header(key: SigningKey, body: bytes) -> str:
    """The ``expo-signature`` value (an Expo SFV dictionary) for exactly ``body``.

    A release's manifest is the same bytes for every device, so its signature is made once
    per process and key version (an RSA signature costs about a millisecond of CPU)."""
    remembered = (key.version, hashlib.sha256(body).digest())
    header = _signatures.get(remembered)
    if header is None:
        signature = _private_key(key).sign(body, padding.PKCS1v15(), hashes.SHA256())
        encoded = base64.b64encode(signature).decode()
        header = f'sig="{encoded}", keyid="{key.key_id}", alg="{ALGORITHM}"'
        if len(_signatures) >= MAX_SIGNATURES:
            _signatures.clear()
        _signatures[remembered] = header
    return header


def verify(certificate_pem: str, body: bytes, signature_b64: str) -> bool:
    """Whether ``signature_b64`` signs ``body`` under the certificate (as a client checks)."""
    public = x509.load_pem_x509_certificate(certificate_pem.encode()).public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        return False
    try:
        public.verify(base64.b64decode(signature_b64), body, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True
