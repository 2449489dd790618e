"""Process entry and wiring: the `auth-server` command, worker processes and log set-up (top layer)."""
