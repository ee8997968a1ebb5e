"""Model Garden's training launcher with the keras-relnet registrations.

    python -m keras_relnet.garden.train --experiment=lrnet50_imagenet \\
        --mode=train_and_eval --model_dir=runs/lrnet50 \\
        [--config_file=overrides.yaml] [--params_override='task.train_data.input_path=...']

The flags are Model Garden's own (`official.vision.train`); the only
difference is that this module imports `keras_relnet.garden` first, so its
backbones and experiments are registered.
"""

from absl import app, flags
from official.common import flags as tfm_flags
from official.vision import train as vision_train

import keras_relnet.garden  # noqa: F401  (registers the backbones and experiments)


def main():
    """Defines Model Garden's flags and runs its `main`."""
    tfm_flags.define_flags()
    flags.mark_flags_as_required(["experiment", "mode", "model_dir"])
    app.run(vision_train.main)


if __name__ == "__main__":
    main()
