"""Trains a tiny classifier under MultiWorkerMirroredStrategy (one worker, from
TF_CONFIG) on colour shards; run as a script because the strategy must be made
before TensorFlow starts. Prints the history as JSON. Args: DATA_DIR MODEL_DIR."""

import json
import sys


def main(data_dir, model_dir):
    from keras_relnet.training import Recipe, make_strategy, train_imagenet

    strategy = make_strategy("multi_worker")  # first: before any TensorFlow op

    import keras

    from imagenet_shards import CLASSES
    from keras_relnet.data import ImageNet

    def tiny():
        inputs = keras.Input((32, 32, 3))
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3)(inputs))
        return keras.Model(inputs, keras.layers.Dense(CLASSES, activation="softmax")(x))

    data = ImageNet(data_dir, image_size=32, num_classes=CLASSES, shuffle_buffer=64)
    recipe = Recipe(epochs=2, global_batch_size=16, warmup_epochs=0)
    _, history = train_imagenet(tiny, data, recipe, model_dir, strategy=strategy, verbose=0)
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, **history}))


if __name__ == "__main__":
    main(*sys.argv[1:])
