"""xtc-bench: extreme compression (XTC) of BERT-family models, as a reproducible benchmark."""
__version__ = "0.1.0"
