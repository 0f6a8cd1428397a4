"""Pack stage: a generous candidate list into the best prompt that fits a token budget.

- `context`: `ContextBuilder`, the stage as a question meets it (its one retrieval, scaled to
  the budget, packed into one prompt or into windows of what the model reads well);
- `packer`: `Packer.pack` and `PackSession` (the policy; start reading here);
- `selection`: the candidate scan that decides what is kept and why;
- `spans`: what a window shows of each document, merged into passages and ordered;
- `counting`: exact token accounting of a prompt from its pieces;
- `dedup`: exact and near (MinHash LSH) duplicate detection;
- `profiles`: what the packer needs of each chunk, worked out at index time;
- `prompt`: the template (instructions, quoted passages, the question last);
- `gc_pause`: packing runs without the cyclic garbage collector.
"""

from hybridctx.pack.packer import ORDERINGS, Packer
from hybridctx.pack.profiles import reader_id, sketch_profiles
from hybridctx.pack.prompt import ChatTurns, ControlTokens, PromptTemplate
from hybridctx.pack.selection import PackSession

__all__ = [
    "ORDERINGS", "ChatTurns", "ControlTokens", "PackSession", "Packer", "PromptTemplate", "reader_id",
    "sketch_profiles",
]
