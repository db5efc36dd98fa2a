"""tunelab: chat, in-context learning, LoRA fine-tuning and comparison of small local models."""

__version__ = "0.1.0"
