"""The Kubernetes REST API: discovery, CRUD, list/watch, patch, subresources, authentication."""
