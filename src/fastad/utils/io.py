"""Crash-safe file writing and the one safe reader of torch checkpoints.

Writing: to a temporary file in the same folder, flushed to disk (``fsync``), then renamed over the
target with ``os.replace`` and the folder entry synced: a crash (SIGKILL, power loss) leaves either
the old file or the new one, never a torn one. A failed write (disk full, file size limit) removes
the temporary file, leaves any previous file untouched and raises a one-line
:class:`~fastad.errors.UserError` naming the file.

Reading: :func:`load_torch_file` is the only place fastad calls ``torch.load``; it always passes
``weights_only=True`` (tensors and plain containers only), so a file whose unpickling would run
code is refused, never executed. Every torch checkpoint (classifier files, ``last.pt``, ``best.pt``)
goes through it; priors and fastad's own classifiers are safetensors.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from fastad.errors import UserError

__all__ = ["atomic_write", "atomic_torch_save", "atomic_bytes", "atomic_json", "fsync_dir", "load_torch_file",
           "load_resume_state", "as_os_error", "drop_rows_after"]


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_os_error(e: BaseException) -> OSError | None:
    """``e`` if it is an ``OSError``; for writers that wrap one (safetensors: "... (os error 28)"), the
    ``OSError`` it wraps; else None."""
    if isinstance(e, OSError):
        return e
    found = re.search(r"\(os error (\d+)\)", str(e)) if isinstance(e, Exception) else None
    return OSError(int(found.group(1)), os.strerror(int(found.group(1)))) if found else None


def _write_failed(path: Path, err: OSError) -> UserError:
    why = os.strerror(err.errno) if err.errno else _one_line(str(err))
    hint = " (disk full?)" if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else ""
    kept = f"the previous {path.name} is unchanged" if path.exists() else f"no {path.name} was written"
    return UserError(f"cannot write '{path}': {why}{hint}; {kept}")


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: some file systems refuse fsync on folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sweep_stale(path: Path) -> None:
    """Remove temporary files of ``path`` left by a writer that was killed (its process is gone)."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        found = re.match(rf"\.{re.escape(path.name)}\.(\d+)\.", tmp.name)
        if not found or int(found.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(found.group(1)), 0)
        except ProcessLookupError:  # its writer is dead: the file is litter
            try:
                tmp.unlink()
            except OSError:
                pass
        except (PermissionError, OverflowError, OSError):
            pass  # alive (someone else's) or unknowable: leave it


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then atomically replace ``path``; a crash leaves the old file intact.

    An ``OSError`` while writing (``ENOSPC``, ``EFBIG``, ...) becomes a one-line ``UserError``
    naming ``path``; the temporary file is removed and a previous ``path`` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
        os.close(fd)
    except OSError as e:
        raise _write_failed(path, e) from None
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            if os.path.exists(tmp):
                os.unlink(tmp)
        except OSError:
            pass
        err = as_os_error(e)
        if err is not None:
            raise _write_failed(path, err) from None
        raise
    fsync_dir(path.parent)
    _sweep_stale(path)


class _RecordingFile:
    """A file wrapper that remembers the ``OSError`` of a failed write: torch's zip writer reports
    one only as an opaque ``RuntimeError`` ("unexpected pos ...")."""

    def __init__(self, f) -> None:
        self.f, self.error = f, None

    def write(self, b) -> int:
        try:
            return self.f.write(b)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`atomic_write`)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            rec = _RecordingFile(f)
            try:
                torch.save(obj, rec)
            except RuntimeError:
                if rec.error is not None:
                    raise rec.error from None
                raise

    atomic_write(path, write)


def atomic_bytes(data: bytes, path: str | Path) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, write)


def atomic_json(obj: Any, path: str | Path) -> None:
    atomic_bytes((json.dumps(obj, indent=2) + "\n").encode(), path)


def load_torch_file(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; every failure is a one-line ``UserError``.

    A file that needs anything beyond tensors and plain containers (a class, a function: what a
    crafted pickle uses to run code) is refused before any of it is executed.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} '{path}' not found" if not path.exists() else f"{what} '{path}' is not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError (bad zip), EOFError, ... on any bad file
        msg = str(e)
        found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", msg)  # torch's reason, minus its advice
        why = _one_line(found.group(1).split(" Please ")[0] if found else f"{type(e).__name__} {msg}")
        if "Unsupported global" in why:  # a class or function reference: what runs code on load
            raise UserError(f"{what} '{path}' holds Python objects other than tensors and plain containers "
                            f"({why}); refusing to unpickle it: only weights-only files are loaded") from None
        raise UserError(f"cannot read {what} '{path}' (not a torch or safetensors file, or corrupt): {why}") from None


def load_resume_state(run_dir: str | Path, required: Sequence[str] = (), command: str = "fastad") -> dict:
    """The ``last.pt`` of a run folder, for ``--resume`` (tensors and plain values only).

    ``required``: the keys the caller reads; a file without one of them is refused in one line (a
    ``last.pt`` of another command, or a foreign file), never a ``KeyError``.
    """
    path = Path(run_dir) / "last.pt"
    if not path.is_file():
        raise UserError(f"--resume: no last.pt in '{run_dir}'")
    try:
        state = load_torch_file(path)
    except UserError as e:
        raise UserError(f"--resume: {e}") from None
    if not isinstance(state, dict):
        raise UserError(f"--resume: '{path}' holds a {type(state).__name__}, not a run's state")
    lacking = [k for k in required if k not in state]
    if lacking:
        raise UserError(f"--resume: '{path}' is not a {command} checkpoint (no {', '.join(lacking)})")
    return state


def drop_rows_after(path: str | Path, last_step: int) -> None:
    """On resume: keep the ``metrics.jsonl`` rows up to ``last_step`` (the checkpoint's), so the steps redone
    after it are not logged twice. A torn last line (a crash or a full disk mid-write) is dropped too."""
    path = Path(path)
    if not path.is_file():
        return
    keep = []
    for row in path.read_text(errors="replace").splitlines():
        try:
            step = json.loads(row)["step"]
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(step, int) and step <= last_step:
            keep.append(row + "\n")
    atomic_bytes("".join(keep).encode(), path)
