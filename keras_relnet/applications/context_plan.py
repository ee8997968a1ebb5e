"""Where global-context blocks go in a residual network.

Both `ResNet` and `LRNet` take `context_block`, `context_stages` and
`context_ratio`; this module turns them into a plan (spec:
`docs/global_context.md`):

- "gc", "snl", "se": one block in every bottleneck of the chosen stages, on
  the residual branch after its last BN, before the shortcut addition;
- "nl": one non-local block per chosen stage, before the stage's last
  bottleneck (the detection "+1 NL in c4").
"""

from typing import NamedTuple

from keras_relnet.ops import checks

CONTEXT_BLOCKS = ("gc", "snl", "se", "nl")
STAGES = (2, 3, 4, 5)
DEFAULT_STAGES = {"gc": (3, 4, 5), "snl": (3, 4, 5), "se": (2, 3, 4, 5), "nl": (4,)}


class ContextPlan(NamedTuple):
    """Which context block goes where; stages are numbered 2..5 (c2..c5).

    With `kind=None` the plan places nothing.
    """

    kind: str
    stages: tuple
    ratio: float

    def block_layer(self, stage, name, kit):
        """The layer for a bottleneck of `stage` made with `kit` (a `LayerKit`), or None."""
        if self.kind in (None, "nl") or stage not in self.stages:
            return None
        if self.kind in ("gc", "se"):
            return kit.relation(self.kind, name, ratio=self.ratio)
        return kit.relation("snl", name)

    def before_block(self, x, stage, block, depth, name, kit):
        """`x` through the non-local layer when `block` is the last of `stage`
        and the plan puts one there; else `x` unchanged."""
        if self.kind != "nl" or stage not in self.stages or block != depth - 1:
            return x
        return kit.relation("nl", name)(x)


def context_plan(context_block, context_stages=None, context_ratio=1 / 16):
    """Validates the context options of a model builder.

    Args:
        context_block: None, "gc", "snl", "se" or "nl".
        context_stages: stages that get blocks, as ints 2..5 or "c2".."c5"
            (None: gc/snl c3-c5, se c2-c5, nl c4).
        context_ratio: bottleneck ratio of GC and SE blocks.

    Returns:
        A `ContextPlan` (placing nothing when `context_block` is None).

    Example:
    >>> context_plan("gc", ("c3", "c4"))
    ContextPlan(kind='gc', stages=(3, 4), ratio=0.0625)
    """
    if context_block is None:
        return ContextPlan(None, (), 0.0)
    checks.check_choice("context_block", context_block, CONTEXT_BLOCKS)
    ratio = checks.check_positive_number("context_ratio", context_ratio)
    if context_stages is None:
        return ContextPlan(context_block, DEFAULT_STAGES[context_block], ratio)
    stages = tuple(
        int(stage[1:]) if isinstance(stage, str) and stage[:1] == "c" and stage[1:].isdigit()
        else stage
        for stage in context_stages
    )
    if not stages or any(stage not in STAGES for stage in stages):
        raise ValueError(
            "`context_stages` must be a non-empty sequence of stages from 2..5 "
            f"(or 'c2'..'c5'); received {context_stages!r}."
        )
    return ContextPlan(context_block, tuple(sorted(set(stages))), ratio)
