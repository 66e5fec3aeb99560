"""FastAPI: routes, request/response schemas, dependencies."""
