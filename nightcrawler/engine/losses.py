"""Training losses, the pseudo-label helpers (confidence mask, soft targets) and the unlabelled-clip losses
(prediction entropy for TENT, the soft-target distillation loss).

The experiments use ``soft_cross_entropy``: ``mean_b sum_c -y_bc * log_softmax(z_b)_c`` on the (mixed,
label-smoothed) targets; with hard integer labels the same function is the ordinary cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nightcrawler.models.registry import OUTPUT_KINDS

LOSS_FUNCS = ("soft_cross_entropy", "cross_entropy")


def soft_target_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy of ``logits`` (N, C) against probability targets (N, C) or class indices (N,).

    Computed in float32 whatever the autocast dtype of ``logits``. ``reduction``: "mean", "sum" or "none"
    (per-sample losses).
    """
    logits = logits.float()
    if targets.dim() == 1:
        per_sample = F.cross_entropy(logits, targets.long(), reduction="none")
    else:
        if targets.shape != logits.shape:
            raise ValueError(f"targets {tuple(targets.shape)} do not match logits {tuple(logits.shape)}")
        per_sample = torch.sum(-targets.float() * F.log_softmax(logits, dim=-1), dim=-1)
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "mean":
        return per_sample.mean()
    raise ValueError(f"reduction must be mean, sum or none, got {reduction!r}")


def masked_mean(per_sample: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``per_sample`` over the entries where ``mask`` is True (all entries when ``mask`` is None)."""
    if mask is None:
        return per_sample.mean()
    kept = mask.to(per_sample.dtype)
    return (per_sample * kept).sum() / kept.sum().clamp_min(1.0)


def confidence_mask(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """The original's pseudo-label rule: keep clips whose top-1 softmax probability ``q`` exceeds
    ``mean(q) - threshold * std(q)`` over the batch; ``threshold == -1`` keeps every clip."""
    q = torch.softmax(logits.detach().float(), dim=-1).max(dim=-1).values
    if threshold == -1:
        return torch.ones_like(q, dtype=torch.bool)
    std = q.std() if q.numel() > 1 else torch.zeros_like(q[0])
    return q > q.mean() - threshold * std


def soft_targets_from_probs(
    probs: torch.Tensor, temperature: float = 1.0, eps: float = 1e-12
) -> torch.Tensor:
    """Normalised class probabilities re-sharpened by ``temperature``: ``softmax(log(p) / T)``.

    (The original's never-enabled soft loss divided probabilities by T without re-normalising.)
    """
    if temperature <= 0:
        raise ValueError(f"MODEL.SOFT_T must be positive, got {temperature}")
    p = probs.float().clamp_min(0.0)
    if bool((p.sum(dim=-1) <= 0).any()):
        raise ValueError(
            "pseudo-label probabilities must have a positive sum per row (check the CSV's p0..pC)"
        )
    return torch.softmax(torch.log(p + eps) / temperature, dim=-1)


# ---------------------------------------------------------------------------------------------------- unlabelled
def log_probabilities(outputs: torch.Tensor, kind: str = "logits") -> torch.Tensor:
    """Class log-probabilities (float32) of model outputs (N, C): ``log_softmax`` of logits, or the renormalised
    log of probabilities (a model whose card says it applies softmax itself in eval mode, e.g. MViT). Both are
    differentiable; ``log_softmax(log p) = log_softmax(z)`` when ``p = softmax(z)``."""
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"outputs must be one of {OUTPUT_KINDS}, got {kind!r}")
    x = outputs.float()
    if kind == "probabilities":
        x = torch.log(x.clamp_min(torch.finfo(torch.float32).tiny))
    return F.log_softmax(x, dim=-1)


def prediction_entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each row of class log-probabilities (N, C) -> (N,)."""
    return -(log_probs.exp() * log_probs).sum(dim=-1)


def distillation_loss(
    student_logits: torch.Tensor, teacher_log_probs: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Hinton's soft-target loss: ``T^2 * mean_n KL(softmax(t_n / T) || softmax(s_n / T))``, float32.

    ``teacher_log_probs`` are the teacher's class log-probabilities (:func:`log_probabilities`; they stand for
    its logits up to a per-row constant, which the temperature softmax ignores). The ``T^2`` factor keeps the
    gradient scale of the soft term independent of ``T``.
    """
    if temperature <= 0:
        raise ValueError(f"the distillation temperature must be positive, got {temperature}")
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_log_probs.float().detach() / temperature, dim=-1)
    kl = F.kl_div(student, teacher, reduction="none", log_target=True).sum(dim=-1)
    return kl.mean() * temperature**2
