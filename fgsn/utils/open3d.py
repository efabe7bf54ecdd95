"""Import open3d where ``libusb-1.0.so.0`` is not installed system-wide.

open3d's Python module links against libusb; on machines without Debian's ``libusb-1.0-0`` the import fails.
The ``libusb-package`` wheel (a project dependency) ships the library: it is loaded globally first, then
open3d imports normally. Used by the labelled point-cloud export.
"""
from __future__ import annotations

import ctypes


def import_open3d():
    """Return the ``open3d`` module, preloading the bundled libusb if the system has none.

    Raises:
        ImportError: open3d is not installed or still cannot load (the message says what failed).
    """
    try:
        import open3d

        return open3d
    except ImportError as first:
        if "libusb" not in str(first):
            raise
        try:
            import libusb_package

            ctypes.CDLL(str(libusb_package.get_library_path()), mode=ctypes.RTLD_GLOBAL)
        except (ImportError, OSError) as e:
            raise ImportError(f"open3d needs libusb-1.0.so.0: install Debian's libusb-1.0-0 or the "
                              f"libusb-package wheel ({e})") from first
        import open3d

        return open3d
