"""Detection SavedModel export through Model Garden's serving module, relation head included.

Model Garden's `export_saved_model` builds the stock `MaskRCNNModel` for any
`MaskRCNN` config (a relation model would silently lose its head). This passes
the model the task builds to `DetectionModule` instead, and traces it inside
`portable_graphs()`: the SavedModel never depends on the compiled local
relation kernel.

    python -m keras_relnet.garden.export --experiment=fasterrcnn_relation_resnetfpn_coco \\
        --checkpoint_path=runs/relation --export_dir=exported \\
        --input_image_size=1024,1024 [--config_file=...] [--params_override=...]
"""

import os

from official.core import exp_factory, task_factory
from official.modeling import hyperparams
from official.vision.serving import detection, export_saved_model_lib

import keras_relnet.garden  # noqa: F401  (registers the experiments)
from keras_relnet.ops.portable import portable_graphs


def export_detection(params, checkpoint_path, export_dir, input_image_size, batch_size=1,
                     input_type="image_tensor"):
    """Exports the detection model of `params` with the weights of `checkpoint_path`.

    Args:
        params: a detection `ExperimentConfig` (e.g. from `exp_factory`).
        checkpoint_path: a checkpoint file or a directory holding checkpoints.
        export_dir: output directory (`saved_model/`, `checkpoint/`, `params.yaml`).
        input_image_size: `[height, width]` of the serving input.
        batch_size: serving batch size (None: any).
        input_type: "image_tensor", "image_bytes" or "tf_example".

    Returns:
        The SavedModel directory.
    """
    model = task_factory.get_task(params.task).build_model()
    module = detection.DetectionModule(params, batch_size=batch_size,
                                       input_image_size=list(input_image_size),
                                       input_type=input_type, model=model)
    with portable_graphs():
        export_saved_model_lib.export_inference_graph(
            input_type=input_type, batch_size=batch_size,
            input_image_size=list(input_image_size), params=params,
            checkpoint_path=checkpoint_path, export_dir=export_dir, export_module=module,
            export_checkpoint_subdir="checkpoint", export_saved_model_subdir="saved_model")
    return os.path.join(export_dir, "saved_model")


def main():
    """The command line: Model Garden's export flags."""
    from absl import app, flags

    flags.DEFINE_string("experiment", None, "registered experiment name")
    flags.DEFINE_string("checkpoint_path", None, "checkpoint file or directory")
    flags.DEFINE_string("export_dir", None, "output directory")
    flags.DEFINE_multi_string("config_file", None, "YAML overrides, applied in order")
    flags.DEFINE_string("params_override", None, "YAML/JSON/CSV overrides, applied last")
    flags.DEFINE_string("input_image_size", None, "height,width of the serving input")
    flags.DEFINE_integer("batch_size", 1, "serving batch size")
    flags.DEFINE_string("input_type", "image_tensor", "image_tensor, image_bytes or tf_example")
    for name in ("experiment", "checkpoint_path", "export_dir", "input_image_size"):
        flags.mark_flag_as_required(name)

    def run(_):
        options = flags.FLAGS
        params = exp_factory.get_exp_config(options.experiment)
        for overrides in [*(options.config_file or []), options.params_override]:
            if overrides:
                params = hyperparams.override_params_dict(params, overrides, is_strict=True)
        params.validate()
        params.lock()
        path = export_detection(params, options.checkpoint_path, options.export_dir,
                                [int(size) for size in options.input_image_size.split(",")],
                                options.batch_size, options.input_type)
        print(f"wrote {path}")

    app.run(run)


if __name__ == "__main__":
    main()
