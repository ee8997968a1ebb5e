"""Real photos that scikit-image ships inside its wheel (no download)."""

import numpy as np
import tensorflow as tf

BUNDLED_RGB_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry",
                      "hubble_deep_field")


def sample_photos(size, count=None):
    """`[count, size, size, 3]` float32 RGB in [0, 255]: the bundled photos resized,
    then their horizontal flips and centre crops when more are asked for."""
    import skimage.data

    photos = [getattr(skimage.data, name)() for name in BUNDLED_RGB_PHOTOS]
    views = []
    for transform in (lambda p: p, lambda p: p[:, ::-1],
                      lambda p: p[p.shape[0] // 4:-p.shape[0] // 4, p.shape[1] // 4:-p.shape[1] // 4]):
        views += [tf.image.resize(transform(p).astype("float32"), (size, size)).numpy()
                  for p in photos]
    count = len(photos) if count is None else count
    if count > len(views):
        raise ValueError(f"`count` must be at most {len(views)}; received {count}.")
    return np.stack(views[:count])
