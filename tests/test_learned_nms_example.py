"""The learned duplicate removal beats greedy NMS on held-out crowded scenes."""

import importlib.util
import pathlib

import numpy as np

EXAMPLE = pathlib.Path(__file__).parents[1] / "examples" / "learned_nms.py"


def load_example():
    spec = importlib.util.spec_from_file_location("learned_nms", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_learned_duplicate_removal_beats_greedy_nms():
    example = load_example()
    learned, greedy, losses = example.compare(train_scenes=200, test_scenes=100, steps=300)
    assert np.mean(losses[-20:]) < 0.5 * losses[0]
    assert learned > greedy + 0.02, (learned, greedy)


def test_generated_scenes_are_crowded():
    example = load_example()
    scenes = example.crowded_scenes(50, seed=3)
    overlapping = 0
    for boxes, classes in zip(scenes["gt_boxes"], scenes["gt_classes"]):
        valid = boxes[classes >= 0]
        overlapping += sum(example.iou(a, b) > 0.5 for i, a in enumerate(valid)
                           for b in valid[i + 1:])
    assert overlapping >= 10  # same-class pairs greedy NMS at 0.5 would merge
    assert scenes["roi_mask"].sum(1).min() >= 9
