"""gateway: an Envoy-style L7 gateway on Trio.

Embedding::

    from gateway import loads_config, open_gateway

    async with open_gateway(loads_config(text)) as gw:
        port = gw.listener_ports["edge"]
"""

from gateway.config.load import load_config as load_config
from gateway.config.load import loads_config as loads_config
from gateway.config.model import GatewayConfig as GatewayConfig
from gateway.errors import ConfigError as ConfigError
from gateway.errors import StartupError as StartupError
from gateway.server import Gateway as Gateway
from gateway.server import open_gateway as open_gateway
