"""Object storage shared by the apps: the S3 storages settings build, their reachability check,
and the refusal a caller sees when storage cannot be reached."""

from contextlib import contextmanager

from buildhub.errors import ServiceError

S3_BACKEND = "storages.backends.s3.S3Storage"


def s3_storages(
    *,
    public_bucket: str,
    private_bucket: str,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    signed_url_seconds: int = 3600,
    access_key: str | None = None,
    secret_key: str | None = None,
) -> dict:
    """``STORAGES["default"]`` and ``["private"]`` on S3: the public bucket is read anonymously
    (plain URLs), the private one only through presigned URLs that expire.

    Without ``access_key`` boto3 finds credentials itself (``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY``, an instance role)."""
    common = {
        "endpoint_url": endpoint_url,
        # An object read through storage.open() spools to disk past this: a 500 MB source
        # never sits whole in a worker's or web process's memory (the default keeps it all).
        "max_memory_size": 8 * 1024 * 1024,
        "region_name": region_name,
        # Signature V4 everywhere: AWS regions opened since 2014 accept nothing else.
        "signature_version": "s3v4",
        "file_overwrite": False,
    }
    if access_key:
        common.update(access_key=access_key, secret_key=secret_key)
    return {
        "default": {
            "BACKEND": S3_BACKEND,
            "OPTIONS": {**common, "bucket_name": public_bucket, "querystring_auth": False},
        },
        "private": {
            "BACKEND": S3_BACKEND,
            "OPTIONS": {
                **common,
                "bucket_name": private_bucket,
                "default_acl": "private",
                "querystring_auth": True,
                "querystring_expire": signed_url_seconds,
            },
        },
    }


def is_bucket(storage) -> bool:
    return bool(getattr(storage, "bucket_name", None))


def presigned_post(storage, name: str, *, size: int, expires_in: int) -> dict:
    """A form (``url`` and ``fields``, the file goes last as ``file``) with which a client
    sends exactly ``size`` bytes as ``name`` straight to ``storage``'s bucket, until it
    expires; the bucket refuses any other size, name or a late or altered form."""
    key = f"{storage.location.strip('/')}/{name}" if storage.location else name
    form = storage.connection.meta.client.generate_presigned_post(
        Bucket=storage.bucket_name,
        Key=key,
        Conditions=[["content-length-range", size, size]],
        ExpiresIn=expires_in,
    )
    return {"url": form["url"], "method": "POST", "fields": form["fields"]}


def check_reachable(storage) -> None:
    """Raise unless ``storage`` can be used now: an S3 bucket must exist and accept our
    credentials (a missing object alone would answer 404 for a missing bucket too)."""
    bucket_name = getattr(storage, "bucket_name", None)
    if bucket_name:
        storage.connection.meta.client.head_bucket(Bucket=bucket_name)
    else:
        storage.exists(".healthz")


def _storage_errors() -> tuple[type[Exception], ...]:
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError, Boto3Error, OSError)


class StorageUnavailable(ServiceError):
    """Storage cannot be used now: a request answers 503 with Retry-After, and a job's
    attempt fails as retryable (the engine retries it with backoff)."""

    status = 503
    code = "storage_unavailable"


@contextmanager
def storage_unavailable_as_503():
    """Storage that cannot be reached (bucket missing, credentials refused, server down, disk
    full) answers the caller a 503 it can retry, not a 500; in a job, a retry."""
    try:
        yield
    except _storage_errors() as error:
        raise StorageUnavailable(
            f"Storage is unavailable right now; try again later ({type(error).__name__}).",
            headers={"Retry-After": "30"},
        ) from error
