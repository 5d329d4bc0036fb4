"""Configuration: the TOML model (`model`), loading (`load`) and cross-checks (`validate`),
the files a config names (`files`, `watch`), its regexes (`regex`, RE2) and TLS contexts
(`tls_context`)."""

from gateway.config.load import load_config as load_config
from gateway.config.load import loads_config as loads_config
from gateway.config.model import GatewayConfig as GatewayConfig
