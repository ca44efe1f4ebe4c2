"""portal: the routes of log-in, applications, accounts, tokens and the audit log."""
