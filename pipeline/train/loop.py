"""The training loop: batches of weighted tiles, weighted cross-entropy, Adam, state saves.

Step ``s`` draws its tiles, offsets and augmentations from generators seeded by
``(seed, s)`` (:func:`~segpipe.pipeline.train.state.step_generators`): the same seed gives the
same weights on the CPU, and a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segpipe.pipeline.train.sampling import Sample, TrainImage
from segpipe.pipeline.train.state import step_generators

__all__ = ["Loop", "weighted_loss"]

#: Called after every step with (step done, total steps, loss of the step).
OnStep = Callable[[int, int, float], None]


def weighted_loss(logits: Tensor, classes: Tensor, weights: Tensor) -> Tensor:
    """``Σ w · CE / labelled pixels``: unlabelled pixels (class −1) weigh 0."""
    ce = F.cross_entropy(logits, classes.clamp(min=0), reduction="none")
    labelled = (classes >= 0).sum().clamp(min=1)
    return (ce * weights).sum() / labelled


@dataclass
class Loop:
    """Everything a step needs; :meth:`run` trains from ``step`` to ``total``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    images: list[TrainImage]
    per_class: np.ndarray
    w0: float
    sigma: float
    batch_size: int
    seed: int
    device: torch.device
    crop: tuple[int, int]  # (offset, size) of the tile core in the model output
    step: int = 0
    losses: list[float] = field(default_factory=list)

    def batch(self, step: int) -> list[Sample]:
        """The samples of step ``step`` (a function of the seed and the step only)."""
        rng = step_generators(self.seed, step)
        sizes = np.array([len(im.train_tiles) for im in self.images], np.float64)
        picks = rng.choice(len(self.images), size=self.batch_size, p=sizes / sizes.sum())
        return [self.images[i].sample(rng, self.per_class, self.w0, self.sigma) for i in picks]

    def train_step(self) -> float:
        """One optimizer step; returns its loss."""
        samples = self.batch(self.step)
        x = torch.from_numpy(np.stack([s.x for s in samples])).to(self.device)
        y = torch.from_numpy(np.stack([s.y for s in samples])).to(self.device)
        w = torch.from_numpy(np.stack([s.w for s in samples])).to(self.device)
        self.model.train()
        logits = self.model(x)
        top, size = self.crop
        logits = logits[:, :, top : top + size, top : top + size]
        loss = weighted_loss(logits, y, w)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        value = float(loss.detach().cpu())
        self.losses.append(value)
        return value

    def run(self, total: int, on_step: OnStep | None, save: Callable[[], None],
            save_every: int) -> None:
        """Train until ``total`` steps; save every ``save_every`` steps, at the end and on ^C."""
        try:
            while self.step < total:
                loss = self.train_step()
                if on_step is not None:
                    on_step(self.step, total, loss)
                if self.step % save_every == 0 or self.step == total:
                    save()
        except KeyboardInterrupt:
            save()
            raise

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Logits of a host batch in eval mode (for validation)."""
        self.model.eval()
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device)
            return self.model(x).float().cpu().numpy()
