"""Corpus embedding (Ray Data batch inference into a versioned Lance index) and text search over it."""
from pipelines.embed.job import EmbedError, EmbedReport, embed_corpus
from pipelines.embed.options import EmbedOptions
from pipelines.embed.search import ModelMismatch, TextSearch, search

__all__ = ["EmbedError", "EmbedOptions", "EmbedReport", "ModelMismatch", "TextSearch", "embed_corpus", "search"]
