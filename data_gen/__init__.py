"""Emo Pillars synthesis: narrative-grounded, resumable LLM data generation via llama.cpp."""
