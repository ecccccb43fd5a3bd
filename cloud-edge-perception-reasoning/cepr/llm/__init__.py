"""Language models in the loop: prompts from the scene summary, in-process llama.cpp scoring, tiny test models."""
