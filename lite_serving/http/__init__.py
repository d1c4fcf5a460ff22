"""The HTTP/1.1 rules: the request parser and its pure-Python twin, their limits, multipart bodies, request ids."""
