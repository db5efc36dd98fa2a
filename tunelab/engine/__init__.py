"""Inference: llama.cpp in-process or an OpenAI-compatible server, both behind `engine.protocol.ChatEngine` (loading, chat templates, sampling, streaming, adapters). No UI code."""
