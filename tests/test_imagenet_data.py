"""keras_relnet.data: shards, the ImageNet pipeline, augmentation, bad input."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from imagenet_shards import CLASSES, write_colour_shards
from keras_relnet.data import (
    ImageNet,
    ShardError,
    center_crop,
    find_shards,
    image_example,
    mix_batch,
    random_resized_crop,
    write_image_shards,
)
from keras_relnet.data.augment import normalize


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("imagenet")
    write_colour_shards(directory)
    return directory


def small(directory, **options):
    return ImageNet(str(directory), image_size=32, num_classes=CLASSES, shuffle_buffer=32,
                    **options)


def take(dataset, count):
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(count)]


def test_training_batches_have_the_model_shapes_dtypes_and_labels(shard_dir):
    data = small(shard_dir)
    assert data.examples("train") == 64 and data.steps_per_epoch(16) == 4
    batches = take(data.train(16), 9)  # more than an epoch: the stream is endless
    for images, labels in batches:
        assert images.shape == (16, 32, 32, 3) and images.dtype == np.float32
        assert labels.shape == (16, CLASSES) and labels.dtype == np.float32
        np.testing.assert_array_equal(labels.sum(axis=1), 1.0)
        assert set(np.unique(labels)) <= {0.0, 1.0}
        assert -2.2 < images.min() and images.max() < 2.7  # normalised [0, 255]


def test_an_epoch_holds_every_training_example_once(shard_dir):
    data = small(shard_dir)
    labels = np.concatenate([y for _, y in take(data.train(16), 4)]).argmax(axis=1)
    expected, _ = _labels_of(shard_dir)
    np.testing.assert_array_equal(np.bincount(labels, minlength=CLASSES),
                                  np.bincount(expected, minlength=CLASSES))


def _labels_of(directory):
    labels = {}
    for split in ("train", "validation"):
        records = tf.data.TFRecordDataset(find_shards(directory, split))
        labels[split] = [tf.train.Example.FromString(r.numpy()).features
                         .feature["image/class/label"].int64_list.value[0] - 1
                         for r in records]
    return np.array(labels["train"]), np.array(labels["validation"])


def test_the_stream_is_reproducible_and_restarts_at_any_step(shard_dir):
    data = small(shard_dir)
    full = take(data.train(16), 7)
    again = take(data.train(16), 7)
    resumed = take(data.train(16, start_step=3), 4)
    for (x, y), (x_again, y_again) in zip(full, again):
        np.testing.assert_array_equal(x, x_again)
        np.testing.assert_array_equal(y, y_again)
    for (x, y), (x_resumed, y_resumed) in zip(full[3:], resumed):
        np.testing.assert_array_equal(x, x_resumed)
        np.testing.assert_array_equal(y, y_resumed)
    other_seed = take(small(shard_dir, seed=1).train(16), 1)
    assert not np.array_equal(full[0][0], other_seed[0][0])


def test_epochs_are_shuffled_differently(shard_dir):
    first, second = np.split(
        np.concatenate([y.argmax(1) for _, y in take(small(shard_dir).train(16), 8)]), 2)
    assert not np.array_equal(first, second)


def test_per_replica_batches_under_a_strategy_hold_the_global_batch(shard_dir):
    data = small(shard_dir)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    distributed = strategy.distribute_datasets_from_function(
        lambda context: data.train(16, input_context=context))
    single = take(data.train(16), 2)
    for (images, labels), (_, distributed_labels) in zip(single, distributed):
        parts = strategy.experimental_local_results(distributed_labels)
        assert [part.shape[0] for part in parts] == [8, 8]
        np.testing.assert_array_equal(np.concatenate(parts), labels)


def test_validation_is_centre_crops_of_every_record_in_order(shard_dir):
    data = small(shard_dir)
    batches = take(data.validation(10), 10)
    assert [x.shape[0] for x, _ in batches] == [10, 10, 4]
    _, expected = _labels_of(shard_dir)
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]).argmax(1), expected)
    again = take(data.validation(10), 1)
    np.testing.assert_array_equal(again[0][0], batches[0][0])


def test_cached_training_stream_equals_the_uncached_one_after_the_first_epoch(shard_dir):
    cached = take(small(shard_dir, cache=True).train(16), 8)
    assert len(cached) == 8
    labels = np.concatenate([y.argmax(1) for _, y in cached[4:]])
    expected, _ = _labels_of(shard_dir)
    np.testing.assert_array_equal(np.bincount(labels, minlength=CLASSES),
                                  np.bincount(expected, minlength=CLASSES))


def test_tfds_layout_reads_a_prepared_imagenet2012_directory(tmp_path):
    version = tmp_path / "imagenet2012" / "5.1.0"
    version.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("validation", 4)):
        path = version / f"imagenet2012-{split}.tfrecord-00000-of-00001"
        with tf.io.TFRecordWriter(str(path)) as writer:
            for label in range(count):
                jpeg = tf.io.encode_jpeg(rng.integers(0, 255, (20, 20, 3), "uint8")).numpy()
                writer.write(tf.train.Example(features=tf.train.Features(feature={
                    "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label % 2])),
                })).SerializeToString())
    data = ImageNet(str(tmp_path), layout="tfds", image_size=16, num_classes=2)
    assert data.label_offset == 0
    _, labels = next(iter(data.validation(4)))
    np.testing.assert_array_equal(labels.numpy().argmax(1), [0, 1, 0, 1])


def test_random_resized_crop_covers_the_requested_area_and_flips():
    image = np.zeros((100, 100, 3), "uint8")
    image[:, :50] = 255  # left half white
    jpeg = tf.io.encode_jpeg(image, quality=100)
    whole = [random_resized_crop(jpeg, tf.constant([0, seed]), 20, scale=(1.0, 1.0),
                                 ratio=(1.0, 1.0)).numpy() for seed in range(8)]
    left_white = [crop[:, 0].mean() > crop[:, -1].mean() for crop in whole]
    assert any(left_white) and not all(left_white)  # flipped for some seeds only
    np.testing.assert_array_equal(
        random_resized_crop(jpeg, tf.constant([0, 3]), 20).numpy(),
        random_resized_crop(jpeg, tf.constant([0, 3]), 20).numpy())


def test_center_crop_is_the_central_window_of_the_shorter_side():
    image = np.zeros((64, 128, 3), "uint8")
    image[:, 36:92] = 255  # the central 56 = 0.875 * 64 columns
    crop = center_crop(tf.io.encode_jpeg(image, quality=100), 56).numpy()
    assert crop[:, 2:-2].min() > 200


def test_mixup_and_cutmix_mix_labels_like_pixels():
    images = tf.concat([tf.zeros((1, 8, 8, 1)), tf.ones((1, 8, 8, 1))], axis=0)
    labels = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    for mixup, cutmix in ((0.4, 0.0), (0.0, 1.0), (0.4, 1.0)):
        for seed in range(5):
            mixed, mixed_labels = mix_batch(images, labels, tf.constant([seed, 0]), mixup, cutmix)
            np.testing.assert_allclose(mixed_labels.numpy().sum(axis=1), 1.0, rtol=1e-6)
            # the first image is 0 and its partner 1: the mean pixel is the partner's weight
            np.testing.assert_allclose(mixed[0].numpy().mean(), mixed_labels[0, 1], atol=1e-6)
    unchanged = mix_batch(images, labels, tf.constant([0, 0]))
    assert unchanged[0] is images


def test_randaugment_option_changes_training_images(shard_dir):
    plain = take(small(shard_dir).train(16), 1)[0][0]
    augmented = take(small(shard_dir, randaugment_magnitude=9).train(16), 1)[0][0]
    assert augmented.shape == plain.shape and not np.allclose(augmented, plain)


def test_normalize_matches_the_applications_preprocessing():
    from keras_relnet.applications import preprocess_input

    image = np.random.default_rng(0).uniform(0, 255, (4, 4, 3)).astype("float32")
    np.testing.assert_allclose(normalize(tf.constant(image)), preprocess_input(image.copy()),
                               rtol=1e-6)


# Bad input: clear errors naming the directory, file or record.

def test_missing_data_dir(tmp_path):
    with pytest.raises(ShardError, match="does not exist"):
        small(tmp_path / "missing").train(8)


def test_no_matching_shards(tmp_path):
    (tmp_path / "notes.txt").write_text("no shards here")
    with pytest.raises(ShardError, match="holds no train shards: no file matches train-"):
        small(tmp_path).train(8)


def test_corrupt_record_names_the_shard_and_record(shard_dir, tmp_path):
    shutil.copytree(shard_dir, tmp_path, dirs_exist_ok=True)
    path = find_shards(tmp_path, "train")[1]
    content = bytearray(open(path, "rb").read())
    content[len(content) // 2] ^= 0xFF  # flips a byte in the middle of the file
    open(path, "wb").write(bytes(content))
    data = small(tmp_path, train_examples=64)
    with pytest.raises(ShardError, match=f"Shard {path} is corrupt: record \\d+ cannot be read"):
        with data.readable_errors(data.files("train")):
            take(data.train(16), 8)


def test_record_that_is_not_an_example_names_the_shard_and_record(tmp_path):
    images = np.zeros((3, 8, 8, 3), "uint8")
    (path,) = write_image_shards(tmp_path, "train", images, [1, 2, 3])
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(image_example(tf.io.encode_jpeg(images[0]).numpy(), 1))
        writer.write(image_example(b"not a jpeg", 2))
    data = small(tmp_path)
    with pytest.raises(ShardError, match=f"Record 1 of shard {path} is not an ImageNet example"):
        with data.readable_errors(data.files("train")):
            take(data.train(2), 2)


def test_first_record_is_checked_before_training(tmp_path):
    path = tmp_path / "train-00000-of-00001"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(b"not an example")
    with pytest.raises(ShardError, match=f"Record 0 of shard {path} is not an ImageNet example"):
        small(tmp_path).train(2)


def test_label_out_of_range_names_the_label_shard_and_record(shard_dir):
    data = ImageNet(str(shard_dir), image_size=32, num_classes=3)  # labels go up to 4
    with pytest.raises(ShardError, match=r"label 4 of record \d+ in .*train-0000\d-of-00003 "
                                         r"is not in 1..3 \(num_classes=3, label_offset=1\)"):
        with data.readable_errors(data.files("train")):
            take(data.train(16), 4)


def test_zero_based_labels_with_the_default_offset_are_caught(tmp_path):
    write_colour_shards(tmp_path, train=16, validation=4, train_shards=1, label_offset=0)
    data = ImageNet(str(tmp_path), image_size=32, num_classes=CLASSES)
    with pytest.raises(ShardError, match="label 0 of record"):
        with data.readable_errors(data.files("train")):
            take(data.train(4), 4)  # an epoch: every label


@pytest.mark.parametrize("options, message", [
    (dict(layout="coco"), "`layout` must be one of"),
    (dict(image_size=0), "`image_size` must be a positive integer"),
    (dict(mixup_alpha=-1.0), "`mixup_alpha` and `cutmix_alpha` must be >= 0"),
    (dict(randaugment_magnitude=11), "`randaugment_magnitude` must be None or in"),
])
def test_bad_options(options, message, shard_dir):
    with pytest.raises(ValueError, match=message):
        ImageNet(str(shard_dir), **options)


def test_batch_larger_than_the_epoch(shard_dir):
    with pytest.raises(ValueError, match="`global_batch_size` 128 is larger than the 64"):
        small(shard_dir).steps_per_epoch(128)


def test_written_shard_names(tmp_path):
    paths = write_image_shards(tmp_path, "validation", np.zeros((2, 4, 4, 3), "uint8"), [1, 2], 2)
    assert [os.path.basename(p) for p in paths] == [
        "validation-00000-of-00002", "validation-00001-of-00002"]
