"""Encode generated images: PNG or JPEG, marked as AI-generated, no personal metadata.

The mark is the IPTC digital source type `trainedAlgorithmicMedia` ("created by a model
trained on sampled content", IPTC NewsCodes vocabulary digitalsourcetype) in an XMP packet,
the field that Google, Meta and the C2PA specification read for AI-generated images. PNGs
carry the XMP in the standard `XML:com.adobe.xmp` iTXt chunk plus plain text chunks
naming the same fact; JPEGs carry it in an APP1 XMP segment. Nothing else is written: no
EXIF (so no GPS, camera, dates), no seed, style or model id (those belong in the result row).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, PngImagePlugin

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
IPTC_EXT_NS = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
XMP_PNG_KEY = "XML:com.adobe.xmp"
# Plain text chunks for readers that do not parse XMP.
PNG_TEXT = {"DigitalSourceType": DIGITAL_SOURCE_TYPE, "AI-Generated": "true"}

XMP_PACKET = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
    ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
    f'  <rdf:Description rdf:about="" xmlns:Iptc4xmpExt="{IPTC_EXT_NS}">\n'
    f"   <Iptc4xmpExt:DigitalSourceType>{DIGITAL_SOURCE_TYPE}</Iptc4xmpExt:DigitalSourceType>\n"
    "  </rdf:Description>\n"
    " </rdf:RDF>\n"
    "</x:xmpmeta>\n"
    '<?xpacket end="w"?>'
)

Format = Literal["png", "jpeg"]
CONTENT_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg"}
EXTENSIONS: dict[str, str] = {"png": "png", "jpeg": "jpg"}


@dataclass(frozen=True, slots=True)
class EncodedImage:
    data: bytes
    content_type: str
    extension: str
    width: int
    height: int


def to_pil(image: Image.Image | np.ndarray) -> Image.Image:
    """A fresh RGB image with no metadata, from a PIL image or an HxWx3 array (uint8 or
    float in [0, 1])."""
    if isinstance(image, Image.Image):
        arr = np.asarray(image.convert("RGB"))
    else:
        arr = np.asarray(image)
        if arr.dtype != np.uint8:
            arr = (np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {arr.shape}")
    # Rebuilding from pixels drops anything the source carried (info, EXIF, ICC).
    return Image.fromarray(np.ascontiguousarray(arr), mode="RGB")


def encode_image(
    image: Image.Image | np.ndarray, fmt: Format = "png", jpeg_quality: int = 92
) -> EncodedImage:
    if fmt not in CONTENT_TYPES:
        raise ValueError(f"unsupported output format {fmt!r}; use png or jpeg")
    img = to_pil(image)
    buf = io.BytesIO()
    if fmt == "png":
        info = PngImagePlugin.PngInfo()
        info.add_itxt(XMP_PNG_KEY, XMP_PACKET, lang="", tkey="", zip=False)
        for key, value in PNG_TEXT.items():
            info.add_text(key, value)
        img.save(buf, format="PNG", pnginfo=info, optimize=False, compress_level=6)
    else:
        img.save(
            buf,
            format="JPEG",
            quality=max(1, min(100, jpeg_quality)),
            xmp=XMP_PACKET.encode("utf-8"),
            optimize=True,
        )
    return EncodedImage(buf.getvalue(), CONTENT_TYPES[fmt], EXTENSIONS[fmt], img.width, img.height)


_DST_RE = re.compile(
    rb"<Iptc4xmpExt:DigitalSourceType>([^<]+)</Iptc4xmpExt:DigitalSourceType>"
    rb"|Iptc4xmpExt:DigitalSourceType=\"([^\"]+)\""
)


def digital_source_type(data: bytes) -> str | None:
    """The IPTC digital source type an encoded PNG/JPEG declares in its XMP, if any."""
    with Image.open(io.BytesIO(data)) as img:
        xmp = img.info.get("xmp") or img.info.get(XMP_PNG_KEY)
    if xmp is None:
        return None
    raw = xmp.encode("utf-8") if isinstance(xmp, str) else bytes(xmp)
    m = _DST_RE.search(raw)
    if not m:
        return None
    return (m.group(1) or m.group(2)).decode("utf-8").strip()
