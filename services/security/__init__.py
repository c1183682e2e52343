"""Credentials, authorisation, tenants and limits for every Switchyard process (issue 7).

``settings`` (the ``[security]`` config section), ``certs`` (a development CA and
certificates, ``switchyard certs``), ``transport`` (TLS credentials, secure binds and
channels, HTTP/2 limits), ``identity`` (who the peer is, from its certificate), ``authz``
(admin and agent roles on placement), ``tenants`` (per-tenant policy at the edge).
"""
