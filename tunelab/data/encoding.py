"""Turn a file's bytes into text, or say precisely why they are not text.

Order: UTF-8 with BOM, UTF-16 with BOM (Excel's "Unicode Text"), UTF-8, mostly-UTF-8
with a few stray Windows-1252 bytes ("utf-8+cp1252"), then Windows-1252. Latin-1 decodes every byte sequence, so a fallback to it would
"succeed" on a JPEG; instead the fallback must look like text: cp1252 must decode
strictly (it leaves 0x81 0x8D 0x8F 0x90 0x9D undefined) and no C0 control character
other than tab/CR/LF may appear. The decision only looks at the bytes, so the same
file always decodes the same way.
"""

from __future__ import annotations

import codecs
import re

from .errors import error

RESAVE_FIX = ("Open the file in a text editor or spreadsheet and save it as UTF-8 "
              "(Excel: File > Save As > 'CSV UTF-8 (Comma delimited)').")

# Bytes cp1252 leaves undefined, and C0 controls other than \t \n \r (plus DEL):
# none of them occur in text a person typed, so they mark a binary or mis-encoded file.
_IMPLAUSIBLE_8BIT = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x81\x8d\x8f\x90\x9d]")
_C0 = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CP1252_UNDEFINED = {0x81, 0x8D, 0x8F, 0x90, 0x9D}
# Well-formed multi-byte UTF-8 sequences; in a real cp1252 file they are rare accidents
# (e.g. "Ã©" typed on purpose), in a mostly-UTF-8 file they outnumber the stray bytes.
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")
# Bytes surrogateescape could not decode show up as U+DC80..U+DCFF.
_SURROGATE = re.compile("[\udc80-\udcff]")
# In otherwise valid UTF-8 only NUL is refused: it means binary data or UTF-16 without a
# BOM, while stray controls such as \x0b do occur in exported spreadsheets.
_NUL = re.compile(rb"\x00")
# cp1252 and latin-1 differ only in 0x80-0x9F; without those bytes "latin-1" is the
# honest name (the decoded text is identical).
_CP1252_ONLY = re.compile(rb"[\x80-\x9f]")


def decode(data: bytes) -> tuple[str, str]:
    """Return (text, encoding name); raise DataError(`encoding`) when the bytes are no text."""
    if data.startswith(codecs.BOM_UTF8):
        return _strict(data[len(codecs.BOM_UTF8):], "utf-8", data, offset=3), "utf-8-sig"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return _strict(data, "utf-16", data), "utf-16"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _decode_8bit(data, utf8_error_at=exc.start)
    nul = _NUL.search(data)
    if nul:
        raise _not_text(data, nul.start(), "is a NUL byte: the file looks binary or UTF-16 "
                                           "without a byte-order mark")
    return text, "utf-8"


def _decode_8bit(data: bytes, utf8_error_at: int) -> tuple[str, str]:
    invalid = _count_invalid_utf8(data)
    if len(_UTF8_MULTIBYTE.findall(data)) > invalid:
        return _decode_mixed(data), "utf-8+cp1252"
    bad = _IMPLAUSIBLE_8BIT.search(data)
    if bad:
        first_utf8 = line_of(data, utf8_error_at)
        also = (f" (the file stops being valid UTF-8 at line {first_utf8})"
                if first_utf8 != line_of(data, bad.start()) else "")
        raise _not_text(data, bad.start(), "is neither UTF-8 nor Windows-1252/Latin-1 text" + also)
    name = "cp1252" if _CP1252_ONLY.search(data) else "latin-1"
    return data.decode(name), name


def _count_invalid_utf8(data: bytes) -> int:
    return len(_SURROGATE.findall(data.decode("utf-8", "surrogateescape")))


def _decode_mixed(data: bytes) -> str:
    """Mostly UTF-8 with a few stray cp1252 bytes (files concatenated from several
    sources): decode UTF-8 and read only the stray bytes as cp1252, instead of turning
    every accented UTF-8 character into mojibake ("cafÃ©") by decoding all as cp1252."""
    text = data.decode("utf-8", "surrogateescape")
    for match in _SURROGATE.finditer(text):
        byte = ord(match.group()) - 0xDC00
        if byte in _CP1252_UNDEFINED:
            raise _not_text(data, _byte_offset(text, match.start()),
                            "is neither UTF-8 nor Windows-1252 text")
    control = _C0.search(data)
    if control:
        raise _not_text(data, control.start(), "is a control character, not text")
    return _SURROGATE.sub(lambda m: bytes([ord(m.group()) - 0xDC00]).decode("cp1252"), text)


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8", "surrogateescape"))


def _strict(body: bytes, encoding: str, whole: bytes, offset: int = 0) -> str:
    """Decode a file whose BOM promised `encoding`; a broken promise is an error."""
    try:
        return body.decode(encoding)
    except UnicodeDecodeError as exc:
        raise _not_text(whole, exc.start + offset,
                        f"is not valid {encoding.upper()} although the file starts with a "
                        f"{encoding.upper()} byte-order mark") from None


def _not_text(data: bytes, pos: int, what: str):
    line = line_of(data, pos)
    return error("encoding", f"byte 0x{data[pos]:02X} at line {line} {what}.", RESAVE_FIX,
                 line=line)


def line_of(data: bytes, pos: int) -> int:
    """1-based line number of byte offset `pos` (lines end at \\n, as editors count them)."""
    return data.count(b"\n", 0, pos) + 1
