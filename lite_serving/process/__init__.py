"""The process: settings, logs, the supervisor of --workers and its heartbeat board, the reloader, the project template."""
