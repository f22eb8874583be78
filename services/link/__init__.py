"""The link service (gateway): link API, redirects, click and link events."""
