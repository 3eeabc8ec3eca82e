"""The daemon's HTTP: one HTTP/1.1 server (server.py) for two apps, the
OpenAI- and Anthropic-compatible front (front.py: routes; sinks.py: the
answers in each wire's shape; auth.py: who may call) and `metrics.listen`
(metrics.py)."""
