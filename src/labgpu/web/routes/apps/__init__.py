"""Web apps and files: the portal's pages and forms (``pages``) and the apps origin that proxies to the apps
(``origin``)."""
