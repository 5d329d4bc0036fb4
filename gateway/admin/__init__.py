"""The admin endpoint: an ASGI app served by hypercorn inside the root nursery."""
