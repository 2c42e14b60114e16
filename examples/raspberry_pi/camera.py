"""Raspberry Pi camera frames through picamera2, which Raspberry Pi OS installs with apt, not pip."""

from __future__ import annotations

import importlib.util
from collections.abc import Generator
from typing import Any

import numpy as np

# a preview stream the ISP scales to cheaply; classification resizes it down to the model input anyway
PREVIEW_SIZE = (640, 480)
INSTALL_HINT = "sudo apt install python3-picamera2 (in a virtualenv, create it with --system-site-packages to see it)"


class CameraError(Exception):
    """No camera, or no picamera2; the message says what to install or check."""


def camera_available() -> bool:
    try:
        return importlib.util.find_spec("picamera2") is not None
    except (ImportError, ValueError):  # a broken or blocked install counts as none
        return False


def require_camera() -> None:
    if not camera_available():
        raise CameraError(f"--camera needs picamera2: {INSTALL_HINT}")


def frames(size: tuple[int, int] = PREVIEW_SIZE) -> Generator[np.ndarray, None, None]:
    """RGB uint8 (height, width, 3) frames until the caller stops iterating; the camera is released then."""
    camera = _open(size)
    try:
        while True:
            # picamera2's "RGB888" names libcamera's format, whose bytes are B, G, R in memory
            yield camera.capture_array("main")[:, :, ::-1]
    finally:
        camera.stop()
        camera.close()


def _open(size: tuple[int, int]) -> Any:
    try:
        from picamera2 import Picamera2
    except ImportError:
        raise CameraError(f"--camera needs picamera2: {INSTALL_HINT}") from None
    try:
        camera = Picamera2()
        camera.configure(camera.create_preview_configuration(main={"size": size, "format": "RGB888"}))
        camera.start()
    except Exception as error:  # libcamera reports a missing or busy camera with several exception types
        raise CameraError(
            f"cannot start the camera ({error}); check the cable and `rpicam-hello --list-cameras`"
        ) from None
    return camera
