"""servegate: deploy a vLLM serving recipe and prove, step by step, that it works."""

__version__ = "0.1.0"
