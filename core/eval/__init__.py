"""Evaluation: retrieval recall@K, zero-shot classification and linear probes, in bounded memory.

    import fuse, fuse.eval
    model = fuse.load("runs/quickstart")
    report = fuse.eval.run_retrieval(model, "val.jsonl")
    report = fuse.eval.run_zeroshot(model, "labels.jsonl", templates="imagenet")
    report = fuse.eval.run_probe(model, "train.jsonl", "test.jsonl")   # linear probe of one tower
"""

from fuse.eval.run import run_retrieval, run_zeroshot
from fuse.eval.probe import fit_logistic, fit_probe, probe_latents, run_probe
from fuse.eval.rank import topk
from fuse.eval.retrieval import evaluate_retrieval, ranks_of_best_positive, retrieval_metrics
from fuse.eval.zeroshot import class_embeddings, load_templates, zeroshot_metrics

__all__ = ["class_embeddings", "evaluate_retrieval", "fit_logistic", "fit_probe", "load_templates", "probe_latents",
           "ranks_of_best_positive", "retrieval_metrics", "run_probe", "run_retrieval", "run_zeroshot", "topk",
           "zeroshot_metrics"]
