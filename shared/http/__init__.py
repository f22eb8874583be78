"""What an HTTP server of linkflow shares, services and worker health
endpoints alike: serving with uvicorn, problem+json, health and readiness,
API keys and the access guard, and the OpenAPI additions. No service may
need FastAPI through this package: the guard is plain ASGI."""
