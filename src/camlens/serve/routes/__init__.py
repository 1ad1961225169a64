"""The API's routers, one per concern, all mounted under ``/api``."""
