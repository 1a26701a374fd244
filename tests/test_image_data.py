"""Image datasets (data/images.py): layouts, the hostile-archive report of issue 19, conversions,
duplicates and leakage, limits, the single-image reader, thumbnails and the real cifar10-mini.
Images are made with Pillow in temp dirs; a few are the shared CIFAR JPEGs."""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from tunelab.data import DataError
from tunelab.data.images import ImageLimits, is_image_source, read_image_bytes, read_image_source, thumbnails

from image_archives import png_bomb

CIFAR = Path(os.environ.get("TUNELAB_SHARED", Path(__file__).resolve().parents[2] / "shared")) \
    / "datasets" / "vision" / "cifar10-mini"


# ---- making images and archives ------------------------------------------------------------------
def img(mode="RGB", fmt="PNG", size=(24, 16), colour=None, seed=0, **save) -> bytes:
    """A small image; `seed` makes each one different (no accidental duplicates)."""
    if colour is None:
        colour = {"RGB": (seed * 37 % 256, seed * 91 % 256, 120), "RGBA": (200, 10, 10, 0)}.get(mode, seed % 200 + 1)
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format=fmt, **save)
    return buf.getvalue()


def gif_animation() -> bytes:
    buf = io.BytesIO()
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def _noise_jpeg(size) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def classes(*names, n=3, prefix="", seed=0) -> dict[str, bytes]:
    return {f"{prefix}{c}/{i}.png": img(seed=seed + 10 * k + i) for k, c in enumerate(names) for i in range(n)}


def build(dest: Path, members: dict[str, bytes], kind: str = "zip") -> Path:
    if kind == "folder":
        for name, data in members.items():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(data)
        return dest
    if kind == "zip":
        with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members.items():
                zf.writestr(name, data)
        return dest
    with tarfile.open(dest, {"tar.gz": "w:gz", "tar.bz2": "w:bz2", "tar": "w"}[kind]) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return dest


def read(tmp_path, members, kind="zip", **kw):
    src = build(tmp_path / f"data.{kind}", members, kind)
    return read_image_source(src, tmp_path / "work", **kw)


def files_under(p: Path) -> list[Path]:
    return [f for f in p.rglob("*") if f.is_file()] if p.exists() else []


# ---- the acceptance archive of issue 19 ------------------------------------------------------------
def test_hostile_archive_reports_every_member_and_leaves_nothing(tmp_path):
    good = {f"train/{c}/{f.name}": f.read_bytes() for c in ("cat", "dog")
            for f in sorted((CIFAR / "train" / c).iterdir())[:3]}
    corrupt = img(colour=(200, 10, 10))
    bad = {"train/cat/corrupt.png": corrupt[: len(corrupt) // 2], "train/dog/empty.png": b"",
           "../escape.png": img(), "train/cat/bomb.png": png_bomb()}
    converted = {"train/dog/cmyk.jpg": img("CMYK", "JPEG", colour=(0, 50, 100, 0)),
                 "train/cat/grey16.png": img("I;16", "PNG", colour=30000)}
    started = time.perf_counter()
    train, test, report = read(tmp_path, {**good, **bad, **converted})
    assert time.perf_counter() - started < 5
    assert not report.ok and test is None
    codes = {"train/cat/corrupt.png": "bad_image", "train/dog/empty.png": "bad_image",
             "../escape.png": "unsafe_member", "train/cat/bomb.png": "image_too_large"}
    for member, code in codes.items():
        assert any(i.code == code and member in i.message for i in report.errors), (member, report.render())
    bomb = next(i for i in report.errors if i.code == "image_too_large")
    assert bomb.column == "train/cat/bomb.png" and bomb.line and "400,000,000 pixels" in bomb.message
    warned = {i.column: i for i in report.warnings if i.code == "converted_mode"}
    assert set(warned) == set(converted) and "CMYK" in warned["train/dog/cmyk.jpg"].message
    assert "16-bit" in warned["train/cat/grey16.png"].message
    assert files_under(tmp_path / "work") == []
    json.dumps(report.to_dict())                       # the API sends it as it is
    assert "train/cat/bomb.png" in report.render()


def test_errors_found_while_decoding_remove_the_extracted_images(tmp_path):
    members = {**classes("cat", "dog"), "dog/broken.jpg": img(fmt="JPEG")[:200]}
    train, _, report = read(tmp_path, members)
    assert [i.code for i in report.errors] == ["bad_image"] and "dog/broken.jpg" in report.errors[0].message
    assert files_under(tmp_path / "work") == []
    (tmp_path / "ok").mkdir()
    _, _, ok = read(tmp_path / "ok", classes("cat", "dog"))
    assert ok.ok and len(files_under(tmp_path / "ok" / "work")) == 6


def test_unsafe_members_are_all_named_and_safe_extract_refuses_the_same_archive(tmp_path):
    from tunelab.security.archives import UnsafeArchive, safe_extract

    src = tmp_path / "evil.tar"
    with tarfile.open(src, "w") as tf:
        for name, data in {**classes("cat", "dog"), "../up.png": img(), "/abs.png": img(seed=5)}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("cat/link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    _, _, report = read_image_source(src, tmp_path / "work")
    unsafe = " ".join(i.message for i in report.errors if i.code == "unsafe_member")
    for name in ("../up.png", "/abs.png", "cat/link.png"):
        assert name in unsafe
    assert files_under(tmp_path / "work") == []
    with pytest.raises(UnsafeArchive):
        safe_extract(src, tmp_path / "refused")


def test_links_in_a_zip_or_a_folder_are_unsafe_members(tmp_path):
    src = build(tmp_path / "links.zip", classes("cat", "dog"))
    with zipfile.ZipFile(src, "a") as zf:
        link = zipfile.ZipInfo("cat/link.png")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
    folder = build(tmp_path / "folder", classes("cat", "dog"), "folder")
    (folder / "dog" / "link.png").symlink_to(folder / "cat" / "0.png")
    for source, member in ((src, "cat/link.png"), (folder, "dog/link.png")):
        _, _, report = read_image_source(source, tmp_path / "work")
        assert [(i.code, i.column) for i in report.errors] == [("unsafe_member", member)]
        assert "symbolic link" in report.errors[0].message
    assert files_under(tmp_path / "work") == []


def test_a_file_that_is_no_archive_is_one_error(tmp_path):
    (tmp_path / "data.csv").write_text("text,label\nhi,a\n")
    train, test, report = read_image_source(tmp_path / "data.csv", tmp_path / "work")
    assert report.codes() == ["not_an_archive"] and len(train) == 0 and test is None


# ---- layouts ------------------------------------------------------------------------------------
def _manifest_csv():
    imgs = {f"data/images/{i}.png": img(seed=i) for i in range(6)}
    rows = "path,Class\n" + "".join(f"images/{i}.png,{'cat' if i < 3 else 'dog'}\n" for i in range(6))
    return {**imgs, "data/labels.csv": rows.encode()}


def _manifest_jsonl():
    imgs = {f"imgs/{i}.png": img(seed=i) for i in range(8)}
    lines = [json.dumps({"image": f"imgs/{i}.png", "category": "cat" if i % 2 else "dog",
                         "split": "test" if i >= 6 else "train"}) for i in range(8)]
    return {**imgs, "meta.jsonl": "\n".join(lines).encode()}


def _manifest_tsv_from_root():
    imgs = {f"top/imgs/{i}.jpg": img(fmt="JPEG", seed=i) for i in range(4)}
    rows = "Image\tLabel\n" + "".join(f"top/imgs/{i}.jpg\t{'yes' if i % 2 else 'no'}\n" for i in range(4))
    return {**imgs, "top/list.tsv": rows.encode()}


LAYOUTS = {      # name: (members, train labels, test size or None)
    "class folders": (classes("cat", "dog"), {"cat": 3, "dog": 3}, None),
    "one top folder": (classes("cat", "dog", prefix="pets/"), {"cat": 3, "dog": 3}, None),
    "train and test": ({**classes("cat", "dog", prefix="train/"),
                        **classes("cat", "dog", n=2, prefix="test/", seed=50)},
                       {"cat": 3, "dog": 3}, 4),
    "top + train/valid": ({**classes("a", "b", prefix="ds/train/"),
                           **classes("a", "b", n=1, prefix="ds/valid/", seed=70)},
                          {"a": 3, "b": 3}, 2),
    "csv manifest": (_manifest_csv(), {"cat": 3, "dog": 3}, None),
    "jsonl manifest with split": (_manifest_jsonl(), {"cat": 3, "dog": 3}, 2),
    "tsv manifest, paths from the root": (_manifest_tsv_from_root(), {"no": 2, "yes": 2}, None),
    "junk is ignored": ({**classes("cat", "dog"), "__MACOSX/cat/._0.png": b"\0\5\x16\7", ".DS_Store": b"x",
                         "cat/Thumbs.db": b"x", "README.txt": b"hello"}, {"cat": 3, "dog": 3}, None),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts(tmp_path, layout):
    members, labels, test_rows = LAYOUTS[layout]
    train, test, report = read(tmp_path, members)
    assert report.ok, report.render()
    assert {k: train.labels.count(k) for k in train.label_names} == labels
    assert (len(test) if test is not None else None) == test_rows
    assert all(e.path in members for e in train.examples)
    assert train.open(0).mode == "RGB" and train.image_bytes(0) == members[train.examples[0].path]
    assert sorted(e.line for e in train.examples) == [e.line for e in train.examples]


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz", "tar.bz2", "folder"])
def test_containers(tmp_path, kind):
    members = {**classes("cat", "dog", prefix="top/train/"), **classes("cat", "dog", n=2, prefix="top/test/", seed=40)}
    if kind == "folder":
        (tmp_path / "data.folder").mkdir()
    assert is_image_source(build(tmp_path / f"data.{kind}", members, kind))
    train, test, report = read_image_source(tmp_path / f"data.{kind}", tmp_path / "work")
    assert report.ok and (len(train), len(test)) == (6, 4) and train.sha256
    assert {e.path for e in test.examples} == {m for m in members if "/test/" in m}
    assert test.open(0).size == (24, 16)


def test_val_beside_a_test_folder_is_left_out_with_a_warning(tmp_path):
    members = {**classes("cat", "dog", prefix="train/"), **classes("cat", "dog", n=2, prefix="test/", seed=40),
               **classes("cat", "dog", n=1, prefix="val/", seed=80), "notes/extra.png": img(seed=90)}
    train, test, report = read(tmp_path, members)
    assert report.ok and (len(train), len(test)) == (6, 4)
    left_out = " ".join(i.message for i in report.warnings if i.code == "ignored_images")
    assert "val/cat/0.png" in left_out and "notes/extra.png" in left_out


def test_test_archive_is_the_test_set(tmp_path):
    (tmp_path / "t").mkdir()
    test_zip = build(tmp_path / "t" / "test.zip", {**classes("cat", "dog", n=2, seed=60), "dog/x.png": b""})
    train, test, report = read(tmp_path, classes("cat", "dog"), test_path=test_zip)
    assert len(test) == 4 and test.source == "test.zip"
    assert [(i.code, i.file) for i in report.errors] == [("bad_image", "test")]


# ---- images one by one ------------------------------------------------------------------------
BAD = {          # name: (bytes, code)
    "zero bytes": (b"", "bad_image"),
    "truncated png": (img(size=(64, 64), seed=3)[:-30], "bad_image"),
    "truncated jpeg": (img(fmt="JPEG", size=(64, 64))[:300], "bad_image"),
    "truncated large jpeg (checked at 1/8 scale)": (_noise_jpeg((1600, 1200))[:-5000], "bad_image"),
    "not an image": (b"hello, I am text", "bad_image"),
    "unsupported format (ICO)": (img(fmt="ICO", size=(16, 16)), "bad_image"),
    "png bomb": (png_bomb(), "image_too_large"),
    "gif animation": (gif_animation(), "animated_image"),
}


@pytest.mark.parametrize("case", BAD)
def test_read_image_bytes_refuses(case):
    data, code = BAD[case]
    with pytest.raises(DataError) as err:
        read_image_bytes(data)
    assert err.value.codes == [code] and err.value.issues[0].fix


@pytest.mark.parametrize("case", BAD)
def test_bad_members_are_reported_with_their_path(tmp_path, case):
    data, code = BAD[case]
    _, _, report = read(tmp_path, {**classes("cat", "dog"), "dog/bad.png": data})
    assert [(i.code, i.column) for i in report.errors] == [(code, "dog/bad.png")]


def test_a_large_jpeg_is_read_with_its_full_size(tmp_path):
    members = {**classes("cat", "dog"), "cat/photo.jpg": _noise_jpeg((1600, 1200))}
    train, _, report = read(tmp_path, members)
    photo = train.examples[train.texts.index("cat/photo.jpg")]
    assert report.ok and (photo.width, photo.height) == (1600, 1200)
    assert train.open(train.texts.index("cat/photo.jpg")).size == (1600, 1200)


def test_pixel_limit_is_checked_before_decoding():
    data = img(size=(300, 200))
    with pytest.raises(DataError) as err:
        read_image_bytes(data, limits=ImageLimits(max_pixels=50_000))
    assert err.value.codes == ["image_too_large"] and "300x200" in err.value.issues[0].message
    assert read_image_bytes(data, limits=ImageLimits(max_pixels=60_000)).size == (300, 200)


MODES = {        # stored as: (bytes, expected RGB pixel)
    "CMYK": (img("CMYK", "JPEG", colour=(0, 0, 0, 0)), (255, 255, 255)),
    "I;16": (img("I;16", "PNG", colour=32896), (128, 128, 128)),          # scaled, not clipped to 255
    "P": (img("P", "PNG", colour=0), (0, 0, 0)),
    "RGBA": (img("RGBA", "PNG", colour=(200, 10, 10, 0)), (255, 255, 255)),   # transparent: white
    "LA": (img("LA", "PNG", colour=(90, 255)), (90, 90, 90)),
    "L": (img("L", "PNG", colour=77), (77, 77, 77)),
    "1": (img("1", "PNG", colour=1), (255, 255, 255)),
}


@pytest.mark.parametrize("mode", MODES)
def test_colour_modes_are_converted_to_rgb_and_warned(tmp_path, mode):
    data, pixel = MODES[mode]
    image = read_image_bytes(data)
    assert image.mode == "RGB" and max(abs(a - b) for a, b in zip(image.getpixel((3, 3)), pixel)) <= 2
    _, _, report = read(tmp_path, {**classes("cat", "dog"), "cat/odd.img.png": data})
    warn = [i for i in report.warnings if i.code == "converted_mode"]
    assert report.ok and len(warn) == 1 and warn[0].column == "cat/odd.img.png"
    assert f"(mode {mode})" in warn[0].message


def test_exif_orientation_is_applied(tmp_path):
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (20, 0, 40, 20))              # left red, right blue, as stored
    exif = Image.Exif()
    exif[0x0112] = 6                                         # shown turned a quarter clockwise
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", exif=exif, quality=95)
    train, _, report = read(tmp_path, {**classes("cat", "dog"), "cat/turned.jpg": buf.getvalue()})
    i = train.texts.index("cat/turned.jpg")
    shown = train.open(i)
    assert shown.size == (20, 40) and (train.examples[i].width, train.examples[i].height) == (20, 40)
    assert shown.getpixel((10, 5))[0] > 200 and shown.getpixel((10, 35))[2] > 200   # red on top, blue below


# ---- dataset checks ---------------------------------------------------------------------------
def test_duplicates_and_leakage_are_warnings(tmp_path):
    members = {**classes("cat", "dog", prefix="train/"), **classes("cat", "dog", n=2, prefix="test/", seed=50)}
    members["train/dog/copy.png"] = members["train/cat/0.png"]
    members["test/cat/seen.png"] = members["train/cat/1.png"]
    _, _, report = read(tmp_path, members)
    assert report.ok
    dup = next(i for i in report.warnings if i.code == "duplicate_image")
    assert "train/dog/copy.png" in dup.message and "different label" in dup.message
    leak = next(i for i in report.warnings if i.code == "image_leakage")
    assert leak.file == "test" and "test/cat/seen.png" in leak.message


LABEL_ERRORS = {   # name: (members, code, text in message or fix)
    "one image of a label": ({**classes("cat", "dog"), "bird/0.png": img(seed=99)}, "rare_label", "bird/0.png"),
    "a single class": (classes("cat"), "single_class", '"cat"'),
    "no usable image": ({"cat/a.png": b"", "dog/b.png": b"x"}, "no_images", "no usable image"),
    "image outside a class folder": ({**classes("cat", "dog"), "stray.png": img(seed=98)},
                                     "missing_label", "stray.png"),
    "manifest names a missing file": ({**{f"i/{n}.png": img(seed=n) for n in range(4)},
                                       "l.csv": b"path,label\ni/0.png,a\ni/1.png,a\ni/2.png,b\ni/3.png,b\ni/9.png,b\n"},
                                      "missing_image", "i/9.png"),
}


@pytest.mark.parametrize("case", LABEL_ERRORS)
def test_label_and_layout_errors(tmp_path, case):
    members, code, text = LABEL_ERRORS[case]
    _, _, report = read(tmp_path, members)
    found = [i for i in report.errors if i.code == code]
    assert found and text in found[0].message + found[0].fix, report.render()


def test_limits(tmp_path):
    _, _, many = read(tmp_path, classes("cat", "dog", n=30), limits=ImageLimits(max_images=20))
    assert "too_many_images" in many.codes() and not many.ok
    (tmp_path / "b").mkdir()
    _, _, big = read(tmp_path / "b", classes("cat", "dog"), limits=ImageLimits(max_bytes=300))
    assert "archive_too_large" in big.codes() and not big.ok
    assert files_under(tmp_path / "work") == [] and files_under(tmp_path / "b" / "work") == []


@pytest.mark.parametrize("name, members, expected", [
    ("images.zip", classes("cat", "dog"), True),
    ("manifest.zip", _manifest_csv(), True),
    ("images.tar.gz", classes("cat", "dog"), True),
    ("tables.zip", {"a.csv": b"text,label\nhi,x\n", "b.csv": b"text,label\nyo,y\n"}, False),
    ("data.csv", None, False),
    ("missing.zip", "missing", False),
])
def test_is_image_source(tmp_path, name, members, expected):
    path = tmp_path / name
    if members is None:
        path.write_text("text,label\nhello,a\n")
    elif members != "missing":
        build(path, members, "tar.gz" if name.endswith(".tar.gz") else "zip")
    assert is_image_source(path) is expected


def test_stats_and_thumbnails(tmp_path):
    members = {**classes("cat", "dog", n=4), "dog/wide.png": img(size=(200, 50), seed=7)}
    train, _, report = read(tmp_path, members)
    stats = report.stats
    assert stats["label_counts"] == {"cat": 4, "dog": 5} and stats["train"]["rows"] == 9
    assert sum(stats["size_histogram"]["counts"]) == 9 and len(stats["aspect_histogram"]["labels"]) == 7
    assert stats["mode_counts"] == {"RGB": 9} and stats["format_counts"] == {"PNG": 9}
    assert stats["total_bytes"] == sum(len(v) for v in members.values())
    thumbs = thumbnails(train, per_class=2, size=32)
    assert {k: len(v) for k, v in thumbs.items()} == {"cat": 2, "dog": 2}
    wide = thumbnails(train.subset([train.texts.index("dog/wide.png")]), size=32)["dog"][0]
    png = Image.open(io.BytesIO(base64.b64decode(wide["data_url"].split(",", 1)[1])))
    assert png.format == "PNG" and png.size == (32, 8) and wide["path"] == "dog/wide.png"


def test_real_cifar_train_folder(tmp_path):
    started = time.perf_counter()
    train, test, report = read_image_source(CIFAR / "train", tmp_path / "work")
    seconds = time.perf_counter() - started
    assert (len(train), len(train.label_names), len(report.errors), test) == (1000, 10, 0, None), report.render()
    assert seconds < 5, seconds
    assert train.open(0).size == (32, 32) and report.stats["format_counts"] == {"JPEG": 1000}
    assert files_under(tmp_path / "work") == []           # a folder is read in place, not copied
