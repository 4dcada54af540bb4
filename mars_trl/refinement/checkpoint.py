"""MARS state on disk: JSON for scalars, `.npz` for arrays, JSONL for the pool (never pickle), all atomic and checksummed.

A checkpoint folder holds `mars_state.json` (scalars, plus the SHA-256 of every other file), `mars_arrays.npz` and any
named JSONL files (the augmented pool, the variant cache). Each is written to a temporary file, fsync'ed and renamed,
so a crash leaves either the old file or the new one; `mars_state.json` goes last and names what it vouches for.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile

import numpy as np

STATE_FILE = "mars_state.json"
ARRAYS_FILE = "mars_arrays.npz"
#: The augmented pool as token ids (one JSON object per pair), and each labelled pair's cached variants.
POOL_FILE = "mars_pool.jsonl"
VARIANTS_FILE = "mars_variants.jsonl"
#: 2: the manifest's own values (the scalars resume depends on, and the other files' checksums) are checksummed too.
FORMAT_VERSION = 2
MANIFEST_CHECKSUM = "manifest_sha256"


class MarsStateError(RuntimeError):
    """A MARS state file is missing, truncated, or does not match its checksum."""


def _manifest_digest(payload: dict) -> str:
    body = {k: v for k, v in payload.items() if k != MANIFEST_CHECKSUM}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def atomic_write_bytes(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    # Make the rename itself durable.
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_state(
    directory: str, scalars: dict, arrays: dict[str, np.ndarray], files: dict[str, bytes] | None = None
) -> None:
    """Write `scalars` (JSON-serialisable), `arrays` (numeric NumPy arrays) and `files` (name -> bytes)."""
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    blob = buffer.getvalue()
    atomic_write_bytes(os.path.join(directory, ARRAYS_FILE), blob)
    checksums = {}
    for name, data in (files or {}).items():
        atomic_write_bytes(os.path.join(directory, name), data)
        checksums[name] = hashlib.sha256(data).hexdigest()
    payload = {
        "format_version": FORMAT_VERSION,
        "arrays_sha256": hashlib.sha256(blob).hexdigest(),
        "files_sha256": checksums,
        "scalars": scalars,
    }
    payload[MANIFEST_CHECKSUM] = _manifest_digest(payload)
    text = json.dumps(payload, indent=1, sort_keys=True)
    atomic_write_bytes(os.path.join(directory, STATE_FILE), text.encode("utf-8"))


def has_state(directory: str) -> bool:
    return os.path.isfile(os.path.join(directory, STATE_FILE))


def load_state(directory: str) -> tuple[dict, dict[str, np.ndarray], dict[str, bytes]]:
    """Read what `save_state` wrote; raise `MarsStateError` naming the file if anything is wrong with it."""
    state_path = os.path.join(directory, STATE_FILE)
    arrays_path = os.path.join(directory, ARRAYS_FILE)
    try:
        with open(state_path, encoding="utf-8") as handle:
            payload = json.load(handle)
        expected = payload["arrays_sha256"]
        scalars = payload["scalars"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise MarsStateError(
            f"MARS state file {state_path} is unreadable or truncated ({err}). Resume from an earlier checkpoint, "
            "or delete this checkpoint folder to start MARS state afresh."
        ) from err
    # Format 1 (before the manifest carried its own checksum) is read as it was written.
    if payload.get("format_version", 1) != 1 and payload.get(MANIFEST_CHECKSUM) != _manifest_digest(payload):
        raise MarsStateError(
            f"MARS state file {state_path} was changed after it was written: its values (the refresh epoch, the "
            "sampler and pool positions that resume depends on) do not match its checksum. Restore the file as the "
            "run wrote it, or resume from an earlier checkpoint."
        )
    try:
        with open(arrays_path, "rb") as handle:
            blob = handle.read()
    except OSError as err:
        raise MarsStateError(
            f"MARS arrays file {arrays_path} is missing ({err}): the checkpoint is incomplete."
        ) from err
    actual = hashlib.sha256(blob).hexdigest()
    if actual != expected:
        raise MarsStateError(
            f"MARS arrays file {arrays_path} does not match the checksum in {state_path} (corrupted or truncated). "
            "Resume from an earlier checkpoint."
        )
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    files = {}
    for name, digest in payload.get("files_sha256", {}).items():
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as err:
            raise MarsStateError(f"MARS state file {path} is missing ({err}): the checkpoint is incomplete.") from err
        if hashlib.sha256(data).hexdigest() != digest:
            raise MarsStateError(
                f"MARS state file {path} does not match the checksum in {state_path} (corrupted or truncated). "
                "Resume from an earlier checkpoint."
            )
        files[name] = data
    return scalars, arrays, files
