"""Files in and out: the rules every input and output of malpyeong follows.

- An input is checked to be a readable file (a folder, a missing path and an unreadable one are
  three different one-line errors), and JSON's ``NaN`` / ``Infinity`` are not numbers we read.
- An output is checked *before the work*: not a folder, its folder creatable and writable, not
  an existing file unless ``--overwrite``, never one of the command's inputs or another of its
  outputs (:func:`check_distinct`).
- Outputs are written to a temporary file and renamed over the target (a reader never sees half
  a file), with the permissions the user's umask gives any new file (``mkstemp`` alone makes
  them 0600, unreadable by teammates on a shared server).
- A file appended to by a resumable job is locked while it is written, so two runs writing the
  same output at once stop with one line instead of interleaving their rows.
- A plain-text input (a chat script, a dialogue, a prompt, a CSV table) is read by one reader,
  :func:`read_text`: UTF-8 with or without a BOM, UTF-16 with a BOM, else the legacy encoding
  its bytes show (CP949, Windows-1252, Latin-1; :func:`decode_text`), said once on the log;
  a NUL byte (binary data, UTF-16 without a BOM) is refused naming its line.
"""

from __future__ import annotations

import codecs
import errno
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from malpyeong.errors import UserError, UserErrors, one_line

log = logging.getLogger(__name__)


def current_umask() -> int:
    """The process's umask (read by setting and restoring it; there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def json_loads(text: str | bytes) -> Any:
    """``json.loads`` that refuses ``NaN``, ``Infinity`` and ``-Infinity`` (not JSON; Python
    accepts them, and a ``NaN`` utterance would be read as the word "nan")."""
    return json.loads(text, parse_constant=_reject_constant)


# ------------------------------------------------------------------------------- inputs


def require_file(path: str | os.PathLike, *, field: str | None = None) -> Path:
    """``path`` as a readable file, else one ``UserError`` that says what it is instead."""
    p = Path(path)
    if p.is_dir():
        raise UserError("is a folder, not a file", file=str(p), field=field, hint="give the file inside it")
    if not p.exists():
        raise UserError("file not found", file=str(p), field=field, hint="check the path")
    if not os.access(p, os.R_OK):
        raise UserError("cannot read: permission denied", file=str(p), field=field)
    return p


# ------------------------------------------------------------------------------- text

CP1252_UNDEFINED = frozenset(b"\x81\x8d\x8f\x90\x9d")
KOREAN_MIN_SHARE = 0.15  # share of non-ASCII bytes above which CP949 is considered
HANGUL_MIN_SHARE = 0.9  # share of the decoded non-ASCII characters that must be Hangul syllables
UNAMBIGUOUS = ("utf-8", "utf-8-sig", "utf-16")  # a guessed legacy encoding is said on the log


def _is_hangul(ch: str) -> bool:
    return "\uac00" <= ch <= "\ud7a3"


def decode_text(raw: bytes) -> tuple[str, str]:
    """``(text, encoding name)`` for the bytes of a text file; never raises.

    1. a byte-order mark (UTF-8, UTF-16) says it;
    2. bytes that decode as strict UTF-8 are UTF-8 (other encodings almost never produce valid
       UTF-8 multi-byte sequences by chance);
    3. CP949, when many bytes are non-ASCII (Korean text is mostly Hangul) and they decode
       strictly into Hangul syllables (a Latin-1 page with a few accented letters is neither);
    4. Latin-1 when no byte lies in 0x80-0x9F (there Latin-1 and Windows-1252 agree);
    5. Windows-1252, when no byte is one of the five it leaves undefined;
    6. Latin-1, which maps every byte and so always succeeds.
    """
    for bom, name in (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if raw.startswith(bom):
            return raw.decode(name, errors="replace"), name
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    high = sum(b >= 0x80 for b in raw)
    if raw and high / len(raw) >= KOREAN_MIN_SHARE:
        try:
            text = raw.decode("cp949")
        except UnicodeDecodeError:
            text = None
        if text is not None:
            wide = [c for c in text if ord(c) >= 0x80]
            if wide and sum(map(_is_hangul, wide)) / len(wide) >= HANGUL_MIN_SHARE:
                return text, "cp949"
    if not any(0x80 <= b <= 0x9F for b in raw):
        return raw.decode("latin-1"), "latin-1"  # the same text as cp1252 would give
    if not CP1252_UNDEFINED.intersection(raw):
        return raw.decode("cp1252"), "cp1252"
    return raw.decode("latin-1"), "latin-1"


def looks_utf16(raw: bytes) -> bool:
    """Every other byte NUL: UTF-16 text of mostly ASCII characters, saved without a BOM."""
    sample = raw[:4096]
    return len(sample) >= 4 and (
        sample[1::2].count(0) > 0.4 * len(sample) / 2 or sample[0::2].count(0) > 0.4 * len(sample) / 2
    )


def text_of(raw: bytes, name: str, *, field: str | None = None) -> str:
    """The text of a plain-text input's bytes (see :func:`read_text`); ``name`` names it in
    messages (a path, or ``stdin``)."""
    text, encoding = decode_text(raw)
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        why = "; it looks like UTF-16 saved without a byte-order mark" if looks_utf16(raw) else ""
        raise UserError(
            f"line {line} holds a NUL byte, which text does not{why}",
            file=name,
            field=field,
            hint="save the file as UTF-8 text",
        )
    if encoding not in UNAMBIGUOUS:
        log.warning("%s: not UTF-8; read as %s (save it as UTF-8 to be sure)", name, encoding)
    return text


def read_text(path: str | os.PathLike, *, field: str | None = None) -> str:
    """A plain-text input file as text, whatever encoding it was saved in (:func:`decode_text`);
    one ``UserError`` naming the file (and ``field``, the option that gave it) when it is no
    text file."""
    p = require_file(path, field=field)
    return text_of(p.read_bytes(), str(p), field=field)


def yaml_loads(text: str, name: str, *, field: str | None = None) -> Any:
    """YAML (or JSON, which is YAML) text as Python values, refusing what PyYAML lets pass: a
    key given twice in one mapping (PyYAML keeps the last, so ``lora_r: 16`` ... ``lora_r: 8``
    trains with 8 and says nothing). Every repeated key is reported at once, with its lines."""
    import yaml

    repeated: list[UserError] = []

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                try:
                    key = self.construct_object(key_node, deep=True)
                    hash(key)
                except Exception:  # noqa: BLE001 - PyYAML reports an unhashable key itself
                    continue
                line = key_node.start_mark.line + 1
                if key in seen:
                    repeated.append(
                        UserError(
                            f"key {key!r} is given twice (lines {seen[key]} and {line}); YAML would keep the last",
                            file=name,
                            field=field,
                            hint="keep one of them",
                        )
                    )
                else:
                    seen[key] = line
            return super().construct_mapping(node, deep=deep)

    try:
        data = yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise UserError(f"not valid YAML: {one_line(err, 200)}", file=name, field=field) from None
    if repeated:
        raise UserErrors(repeated) if len(repeated) > 1 else repeated[0]
    return data


def read_yaml(path: str | os.PathLike, *, field: str | None = None) -> Any:
    """A YAML file (:func:`read_text`, then :func:`yaml_loads`)."""
    return yaml_loads(read_text(path, field=field).lstrip("\ufeff"), str(path), field=field)


# ------------------------------------------------------------------------------- outputs


def _existing_ancestor(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path(path.anchor or ".")


def check_folder_writable(folder: str | os.PathLike, *, what: str) -> None:
    """Whether files can be created in ``folder`` (or in the folders that would be made for it):
    probed by creating and removing a temporary file, which also catches read-only mounts and,
    unlike ``os.access``, holds for root too. Nothing is left on disk."""
    folder = Path(folder)
    target = folder if folder.exists() else _existing_ancestor(folder)
    if not target.is_dir():
        raise UserError(f"cannot write here: {target} is a file, not a folder", file=what)
    try:
        fd, probe = tempfile.mkstemp(prefix=".malpyeong-probe-", dir=target)
    except OSError as err:
        raise UserError(
            f"cannot write in {target}: {err.strerror or err}",
            file=what,
            hint="choose a folder you can write to",
        ) from None
    os.close(fd)
    os.unlink(probe)


def ensure_writable(path: str | os.PathLike, overwrite: bool) -> Path:
    """Check an output file before the work: not a folder, not an existing file unless
    ``overwrite``, in a folder that can be written. Nothing is created here (the writers make
    the folder), so a refused command leaves the disk as it was."""
    path = Path(path)
    if path.is_dir():
        raise UserError(
            "is a folder; an output file is expected here",
            file=str(path),
            hint="give a file name, e.g. " + str(path / "out.json"),
        )
    if path.exists() and not overwrite:
        raise UserError("output exists", file=str(path), hint="pass --overwrite to replace it")
    check_folder_writable(path.parent, what=str(path))
    return path


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


Named = Iterable[tuple[str, str | os.PathLike | None]]


def check_distinct(outputs: Named, inputs: Named = (), *, folders: Sequence[str] = ()) -> None:
    """No output path equal to an input or to another output of the same command.

    ``outputs`` and ``inputs`` are ``(option, path)`` pairs (``None`` paths are skipped);
    ``folders`` names the outputs that are folders replaced as a whole (a run folder): an input
    inside one would be deleted with it, so that is refused too.
    """
    outs = [(n, Path(p)) for n, p in outputs if p is not None]
    ins = [(n, Path(p)) for n, p in inputs if p is not None]
    for i, (name, out) in enumerate(outs):
        for other, prev in outs[:i]:
            if _same(out, prev):
                raise UserError(
                    f"{name} and {other} are the same path",
                    file=str(out),
                    hint="every output needs its own file",
                )
        for src_name, src in ins:
            if _same(out, src):
                raise UserError(
                    f"{name} is also an input ({src_name})",
                    file=str(out),
                    hint="write the output elsewhere; an input is never replaced",
                )
            if name in folders and _inside(src, out):
                raise UserError(
                    f"the input {src_name} ({src}) is inside the {name} folder, which this command replaces",
                    file=str(out),
                    hint="choose another output folder",
                )


def check_outputs(
    outputs: Named,
    inputs: Named = (),
    *,
    overwrite: bool = False,
    kept: Sequence[str] = (),
) -> None:
    """The one output check every script runs before any work: no output is an input or
    another output (:func:`check_distinct`: the same file under another name, a hard link or a
    symlink counts), and each output can be written (:func:`ensure_writable`: not a folder,
    its folder writable, not an existing file unless ``overwrite``). ``kept`` names outputs
    that may exist and are continued rather than replaced (a resumed session, an appended
    log): they are checked for a writable folder only."""
    outputs = [(n, p) for n, p in outputs if p is not None]
    check_distinct(outputs, inputs)
    for name, path in outputs:
        if name in kept:
            if Path(path).is_dir():
                raise UserError(f"is a folder; {name} is a file", file=str(path))
            check_folder_writable(Path(path).parent, what=str(path))
        else:
            ensure_writable(path, overwrite)


# ------------------------------------------------------------------------------- writing


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """A file written under a temporary name in the same folder, fsynced, then renamed over
    ``path`` when the block ends without an error (removed otherwise); it gets the permissions
    the umask gives a new file (``mkstemp`` alone would leave it 0600). ``mode``: "w" or "wb"."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:  # named by the user's path, not by the temporary file's
        raise UserError(
            f"cannot write here: {err.strerror or one_line(err)}",
            file=str(path),
            hint="choose a folder you can write to",
        ) from None
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        text = {"encoding": "utf-8", "newline": "\n"} if "b" not in mode else {}
        with os.fdopen(fd, mode, **text) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """``text`` written through :func:`atomic_open`."""
    with atomic_open(path) as fh:
        fh.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Like :func:`atomic_write_text`, for binary files (pictures)."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 4) -> None:
    """JSON the way the official files are written: UTF-8, ``ensure_ascii=False``."""
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=indent) + "\n")


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A fresh folder in ``parent`` (to build an output in and rename into place), with the
    permissions the umask gives a new folder (``mkdtemp`` would leave it 0700)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=parent))
    os.chmod(folder, 0o777 & ~current_umask())
    return folder


# ------------------------------------------------------------------------------- JSONL


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file, ignoring a torn last line (left by a killed writer); any other line
    that is not JSON is one ``UserError`` naming the file and the line."""
    rows = []
    path = Path(path)
    if not path.exists():
        return rows
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.endswith("\n"):
                break  # partial line from an interrupted append
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json_loads(line))
            except ValueError as err:
                raise UserError(
                    f"line {lineno} is not valid JSON ({one_line(err, 120)})",
                    file=str(path),
                    hint="the file is damaged; delete it (or that line) to start over",
                ) from None
    return rows


def read_jsonl_file(
    path: str | os.PathLike,
    *,
    required: Sequence[str] = (),
    field: str | None = None,
    what: str = "rows",
    hint: str | None = None,
) -> list[dict]:
    """A JSONL input written whole (preference pairs, unpaired examples): every non-blank line a
    JSON object holding the ``required`` keys, and at least one; the first bad line is one
    ``UserError`` naming the file and the line (``hint``: how to make a good file). Unlike
    :func:`read_jsonl` (files appended as work goes, whose torn last line is dropped), the last
    line counts without its newline: nothing of a finished input is ever left out."""
    p = require_file(path, field=field)
    rows: list[dict] = []
    try:
        with open(p, encoding="utf-8-sig") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json_loads(line)
                except ValueError as err:
                    raise UserError(
                        f"line {lineno} is not valid JSON ({one_line(err, 120)})", file=str(p), field=field
                    ) from None
                missing = [k for k in required if k not in row] if isinstance(row, dict) else list(required)
                if missing or not isinstance(row, dict):
                    raise UserError(
                        f"line {lineno} lacks {', '.join(missing)}"
                        if missing
                        else f"line {lineno} is not an object",
                        file=str(p),
                        hint=hint,
                    )
                rows.append(row)
    except UnicodeDecodeError:
        raise UserError("not UTF-8 text", file=str(p), field=field) from None
    if not rows:
        raise UserError(f"no {what} in the file", file=str(p), hint=hint)
    return rows


@contextmanager
def exclusive(path: str | os.PathLike, what: str = "file"):
    """Hold an exclusive lock on the existing ``path`` (a file or a folder) for the block; a
    second holder (another run) is refused at once with one line."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(
                    f"another run is writing this {what} now",
                    file=str(path),
                    hint="wait for it to finish, or choose another output",
                ) from None
            raise
        yield
    finally:
        os.close(fd)


class JsonlAppender:
    """Append one JSON object per line and flush it, so a killed job can resume from the file.

    The file is locked while it is open: a second run appending to it stops with one line.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existed = self.path.exists()
        self._fh = open(self.path, "a", encoding="utf-8")
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.close()
            if not existed:
                self.path.unlink(missing_ok=True)
            raise UserError(
                "another run is writing this file now",
                file=str(self.path),
                hint="wait for it to finish, or choose another output",
            ) from None
        # Drop a torn last line so appends start on a clean line.
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            self._fh.flush()
            os.truncate(self.path, data.rfind(b"\n") + 1)

    def write(self, row: dict) -> None:
        self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._fh.flush()

    def reset(self) -> None:
        """Empty the file (starting over), keeping the lock."""
        self._fh.flush()
        os.truncate(self.path, 0)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------- resume files
# A generator that writes one row per unit of work (a teacher's answer, a Magpie sample) appends
# each to OUT.raw.jsonl as it is made; a rerun skips what is there and refuses to mix settings.


def resume_path(out: str | os.PathLike) -> Path:
    """Where a generator keeps its raw outputs and resumes from: ``OUT.raw.jsonl``."""
    out = Path(out)
    return out.with_name(out.name + ".raw.jsonl")


def open_resume(path: str | os.PathLike, meta: dict, key: str) -> tuple[dict[Any, dict], JsonlAppender]:
    """Rows already in the resume file by ``row[key]``, and an appender for new rows.

    A new file starts with ``{"_meta": meta}``. An existing file must carry the same meta: rows
    made by another model or with other settings are not silently mixed into one dataset.
    """
    path = Path(path)
    rows = read_jsonl(path) if path.exists() else []
    done: dict[Any, dict] = {}
    if rows:
        head = rows[0].get("_meta")
        if head is None:
            raise UserError("raw file has no _meta header", file=str(path), hint="delete it to start over")
        diff = sorted(k for k in set(head) | set(meta) if head.get(k) != meta.get(k))
        if diff:
            k = diff[0]
            raise UserError(
                f"made with other settings: {k} was {head.get(k)!r}, now {meta.get(k)!r}",
                file=str(path),
                hint="use the same settings to resume, or delete it",
            )
        done = {r[key]: r for r in rows[1:] if key in r}
    appender = JsonlAppender(path)
    if not rows:
        appender.write({"_meta": meta})
    return done, appender
