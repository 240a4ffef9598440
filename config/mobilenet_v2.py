"""Keras' MobileNetV2 without its top, counted rather than built: its blocks and how many layers each has.

A block gets a residual Add where its input and output have the same channels and its stride is 1, and the channels
are rounded (`divisible`) after the width multiplier: at small multipliers two blocks that differ in channels at 1.0
round to the same number, and get an Add that they have not at 1.0 (expanded_conv at about 0.27 and below). So a
layer index (`--fine-tune-from`) names a different layer at such widths, and a count of layers depends on alpha.
tests/trainer/test_model.py checks these counts against Keras' model at several widths.
"""

from __future__ import annotations

# expanded_conv, then block_1 to block_16: output channels before the width multiplier, stride, expansion.
BLOCKS = ((16, 1, 1), (24, 2, 6), (24, 1, 6), (32, 2, 6), (32, 1, 6), (32, 1, 6), (64, 2, 6), (64, 1, 6),
          (64, 1, 6), (64, 1, 6), (96, 1, 6), (96, 1, 6), (96, 1, 6), (160, 2, 6), (160, 1, 6), (160, 1, 6),
          (320, 1, 6))
FIRST_CHANNELS = 32  # Conv1's, before the width multiplier
# Input, Conv1, its BatchNorm and ReLU before the first block; Conv_1, its BatchNorm and ReLU after the last.
STEM_LAYERS, TOP_LAYERS = 4, 3


def divisible(value: float, divisor: int = 8) -> int:
    """MobileNet's channel rounding: the nearest multiple of `divisor`, never below 90% of `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def block_channels(alpha: float) -> list[tuple[int, int]]:
    """(input channels, output channels) of each block at width `alpha`, as Keras rounds them."""
    channels, pairs = divisible(FIRST_CHANNELS * alpha), []
    for filters, _, _ in BLOCKS:
        out = divisible(int(filters * alpha))
        pairs.append((channels, out))
        channels = out
    return pairs


def has_add(block_id: int, alpha: float) -> bool:
    """Whether the block ends in a residual Add at width `alpha`."""
    channels, out = block_channels(alpha)[block_id]
    return channels == out and BLOCKS[block_id][1] == 1


def layers_to_block(alpha: float) -> tuple[int, ...]:
    """The base's layers (its input counted) when it ends after block_N, for N = 0 (expanded_conv) to 16."""
    counted, ends = STEM_LAYERS, []
    for block_id, (_, stride, _) in enumerate(BLOCKS):
        # expand, its BatchNorm and ReLU (not in expanded_conv); a padding before a stride of 2; depthwise, its
        # BatchNorm and ReLU, project and its BatchNorm; the Add.
        counted += (3 if block_id else 0) + (stride == 2) + 5 + has_add(block_id, alpha)
        ends.append(counted)
    return tuple(ends)


def base_layers(alpha: float) -> int:
    """The whole base's layers, its input counted."""
    return layers_to_block(alpha)[-1] + TOP_LAYERS
