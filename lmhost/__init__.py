"""lmhost's Python SDK and CLI. Talks to the server over HTTP only; imports neither Flask nor
llama_cpp."""

__version__ = "0.1.0"
