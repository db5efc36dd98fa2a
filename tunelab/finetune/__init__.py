"""Fine-tuning: base weights, LoRA SFT, preference methods, and export to llama.cpp (GGUF)."""
