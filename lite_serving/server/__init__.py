"""The server: the selector loop, transports, one connection object per client, request bodies, dispatch to predict threads, access log, keys, TLS, deadlines."""
