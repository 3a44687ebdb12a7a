"""Evaluation: retrieval recall@K and zero-shot classification, in bounded memory.

    import fuse, fuse.eval
    model = fuse.load("runs/quickstart")
    report = fuse.eval.run_retrieval(model, "val.jsonl")
    report = fuse.eval.run_zeroshot(model, "labels.jsonl", templates="imagenet")
"""

from .api import run_retrieval, run_zeroshot
from .rank import topk
from .retrieval import evaluate_retrieval, ranks_of_best_positive, retrieval_metrics
from .zeroshot import class_embeddings, load_templates, zeroshot_metrics

__all__ = ["class_embeddings", "evaluate_retrieval", "load_templates", "ranks_of_best_positive",
           "retrieval_metrics", "run_retrieval", "run_zeroshot", "topk", "zeroshot_metrics"]
