"""Per-call statistics of a MeanCache-accelerated pipeline (plain Python counters: no device work)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..schedule import Schedule

__all__ = ["MeanCacheStats"]


@dataclass
class MeanCacheStats:
    """What the last pipeline call did. Read it with ``get_mean_cache_stats(pipe)`` after the call.

    Attributes:
        num_steps: N, the number of scheduler steps the generation ran (image-to-image and inpainting with
            strength < 1 run the last ones only).
        steps_computed: steps whose velocity came from the transformer.
        steps_skipped: steps whose velocity was the MeanCache estimate.
        transformer_calls: transformer forwards actually run (all transformers, all CFG branches).
        transformer_calls_saved: transformer forwards answered from the cache on skipped steps.
        calls_per_step: transformer calls of the first step (2 with true CFG, 1 with batched or no CFG).
        schedule: the schedule the generation ran with (fitted to N).
        finished: True when all N steps were taken.
        first_step: the scheduler's index of the first step run (0, or > 0 when the generation started
            mid-schedule: image-to-image, inpainting); step i of ``schedule`` is the scheduler's step
            ``first_step + i``.
        segments: ``(first step, transformer name)`` of each run of steps made by one model when the generation
            changes model (Wan 2.2's two experts); empty otherwise.
        learning: True when this call computed every step to learn its schedule (``MeanCacheConfig(budget=B)``'s
            first generation at this N, latent shape and scheduler): its image is the exact one.
        learnt_in: the pipeline call (1 = the first since apply_mean_cache) that learnt the schedule this call ran
            or learnt now; 0 when it was learnt before this application (the same configuration applied earlier, or
            read from ``cache_dir``); None when nothing learnt is involved.
        learnt: what was learnt: the rule's ``choice``, the ``regime`` and ``early_share`` it read, and ``calls``,
            the transformer steps the learning generation computed (N).
    """

    num_steps: int = 0
    steps_computed: int = 0
    steps_skipped: int = 0
    transformer_calls: int = 0
    transformer_calls_saved: int = 0
    calls_per_step: int = 0
    schedule: Schedule | None = None
    finished: bool = False
    first_step: int = 0
    segments: tuple[tuple[int, str | None], ...] = ()
    learning: bool = False
    learnt_in: int | None = None
    learnt: dict | None = None

    @property
    def speedup(self) -> float:
        """Transformer calls of the full loop over calls made (the ideal speedup when the transformer dominates)."""
        total = self.transformer_calls + self.transformer_calls_saved
        return total / self.transformer_calls if self.transformer_calls else float("nan")

    def copy(self) -> "MeanCacheStats":
        return replace(self, learnt=None if self.learnt is None else dict(self.learnt))
