"""distill: turn logged LLM prompts into a small student model, behind an honest gate."""

__version__ = "0.1.0"
