"""members: the routes of members and their containers."""
