"""Cached views: the frozen part of the base runs once per augmented view of an image, not once per epoch.

Below the first layer that phase 2 trains, the base is a fixed function of
its input (BatchNorm in inference mode, no dropout). So the Trainer passes K
augmented views of every training image (and each eval image, unaugmented)
through it once and keeps, in float16:

- the activations entering the first block phase 2 trains (the cut), which
  phase 2's top-of-base-plus-head model trains on, for all K views;
- the pooled output of the whole base, which phase 1's head trains on, for
  the first two views (HEAD_VIEWS), filled before phase 1; the other views
  run the base below the cut only, before phase 2.

Epoch e of phase 1 reads view e mod 2 of every image, shuffled. Epoch e of
phase 2 reads, for each image, a blend of its views e mod K and e+1 mod K
with a weight drawn per image and epoch: on the views themselves phase 2
learned them by heart (train accuracy 0.99 against eval 0.91 in its last
epochs, where every-epoch augmentation kept both at 0.925), and a new point
between two views each epoch, which costs no base pass, took the eval accuracy
from 0.014 below every-epoch augmentation's to 0.004 below (5 seeds, 6 views;
docs/performance.md, Training); `--no-blend-views` reads view e mod K. The cut
lies on a block boundary (where one tensor alone crosses it), so a residual
block is never split from its shortcut. The layers stay the classifier's own
objects: what the phase models learn is what gets exported.
"""

from __future__ import annotations

import contextvars
import dataclasses
import errno
import functools
import math
import os
import re
import time

import keras
import tensorflow as tf

from config import TrainingConfig
from contract import progress
from contract.errors import RunFailedError
from trainer import model as model_lib

# Elements of a filled cache: (activations at the cut, pooled base output, label).
CUT, POOLED = 0, 1
# Who the cache's printed lines speak for: the Trainer, or a Tuner trial (trainer.tuning sets it for its trials).
SPEAKER = contextvars.ContextVar("feature_cache_speaker", default="Trainer")
CACHE_DTYPE = tf.float16  # half the memory of float32

# Phase 1 reads this many views when phase 2 follows; phase 2 reads all K. Each view phase 1 reads costs a
# whole base pass before it, and more of them bought no accuracy beyond the seeds' noise; the other views,
# which only phase 2 reads, need the layers below the cut alone (docs/performance.md, Training).
HEAD_VIEWS = 2


class FeatureCacheError(RunFailedError, RuntimeError):
    """The cache could not be filled (its disk is full, say); the message names where."""


# Keras' MobileNetV2 names the layers of each inverted-residual block after it ("block_11_expand", ...; the first
# block is "expanded_conv"); the stem and the last convolution are single layers.
_BLOCK = re.compile(r"^(block_\d+|expanded_conv)_")


def _block_of(layer: keras.layers.Layer) -> str:
    match = _BLOCK.match(layer.name)
    return match.group(1) if match else layer.name


def cut_index(base: keras.Model, fine_tune_from: int) -> int:
    """The index of the first layer of the block holding layer `fine_tune_from`: the activations entering it
    are the narrow end of an inverted-residual block, and no shortcut crosses there."""
    position = {id(layer.output): index for index, layer in enumerate(base.layers)}
    reads = [[position[id(tensor)] for tensor in keras.tree.flatten(layer.input)] if index else []
             for index, layer in enumerate(base.layers)]

    def one_tensor_crosses(cut: int) -> bool:
        return all(source >= cut - 1 for sources in reads[cut:] for source in sources)

    first = min(fine_tune_from, len(base.layers) - 1)
    block = _block_of(base.layers[first])
    cut = next(index for index, layer in enumerate(base.layers) if _block_of(layer) == block)
    # Any other architecture: the highest point at or below the first trained layer where one tensor crosses.
    while cut > 1 and not one_tensor_crosses(cut):
        cut -= 1
    return max(cut, 1)


@dataclasses.dataclass
class SplitClassifier:
    """The classifier's layers regrouped around the cut (every layer shared, none copied)."""

    augment: list[keras.layers.Layer]
    below: keras.Model  # rescaled pixels -> activations at the cut (frozen in both phases)
    above: keras.Model  # activations at the cut -> the base's output
    pool: keras.layers.Layer
    head: list[keras.layers.Layer]  # the head after its pooling (model.head_layers), e.g. [hidden], dropout, logits
    cut: int  # index in the base's layers of the first layer above the cut

    def head_model(self) -> keras.Model:
        """Phase 1: pooled features -> logit."""
        inputs = keras.Input(shape=self.pool.output.shape[1:], name="pooled")
        return keras.Model(inputs, _through(self.head, inputs), name="head_on_cached_features")

    def top_model(self) -> keras.Model:
        """Phase 2: activations at the cut -> logit, through the top of the base (in inference mode, as in
        the classifier) and the head."""
        inputs = keras.Input(shape=self.above.input.shape[1:], name="activations")
        pooled = self.pool(self.above(inputs, training=False))
        return keras.Model(inputs, _through(self.head, pooled), name="top_on_cached_activations")


def _through(layers, x):
    for layer in layers:
        x = layer(x)
    return x


def split(model: keras.Model, config: TrainingConfig) -> SplitClassifier:
    classifier = model_lib.get_classifier(model)
    base = model_lib.get_base(model)
    # Without phase 2, the cut is below the base's last block (a shorter base's may end in a shortcut's Add).
    cut = cut_index(base, config.fine_tune_from if config.fine_tune_epochs else len(base.layers) - 1)
    boundary = base.layers[cut - 1].output
    below = keras.Model(base.input, boundary, name="base_below_cut")
    above = keras.Model(boundary, base.output, name="base_above_cut")
    pool, *after_pool = model_lib.head_layers(classifier)
    augment = [layer for layer in model.layers if layer.name.startswith(model_lib.AUGMENT_PREFIX)]
    return SplitClassifier(augment, below, above, pool, after_pool, cut)


def _view_fn(parts: SplitClassifier, rescale: keras.layers.Layer, image_size: int):
    """(uint8 pixel batch, labels, augmented, pooled) -> (activations at the cut, [pooled output,] labels),
    float16 features. The network is traced once, for any batch size and both splits."""
    spec = [tf.TensorSpec([None, image_size, image_size, 3], tf.float32)]

    @tf.function(input_signature=spec, autograph=False)
    def below(pixels):
        return parts.below(rescale(pixels), training=False)

    @tf.function(input_signature=spec, autograph=False)
    def features(pixels):
        cut = below(pixels)
        return tf.cast(cut, CACHE_DTYPE), tf.cast(parts.pool(parts.above(cut, training=False)), CACHE_DTYPE)

    @tf.function(input_signature=spec, autograph=False)
    def augment(pixels):
        for layer in parts.augment:
            pixels = layer(pixels, training=True)
        return pixels

    def compute(pixels, labels, augmented: bool, pooled: bool):
        pixels = tf.cast(pixels, tf.float32)
        if augmented:
            pixels = augment(pixels)
        return (*features(pixels), labels) if pooled else (tf.cast(below(pixels), CACHE_DTYPE), labels)
    return compute


@dataclasses.dataclass
class CachedSplit:
    """One split's filled cache: a dataset of unbatched elements per view, (cut, pooled, label) for the views
    phase 1 reads and (cut, label) for the ones only phase 2 reads."""

    views: list[tf.data.Dataset]
    images: int
    bytes: int


def views_read(config: TrainingConfig) -> tuple[int, int]:
    """(K, of which phase 1 reads): the views the phases' epochs can read, no more. Epoch e reads view e mod K, and
    phase 2 a blend of views e and e + 1, so a training of E epochs never reads a view past E (E - 1 unblended):
    one of 1 epoch over 6 cached views would otherwise pay 5 base passes for nothing. In memory the views of a batch
    are drawn one after the other from the augmentation's random state, so a schedule that fills fewer views
    draws other images for the later ones than it would with K, as any change of K does."""
    blend = 1 if config.blend_views and config.fine_tune_epochs else 0
    views = min(config.cached_views, max(1, config.head_epochs + config.fine_tune_epochs + blend))
    head = min(views, config.head_epochs)  # without phase 1, no view needs the whole base
    return views, min(head, HEAD_VIEWS) if config.fine_tune_epochs else head


class FeatureCache:
    """Filled in two steps: before phase 1, the views phase 1 reads and the eval images; before phase 2, the
    further views only phase 2 reads (so each phase's time includes the base passes it needs)."""

    def __init__(self, model: keras.Model, parts: SplitClassifier, train_pixels: tf.data.Dataset, *,
                 train_images: int, eval_images: int, config: TrainingConfig, cache_dir: str | None):
        self.views, self.head_views = views_read(config)
        self._parts, self._train_pixels = parts, train_pixels
        self._compute = _view_fn(parts, model_lib.get_classifier(model).get_layer(model_lib.RESCALE_NAME),
                                 parts.below.input.shape[1])
        self._total = (train_images * self.head_views + eval_images) * _element_bytes(parts, pooled=True) + \
            train_images * (self.views - self.head_views) * _element_bytes(parts, pooled=False)
        on_disk = self._total > config.cache_memory_mb * 2**20 and cache_dir is not None
        self._cache_dir = cache_dir if on_disk else None
        self.location = cache_dir if on_disk else "memory"
        self.train = CachedSplit([], train_images, 0)
        self.eval = CachedSplit([], eval_images, 0)
        self.fill_seconds = {"head": 0.0, "fine_tune": 0.0}
        if on_disk:
            tf.io.gfile.makedirs(cache_dir)
            progress.say(f"{SPEAKER.get()}: the cached views' {self._total / 2**20:,.0f} MiB are over the "
                         f"{config.cache_memory_mb:,} MiB memory budget (--cache-memory-mb): caching them to files "
                         f"under {cache_dir}")

    def fill_head_views(self, eval_pixels: tf.data.Dataset) -> None:
        self._fill(self.train, self._train_pixels, "train", range(self.head_views), phase="head", augmented=True,
                   pooled=True)
        self._fill(self.eval, eval_pixels, "eval", range(1), phase="head", augmented=False, pooled=True)

    def fill_fine_tune_views(self) -> None:
        self._fill(self.train, self._train_pixels, "train", range(len(self.train.views), self.views),
                   phase="fine_tune", augmented=True, pooled=False)

    def _fill(self, split: CachedSplit, pixels, name, indices, *, phase, augmented, pooled) -> None:
        """Appends the views `indices` to `split`, timed as `phase`'s."""
        if not indices:
            return
        started = time.perf_counter()
        features = (tf.TensorSpec([None, *self._parts.above.input.shape[1:]], CACHE_DTYPE),)
        if pooled:
            features += (tf.TensorSpec([None, *self._parts.pool.output.shape[1:]], CACHE_DTYPE),)
        signature = (*features, tf.TensorSpec([None, 1], tf.float32))
        compute = functools.partial(self._compute, augmented=augmented, pooled=pooled)
        try:
            split.views += _fill_views(pixels, compute, signature, indices=indices, cache_dir=self._cache_dir,
                                       name=name, tell=_Tell(f"{name} images, {phase} views", split.images,
                                                             len(indices)))
        except (tf.errors.ResourceExhaustedError, tf.errors.UnknownError, tf.errors.InternalError, OSError) as error:
            if self._cache_dir and _no_space(error):
                raise FeatureCacheError(
                    f"no space left on the disk of {self._cache_dir} while caching the base's features "
                    f"({self._total / 2**20:.0f} MiB to write): free space there or raise --cache-memory-mb"
                ) from error
            raise
        split.bytes += split.images * len(indices) * _element_bytes(self._parts, pooled=pooled)
        self.fill_seconds[phase] += time.perf_counter() - started

    def record(self) -> dict:
        return {"views": self.views, "head_views": self.head_views, "train_images": self.train.images,
                "eval_images": self.eval.images, "bytes": self.train.bytes + self.eval.bytes,
                "location": self.location, "fill_seconds": round(sum(self.fill_seconds.values()), 3),
                "fine_tune_fill_seconds": round(self.fill_seconds["fine_tune"], 3)}

    def training_epochs(self, part: int, *, first_epoch: int, epochs: int, config: TrainingConfig
                        ) -> tuple[tf.data.Dataset, int]:
        """Batches of (features, label) for `epochs` epochs, shuffled, and the steps of one epoch: for POOLED
        epoch e reads view e mod (phase 1's views); for CUT, blends of views e and e + 1 mod K (view e mod K
        without `blend_views`)."""
        def epoch_views(epoch: int) -> tf.data.Dataset:
            if part == POOLED:
                return self.train.views[epoch % self.head_views]
            views = self.train.views
            if not config.blend_views:
                return views[epoch % len(views)]
            return _blended(views[epoch % len(views)], views[(epoch + 1) % len(views)], seed=(config.seed, epoch))

        data = functools.reduce(tf.data.Dataset.concatenate, [
            _batches(epoch_views(epoch).shuffle(config.shuffle_buffer, seed=config.seed + epoch), part, config)
            for epoch in range(first_epoch, first_epoch + epochs)])
        return _without_rewrites(data.prefetch(tf.data.AUTOTUNE)), math.ceil(self.train.images / config.batch_size)

    def eval_batches(self, part: int, config: TrainingConfig) -> tf.data.Dataset:
        # A known length: Keras then reads it without a warning that it "ran out of data".
        steps = math.ceil(self.eval.images / config.batch_size)
        return _without_rewrites(_batches(self.eval.views[0], part, config).apply(
            tf.data.experimental.assert_cardinality(steps)).prefetch(tf.data.AUTOTUNE))


def _without_rewrites(data: tf.data.Dataset) -> tf.data.Dataset:
    """`data` without tf.data's default graph rewrites. To rewrite, tf.data serializes the pipeline, and each
    place it reads an in-memory view becomes a copy of that view, so memory would grow with the epochs
    (docs/performance.md, Training)."""
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    return data.with_options(options)


def _blended(first: tf.data.Dataset, second: tf.data.Dataset, *, seed: tuple[int, int]) -> tf.data.Dataset:
    """(activations at the cut, label) of each image: w * first + (1 - w) * second, w uniform in [0, 1) and
    drawn per image from `seed` (the same epoch of the same run blends alike)."""
    def blend(index, pair):
        (a, *_), (b, *_) = pair
        weight = tf.random.stateless_uniform([], seed=tf.stack([tf.constant(seed[0] * 100_003 + seed[1], tf.int64),
                                                                 index]))
        return weight * tf.cast(a, tf.float32) + (1 - weight) * tf.cast(b, tf.float32), pair[0][-1]
    return tf.data.Dataset.zip((first, second)).enumerate().map(blend)


def _batches(view: tf.data.Dataset, part: int, config: TrainingConfig) -> tf.data.Dataset:
    return view.map(lambda *element: (tf.cast(element[part], tf.float32), element[-1])).batch(config.batch_size)


def _element_bytes(parts: SplitClassifier, *, pooled: bool) -> int:
    cut_values = math.prod(parts.above.input.shape[1:])
    pooled_values = math.prod(parts.pool.output.shape[1:]) if pooled else 0
    return CACHE_DTYPE.size * (cut_values + pooled_values) + 4


def count(dataset: tf.data.Dataset) -> int:
    """Elements of a dataset, by reading it through."""
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1))


class _Tell:
    """Says how far a fill has come, at most every PROGRESS_SECONDS: on a large data set the base's pass takes
    minutes, with nothing else on the terminal."""

    def __init__(self, what: str, images: int, passes: int):
        self._what, self._total, self._done = what, images * passes, 0
        self._last = time.monotonic()

    def __call__(self, images: int) -> None:
        self._done += images
        if time.monotonic() - self._last >= PROGRESS_SECONDS and self._done < self._total:
            self._last = time.monotonic()
            progress.say(f"{SPEAKER.get()}: caching {self._what}: {100 * self._done / max(self._total, 1):.0f}% "
                         f"({self._done:,} of {self._total:,} image views)")


PROGRESS_SECONDS = 30.0


def _fill_views(pixels: tf.data.Dataset, compute, signature, *, indices: range, cache_dir: str | None,
                name: str, tell=lambda images: None) -> list[tf.data.Dataset]:
    """The views `indices` of every image. The base runs on the Python side, not in a tf.data map, where it
    competed with tf.data's threads and was traced again. In memory, one pass decodes each image once for all
    its views; to files, one pass a view."""
    # Without tf.data's autotuning: with the base busy on every core, its model thread lagged, and dropping the
    # exhausted iterator waited on it (docs/performance.md, Training).
    options = tf.data.Options()
    options.autotune.enabled = False
    batches = pixels.batch(64).prefetch(2).with_options(options)
    if cache_dir is None:
        computed = []
        for p, labels in batches:
            computed.append([compute(p, labels) for _ in indices])
            tell(int(labels.shape[0]) * len(indices))
        return [tf.data.Dataset.from_tensor_slices(tuple(tf.concat(column, 0) for column in zip(*per_view)))
                for per_view in zip(*computed)]

    def computed_batches():
        for p, labels in batches:
            yield compute(p, labels)
            tell(int(labels.shape[0]))

    files = []
    for index in indices:
        view = tf.data.Dataset.from_generator(computed_batches, output_signature=signature).unbatch().cache(
            os.path.join(cache_dir, f"{name}-{index}"))
        count(view)  # one pass writes the files
        files.append(view)
    return files


def _no_space(error: Exception) -> bool:
    text = str(error)
    return "No space left" in text or getattr(error, "errno", None) == errno.ENOSPC or "ENOSPC" in text


def fill(model: keras.Model, parts: SplitClassifier, train_pixels: tf.data.Dataset, eval_pixels: tf.data.Dataset,
         *, train_images: int, eval_images: int, config: TrainingConfig, cache_dir: str | None) -> FeatureCache:
    """Runs the frozen base over the views of the training images phase 1 reads, and over the eval images once;
    `FeatureCache.fill_fine_tune_views` does the rest before phase 2."""
    cache = FeatureCache(model, parts, train_pixels, train_images=train_images, eval_images=eval_images,
                         config=config, cache_dir=cache_dir)
    cache.fill_head_views(eval_pixels)
    return cache


def remove(cache_dir: str | None) -> None:
    if cache_dir and tf.io.gfile.exists(cache_dir):
        tf.io.gfile.rmtree(cache_dir)
