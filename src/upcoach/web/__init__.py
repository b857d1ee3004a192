"""The transparency dashboard: server-rendered HTML at /dashboard (routes.py), charts as inline SVG."""
