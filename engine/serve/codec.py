"""Images in and out of the server: an upload's bytes to uint8 RGB, and back to PNG, JPEG,
WebP or PPM (binary Netpbm: a short header, then the pixels, for clients that would rather send
and take raw pixels than spend ~10 ms a 1080p frame on a codec)."""

from __future__ import annotations

import io

import numpy as np

from ..errors import ImageError, UsageError

FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"),
           "jpg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp"),
           "ppm": ("PPM", "image/x-portable-pixmap")}


def decode_frame(data: bytes, max_size: int | None, max_pixels: int,
                 name: str = "the image") -> np.ndarray:
    """An upload's bytes as uint8 (H, W, 3) RGB (transparency over white), no side above
    max_size. The size is checked from the header first; a whole JPEG (a camera frame, most
    photos) is decoded by OpenCV's libjpeg-turbo (upright per EXIF; 3-4x faster than Pillow
    here), a binary PPM by `read_ppm`, anything else by Pillow."""
    if not data:
        raise ImageError(f"{name} is empty (0 bytes); send an image file")
    if data[:2] == b"P6":
        return _fit(read_ppm(data, name, max_pixels), max_size)
    import cv2
    from PIL import Image

    from ..io.images import check_header, decode_image

    if check_header(data, name, max_pixels) == "JPEG" and data.rstrip(b"\0").endswith(b"\xff\xd9"):
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is not None:
            return _fit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), max_size)
    image = decode_image(data, name, max_pixels)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, "white")
        image.paste(rgba, mask=rgba.getchannel("A"))
    elif image.mode != "RGB":
        image = image.convert("RGB")
    if max_size and max(image.size) > max_size:
        scale = max_size / max(image.size)
        image = image.resize((max(1, round(image.width * scale)),
                              max(1, round(image.height * scale))), Image.Resampling.LANCZOS)
    return np.asarray(image)


def _fit(frame: np.ndarray, max_size: int | None) -> np.ndarray:
    """No side above max_size (OpenCV's area filter)."""
    import cv2

    height, width = frame.shape[:2]
    if max_size and max(width, height) > max_size:
        scale = max_size / max(width, height)
        frame = cv2.resize(frame, (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
    return frame


def read_ppm(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """A binary PPM (P6, 8 bits a channel) as a (H, W, 3) view of its bytes: the header's
    fields (comments allowed), then exactly width x height x 3 bytes."""
    fields, at = [], 2
    while len(fields) < 3:
        while at < len(data) and (data[at:at + 1].isspace() or data[at:at + 1] == b"#"):
            if data[at:at + 1] == b"#":  # a comment runs to the end of its line
                at = data.find(b"\n", at)
                at = len(data) if at < 0 else at
            at += 1
        end = at
        while end < len(data) and data[end:end + 1].isdigit() and end - at < 10:
            end += 1
        if end == at:
            raise ImageError(f"{name}: a PPM header must give width, height and 255; send a "
                             "binary PPM (P6) or another image format")
        fields.append(int(data[at:end]))
        at = end
    width, height, top = fields
    if top != 255 or not width or not height or not data[at:at + 1].isspace():
        raise ImageError(f"{name}: only 8-bit binary PPMs (P6, maximum 255) are read, not "
                         f"{width}x{height} with maximum {top}")
    if width * height > max_pixels:
        raise ImageError(f"{name}: too many pixels ({width}x{height}, over "
                         f"{max_pixels // 1_000_000} megapixels); downscale it first")
    size = len(data) - at - 1
    if size != width * height * 3:
        raise ImageError(f"{name}: a {width}x{height} PPM holds {width * height * 3:,} bytes of "
                         f"pixels, not {size:,}; send the whole file")
    return np.frombuffer(data, np.uint8, offset=at + 1).reshape(height, width, 3)


def ppm_parts(frame: np.ndarray) -> list:
    """A PPM as its header and the frame's own memory (no copy of the pixels)."""
    height, width = frame.shape[:2]
    return [b"P6\n%d %d\n255\n" % (width, height),
            memoryview(np.ascontiguousarray(frame)).cast("B")]


def encode_frame(frame: np.ndarray, fmt: str, quality: int = 90) -> bytes:
    """JPEG through OpenCV (libjpeg-turbo), PNG and WebP through Pillow, PPM as its header and
    the pixels."""
    pil_format, _ = FORMATS[fmt]
    if pil_format == "PPM":
        return b"".join(ppm_parts(frame))  # one copy
    if pil_format == "JPEG":
        import cv2

        done, encoded = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                                     [cv2.IMWRITE_JPEG_QUALITY, quality])
        if done:
            return encoded.tobytes()
    from PIL import Image

    options = {"quality": quality} if pil_format in ("JPEG", "WEBP") else {"compress_level": 1}
    stream = io.BytesIO()
    Image.fromarray(frame).save(stream, format=pil_format, **options)
    return stream.getvalue()


def pick_format(requested: str | None, accept: str | None) -> str:
    if requested:
        key = requested.lower().strip()
        if key not in FORMATS:
            raise UsageError(f"format {requested!r}: use png, jpeg, webp or ppm")
        return key
    for key in ("jpeg", "webp", "png"):  # the first one the client asks for by type
        if accept and FORMATS[key][1] in accept and "image/*" not in accept.split(",")[0]:
            return key
    return "png"
