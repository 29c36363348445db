"""Checking an Expo code signature as a client does."""

import base64
import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from publishing import signing


def _ec_certificate_and_signature(body: bytes) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not an rsa key")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    signature = key.sign(body, ec.ECDSA(hashes.SHA256()))
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    return pem, base64.b64encode(signature).decode()


def test_a_signature_under_a_certificate_that_is_not_rsa_does_not_verify():
    # Expo's signatures are RSA (alg="rsa-v1_5-sha256"): any other certificate is a no,
    # not an error.
    body = b'{"id": "update"}'
    certificate, signature = _ec_certificate_and_signature(body)
    assert signing.verify(certificate, body, signature) is False


def test_an_rsa_signature_verifies_and_a_changed_body_does_not():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    certificate = signing.self_signed_certificate(key, "app")
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    body = b'{"id": "update"}'
    signature = base64.b64encode(key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()
    assert signing.verify(pem, body, signature) is True
    assert signing.verify(pem, body + b" ", signature) is False
