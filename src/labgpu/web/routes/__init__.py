"""The portal's routes: ``api_*`` modules are the JSON API under /api/v1, ``pages_*`` the HTML pages."""
