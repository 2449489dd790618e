"""The service's rules: accounts, sessions, admin, tokens, codes, passwords, devices, validation, audit.
No transport (grpc, starlette) and no database driver: it talks to store/ through the Store protocol
and to infra/ for settings, time, ids, keys and mail."""
