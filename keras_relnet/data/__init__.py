"""Input pipelines: ImageNet TFRecord shards (or TFDS `imagenet2012`) for `model.fit`,
and the converter from image folders to shards."""

from keras_relnet.data.augment import (
    center_crop,
    mix_batch,
    normalize,
    rand_augment,
    random_resized_crop,
)
from keras_relnet.data.folders import prepare_imagenet
from keras_relnet.data.imagenet import ImageNet
from keras_relnet.data.shards import (
    ShardError,
    count_records,
    find_shards,
    image_example,
    locate_bad_record,
    write_image_shards,
)
