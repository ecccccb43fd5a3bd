"""HTTP services (the `serve` extra: FastAPI + uvicorn)."""
