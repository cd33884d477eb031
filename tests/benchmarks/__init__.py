"""The load tools of benchmarks/ (Locust file, aiohttp load generator) against a live server, so the figures
they produce come from working code."""
