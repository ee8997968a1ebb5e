"""Tiny COCO-format detection TFRecords (Model Garden's `TfExampleDecoder` layout)."""

import numpy as np
import tensorflow as tf
from official.vision.data import tf_example_builder


def write_detection_shards(path, count, num_classes, seed=0, height=240, width=320):
    """Writes `count` images with 2-3 coloured rectangles each, boxes, labels and masks.

    Each class has its own colour, so a detector has something to learn.

    Args:
        path: output TFRecord file.
        count: number of images.
        num_classes: classes including background; labels are 1..num_classes-1.
        seed: random seed.
        height, width: image size.

    Returns:
        `path`.
    """
    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 255, (num_classes, 3))
    with tf.io.TFRecordWriter(str(path)) as writer:
        for index in range(count):
            image = rng.integers(0, 40, (height, width, 3)).astype("uint8")
            boxes, labels, masks = [], [], []
            for _ in range(rng.integers(2, 4)):
                label = int(rng.integers(1, num_classes))
                top, left = rng.integers(0, height - 60), rng.integers(0, width - 60)
                bottom = top + rng.integers(40, 60)
                right = left + rng.integers(40, 60)
                image[top:bottom, left:right] = colours[label]
                mask = np.zeros((height, width), "uint8")
                mask[top:bottom, left:right] = 1
                boxes.append((top / height, left / width, bottom / height, right / width))
                labels.append(label)
                masks.append(mask[..., None])
            ymin, xmin, ymax, xmax = np.array(boxes).T.tolist()
            example = (tf_example_builder.TfExampleBuilder()
                       .add_image_matrix_feature(image, image_source_id=str(index + 1).encode())
                       .add_boxes_feature(xmin, xmax, ymin, ymax, labels)
                       .add_instance_mask_matrices_feature(np.stack(masks))
                       .add_ints_feature("image/object/is_crowd", [0] * len(labels))
                       .example)
            writer.write(example.SerializeToString())
    return path
