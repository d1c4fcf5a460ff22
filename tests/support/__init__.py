"""What the tests share: starting servers, HTTP clients, certificates, waits."""
