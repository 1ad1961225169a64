"""``camlens serve``: the explorer in the browser, an ASGI app over a documented JSON API.

Needs the ``serve`` extra (``pip install "camlens[serve]"``: fastapi, uvicorn, python-multipart).
"""

from camlens.serve.app import create_app
from camlens.serve.service import ModelService

__all__ = ["ModelService", "create_app"]
