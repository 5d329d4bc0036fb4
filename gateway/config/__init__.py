"""Configuration: the TOML model (`model`), loading (`load`) and cross-checks (`validate`)."""

from gateway.config.load import load_config as load_config
from gateway.config.load import loads_config as loads_config
from gateway.config.model import GatewayConfig as GatewayConfig
