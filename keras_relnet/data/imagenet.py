"""ImageNet input pipelines for `model.fit`: TFRecord shards or a prepared TFDS directory.

The training set is one endless, reproducible stream of examples: epoch `e`
shuffles the shard order and blocks of records with seeds derived from `(seed, e)`,
and each example's crop and flip are stateless functions of `(seed, its index
in the stream)`. A run resumed at step `s` therefore sees exactly the batches
an uninterrupted run sees from step `s` on, and under a distribution strategy
every global batch holds the same examples as on one device.
"""

import contextlib
import dataclasses
import re

import tensorflow as tf

from keras_relnet.data import augment, shards

AUTOTUNE = tf.data.AUTOTUNE
_FILE_CYCLE = 16  # shards read at once
_EPOCH_SEED_STRIDE = 1_000_003


@dataclasses.dataclass(frozen=True)
class ImageNet:
    """Where the ImageNet data is and how to turn it into batches.

    Attributes:
        data_dir: directory of the shards (layout "tfrecord") or the TFDS data
            directory (layout "tfds").
        layout: "tfrecord" (`train-*`/`validation-*` files with
            `image/encoded` and `image/class/label`) or "tfds" (a prepared
            TFDS `imagenet2012`).
        image_size: side of the square training and evaluation crops.
        num_classes: classes of the model; labels must lie in
            `[label_offset, label_offset + num_classes)`.
        label_offset: subtracted from stored labels: 1 for TPU-style labels
            1..1000, 0 for 0..999; None uses the layout's (1 for "tfrecord",
            0 for "tfds").
        seed: seed of every random choice of the training stream.
        shuffle_buffer: records shuffled together: each epoch shuffles the
            shard order, interleaves 16 shards and shuffles blocks of this many
            records.
        cache: keep the training records in memory after the first epoch (for
            datasets that fit in RAM).
        deterministic: keep the element order fixed (reproducible runs and
            exact resume); False lets tf.data reorder for speed.
        randaugment_magnitude: None (off) or RandAugment magnitude 0..10, two
            operations per image (not reproducible across resumes).
        mixup_alpha: mixup Beta parameter; 0 turns mixup off.
        cutmix_alpha: cutmix Beta parameter; 0 turns cutmix off.
        train_examples: records per training epoch; None counts them (known
            for the standard 1024-shard split).

    Example:
    >>> import tempfile
    >>> directory = tempfile.mkdtemp()
    >>> images = np.random.default_rng(0).integers(0, 255, (8, 40, 40, 3), "uint8")
    >>> _ = shards.write_image_shards(directory, "train", images, [1, 2] * 4, 2)
    >>> data = ImageNet(directory, image_size=32, num_classes=2)
    >>> images, labels = next(iter(data.train(global_batch_size=4)))
    >>> images.shape, labels.shape
    (TensorShape([4, 32, 32, 3]), TensorShape([4, 2]))
    """

    data_dir: str
    layout: str = "tfrecord"
    image_size: int = 224
    num_classes: int = 1000
    label_offset: int | None = None
    seed: int = 0
    shuffle_buffer: int = 10_000
    cache: bool = False
    deterministic: bool = True
    randaugment_magnitude: float | None = None
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    train_examples: int | None = None

    def __post_init__(self):
        if self.layout not in shards.LAYOUTS:
            raise ValueError(
                f"`layout` must be one of {sorted(shards.LAYOUTS)}; received {self.layout!r}."
            )
        for name in ("image_size", "num_classes", "shuffle_buffer"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer; received {value!r}.")
        if self.label_offset is None:
            object.__setattr__(self, "label_offset", shards.LAYOUTS[self.layout]["label_offset"])
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError(
                "`mixup_alpha` and `cutmix_alpha` must be >= 0; received "
                f"{self.mixup_alpha} and {self.cutmix_alpha}."
            )
        if self.randaugment_magnitude is not None and not 0 <= self.randaugment_magnitude <= 10:
            raise ValueError(
                "`randaugment_magnitude` must be None or in [0, 10]; received "
                f"{self.randaugment_magnitude}."
            )

    @property
    def image_key(self):
        return shards.LAYOUTS[self.layout]["image_key"]

    @property
    def label_key(self):
        return shards.LAYOUTS[self.layout]["label_key"]

    def files(self, split):
        """The shards of `split`, after checking that the first record is an example.

        Args:
            split: "train" or "validation".

        Returns:
            Sorted file paths.

        Raises:
            ShardError: no directory, no shards, or a first record that is not
                an ImageNet example.
        """
        files = shards.find_shards(self.data_dir, split, self.layout)
        with self.readable_errors(files[:1]):
            for record in tf.data.TFRecordDataset(files[0]).take(1):
                jpeg, _ = shards.parse_record(record, self.image_key, self.label_key)
                tf.io.extract_jpeg_shape(jpeg)
        return files

    def examples(self, split):
        """Records in `split` (`train_examples` when given for "train")."""
        return self._examples(split, self.files(split))

    def _examples(self, split, files):
        if split == "train" and self.train_examples is not None:
            return self.train_examples
        return shards.count_records(files, split)

    def steps_per_epoch(self, global_batch_size):
        """Full global batches in one training epoch."""
        steps = self.examples("train") // global_batch_size
        if steps < 1:
            raise ValueError(
                f"`global_batch_size` {global_batch_size} is larger than the "
                f"{self.examples('train')} training examples."
            )
        return steps

    def train(self, global_batch_size, start_step=0, input_context=None):
        """The endless training dataset of `(images, one_hot_labels)` batches.

        Args:
            global_batch_size: examples per step over all replicas.
            start_step: first global step to produce (resume).
            input_context: the `tf.distribute.InputContext` given by
                `strategy.distribute_datasets_from_function`; batches are then
                per replica and each input pipeline reads its share.

        Returns:
            A `tf.data.Dataset` of float32 `[b, size, size, 3]` normalised images
            and float32 `[b, num_classes]` labels, `b` the per-replica batch.
        """
        files = self.files("train")
        epoch_size = self._examples("train", files)
        batch_size, pipelines, pipeline_id = _batching(global_batch_size, input_context)
        first = start_step * global_batch_size
        cached = self._records(files, None).cache() if self.cache else None

        def epoch_records(epoch):
            epoch_seed = self.seed * _EPOCH_SEED_STRIDE + epoch
            records = cached if cached is not None else self._records(files, epoch_seed)
            return _block_shuffle(records, self.shuffle_buffer, epoch_seed)

        stream = (
            tf.data.Dataset.range(first // epoch_size, tf.int64.max)
            .flat_map(epoch_records)
            .skip(first % epoch_size)
            .enumerate(start=first)
        )
        if pipelines > 1:
            stream = stream.shard(pipelines, pipeline_id)
        randaugment = (None if self.randaugment_magnitude is None
                       else augment.rand_augment(magnitude=self.randaugment_magnitude))
        batches = stream.map(
            lambda index, element: self._train_example(index, element, randaugment),
            num_parallel_calls=AUTOTUNE, deterministic=self.deterministic,
        ).batch(batch_size, drop_remainder=True)
        if self.mixup_alpha or self.cutmix_alpha:
            replicas_here = global_batch_size // batch_size // pipelines
            first_batch = start_step * replicas_here
            batches = batches.enumerate(start=first_batch).map(self._mixed_batch)
        return batches.prefetch(AUTOTUNE).with_options(self._options())

    def validation(self, batch_size):
        """The finite evaluation dataset: centre crops, labels one-hot.

        Under a strategy, Keras splits each batch over the replicas and each
        worker evaluates its share of the batches.

        Args:
            batch_size: global batch size.

        Returns:
            A `tf.data.Dataset` of `(images, one_hot_labels)`; the last batch
            may be smaller.
        """
        files = self.files("validation")
        batch_size, _, _ = _batching(batch_size, None)
        # A known size gives Keras its step count (progress bar, no warning at the end).
        examples = tf.data.experimental.assert_cardinality(
            self._examples("validation", files))
        return (
            self._records(files, None)
            .apply(examples)
            .map(self._eval_example, num_parallel_calls=AUTOTUNE,
                 deterministic=self.deterministic)
            .batch(batch_size)
            .prefetch(AUTOTUNE)
            .with_options(self._options(tf.data.experimental.AutoShardPolicy.DATA))
        )

    @contextlib.contextmanager
    def readable_errors(self, files):
        """Turns a tf.data failure on `files` into a `ShardError` naming the file and record.

        Args:
            files: the shards the failing pipeline reads.

        Example:
        >>> with data.readable_errors(data.files("train")):  # doctest: +SKIP
        ...     model.fit(data.train(256), steps_per_epoch=100)
        """
        try:
            yield
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as error:
            if shards.LABEL_ERROR in error.message:
                raise shards.ShardError(_assert_message(error.message)) from None
            located = shards.locate_bad_record(files, self.image_key, self.label_key)
            if located is None:
                raise
            raise located from None

    def _records(self, files, epoch_seed):
        """`(record, shard, index)` of every record; shards shuffled when seeded."""
        files = tf.constant(files)
        if epoch_seed is not None:
            files = tf.gather(files, _permutation(len(files), tf.stack([epoch_seed, -1])))
        file_names = tf.data.Dataset.from_tensor_slices(files)

        def read(path):
            records = tf.data.TFRecordDataset(path).enumerate()
            return records.map(lambda index, record: (record, path, index))

        return file_names.interleave(
            read,
            cycle_length=min(len(files), _FILE_CYCLE),
            num_parallel_calls=AUTOTUNE,
            deterministic=self.deterministic,
        )

    def _label(self, record, path, index):
        jpeg, label = shards.parse_record(record, self.image_key, self.label_key)
        label = shards.checked_label(label, self.label_offset, self.num_classes, path, index)
        return jpeg, tf.one_hot(label, self.num_classes)

    def _train_example(self, stream_index, element, randaugment):
        jpeg, label = self._label(*element)
        image = augment.random_resized_crop(
            jpeg, augment.stateless_seed(self.seed, stream_index), self.image_size
        )
        if randaugment is not None:
            image = randaugment(image)
        return augment.normalize(image), label

    def _eval_example(self, record, path, index):
        jpeg, label = self._label(record, path, index)
        return augment.normalize(augment.center_crop(jpeg, self.image_size)), label

    def _mixed_batch(self, batch_index, batch):
        images, labels = batch
        return augment.mix_batch(
            images, labels, augment.stateless_seed(self.seed + 1, batch_index),
            self.mixup_alpha, self.cutmix_alpha,
        )

    def _options(self, auto_shard=tf.data.experimental.AutoShardPolicy.OFF):
        # The training stream shards itself (see `train`); tf.distribute must not.
        options = tf.data.Options()
        options.deterministic = self.deterministic
        options.experimental_distribute.auto_shard_policy = auto_shard
        return options


def _permutation(size, seed):
    """A random permutation of `range(size)`, a stateless function of `seed`."""
    return tf.argsort(tf.random.stateless_uniform([size], tf.cast(seed, tf.int64)))


def _block_shuffle(elements, block_size, seed):
    """Shuffles each block of `block_size` consecutive elements.

    Unlike `Dataset.shuffle`, the order depends on `seed` only, not on the
    global TensorFlow seed, and `seed` may be a tensor.
    """
    def shuffled(block_index, block):
        order = _permutation(tf.shape(block[0])[0], tf.stack([seed, block_index]))
        return tf.data.Dataset.from_tensor_slices(
            tuple(tf.gather(component, order) for component in block))

    return elements.batch(block_size).enumerate().flat_map(shuffled)


def _batching(global_batch_size, input_context):
    """`(batch per replica, input pipelines, this pipeline's id)`."""
    if not isinstance(global_batch_size, int) or global_batch_size < 1:
        raise ValueError(
            f"`global_batch_size` must be a positive integer; received {global_batch_size!r}."
        )
    if input_context is None:
        return global_batch_size, 1, 0
    replicas = input_context.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(
            f"`global_batch_size` {global_batch_size} must be a multiple of the "
            f"{replicas} replicas."
        )
    return (
        input_context.get_per_replica_batch_size(global_batch_size),
        input_context.num_input_pipelines,
        input_context.input_pipeline_id,
    )


def _assert_message(message):
    """The text of a `tf.debugging.Assert` failure, without TF's brackets and trace."""
    first = message.split("\n")[0]
    parts = re.findall(r"\[(.*?)\]", first.split("assertion failed:", 1)[-1])
    return " ".join(part.strip("'\"") for part in parts) + "."
