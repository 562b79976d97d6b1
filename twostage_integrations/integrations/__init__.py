"""Thin adapters from the core pipeline to LangChain and LlamaIndex types."""
