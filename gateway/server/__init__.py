"""The server: the running gateway, its reloads, overload manager and worker processes."""
