"""Inference through llama.cpp, prompt assembly, example selection and comparison. No UI code."""
