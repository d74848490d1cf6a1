"""The reference server's routers, one module per concern."""
