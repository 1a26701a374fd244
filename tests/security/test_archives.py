"""Hostile archives: each refused with its code, and nothing written anywhere."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from tunelab.security.archives import ArchiveLimits, UnsafeArchive, safe_extract


def _zip(path, members: dict[str, bytes], symlink: tuple[str, str] | None = None):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink[0])
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, symlink[1])
    return path


def _tar(path, build):
    with tarfile.open(path, "w:gz") as tf:
        build(tf)
    return path


def _add(tf, name, data=b"x", kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


CASES = {
    "zip_slip": (lambda p: _zip(p / "a.zip", {"ok.txt": b"1", "../../escaped.txt": b"pwned"}), "path_traversal"),
    "zip_absolute": (lambda p: _zip(p / "a.zip", {"/tmp/abs-escape.txt": b"pwned"}), "absolute_path"),
    "zip_symlink": (lambda p: _zip(p / "a.zip", {"ok.txt": b"1"}, symlink=("link", "/etc/passwd")), "link"),
    "zip_bomb": (lambda p: _zip(p / "a.zip", {"zeros.bin": b"\0" * (50 * 1024 * 1024)}), "archive_too_large"),
    "zip_many_members": (lambda p: _zip(p / "a.zip", {f"f{i}": b"" for i in range(300)}), "too_many_members"),
    "tar_symlink_escape": (lambda p: _tar(p / "a.tgz", lambda tf: (_add(tf, "link", kind=tarfile.SYMTYPE, link="/etc"),
                                                                   _add(tf, "link/passwd", b"pwned"))), "link"),
    "tar_hardlink": (lambda p: _tar(p / "a.tgz", lambda tf: _add(tf, "h", kind=tarfile.LNKTYPE, link="/etc/shadow")), "link"),
    "tar_dotdot": (lambda p: _tar(p / "a.tgz", lambda tf: _add(tf, "a/../../x", b"pwned")), "path_traversal"),
    "tar_device": (lambda p: _tar(p / "a.tgz", lambda tf: _add(tf, "dev", kind=tarfile.CHRTYPE)), "special_file"),
    "not_an_archive": (lambda p: (p / "a.zip").write_bytes(b"hello") and p / "a.zip", "not_an_archive"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_archive_refused_and_nothing_written(case, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    archive, code = CASES[case][0](src), CASES[case][1]
    dest_root = tmp_path / "out"
    dest_root.mkdir()
    with pytest.raises(UnsafeArchive) as exc:
        safe_extract(archive, dest_root / "x", ArchiveLimits(max_members=200, max_total_bytes=10 * 1024 * 1024))
    assert exc.value.code == code
    assert list(dest_root.iterdir()) == [], "a refused archive leaves nothing"
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path.parent / "escaped.txt").exists()


def test_a_good_archive_extracts(tmp_path):
    archive = _zip(tmp_path / "ok.zip", {"model/config.json": b"{}", "model/w.safetensors": b"abc"})
    out = safe_extract(archive, tmp_path / "out")
    assert (out / "model" / "config.json").read_bytes() == b"{}"
