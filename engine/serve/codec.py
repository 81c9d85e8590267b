"""Images in and out of the server: an upload's bytes to uint8 RGB, and back to PNG, JPEG or
WebP."""

from __future__ import annotations

import io

import numpy as np

from ..errors import ImageError, UsageError

FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"),
           "jpg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}



def decode_frame(data: bytes, max_size: int | None, max_pixels: int,
                 name: str = "the image") -> np.ndarray:
    """An upload's bytes as uint8 (H, W, 3) RGB (transparency over white), no side above
    max_size. The size is checked from the header first; a whole JPEG (a camera frame, most
    photos) is decoded by OpenCV's libjpeg-turbo (upright per EXIF; 3-4x faster than Pillow
    here), anything else by Pillow."""
    import cv2
    from PIL import Image

    from ..io.images import check_header, decode_image

    if not data:
        raise ImageError(f"{name} is empty (0 bytes); send an image file")
    if check_header(data, name, max_pixels) == "JPEG" and data.rstrip(b"\0").endswith(b"\xff\xd9"):
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is not None:
            frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            height, width = frame.shape[:2]
            if max_size and max(width, height) > max_size:
                scale = max_size / max(width, height)
                frame = cv2.resize(frame, (max(1, round(width * scale)),
                                           max(1, round(height * scale))),
                                   interpolation=cv2.INTER_AREA)
            return frame
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


def encode_frame(frame: np.ndarray, fmt: str, quality: int = 90) -> bytes:
    """JPEG through OpenCV (libjpeg-turbo), PNG and WebP through Pillow."""
    pil_format, _ = FORMATS[fmt]
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
            raise UsageError(f"format {requested!r}: use png, jpeg or webp")
        return key
    for key in ("jpeg", "webp", "png"):  # the first one the client asks for by type
        if accept and FORMATS[key][1] in accept and "image/*" not in accept.split(",")[0]:
            return key
    return "png"
