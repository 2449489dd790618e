"""Leaf utilities every layer may use: settings, clock, ids, keys, mail senders, metrics, proxy trust.
Imports nothing else from auth_server."""
