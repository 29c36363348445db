"""Builders of source archives for tests: well-formed ones and hostile ones."""

import io
import struct
import tarfile
import zipfile


def tar_gz(members: list[tuple], **options) -> bytes:
    """``members``: (name, kind, data_or_target[, mode]) with kind file|dir|symlink|hardlink|
    chr|blk|fifo."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", **options) as archive:
        for name, kind, payload, *rest in members:
            info = tarfile.TarInfo(name)
            info.mode = rest[0] if rest else (0o755 if kind == "dir" else 0o644)
            data = None
            if kind == "file":
                info.size = len(payload)
                data = io.BytesIO(payload)
            else:
                info.type = {
                    "dir": tarfile.DIRTYPE,
                    "symlink": tarfile.SYMTYPE,
                    "hardlink": tarfile.LNKTYPE,
                    "chr": tarfile.CHRTYPE,
                    "blk": tarfile.BLKTYPE,
                    "fifo": tarfile.FIFOTYPE,
                }[kind]
                if kind in ("symlink", "hardlink"):
                    info.linkname = payload
            archive.addfile(info, data)
    return buffer.getvalue()


def zip_bytes(members: list[tuple]) -> bytes:
    """``members``: (name, data[, unix mode]); a mode with S_IFLNK makes data the link target."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data, *rest in members:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if rest:
                info.create_system = 3
                info.external_attr = rest[0] << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def zip_with_lying_size(data: bytes, claimed: int) -> bytes:
    """A one-entry zip whose headers say the entry unpacks to ``claimed`` bytes."""
    raw = bytearray(zip_bytes([("big.txt", data)]))
    struct.pack_into("<I", raw, 22, claimed)  # local header: uncompressed size
    central = raw.find(b"PK\x01\x02")
    struct.pack_into("<I", raw, central + 24, claimed)
    return bytes(raw)


def zip_with_overlapping_entries(data: bytes, copies: int) -> bytes:
    """Central directory records that all point at the same compressed bytes (a zip bomb)."""
    raw = zip_bytes([("a.txt", data)])
    central = raw.find(b"PK\x01\x02")
    end = raw.find(b"PK\x05\x06")
    record = raw[central:end]
    name_length = struct.unpack_from("<H", record, 28)[0]
    records = b"".join(
        record[:46]
        + f"{i:0{name_length - 4}d}.txt".encode()[:name_length]
        + record[46 + name_length :]
        for i in range(copies)
    )
    trailer = bytearray(raw[end:])
    struct.pack_into("<HHII", trailer, 8, copies, copies, len(records), central)
    return raw[:central] + records + bytes(trailer)


def encrypted_flag_zip() -> bytes:
    raw = bytearray(zip_bytes([("secret.txt", b"hidden")]))
    struct.pack_into("<H", raw, 6, 1)  # local header: general purpose flag, bit 0
    central = raw.find(b"PK\x01\x02")
    struct.pack_into("<H", raw, central + 8, 1)
    return bytes(raw)
