"""gateway: an Envoy-style L7 gateway on Trio.

The public surface: `open_gateway` and the config loaders to embed it, and the HTTP filter
interface (`HttpFilter`, `LocalReply`, heads, `HeaderMap`, `StreamInfo`) for filters written
in Python (`type = "python"`).

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
from gateway.http.filter import HttpFilter as HttpFilter
from gateway.observability.stream_info import StreamInfo as StreamInfo
from gateway.protocol.headers import HeaderMap as HeaderMap
from gateway.protocol.headers import LocalReply as LocalReply
from gateway.protocol.headers import RequestHead as RequestHead
from gateway.protocol.headers import ResponseHead as ResponseHead
from gateway.server.gateway import Gateway as Gateway
from gateway.server.run import open_gateway as open_gateway
