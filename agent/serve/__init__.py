"""``agent serve``: an HTTP API and a web chat over one agent (see the README's "Web UI and HTTP API").

>>> app = create_app(agent, ServeSettings(token="s3cret"))     # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8765)             # doctest: +SKIP
"""

from .app import ServeSettings, create_app
from .sessions import Limits, ServeError, SessionManager

__all__ = ["create_app", "ServeSettings", "Limits", "ServeError", "SessionManager"]
