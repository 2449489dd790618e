"""Client package of the auth.v1 service: the generated stubs (`auth_client.gen.auth.v1`) and helpers."""
