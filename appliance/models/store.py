"""The model store: weights imported once, verified, content-addressed, placed where the plan mounts them.

Layout under ``<data_dir>/modelstore/``::

    blobs/sha256/<hex>                 every file once (read-only), shared by all manifests
    manifests/<model>@<precision>.json one per model version (appliance.models.manifest.Manifest)
    partial/<model>@<precision>/       an import in progress: its journal and the file being copied
    lock                               serialises imports, removals and verifications

and the model's **view** -- the directory the plan mounts read-only, ``<models_dir>/<model>/<precision>/``
-- holds hard links to the blobs under the manifest's file names (a copy where the view is on
another file system), with a ``.appliance-model`` marker saying which manifest placed it.

An import hashes every byte while copying it (one read of each byte), writes to a temporary file,
and renames it into ``blobs/`` only when complete; a journal records each finished file, so a
re-run after a crash or Ctrl-C continues where it stopped (the file in progress resumes from its
temporary copy, re-hashed). The manifest is written -- atomically -- only once every blob is in
place and verified and the view is placed; until then the model does not exist for anyone, and a
refused import (a directory in the way is refused before a byte is copied) leaves no manifest.
Importing a ``model@precision`` again replaces it: new view, new manifest, and the old version's
blobs that no manifest uses any more are collected. This module is the only one
that writes the store; the deploy pipeline asks it whether a plan's weights are present and
verified (:meth:`ModelStore.check`).

``APPLIANCE_MODELS_FAULT=copy:<bytes>`` SIGKILLs an import after that many bytes were copied
(the crash tests use it).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from appliance.atomic import fsync_dir, place_file, replace_dir, write_atomic
from appliance.errors import PreflightFailed, StateError, UsageError
from appliance.models.layout import manifest_path, store_root
from appliance.models.manifest import (
    Damage,
    Facts,
    FileEntry,
    ImportResult,
    Manifest,
    ModelEntry,
    ModelList,
    SourceInfo,
    Verification,
    VerifyReport,
)
from appliance.models.sources import Source
from appliance.paths import DERIVED_DIR
from appliance.progress import NullProgress, Progress

CHUNK_BYTES = 8 * 1024 * 1024
MARKER = ".appliance-model"
FAULT_ENV = "APPLIANCE_MODELS_FAULT"
FREE_MARGIN_BYTES = 64 * 1024 * 1024


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def models_root(catalog) -> Path:
    """Where the plan expects weights: ``planner.models_dir`` of the catalog, else ``<data_dir>/models``
    (the planner's rule, appliance.planner.core)."""
    from appliance.paths import data_dir

    return Path(catalog.planner.models_dir or (data_dir() / "models"))


def _fault_after() -> int | None:
    spec = os.environ.get(FAULT_ENV, "")
    if spec.startswith("copy:"):
        return int(spec.split(":", 1)[1])
    return None


class ModelStore:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else store_root()
        self.blobs = self.root / "blobs" / "sha256"
        self.manifest_dir = self.root / "manifests"
        self.partial = self.root / "partial"

    # ---- paths and reading -----------------------------------------------------------------------
    def blob(self, sha256: str) -> Path:
        return self.blobs / sha256

    def manifest_path(self, model: str, precision: str) -> Path:
        return manifest_path(model, precision, self.root)

    def _read(self, path: Path) -> Manifest:
        """One manifest file, or a StateError naming it and the fix: a manifest is written atomically,
        so an unreadable one was damaged or edited by hand -- never a pydantic traceback."""
        try:
            return Manifest.model_validate_json(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise StateError(f"the model manifest is unreadable: {_first_problem(exc)}", where=str(path),
                             fix=f"remove it (rm {path}) and import the model again (appliance models import "
                                 "SOURCE); `appliance models verify` then checks the rest of the store") from None
        except OSError as exc:
            raise StateError(f"cannot read the model manifest: {exc.strerror or exc}", where=str(path),
                             fix="check the store's permissions (run as the appliance's user)") from None

    def manifests(self) -> list[Manifest]:
        if not self.manifest_dir.is_dir():
            return []
        return [self._read(p) for p in sorted(self.manifest_dir.glob("*.json"))]

    def get(self, model: str, precision: str | None = None) -> Manifest | None:
        if precision is not None:
            p = self.manifest_path(model, precision)
            return self._read(p) if p.is_file() else None
        found = [m for m in self.manifests() if m.model == model]
        return found[0] if len(found) == 1 else None

    def find(self, ref: str) -> list[Manifest]:
        """Manifests ``ref`` names: ``model@precision`` or a model id (every precision of it)."""
        model, _, precision = ref.partition("@")
        return [m for m in self.manifests() if m.model == model and (not precision or m.precision == precision)]

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # ---- import ----------------------------------------------------------------------------------
    def import_source(self, source: Source, *, model: str, precision: str, facts: Facts, views_root: Path,
                      progress: Progress | None = None, known: dict[str, str] | None = None,
                      expected: dict[str, str] | None = None) -> ImportResult:
        """Copy ``source``'s files into the store (hashing as they are copied), place the view, then
        write the manifest. ``known``: rel path -> sha256 already verified elsewhere (a bundle's files):
        those are hard-linked in without a second read where the file system allows. ``expected``:
        rel path -> the sha256 the catalog names for it; a different file is refused.

        A refusal leaves no manifest: a directory at the plan's path that the store did not place
        is refused before a byte is copied, and the manifest is written only once the view is in
        place. A model imported again is replaced; the blobs only the old version used are
        collected (``bytes_freed``)."""
        progress = progress or NullProgress()
        start = time.monotonic()
        key = f"{model}@{precision}"
        with self.locked():
            self._check_view_free(views_root / model / precision)
            replaced = self.get(model, precision) is not None
            self.blobs.mkdir(parents=True, exist_ok=True)
            work = self.partial / key
            work.mkdir(parents=True, exist_ok=True)
            journal_path = work / "journal.json"
            journal = _load_journal(journal_path, source)
            resumed = bool(journal["files"])
            todo = [f for f in source.files if not self._done(journal, f)]
            self._free_space_check(todo, key)
            task = progress.task(f"import {model}", sum(f.size for f in todo))
            copied = reused = 0
            limit = _fault_after()
            entries: dict[str, FileEntry] = {}
            for f in source.files:
                if f not in todo:
                    rec = journal["files"][f.rel]
                    entries[f.rel] = FileEntry(path=f.rel, size=f.size, sha256=rec["sha256"])
                    reused += f.size
                    continue
                digest, n_copied = self._ingest(f, work, journal, journal_path, task, known or {}, limit, copied)
                copied += n_copied
                reused += f.size - n_copied
                entries[f.rel] = FileEntry(path=f.rel, size=f.size, sha256=digest)
            task.done()
            files = [entries[f.rel] for f in source.files]
            for entry in files:
                want = (expected or {}).get(entry.path)
                if want and want != entry.sha256:
                    shutil.rmtree(work, ignore_errors=True)
                    self.gc()  # the refused file's blob goes again
                    raise UsageError(f"{entry.path}: sha256 {entry.sha256[:16]}..., catalog {model} says "
                                     f"{want[:16]}...", where=source.ref,
                                     fix="these are other files than the catalog's release: get the exact files")
            for entry in files:  # every blob in place, with its size, before the manifest exists
                b = self.blob(entry.sha256)
                if not b.is_file() or b.stat().st_size != entry.size:
                    raise StateError(f"blob {entry.sha256[:12]} of {entry.path} is missing after the import",
                                     where=str(self.root), fix="re-run the import")
            now = time.time()
            manifest = Manifest(model=model, precision=precision, layout=source.layout, files=files,
                                source=SourceInfo(kind=source.kind, ref=source.ref), facts=facts, imported_at=iso(now),
                                verified=Verification(at=iso(now), at_ts=now, blobs=self._blob_stats(files)))
            view = self.place(manifest, views_root)
            self.manifest_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.manifest_path(model, precision), manifest.model_dump_json(indent=1) + "\n")
            shutil.rmtree(work, ignore_errors=True)
            freed = self.gc() if replaced else 0   # the old version's blobs that nothing else uses
        return ImportResult(model=model, precision=precision, layout=source.layout,
                            source=manifest.source, files=len(files), bytes_total=manifest.size, bytes_copied=copied,
                            bytes_reused=reused, resumed=resumed, seconds=round(time.monotonic() - start, 3),
                            path=str(view), replaced=replaced, bytes_freed=freed, warnings=list(source.warnings))

    def _done(self, journal: dict, f) -> bool:
        rec = journal["files"].get(f.rel)
        if not rec or rec["size"] != f.size or rec["mtime_ns"] != f.mtime_ns:
            return False
        b = self.blob(rec["sha256"])
        return b.is_file() and b.stat().st_size == f.size

    def _free_space_check(self, todo, key: str) -> None:
        need = sum(f.size for f in todo)
        st = os.statvfs(self.root)
        free = st.f_bavail * st.f_frsize
        if free < need + FREE_MARGIN_BYTES:
            raise PreflightFailed(f"not enough disk space to import {key}: {need / 1e9:.2f} GB to copy, "
                                  f"{free / 1e9:.2f} GB free at {self.root}", where="models import",
                                  fix="free disk space (appliance models remove ID, old files) and re-run")

    def _ingest(self, f, work: Path, journal: dict, journal_path: Path, task, known: dict[str, str],
                limit: int | None, copied_before: int) -> tuple[str, int]:
        """One file into ``blobs/``: linked when its digest is known and linking works, else copied
        while hashing (resuming a partial copy). Returns (sha256, bytes copied now)."""
        digest = known.get(f.rel)
        if digest and not self.blob(digest).exists():
            tmp = self.blobs / f".link-{os.getpid()}-{digest[:16]}"
            try:
                os.link(f.path, tmp)
                place_file(tmp, self.blob(digest), fsync=False)
            except OSError:
                tmp.unlink(missing_ok=True)
                digest = None
        if digest and self.blob(digest).exists():
            task.advance(f.size)
            _record(journal, journal_path, f, digest)
            return digest, 0
        part = work / "current.part"
        cur = journal.get("current")
        offset = 0
        h = hashlib.sha256()
        if cur and cur.get("rel") == f.rel and cur.get("size") == f.size and cur.get("mtime_ns") == f.mtime_ns \
                and part.is_file() and part.stat().st_size <= f.size:
            offset = _hash_existing(part, h)   # the bytes copied before the interruption, read once more
            task.advance(offset)
        else:
            part.unlink(missing_ok=True)
            journal["current"] = {"rel": f.rel, "size": f.size, "mtime_ns": f.mtime_ns}
            write_atomic(journal_path, json.dumps(journal), fsync=False)
        copied = 0
        buf = bytearray(CHUNK_BYTES)
        view = memoryview(buf)
        with open(f.path, "rb") as src, open(part, "ab") as out:
            src.seek(offset)
            while True:
                n = src.readinto(buf)
                if not n:
                    break
                h.update(view[:n])
                out.write(view[:n])
                copied += n
                task.advance(n)
                if limit is not None and copied_before + copied >= limit:
                    out.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
            out.flush()
            os.fsync(out.fileno())
        st = f.path.stat()
        if st.st_size != f.size or st.st_mtime_ns != f.mtime_ns or part.stat().st_size != f.size:
            part.unlink(missing_ok=True)
            raise UsageError(f"{f.rel} changed while it was being imported", where=str(f.path),
                             fix="leave the source unchanged during the import and re-run it")
        digest = h.hexdigest()
        if self.blob(digest).exists():
            part.unlink()
        else:
            place_file(part, self.blob(digest), mode=0o444)
        _record(journal, journal_path, f, digest)
        return digest, copied

    def _blob_stats(self, files: list[FileEntry]) -> dict[str, list[int]]:
        out = {}
        for entry in files:
            st = self.blob(entry.sha256).stat()
            out[entry.sha256] = [st.st_size, st.st_mtime_ns]
        return out

    # ---- the view the plan mounts ----------------------------------------------------------------
    def view_dir(self, manifest: Manifest, views_root: Path) -> Path:
        return views_root / manifest.model / manifest.precision

    def _check_view_free(self, final: Path) -> None:
        """The store replaces only a directory it placed itself (its marker) or an empty one."""
        if final.exists() and not (final / MARKER).is_file() and (final.is_symlink() or any(final.iterdir())):
            raise UsageError(f"{final} already holds files that the model store did not place", where=str(final),
                             fix=f"move them away (or import them: appliance models import {final}) and re-run")

    def place(self, manifest: Manifest, views_root: Path) -> Path:
        """(Re)build the model's directory at the plan's path: links to the blobs, then a rename."""
        final = self.view_dir(manifest, views_root)
        self._check_view_free(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.placing-", dir=final.parent))
        try:
            for entry in manifest.files:
                target = tmp / entry.path
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(self.blob(entry.sha256), target)
                except OSError:  # another file system: a read-only copy
                    shutil.copyfile(self.blob(entry.sha256), target)
                    os.chmod(target, 0o444)
            (tmp / MARKER).write_text(json.dumps({"manifest": manifest.key}) + "\n")
            os.chmod(tmp, 0o755)
            replace_dir(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def view_intact(self, manifest: Manifest, views_root: Path) -> bool:
        final = self.view_dir(manifest, views_root)
        if not (final / MARKER).is_file():
            return False
        for entry in manifest.files:
            p = final / entry.path
            try:
                if not (os.path.samefile(p, self.blob(entry.sha256)) or p.stat().st_size == entry.size):
                    return False
            except OSError:
                return False
        return True

    # ---- verification ----------------------------------------------------------------------------
    def verify(self, manifest: Manifest, progress: Progress | None = None) -> tuple[list[Damage], int]:
        """Hash every blob of ``manifest``; record the verification when all match. Returns
        (damage found, bytes hashed)."""
        progress = progress or NullProgress()
        damage: list[Damage] = []
        hashed = 0
        task = progress.task(f"verify {manifest.model}", manifest.size)
        for entry in manifest.files:
            b = self.blob(entry.sha256)
            if not b.is_file():
                damage.append(Damage(model=manifest.model, precision=manifest.precision, file=entry.path,
                                     problem="its blob is missing from the store"))
                continue
            h = hashlib.sha256()
            size = _hash_existing(b, h, task.advance)
            hashed += size
            if size != entry.size or h.hexdigest() != entry.sha256:
                damage.append(Damage(model=manifest.model, precision=manifest.precision, file=entry.path,
                                     problem=f"content changed (sha256 {h.hexdigest()[:12]}..., manifest says "
                                             f"{entry.sha256[:12]}..., {size} bytes)"))
        task.done()
        if not damage:
            now = time.time()
            manifest.verified = Verification(at=iso(now), at_ts=now, blobs=self._blob_stats(manifest.files))
            write_atomic(self.manifest_path(manifest.model, manifest.precision),
                         manifest.model_dump_json(indent=1) + "\n")
        return damage, hashed

    def unchanged_since_verified(self, manifest: Manifest) -> bool:
        """Every blob has the size and mtime it had when last hashed (cheap: one stat per file)."""
        if manifest.verified is None:
            return False
        for entry in manifest.files:
            try:
                st = self.blob(entry.sha256).stat()
            except OSError:
                return False
            if manifest.verified.blobs.get(entry.sha256) != [st.st_size, st.st_mtime_ns]:
                return False
        return True

    def check(self, manifest: Manifest, views_root: Path) -> tuple[list[Damage], list[str]]:
        """For a deploy: is this model's weights present and undamaged? Sizes and the recorded
        verification first; a full re-hash only of a manifest whose blobs changed since. A view
        that was tampered with (not the blobs) is placed again. Returns (damage, notes)."""
        notes = []
        if not self.unchanged_since_verified(manifest):
            damage, _ = self.verify(manifest)
            if damage:
                return damage, notes
            notes.append(f"{manifest.key}: its files changed on disk since the last verification; re-hashed: intact")
        if not self.view_intact(manifest, views_root):
            self.place(manifest, views_root)
            notes.append(f"{manifest.key}: its directory at the plan's path was repaired from the store")
        return [], notes

    # ---- remove / export / list ------------------------------------------------------------------
    def remove(self, manifest: Manifest, views_root: Path) -> int:
        """Forget a model version: its view, the weights engines converted from it
        (``<views>/.derived/<model>/<precision>``, appliance.deploy.convert), its manifest, and the
        blobs no other manifest uses. Returns the bytes freed (the store's blobs)."""
        with self.locked():
            derived = views_root / DERIVED_DIR / manifest.model / manifest.precision
            if derived.is_dir() and not derived.is_symlink():
                shutil.rmtree(derived)
            final = self.view_dir(manifest, views_root)
            if (final / MARKER).is_file():
                shutil.rmtree(final)
                try:
                    final.parent.rmdir()  # the model's directory, when no other precision is left in it
                except OSError:
                    pass
                fsync_dir(final.parent.parent)
            self.manifest_path(manifest.model, manifest.precision).unlink(missing_ok=True)
            shutil.rmtree(self.partial / manifest.key, ignore_errors=True)
            return self.gc()

    def gc(self) -> int:
        keep = {e.sha256 for m in self.manifests() for e in m.files}
        freed = 0
        if self.blobs.is_dir():
            for p in self.blobs.iterdir():
                if p.name not in keep and not self._in_progress(p.name):
                    freed += p.stat().st_size
                    p.unlink()
        return freed

    def _in_progress(self, digest: str) -> bool:
        if not self.partial.is_dir():
            return False
        for journal in self.partial.glob("*/journal.json"):
            try:
                if any(r.get("sha256") == digest for r in json.loads(journal.read_text())["files"].values()):
                    return True
            except (OSError, ValueError, KeyError):
                continue
        return False

    def export(self, manifest: Manifest, dest: Path, progress: Progress | None = None) -> Path:
        """The model's files in their own layout under ``dest`` (new or empty), for another box.

        A destination that cannot be written (not a directory, no permission, a full disk) is a
        UsageError naming it, and what was written of this export is removed again -- a partial
        copy would look like a whole model on the other box."""
        progress = progress or NullProgress()
        try:
            existed = dest.is_dir()
            if existed and any(dest.iterdir()):
                raise UsageError("is not empty", where=str(dest), fix="export into a new or empty directory")
        except OSError as exc:
            raise _export_error(exc, dest, manifest) from None
        task = progress.task(f"export {manifest.model}", manifest.size)
        try:
            dest.mkdir(parents=True, exist_ok=True)
            for entry in manifest.files:
                target = dest / entry.path
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_blob(self.blob(entry.sha256), target, task)
        except BaseException as exc:
            _undo_export(dest, existed)
            if isinstance(exc, OSError):
                raise _export_error(exc, dest, manifest) from None
            raise
        task.done()
        return dest

    def listing(self, views_root: Path, used_by: dict[str, list[str]] | None = None) -> ModelList:
        used_by = used_by or {}
        entries = []
        for m in self.manifests():
            entries.append(ModelEntry(model=m.model, precision=m.precision, layout=m.layout, size_bytes=m.size,
                                      files=len(m.files), source=f"{m.source.kind}: {m.source.ref}",
                                      imported_at=m.imported_at, verified_at=m.verified.at if m.verified else None,
                                      path=str(self.view_dir(m, views_root)), used_by=used_by.get(m.key, [])))
        blobs = list(self.blobs.iterdir()) if self.blobs.is_dir() else []
        return ModelList(store=str(self.root), models=entries, blobs=len(blobs),
                         blob_bytes=sum(p.stat().st_size for p in blobs),
                         manifest_bytes=sum(e.size_bytes for e in entries))


def _first_problem(exc: Exception) -> str:
    """A pydantic error's first problem in words (``files: Field required``), else the message's first line."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            where = ".".join(str(x) for x in first.get("loc", ()))
            return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
        except (IndexError, TypeError, KeyError):
            pass
    return str(exc).splitlines()[0]


def _copy_blob(blob: Path, target: Path, task) -> None:
    """One blob to an export's file. A blob that cannot be read is the store's damage, not the
    destination's: a StateError pointing at ``verify``."""
    try:
        src = open(blob, "rb")
    except OSError as exc:
        raise StateError(f"cannot read the blob {blob.name[:12]}...: {exc.strerror or exc}", where=str(blob),
                         fix="appliance models verify, then import the damaged model again") from None
    with src, open(target, "wb") as out:
        while chunk := src.read(CHUNK_BYTES):
            out.write(chunk)
            task.advance(len(chunk))


def _undo_export(dest: Path, existed: bool) -> None:
    """Remove what a failed export wrote: ``dest`` itself when the export created it, else its
    contents (it was empty before)."""
    if not existed:
        shutil.rmtree(dest, ignore_errors=True)
        return
    try:
        children = list(dest.iterdir())
    except OSError:
        return
    for p in children:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _export_error(exc: OSError, dest: Path, manifest: Manifest) -> UsageError:
    import errno

    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = f"free {manifest.size / 1e6:,.1f} MB there, or export to another disk"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "export into a directory you can write to (or fix its permissions)"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = "a part of the path is a file, not a directory: choose another destination"
    else:
        fix = f"choose a writable directory with {manifest.size / 1e6:,.1f} MB free"
    return UsageError(f"cannot write the export of {manifest.key}: {reason}", where=str(dest), fix=fix)


def _hash_existing(path: Path, h, advance=None) -> int:
    size = 0
    buf = bytearray(CHUNK_BYTES)
    view = memoryview(buf)
    with open(path, "rb") as fh:
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            h.update(view[:n])
            size += n
            if advance:
                advance(n)
    return size


def _load_journal(path: Path, source: Source) -> dict:
    try:
        journal = json.loads(path.read_text())
        if journal.get("source") == source.ref:
            return journal
    except (OSError, ValueError):
        pass
    return {"source": source.ref, "files": {}, "current": None}


def _record(journal: dict, path: Path, f, digest: str) -> None:
    journal["files"][f.rel] = {"size": f.size, "mtime_ns": f.mtime_ns, "sha256": digest}
    journal["current"] = None
    write_atomic(path, json.dumps(journal), fsync=False)


def stored_models(store: ModelStore | None = None) -> set[str]:
    """``model@precision`` in the store, for the planner (empty: nothing imported yet -- on a
    CPU-only node the default set then falls back to the built-in models, appliance.planner.selection)."""
    return {m.key for m in (store or ModelStore()).manifests()}


def verify_all(store: ModelStore, manifests: list[Manifest], progress: Progress | None = None) -> VerifyReport:
    start = time.monotonic()
    damaged: list[Damage] = []
    hashed = 0
    for m in manifests:
        d, n = store.verify(m, progress)
        damaged += d
        hashed += n
    return VerifyReport(ok=not damaged, checked=[m.key for m in manifests], bytes_hashed=hashed,
                        seconds=round(time.monotonic() - start, 3), damaged=damaged)
