"""Contrastive distillation towards a frozen teacher (Cares et al., shared encoder + distillation; ref. TimCares/EV-LP).

A frozen image model (the recipe's ``teacher:``) embeds each image. The reference's teacher is a
*self-supervised* BEiTv2, which timm does not host; recipes/shared_encoder_distill.yaml uses
timm's BEiTv2 fine-tuned on ImageNet labels (a supervised teacher), and
recipes/shared_encoder_distill_dino.yaml a self-supervised DINO ViT-B/16 that timm hosts. The
objective is the same for any teacher: it is self-supervised only when the teacher is. Both students, the image and the text embedding, are pulled towards the teacher's
embedding *of the image*: one learnable projection (LayerNorm + Linear, shared by the two
students, as the reference's ``fc_norm`` + ``head``) maps a student embedding into the
teacher's space, where it must pick its own image's teacher embedding out of the batch's
teacher embeddings plus a memory bank of past ones. The text student thus learns to land
where the image student lands, through the same map. The image-text term is a separate
objective in the same recipe (e.g. infonce), weighted there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

import fuse

DUPLICATE_COSINE = 1 - 1e-5  # teacher rows this close to the positive are the same image


class MemoryBank(nn.Module):
    """Fixed-size ring buffer of rows; ``valid()`` for the loss, ``items()`` oldest first.

    The queue is a non-persistent buffer: a 65,536 x 768 queue would bloat every epoch's
    weights file. It travels in the single `state.pt` instead (``resume_state``), so a resumed
    run continues with the negatives it had. Pointer and fill count are plain ints so that
    enqueueing never waits for the GPU.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"MemoryBank needs size >= 1 and dim >= 1, got size={size}, dim={dim}")
        self.size, self.dim = size, dim
        self.register_buffer("queue", torch.zeros(size, dim), persistent=False)
        self.ptr = 0     # next row to overwrite
        self.count = 0   # rows filled so far (<= size)

    def __len__(self) -> int:
        return self.count

    @torch.no_grad()
    def enqueue(self, x: torch.Tensor, gathered: bool = False) -> None:
        """Append rows, overwriting the oldest once full.

        Under torch.distributed every rank enqueues all ranks' rows (rank order), so the
        queues stay identical; pass ``gathered=True`` when ``x`` already holds them.
        """
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"MemoryBank of dim {self.dim} got rows of shape {tuple(x.shape)}")
        x = x.detach()
        if not gathered:
            x = fuse.gather_with_grad(x)
        x = x[-self.size:].to(self.queue.dtype)  # more rows than the queue holds: keep the newest
        n, p = x.shape[0], self.ptr
        first = min(n, self.size - p)            # rows that fit before the end of the buffer
        self.queue[p:p + first] = x[:first]
        self.queue[:n - first] = x[first:]       # the rest wraps around to the start
        self.ptr = (p + n) % self.size
        self.count = min(self.count + n, self.size)

    def valid(self) -> torch.Tensor:
        """The filled rows in storage order (a view; the order is irrelevant to a softmax)."""
        return self.queue[:self.count]

    def items(self) -> torch.Tensor:
        """The filled rows, oldest first (a copy once the queue has wrapped)."""
        if self.count < self.size:
            return self.queue[:self.count]
        return torch.cat([self.queue[self.ptr:], self.queue[:self.ptr]])

    def resume_state(self) -> dict:
        """The filled rows (oldest first) for `fuse.training.resume`; the queue itself is not in weights files."""
        return {"rows": self.items().cpu().clone(), "size": self.size}

    def load_resume_state(self, state: dict) -> None:
        rows = state["rows"]
        if state["size"] != self.size or rows.shape[1:] != (self.dim,):
            raise ValueError(f"the state file's memory bank has {state['size']} rows of dim {tuple(rows.shape[1:])}, "
                             f"the recipe's {self.size} rows of dim {self.dim} (queue_size)")
        self.reset()
        if len(rows):
            self.enqueue(rows.to(self.queue.device), gathered=True)

    def reset(self) -> None:
        self.queue.zero_()
        self.ptr = self.count = 0

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"


def distillation_loss(student: torch.Tensor, targets: torch.Tensor, bank: torch.Tensor, scale: torch.Tensor,
                      mask_duplicates: bool = True) -> torch.Tensor:
    """Cross-entropy of normalised ``student`` rows over keys [targets; bank], row i's key i positive.

    ``targets`` and ``bank`` are L2-normalised teacher embeddings. With ``mask_duplicates``,
    keys other than the positive that equal it (the same image seen with another caption in
    the batch, or in the bank from an earlier epoch) are left out of that row's negatives.
    """
    s = F.normalize(student.float(), dim=-1)
    keys = torch.cat([targets, bank]) if bank.numel() else targets
    logits = scale * s @ keys.T
    if mask_duplicates:
        # fp32 even under autocast: in bf16 distinct images at cosine 0.996 would round to 1.
        with torch.no_grad(), torch.autocast(targets.device.type, enabled=False):
            same = targets.float() @ keys.float().T >= DUPLICATE_COSINE
            same.fill_diagonal_(False)  # the positive itself stays
        logits = logits.masked_fill(same, float("-inf"))
    labels = torch.arange(s.shape[0], device=s.device)
    return F.cross_entropy(logits, labels)


class Distillation(fuse.Objective):
    """Contrastive distillation of both towers towards a frozen teacher, with a memory bank."""

    requires = frozenset({"teacher"})

    class Options(fuse.Options):
        queue_size: int = Field(65536, ge=0)    # past teacher embeddings kept as negatives; 0 = batch only
        init_temperature: float = Field(0.07, gt=0)
        learnable: bool = False                 # the reference's scale is never optimised: fixed 0.07
        min_temperature: float = Field(0.01, gt=0)
        students: list[str] | None = None       # modalities pulled to the teacher; default both
        mask_duplicates: bool = True            # drop negatives identical to the positive (see docs)

        @model_validator(mode="after")
        def _check(self):
            if self.init_temperature < self.min_temperature:
                raise ValueError(f"init_temperature {self.init_temperature} is below min_temperature "
                                 f"{self.min_temperature}; raise it or lower min_temperature")
            if self.students is not None and not self.students:
                raise ValueError("students is empty; list at least one modality or remove the option")
            return self

    def __init__(self, options: Options, modalities, embed_dim, extra_dims=None):
        super().__init__(options, modalities, embed_dim, extra_dims)
        if "teacher" not in self.extra_dims:
            raise fuse.RecipeError("objectives: distillation needs a `teacher:` section in the recipe, e.g. "
                                   "teacher: {modality: image, encoder: {name: timm, options: {model: ...}}}.")
        t_dim = self.extra_dims["teacher"]
        self.students = list(dict.fromkeys(options.students or modalities))
        unknown = [m for m in self.students if m not in modalities]
        if unknown:
            raise fuse.RecipeError(f"objectives: distillation students {unknown} are not modalities of the "
                                   f"recipe ({', '.join(modalities)}); fix options.students.")
        # Students -> teacher space (not the teacher -> shared space): the shared space stays
        # the image-text one, and the teacher's targets stay fixed, as in the reference.
        self.projection = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, t_dim))
        self.scale = fuse.LogitScale(options.init_temperature, options.min_temperature, learnable=options.learnable)
        self.bank = MemoryBank(options.queue_size, t_dim) if options.queue_size else None
        self.last: dict[str, torch.Tensor] = {}

    def draw(self, step: fuse.Step) -> dict:
        """The global batch's teacher embeddings (positives, and every rank's rows as negatives)."""
        if "teacher" not in step.extras:
            raise fuse.RecipeError("objectives: distillation got a step without teacher latents; "
                                   "add a `teacher:` section to the recipe.")
        teacher = step.extras["teacher"]
        if teacher.ndim != 2 or teacher.shape[1] != self.projection[1].out_features:
            raise fuse.RecipeError(f"objectives: distillation was built for teacher latents of dim "
                                   f"{self.projection[1].out_features}, got shape {tuple(teacher.shape)}.")
        return {"targets": fuse.gather_with_grad(F.normalize(teacher.detach().float(), dim=-1))}

    def forward(self, step: fuse.Step, draws: dict) -> torch.Tensor:
        targets = draws["targets"]
        bank = self.bank.valid() if self.bank is not None else targets[:0]
        scale = self.scale()
        emb = step.embeddings
        losses = {m: distillation_loss(fuse.gather_with_grad(self.projection(emb[m])), targets, bank, scale,
                                       self.options.mask_duplicates) for m in self.students}
        self.last = {m: v.detach() for m, v in losses.items()}
        return sum(losses.values()) / len(losses)

    def commit(self, step: fuse.Step, draws: dict) -> None:
        """Enqueue the batch's teacher embeddings after its loss: a batch is never its own negative."""
        if self.bank is not None and self.training:
            self.bank.enqueue(draws["targets"], gathered=True)

    def metrics(self) -> dict[str, float]:
        out = {f"distillation_{m}": float(v) for m, v in self.last.items()}
        out["memory_bank_fill"] = float(len(self.bank)) if self.bank is not None else 0.0
        if self.options.learnable:
            out["distillation_temperature"] = self.scale.temperature
        return out


@fuse.hookimpl
def register_objectives(register):
    register("distillation", Distillation)
