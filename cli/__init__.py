"""recipe: a declarative compiler and runner for LoRA-family fine-tuning of open LLMs."""

__version__ = "0.1.0"
