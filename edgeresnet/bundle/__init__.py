"""Reading an export bundle: every file a command opens in one, through one checked reader."""

from .files import Bundle, bundle_path, export_root, read_bundle_file

__all__ = ["Bundle", "bundle_path", "export_root", "read_bundle_file"]
