"""hybridctx: generous retrieval packed into long context windows, answered with citations.

    from hybridctx import Pipeline
    pipe = Pipeline.open("kb/")
    pipe.add(["docs/"])
    print(pipe.ask("How do I configure retries?").text)
"""

import logging

from hybridctx.errors import HybridCtxError
from hybridctx.pipeline import Pipeline, Session
from hybridctx.schema import AddReport, Answer, Chunk, Citation, Document, Hit, PackedContext, Passage, Usage
from hybridctx.settings import Settings

__version__ = "0.1.0"

# A library's log lines (llama.cpp's among them) reach the terminal only once the application
# configures logging.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "AddReport",
    "Answer",
    "Chunk",
    "Passage",
    "Session",
    "Citation",
    "Document",
    "Hit",
    "HybridCtxError",
    "PackedContext",
    "Pipeline",
    "Settings",
    "Usage",
]
