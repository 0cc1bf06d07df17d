"""celrec: online-learning recommendations with Clustered Embedding Learning."""

__version__ = "0.1.0"
