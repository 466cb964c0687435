"""The reference teacher: an offline stand-in for a hosted model (demos and tests only).

An OpenAI-compatible HTTP server answering from a file of reference answers, with latency, prices
and fault injection. It is configured in its own top-level config section (`reference_teacher`);
the app shell starts it and points `teacher.api_base` at it. No production stage starts it.
"""
