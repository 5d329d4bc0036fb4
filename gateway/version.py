"""The gateway's own version, as installed (for /server_info and xDS node metadata)."""

from importlib.metadata import PackageNotFoundError, version


def gateway_version() -> str:
    """The installed package's version; "dev" when running from a source tree."""
    try:
        return version("gateway")
    except PackageNotFoundError:
        return "dev"
