"""Who may do what: RBAC evaluation, the Node authorizer's rules, and (later) scope
membership and writer rules, as pure functions over a replica, so that the API and the
mesh ask the same questions of the same data, on every peer, offline too."""
