"""A model family: one shared backbone, one small head per task, and the masked multi-task loss.

The backbone and the heads are separate, named sub-modules (``model.backbone``,
``model.heads[<task>]``) because transfer learning works at that grain: start a
new family from another run's backbone, keep the heads whose tasks carry over,
freeze the backbone for a linear probe.

Losses are *masked means*: a FER image has no age, so the age loss of a batch is
the mean over the samples that have an age, and exactly 0 (with finite, zero
gradients) when none do. Unlabelled targets are replaced by a harmless dummy
*before* the loss is computed, because ``0 * NaN`` is NaN and would leak through
``where`` in the backward pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from flotilla.errors import SpecError
from flotilla.models.backbone_names import DEFAULT_BACKBONE
from flotilla.models.backbones import build_backbone
from flotilla.models.tasks import TaskSpec, resolve_tasks

WEIGHTING_MODES = ("fixed", "uncertainty")


def _head(in_features: int, out_dim: int, hidden: int, dropout: float) -> nn.Module:
    if hidden <= 0:
        linear = nn.Linear(in_features, out_dim)
        return nn.Sequential(nn.Dropout(dropout), linear) if dropout else linear
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, out_dim))


class MultiTaskModel(nn.Module):
    """Shared backbone + per-task heads; ``forward`` returns raw outputs keyed by task name.

    Outputs: regression -> [B] in *scaled* units (target / ``target_scale``), binary -> [B] logits,
    multiclass -> [B, C] logits. Use :meth:`predict` for original units and probabilities.

    Input: uint8 [B,H,W,C] (the loader's batches; normalised here, so callers never forget to) or
    float [B,C,H,W] that is *already normalised* (passed through untouched, e.g. from a GPU
    augmentation pipeline). numpy arrays are accepted; inputs move to the model's device.
    """

    pixel_mean: torch.Tensor  # buffers (register_buffer): declared so they type as tensors, not Tensor | Module
    pixel_scale: torch.Tensor

    def __init__(
        self,
        tasks: Sequence[TaskSpec | str | Mapping[str, Any]],
        backbone: str | nn.Module = DEFAULT_BACKBONE,
        *,
        width: int = 32,
        in_channels: int = 3,
        head_hidden: int = 0,
        dropout: float = 0.0,
        mean: float | Sequence[float] = 0.5,
        std: float | Sequence[float] = 0.25,
        weighting: str = "fixed",
    ) -> None:
        super().__init__()
        self.tasks: list[TaskSpec] = resolve_tasks(tasks)
        self.backbone_name = backbone if isinstance(backbone, str) else type(backbone).__name__
        self.backbone = build_backbone(backbone, width, in_channels) if isinstance(backbone, str) else backbone
        feats = getattr(self.backbone, "out_features", None)
        if not isinstance(feats, int):
            raise SpecError("a custom backbone must expose an integer attribute 'out_features'")
        self._config = {
            "backbone": self.backbone_name,
            "width": width,
            "in_channels": in_channels,
            "head_hidden": head_hidden,
            "dropout": dropout,
            "mean": mean,
            "std": std,
            "weighting": weighting,
        }
        self.heads = nn.ModuleDict({t.name: _head(feats, t.out_dim, head_hidden, dropout) for t in self.tasks})
        # Owned by the model so that DDP all-reduces the uncertainty log-variances with everything
        # else, and they are checkpointed and restored with the weights (see LossWeighting).
        self.loss_weighting = LossWeighting(self.tasks, weighting)
        # Buffers so they follow .to(device); non-persistent because they are configuration (see
        # config()), not learned state, so they never make two checkpoints' state dicts disagree.
        mean_t = torch.as_tensor(mean, dtype=torch.float32).expand(in_channels).reshape(1, in_channels, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).expand(in_channels).reshape(1, in_channels, 1, 1)
        if not bool((std_t > 0).all()):
            raise SpecError(f"pixel std must be positive, got {std!r}")
        self.register_buffer("pixel_mean", mean_t.clone(), persistent=False)
        self.register_buffer("pixel_scale", 1.0 / std_t, persistent=False)
        self._backbone_frozen = False

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this architecture (store it next to the state dict)."""
        return {"tasks": [t.to_dict() for t in self.tasks], **self._config}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MultiTaskModel:
        cfg = dict(config)
        return cls(cfg.pop("tasks"), cfg.pop("backbone"), **cfg)

    def prepare(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Model-ready float NCHW (channels_last) on the model's device."""
        x = torch.as_tensor(images)
        # the weights' dtype, not a buffer's: DeepSpeed's bf16/fp16 casts parameters only and keeps
        # buffers (pixel_mean, BN statistics) in fp32, so only the weights say what the convs expect
        weight = next(self.backbone.parameters())
        device, dtype = weight.device, weight.dtype
        if x.dtype == torch.uint8:
            if x.ndim != 4:
                raise ValueError(f"uint8 images must be [B,H,W,C], got shape {tuple(x.shape)}")
            # Move the uint8 bytes (4x smaller than float) before converting; permute of NHWC is
            # already channels_last, so no copy is made for the layout the backbone wants.
            x = x.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
            x = (x - self.pixel_mean.float()) * self.pixel_scale.float()
            return x if dtype == torch.float32 else x.to(dtype)
        x = x.to(device, dtype=dtype, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        features = self.backbone(self.prepare(images))
        out: dict[str, torch.Tensor] = {}
        for task in self.tasks:
            out[task.name] = task.behaviour.head_output(self.heads[task.name](features))
        return out

    @torch.no_grad()
    def predict(self, images: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        """User-facing predictions: regression in original units, binary P(label=1), multiclass probabilities."""
        return self.predict_with_embedding(images)[0]

    @torch.no_grad()
    def predict_with_embedding(self, images: torch.Tensor | np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """:meth:`predict` plus the shared trunk's features [B, F] (the embedding), from one forward pass.

        Batch inference stores both: drift checks compare embeddings, the predictions are the product.
        """
        features = self.backbone(self.prepare(images))
        preds = {t.name: postprocess(t, t.behaviour.head_output(self.heads[t.name](features))) for t in self.tasks}
        return preds, features

    # --- transfer learning ---------------------------------------------------------------------

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.backbone.state_dict())

    def load_backbone(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> Any:
        """Load backbone weights from a backbone state dict *or* a whole model's state dict."""
        sd = _sub_state(state_dict, "backbone.")
        try:
            return self.backbone.load_state_dict(sd, strict=strict)
        except RuntimeError as err:
            raise SpecError(
                f"the checkpoint's backbone does not fit this {self.backbone_name!r} backbone: {str(err).splitlines()[0]}",
                hint="transfer requires the same backbone name and width as the source run",
            ) from err

    def load_heads(self, state_dict: Mapping[str, torch.Tensor], tasks: Sequence[str] | None = None) -> list[str]:
        """Copy the heads of tasks present both here and in ``state_dict`` (optionally only ``tasks``).

        Returns the task names loaded. A same-named head with a different shape (7 vs 5 emotions)
        is an error rather than a silent skip: pass ``tasks`` to leave it out on purpose.
        """
        sd = _sub_state(state_dict, "heads.")
        wanted = set(self.heads) if tasks is None else set(tasks) & set(self.heads)
        loaded: list[str] = []
        for name in self.task_names:
            prefix = name + "."
            part = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
            if name not in wanted or not part:
                continue
            try:
                self.heads[name].load_state_dict(part, strict=True)
            except RuntimeError as err:
                raise SpecError(
                    f"head {name!r} in the checkpoint does not fit this model's head: {str(err).splitlines()[0]}",
                    hint=f"leave it out with load_heads(..., tasks=[...]) if task {name!r} changed shape",
                ) from err
            loaded.append(name)
        return loaded

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Stop (or resume) training the backbone: no gradients *and* frozen BatchNorm statistics.

        BN running stats would otherwise keep drifting towards the new data even with
        requires_grad=False, silently changing the "frozen" features.
        """
        self._backbone_frozen = frozen
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        self.backbone.train(self.training and not frozen)

    @property
    def backbone_frozen(self) -> bool:
        return self._backbone_frozen

    def train(self, mode: bool = True) -> MultiTaskModel:
        super().train(mode)
        if self._backbone_frozen:
            self.backbone.eval()
        return self

    def param_groups(
        self,
        weighting: LossWeighting | None = None,
        *,
        lr: float,
        weight_decay: float = 0.0,
        backbone_lr: float | None = None,
    ) -> list[dict[str, Any]]:
        """Optimiser groups: decayed weights, undecayed norms/biases, and the uncertainty log-variances.

        ``weighting`` defaults to the model's own ``loss_weighting`` (whose parameters are only ever
        listed once, in their own group). Frozen parameters are included on purpose (their grad is None, so
        optimisers skip them), so unfreezing later needs no new optimiser. Weight decay is never applied to BN/bias or to the
        log-variances: decaying s_t would pull every task towards weight 1 and defeat the learning.
        """
        groups: list[dict[str, Any]] = []
        for prefix, module, group_lr in (("backbone", self.backbone, backbone_lr or lr), ("heads", self.heads, lr)):
            decay = [p for p in module.parameters() if p.ndim > 1]
            rest = [p for p in module.parameters() if p.ndim <= 1]
            groups += [
                {"name": f"{prefix}", "params": decay, "lr": group_lr, "weight_decay": weight_decay},
                {"name": f"{prefix}_no_decay", "params": rest, "lr": group_lr, "weight_decay": 0.0},
            ]
        weighting = self.loss_weighting if weighting is None else weighting
        params = list(weighting.parameters())
        if params:
            groups.append({"name": "loss_weighting", "params": params, "lr": lr, "weight_decay": 0.0})
        return [g for g in groups if g["params"]]


class SingleTaskModel(MultiTaskModel):
    """The "separate" strategy's model: a MultiTaskModel with exactly one task."""

    def __init__(
        self, task: TaskSpec | str | Mapping[str, Any], backbone: str | nn.Module = DEFAULT_BACKBONE, **kwargs: Any
    ) -> None:
        super().__init__([task], backbone, **kwargs)

    @property
    def task(self) -> TaskSpec:
        return self.tasks[0]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SingleTaskModel:
        cfg = dict(config)
        (task,) = cfg.pop("tasks")
        return cls(task, cfg.pop("backbone"), **cfg)


def _sub_state(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Accept a sub-module's own state dict or a whole model's (also DDP's ``module.``-prefixed one)."""
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    if any(k.startswith(prefix) for k in sd):
        return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def postprocess(task: TaskSpec, raw: torch.Tensor) -> torch.Tensor:
    """Raw head output -> the task's natural prediction (years, probability, class probabilities)."""
    return task.behaviour.postprocess(task, raw)


# --- losses ----------------------------------------------------------------------------------------


class LossWeighting(nn.Module):
    """How per-task losses combine into one scalar.

    ``fixed``: sum of ``weight * L_t``. ``uncertainty`` (Kendall, Gal & Cipolla 2018): a learned
    log-variance s_t per task, total = sum of ``weight * (exp(-s_t) * L_t + s_t)``; the model learns
    to down-weight noisy tasks instead of the user hand-tuning weights. The s_t are parameters, so
    they must reach the optimiser, the checkpoint and DDP's gradient all-reduce: the simplest way
    is the model's own ``model.loss_weighting`` (``MultiTaskModel(..., weighting="uncertainty")``),
    which gets all three for free; a free-standing instance needs each done by hand. A task absent from a batch
    contributes nothing — not even its s_t term, whose gradient would otherwise push s_t down on every batch that lacks the task.
    """

    weights: torch.Tensor  # a buffer (register_buffer): declared so it types as a tensor

    def __init__(self, tasks: Sequence[TaskSpec], mode: str = "fixed") -> None:
        super().__init__()
        if mode not in WEIGHTING_MODES:
            raise SpecError(f"unknown loss weighting {mode!r}; choose one of: {', '.join(WEIGHTING_MODES)}")
        self.mode = mode
        self.names = [t.name for t in tasks]
        # Non-persistent: the weights come from the TaskSpecs, so a checkpoint must not override them.
        self.register_buffer("weights", torch.tensor([t.weight for t in tasks], dtype=torch.float32), persistent=False)
        self.log_vars = nn.Parameter(torch.zeros(len(self.names))) if mode == "uncertainty" else None

    def forward(self, losses: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]) -> torch.Tensor:
        total: torch.Tensor | None = None
        for i, name in enumerate(self.names):
            if name not in losses:
                continue
            term = losses[name]
            if self.log_vars is not None:
                s = self.log_vars[i]
                term = present[name].to(term.dtype) * (torch.exp(-s) * term + s)
            term = self.weights[i] * term
            total = term if total is None else total + term
        if total is None:
            raise SpecError("loss weighting got none of its tasks' losses", hint=f"tasks: {self.names}")
        return total

    def effective_weights(self) -> dict[str, float]:
        """Current multiplier of each task's loss, for logging how uncertainty weighting evolves."""
        w = self.weights.detach().cpu()
        if self.log_vars is not None:
            w = w * torch.exp(-self.log_vars.detach().cpu())
        return dict(zip(self.names, w.tolist(), strict=True))


def _column(batch: Mapping[str, Any], key: str, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(batch[key]).to(device, non_blocking=True)


def task_target(task: TaskSpec, batch: Mapping[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(target, mask) for one task; unlabelled targets are replaced by a valid dummy (see module doc)."""
    if task.label not in batch:
        raise SpecError(
            f"task {task.name!r} reads column {task.label!r}, which the batch does not have",
            hint=f"batch columns: {', '.join(sorted(map(str, batch)))}",
        )
    y = _column(batch, task.label, device)
    if task.mask_column in batch:
        mask = _column(batch, task.mask_column, device).bool().reshape(y.shape[:1])
    else:
        mask = torch.ones(y.shape[:1], dtype=torch.bool, device=device)
    return task.behaviour.target(task, y, mask)


def elementwise_loss(task: TaskSpec, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample loss of the task's kind and ``loss`` (unmasked, unreduced)."""
    return task.behaviour.elementwise_loss(task, output, target)


def device_losses(
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, Any],
    tasks: Sequence[TaskSpec],
    weighting: LossWeighting | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Total loss, each task's masked-mean loss (detached) and labelled count, all still on the device.

    What the training step uses: reading them as floats every step would wait for the GPU to finish
    the step (a host sync), so the loop adds them up on the device and reads the epoch's sums once.
    """
    if weighting is None:
        weighting = LossWeighting(tasks, "fixed")
    losses: dict[str, torch.Tensor] = {}
    present: dict[str, torch.Tensor] = {}
    counts: dict[str, torch.Tensor] = {}
    for task in tasks:
        out = outputs[task.name]
        target, mask = task_target(task, batch, out.device)
        n = mask.sum()
        per_sample = elementwise_loss(task, out, target)
        losses[task.name] = torch.where(mask, per_sample, torch.zeros_like(per_sample)).sum() / n.clamp_min(1)
        present[task.name] = n > 0
        counts[task.name] = n
    total = weighting.to(next(iter(losses.values())).device)(losses, present)
    return total, {k: v.detach() for k, v in losses.items()}, counts


def compute_losses(
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, Any],
    tasks: Sequence[TaskSpec],
    weighting: LossWeighting | None = None,
    *,
    return_counts: bool = False,
) -> tuple[torch.Tensor, dict[str, float]] | tuple[torch.Tensor, dict[str, float], dict[str, int]]:
    """Total loss to backpropagate and each task's (unweighted, masked-mean) loss for logging.

    Per-worker masked means: under DDP each worker averages over its own labelled samples before
    gradients are averaged, a negligible bias at realistic batch sizes that avoids a collective per step.
    Costs one device sync (for the logged floats); the training loop uses :func:`device_losses`, which does not.

    ``return_counts`` adds each task's number of labelled samples: a per-task mean over an epoch must
    weight each batch's masked mean by how many samples carried that label, not by the batch size, or
    a task labelled on a fraction of the data reads that fraction too low. The counts ride the same sync.
    """
    total, losses, counts = device_losses(outputs, batch, tasks, weighting)
    k = len(losses)
    values = torch.stack([v.float() for v in losses.values()] + [c.float() for c in counts.values()]).tolist()
    per_task = dict(zip(losses, values[:k], strict=True))
    if not return_counts:
        return total, per_task
    return total, per_task, {name: int(c) for name, c in zip(counts, values[k:], strict=True)}
